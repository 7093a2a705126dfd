"""`python -m jaxgan.train`: a whole tiny run writes every output; bad input exits 2 in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import PIL.Image
import pytest

import jaxgan.main as train_cli

REPO = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--no-progress"]


def run_cli(argv, capsys):
    status = train_cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def check_run_outputs(workdir: Path, epochs: int, sampled: list[int], dataset: str) -> list[dict]:
    config = json.loads((workdir / "config.json").read_text())
    assert config["preset"] == "tiny" and config["epochs"] == epochs and config["dataset_resolved"] == dataset
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    for row in rows:
        assert {"epoch", "step", "d_loss", "g_loss", "d_real", "d_fake", "seconds"} <= set(row)
        assert 0 < row["d_real"] < 1 and 0 < row["d_fake"] < 1 and row["d_loss"] > 0
    samples = sorted(p.name for p in (workdir / "samples").iterdir())
    assert samples == [f"epoch_{e:04d}.png" for e in sampled] + ["progress.gif"]
    with PIL.Image.open(workdir / "samples" / "progress.gif") as gif:  # one frame per grid, in order
        assert gif.n_frames == len(sampled) and gif.size == (3 * (4 * 30 + 2),) * 2
    samples.pop()
    grid = matplotlib.image.imread(workdir / "samples" / samples[-1])
    assert grid.shape[:2] == (3 * (4 * 30 + 2), 3 * (4 * 30 + 2))  # 4x4 grid of 28px + 2px padding, x3
    assert grid[..., 0].std() > 0.05  # not a blank picture
    assert (workdir / "losses.png").stat().st_size > 10_000
    return rows


@pytest.mark.slow
def test_tiny_run_on_mnist_5k_writes_every_output(tmp_path, capsys):
    workdir = tmp_path / "run"
    status, out, _ = run_cli(
        [*TINY, "--dataset", "mnist-5k", "--epochs", "3", "--sample-every", "2", "--workdir", str(workdir)], capsys
    )
    assert status == 0
    rows = check_run_outputs(workdir, epochs=3, sampled=[2, 3], dataset="mnist-5k")
    assert [r["step"] for r in rows] == [156, 312, 468]  # 5000 // 32 full batches per epoch
    lines = [line for line in out.splitlines() if line.startswith("Epoch [")]
    assert len(lines) == 3 and "D(x):" in lines[0] and "D(G(z)):" in lines[0] and "img/s" in lines[0]


@pytest.mark.slow
def test_tiny_run_on_a_tfds_dataset(tmp_path, capsys, write_tfds):
    rng = np.random.default_rng(0)
    pixels, labels = rng.integers(0, 256, (100, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 100)
    write_tfds("fashion_mnist", tmp_path / "tfds", {"train": (pixels, labels)})
    workdir = tmp_path / "run"
    argv = [*TINY, "--dataset", "fashion_mnist", "--data-dir", str(tmp_path / "tfds"), "--workdir", str(workdir)]
    status, _, _ = run_cli([*argv, "--epochs", "2", "--batch-size", "16", "--log-every", "2"], capsys)
    assert status == 0
    rows = check_run_outputs(workdir, epochs=2, sampled=[1, 2], dataset="fashion_mnist")
    assert [r["step"] for r in rows] == [6, 12]  # 100 // 16, in chunks of 2 steps


def test_flags_override_the_preset(tmp_path):
    config, explicit, args = train_cli.parse(
        ["--preset", "deep", "--lr", "1e-3", "--g-hidden", "64,32", "--workdir", str(tmp_path)]
    )
    assert (config.preset, config.lr, config.g_hidden, config.batch_size) == ("deep", 1e-3, (64, 32), 128)
    assert explicit == {"preset", "lr", "g_hidden"} and args.workdir == str(tmp_path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "huge"], "unknown preset 'huge'; choose one of: small, small-beta09, wide, deep, tiny"),
        (["--dataset", "mnistt"], "unknown dataset 'mnistt'; choose one of: auto, mnist-5k, mnist"),
        (["--dataset", "cifar10"], "'cifar10' is not 28x28 grayscale images"),
        (["--batch-size", "0"], "batch_size must be positive, got 0"),
        (["--epochs", "-2"], "epochs must be positive, got -2"),
        (["--latent-dim", "0"], "latent_dim must be positive"),
        (["--lr", "0"], "lr must be positive, got 0.0"),
        (["--lr=-1e-3"], "lr must be positive, got -0.001"),
        (["--beta1", "1.0"], r"beta1 must be in [0, 1), got 1.0"),
        (["--beta2", "-0.5"], r"beta2 must be in [0, 1), got -0.5"),
        (["--g-hidden", "128,x"], "expected comma-separated integers"),
        (["--batch-size", "ten"], "invalid int value: 'ten'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--conditioning", "projection"], "conditioning projection is for a conditional GAN: add --conditional"),
        (["--conditional", "--conditioning", "film"], "conditioning must be one of concat, projection, got 'film'"),
        (["--batch-size", "10000", "--dataset", "mnist-5k"], "batch_size 10000 is larger than the 5,000 images"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    status, _, err = run_cli([*TINY, "--workdir", str(tmp_path / "w"), *argv], capsys)
    assert status == 2
    assert err.startswith("python -m jaxgan.train: error: ") and err.count("\n") == 1
    assert message in err


def test_unwritable_workdirs_are_refused(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    status, _, err = run_cli([*TINY, "--workdir", str(a_file)], capsys)
    assert status == 2 and "exists and is not a directory" in err and err.count("\n") == 1
    status, _, err = run_cli([*TINY, "--workdir", str(a_file / "sub")], capsys)
    assert status == 2 and "cannot create workdir" in err and "Not a directory" in err and err.count("\n") == 1
    assert a_file.read_text() == "keep me"


def run_module(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "jaxgan.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_module_entry_point_exit_status_and_help(tmp_path):
    bad = run_module("--preset", "nope", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert (
        bad.stderr.strip()
        == "python -m jaxgan.train: error: unknown preset 'nope'; choose one of: small, small-beta09, wide, deep, tiny, "
        "cgan-small, cgan-deep-projection, dcgan, tiny-dcgan"
    )
    helped = run_module("--help", cwd=tmp_path)
    assert helped.returncode == 0
    for flag in (
        "--preset",
        "--dataset",
        "--epochs",
        "--batch-size",
        "--lr",
        "--beta1",
        "--seed",
        "--workdir",
        "--sample-every",
        "--data-dir",
    ):
        assert flag in helped.stdout


def test_every_config_flag_says_its_default_once():
    """--help names each flag's default exactly once (a help text that explains its automatic value
    keeps that explanation, without a second "(default: None)")."""
    import dataclasses
    import re

    from jaxgan import config as config_lib

    parser = train_cli.build_parser()
    actions = {a.dest: a for a in parser._actions}
    for field in dataclasses.fields(config_lib.Config):
        if field.name == "preset":
            continue
        text = actions[field.name].help
        assert text.count("(default:") == 1, (field.name, text)
        assert "(default: None)" not in text, field.name
    assert "(default: None)" not in re.sub(r"\s+", " ", parser.format_help())
