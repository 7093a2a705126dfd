"""Issue 16's models through the whole program: the loop, its class-ordered grids, exact resume,
conversion with BatchNorm running statistics, `generate --labels`, evaluate's conditional accuracy,
the labels check, the loss and model flags, and data parallelism with BatchNorm.

One conditional tiny-dcgan run (2 epochs of 10 steps) serves most tests.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxgan.main as train_cli
from jaxgan import checkpoint, convert, evaluate, generate, sampling, train, visualize
from jaxgan import data as data_lib
from jaxgan.config import preset
from jaxgan.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
IMAGES = 320  # 10 steps per epoch at batch 32
CONFIG = preset("tiny-dcgan").replace(conditional=True, epochs=2)


@pytest.fixture(scope="module")
def data(mnist_5k) -> Dataset:
    return Dataset(mnist_5k.images[:IMAGES], mnist_5k.labels[:IMAGES], "mnist-5k")


def fit(config, workdir, data, **kwargs):
    return train.train_and_evaluate(
        config, workdir, load_dataset=data_lib.given(data), progress=False, log=lambda _: None, **kwargs
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """A 2-epoch conditional tiny-dcgan run: checkpoints of epochs 1 and 2, the final state, the rows."""
    workdir = tmp_path_factory.mktemp("cdcgan") / "run"
    state, history = fit(CONFIG, workdir, data)
    return workdir, state, history


def saved_leaves(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(checkpoint.saved_tree(state))]


def without_timing(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in rows]


def test_the_loop_trains_it_with_running_statistics_and_class_ordered_grids(run):
    workdir, state, history = run
    assert int(state.step) == 20 and [row["epoch"] for row in history] == [1, 2]
    # G runs twice a step (G(z_d), G(z_g)), D three times (real, fake, D(G(z_g))), all in train mode.
    for stats, count in ((state.g_batch_stats, 40), (state.d_batch_stats, 60)):
        for layer in stats["net"].values():
            assert int(layer["num_batches_tracked"]) == count
            assert not np.allclose(layer["mean"], 0) and not np.allclose(layer["var"], 1)
    # The grid: one row per digit (grid_size 4 per row), the columns sharing their noise.
    z, labels = sampling.grid_inputs(state.config, state.key)
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 4))
    np.testing.assert_array_equal(z[:4], z[36:])
    expected = workdir / "expected.png"
    images = sampling.images_of(state.config, state.g_params, z, labels, state.g_batch_stats)
    visualize.save_grid(images, expected, 4)
    assert (workdir / "samples" / "epoch_0002.png").read_bytes() == expected.read_bytes()
    assert visualize.image_grid(images, 4).shape == (10 * 30 + 2, 4 * 30 + 2)


def test_resume_is_bit_identical_with_batch_norm_statistics(run, data, tmp_path):
    workdir, state, history = run
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    shutil.rmtree(checkpoint.step_path(checkpoint.checkpoint_dir(resumed), 2))
    again, rows = fit(CONFIG, resumed, data)
    assert int(again.step) == 20
    for a, b in zip(saved_leaves(again), saved_leaves(state), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert without_timing(rows) == without_timing(history)


def test_convert_carries_the_running_statistics_both_ways(run, tmp_path):
    torch = pytest.importorskip("torch")
    import torch_ref

    workdir, state, _ = run
    pt = tmp_path / "cdcgan.pt"
    assert convert.main([str(workdir), str(pt)]) == 0
    blob = torch.load(pt, weights_only=True)
    G, _ = torch_ref.build_models(state.config)
    G.load_state_dict(blob["generator"])  # strict: running_mean, running_var, num_batches_tracked too
    np.testing.assert_array_equal(G.net[1].running_var.numpy(), state.g_batch_stats["net"]["batch_norm_0"]["var"])
    assert int(G.net[4].num_batches_tracked) == 40
    # torch_ref's generator in eval mode draws the images jaxgan samples (running statistics).
    z, labels = sampling.grid_inputs(state.config, state.key)
    G.eval()
    with torch.no_grad():
        torch_images = G(torch.tensor(np.asarray(z)), torch.tensor(np.asarray(labels))).numpy().transpose(0, 2, 3, 1)
    jax_images = sampling.images_of(state.config, state.g_params, z, labels, state.g_batch_stats)
    np.testing.assert_allclose(jax_images, torch_images, atol=1e-6)
    # And back: a run directory whose state holds the same statistics, bit for bit.
    back = convert.pt_to_rundir(pt, tmp_path / "back")
    restored = checkpoint.load(back).state
    for a, b in zip(
        jax.tree.leaves((restored.g_batch_stats, restored.d_batch_stats)),
        jax.tree.leaves((state.g_batch_stats, state.d_batch_stats)),
        strict=True,
    ):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(a, b)


def test_generate_labels_draws_one_row_per_digit(run, tmp_path, capsys):
    workdir, state, _ = run
    out = tmp_path / "digits.png"
    argv = ["--workdir", str(workdir), "--labels", "0-9", "--num", "4", "--seed", str(CONFIG.seed), "--out", str(out)]
    assert generate.main(argv) == 0
    assert "digits 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 4 each, one row per digit" in capsys.readouterr().out
    # The run's own seed with its grid size redraws its last grid exactly.
    assert out.read_bytes() == (workdir / "samples" / "epoch_0002.png").read_bytes()
    npz = tmp_path / "sevens.npz"
    assert generate.main(["--workdir", str(workdir), "--labels", "7,1-2", "--num", "3", "--out", str(npz)]) == 0
    with np.load(npz) as f:
        np.testing.assert_array_equal(f["labels"], [7, 7, 7, 1, 1, 1, 2, 2, 2])
        z, labels = sampling.labelled_inputs(0, [7, 1, 2], 3, CONFIG.latent_dim)
        np.testing.assert_array_equal(f["z"], z)
        expected = sampling.images_of(state.config, state.g_params, z, labels, state.g_batch_stats)
        np.testing.assert_array_equal(f["images"], expected)
    # Without --labels a conditional generator draws the ten digits' rows.
    default = tmp_path / "default.png"
    assert generate.main(["--workdir", str(workdir), "--num", "4", "--out", str(default)]) == 0
    assert default.read_bytes() == out.read_bytes()


@pytest.fixture(scope="module")
def unconditional_run(tmp_path_factory, data):
    workdir = tmp_path_factory.mktemp("tiny") / "run"
    fit(preset("tiny").replace(epochs=1), workdir, data)
    return workdir


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("12", "--labels '12': digits must be 0-9, low to high"),
        ("9-3", "--labels '9-3': digits must be 0-9, low to high"),
        ("seven", "--labels 'seven': expected digits like 7, 0-9 or 1,4,7"),
        (None, "--labels needs a conditional generator; this one is not (train with --conditional)"),
    ],
)
def test_bad_labels_are_one_line_and_exit_2(labels, message, run, unconditional_run, tmp_path, capsys):
    workdir = run[0] if labels is not None else unconditional_run
    out = tmp_path / "x.png"
    assert generate.main(["--workdir", str(workdir), "--labels", labels or "7", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"python -m jaxgan.generate: error: {message}\n"
    assert not out.exists()


def test_evaluate_reports_the_conditional_accuracy(run, quality_cache, monkeypatch, capsys):
    monkeypatch.setenv("JAXGAN_CACHE", str(quality_cache))
    workdir, _, _ = run
    assert evaluate.main(["--workdir", str(workdir), "--num", "500", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for row in ("generator", "ceiling", "floor"):
        assert 0 <= result[row]["cond_acc"] <= 1
    assert result["ceiling"]["cond_acc"] > 0.5  # real digits with their own labels (a 30-step classifier)
    assert evaluate.main(["--workdir", str(workdir), "--num", "500"]) == 0
    table = capsys.readouterr().out
    assert re.search(r"cond acc\n", table) and re.search(r"floor \(untrained\).*\d\.\d{3}\n", table)


def test_eval_every_rows_hold_the_conditional_accuracy(data, evaluator, tmp_path):
    config = preset("tiny").replace(conditional=True, epochs=1, eval_every=1)
    log = []
    _, history = train.train_and_evaluate(
        config, tmp_path, load_dataset=data_lib.given(data), progress=False, log=log.append, evaluator=evaluator
    )
    assert 0 <= history[-1]["cond_acc"] <= 1
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["cond_acc"] == history[-1]["cond_acc"]
    assert "conditional accuracy" in "\n".join(log)


def test_a_conditional_gan_needs_labels_one_line_exit_2(data, tmp_path, capsys):
    unlabelled = data._replace(labels=np.full(IMAGES, -1, np.int32), name="unlabelled")
    argv = ["--preset", "cgan-small", "--workdir", str(tmp_path / "run"), "--no-progress"]
    assert train_cli.main(argv, load_dataset=data_lib.given(unlabelled)) == 2
    assert capsys.readouterr().err == (
        "python -m jaxgan.train: error: unlabelled has no labels; --conditional needs a labelled dataset "
        "(e.g. mnist-5k)\n"
    )
    assert not checkpoint.epochs_in(tmp_path / "run")
    bad = data._replace(labels=np.where(np.arange(IMAGES) == 5, 10, data.labels).astype(np.int32))
    with pytest.raises(data_lib.DataError, match="image 5 has label 10; --conditional needs labels 0-9"):
        data_lib.check_labels(bad, 10)


@pytest.mark.slow
def test_loss_conditional_and_arch_flags_train_end_to_end(data, tmp_path, capsys):
    argv = ["--preset", "tiny", "--loss", "hinge", "--conditional", "--arch", "dcgan", "--g-features", "4"]
    argv += ["--d-features", "4", "--epochs", "1", "--workdir", str(tmp_path), "--no-progress"]
    assert train_cli.main(argv, load_dataset=data_lib.given(data)) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["loss"], config["conditional"], config["arch"], config["g_features"]) == ("hinge", True, "dcgan", 4)
    state = checkpoint.load_state(tmp_path)
    assert state.d_batch_stats["net"]["batch_norm_1"]["mean"].shape == (8,)


@pytest.mark.slow
def test_data_parallel_batch_norm_uses_the_global_batch(run, tmp_path):
    """4 forced CPU devices, 8 images each: BatchNorm's batch statistics are the whole batch's (XLA
    all-reduces the means), so the run equals the one-device run up to float32 reduction order."""
    workdir, *_ = run
    flags = "--preset tiny-dcgan --conditional --dataset mnist-5k --epochs 1 --data-parallel --no-progress"
    flags += f" --workdir {tmp_path / 'dp'}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAXGAN_TEST_IMAGES": str(IMAGES),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "subset_train.py"), flags],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    assert "exit 0" in proc.stdout and "on 4 CPU devices (data-parallel)" in proc.stdout, proc.stderr
    parallel, single = checkpoint.load(tmp_path / "dp", 1).state, checkpoint.load(workdir, 1).state
    gaps = [
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
        for a, b in zip(saved_leaves(parallel), saved_leaves(single), strict=True)
    ]
    print(f"data-parallel tiny-dcgan (conditional), 4 devices: max |gap| {max(gaps):.2g}")  # pytest -s
    assert max(gaps) < 1e-5
