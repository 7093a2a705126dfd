"""`python -m jaxgan.generate`: outputs, determinism, and bad input (exit 2, nothing overwritten)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxgan import checkpoint, generate, models, sampling, train, visualize
from jaxgan import data as data_lib
from jaxgan.config import preset
from jaxgan.data import Dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist_5k):
    """A 2-epoch tiny run on 640 digits: checkpoints of epochs 1 and 2, and the final state."""
    workdir = tmp_path_factory.mktemp("run")
    data = Dataset(mnist_5k.images[:640], mnist_5k.labels[:640], "mnist-5k")
    state, _ = train.train_and_evaluate(
        preset("tiny").replace(epochs=2), workdir, load_dataset=data_lib.given(data), progress=False, log=lambda _: None
    )
    return workdir, state


def test_npz_holds_images_pixels_and_noise_of_the_final_generator(run, tmp_path, capsys):
    workdir, state = run
    out = tmp_path / "g.npz"
    assert generate.main(["--workdir", str(workdir), "--num", "10", "--seed", "3", "--out", str(out)]) == 0
    assert f"wrote 10 images (seed 3) to {out}" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as f:
        images, pixels, z = f["images"], f["pixels"], f["z"]
    assert images.shape == (10, 28, 28, 1) and images.dtype == np.float32
    assert images.min() >= -1 and images.max() <= 1
    assert pixels.dtype == np.uint8 and np.array_equal(pixels, visualize.to_uint8(images))
    assert z.shape == (10, 16)
    np.testing.assert_array_equal(z, sampling.noise(3, 10, 16))
    expected = models.generate(state.config, state.g_params, z)
    np.testing.assert_allclose(images, expected, atol=1e-6)


def test_the_runs_seed_draws_its_last_sample_grid(run, tmp_path):
    workdir, state = run
    out = tmp_path / "grid.png"
    argv = ["--workdir", str(workdir), "--num", str(state.config.grid_size**2), "--seed", str(state.config.seed)]
    assert generate.main([*argv, "--out", str(out)]) == 0
    assert out.read_bytes() == (workdir / "samples" / "epoch_0002.png").read_bytes()


def test_same_seed_same_images_other_seed_other_images(run, tmp_path):
    workdir, _ = run
    paths = {name: tmp_path / f"{name}.npy" for name in ("a", "b", "c")}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert (
            generate.main(["--workdir", str(workdir), "--num", "8", "--seed", str(seed), "--out", str(paths[name])])
            == 0
        )
    a, b, c = (np.load(p, allow_pickle=False) for p in paths.values())
    assert a.dtype == np.float32 and a.shape == (8, 28, 28, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_png_grid_and_epoch_choice(run, tmp_path):
    workdir, _ = run
    latest, first = tmp_path / "latest.png", tmp_path / "first.png"
    assert generate.main(["--workdir", str(workdir), "--num", "9", "--out", str(latest)]) == 0
    assert generate.main(["--workdir", str(workdir), "--num", "9", "--epoch", "1", "--out", str(first)]) == 0
    grid = visualize.image_grid(np.zeros((9, 28, 28, 1)), 3)
    image = plt_read(latest)
    assert image.shape[:2] == (grid.shape[0] * 3, grid.shape[1] * 3)
    assert latest.read_bytes() != first.read_bytes()


def plt_read(path):
    import matplotlib.pyplot as plt

    return plt.imread(path)


@pytest.mark.slow
def test_the_module_runs_as_a_program(run, tmp_path):
    workdir, _ = run
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "jaxgan.generate", "--workdir", str(workdir), "--num", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "generated.png").is_file()


def corrupt_weights(workdir):
    for path in (workdir / "checkpoints").rglob("*"):
        if path.is_file() and "state" in path.parts and path.stat().st_size > 0:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def wrong_shapes(workdir):
    """Make the checkpoints' config claim latent_dim 32: the saved kernels are then the wrong shape."""
    for meta in (workdir / "checkpoints").glob("epoch_*/meta/metadata"):
        values = json.loads(meta.read_text())
        values["config"]["latent_dim"] = 32
        meta.write_text(json.dumps(values))


@pytest.fixture
def damaged_run(run, tmp_path):
    import shutil

    def make(damage):
        workdir = tmp_path / "damaged"
        shutil.copytree(run[0], workdir)
        damage(workdir)
        return workdir

    return make


BAD_INPUTS = {
    "missing workdir": (lambda tmp, make: ["--workdir", str(tmp / "nope")], "does not exist"),
    "empty workdir": (lambda tmp, make: ["--workdir", str(tmp)], "has no checkpoint"),
    "workdir is a file": (lambda tmp, make: ["--workdir", str(tmp / "out.png")], "is not a directory"),
    "unreadable checkpoint": (
        lambda tmp, make: ["--workdir", str(make(corrupt_weights))],
        "is unusable: .*no older checkpoint is usable",
    ),
    "wrong-shape weights": (
        lambda tmp, make: ["--workdir", str(make(wrong_shapes))],
        r"g_params\.net\.linear_0\.kernel is float32\[16, 32\] but its config needs float32\[32, 32\]",
    ),
    "--num 0": (lambda tmp, make: ["--workdir", str(make(lambda _: None)), "--num", "0"], "--num must be positive"),
    "--num -5": (lambda tmp, make: ["--workdir", str(make(lambda _: None)), "--num", "-5"], "--num must be positive"),
    "--num abc": (lambda tmp, make: ["--workdir", str(make(lambda _: None)), "--num", "abc"], "invalid int value"),
    "unknown extension": (
        lambda tmp, make: ["--workdir", str(make(lambda _: None)), "--out", str(tmp / "out.jpg")],
        "the extension must be one of .png, .npy, .npz",
    ),
    "missing output directory": (
        lambda tmp, make: ["--workdir", str(make(lambda _: None)), "--out", str(tmp / "no" / "x.png")],
        "does not exist",
    ),
    "no source": (lambda tmp, make: ["--num", "4"], "one of the arguments --workdir --from-pt is required"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_overwrites_nothing(case, tmp_path, damaged_run, capsys):
    existing = tmp_path / "out.png"
    existing.write_bytes(b"keep me")
    make_args, message = BAD_INPUTS[case]
    args = make_args(tmp_path, damaged_run)
    if "--out" not in args:
        args += ["--out", str(existing)]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert generate.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m jaxgan.generate: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert existing.read_bytes() == b"keep me"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_load_state_reads_a_run(run):
    workdir, state = run
    loaded = checkpoint.load_state(workdir)
    assert int(loaded.step) == int(state.step) == 40
    for a, b in zip(jax.tree.leaves(loaded.g_params), jax.tree.leaves(state.g_params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_outputs_honour_the_umask_and_leave_no_temporary_file(run, tmp_path):
    workdir, _ = run
    previous = os.umask(0o022)
    try:
        for name in ("a.png", "a.npy", "a.npz"):
            assert generate.main(["--workdir", str(workdir), "--num", "4", "--out", str(tmp_path / name)]) == 0
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name  # as every other output; not mkstemp's 0600
    finally:
        os.umask(previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a.npz", "a.png"]
