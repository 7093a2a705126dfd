"""Faults: signals, non-finite training, and kill -9 during a save. Real subprocesses where it matters."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import jaxgan.main as train_cli
from jaxgan import checkpoint, train
from jaxgan import data as data_lib
from jaxgan.config import preset
from jaxgan.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, "-m", "jaxgan.train", "--preset", "tiny", "--dataset", "mnist-5k", "--no-progress"]


def child_env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu"}


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, capsys, signum):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        [*TRAIN, "--workdir", str(workdir), "--epochs", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=tmp_path,
    )
    try:
        for line in proc.stdout:  # wait until training is under way
            if line.startswith("Epoch [1/1000]"):
                break
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    assert f"received {name}: stopping after this epoch" in out
    assert f"stopped by {name} after epoch" in err
    assert f"Resume with: python -m jaxgan.train --workdir {workdir}" in err
    restored = checkpoint.load(workdir)
    assert restored.epoch >= 1 and f"after epoch {restored.epoch}/1000" in err
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == restored.epoch
    if signum == signal.SIGINT:
        return  # resuming is the same for both signals: done once, below
    # The message's command resumes it (here with a new total, to finish fast).
    next_epoch = restored.epoch + 1
    assert train_cli.main(["--workdir", str(workdir), "--epochs", str(next_epoch), "--no-progress"]) == 0
    assert f"resuming after epoch {restored.epoch}" in capsys.readouterr().out
    assert checkpoint.load(workdir).epoch == next_epoch


@pytest.mark.slow
def test_absurd_lr_stops_with_the_epoch_and_metric(tmp_path, capsys):
    workdir = tmp_path / "run"
    args = ["--preset", "tiny", "--dataset", "mnist-5k", "--lr", "1e30", "--workdir", str(workdir), "--no-progress"]
    assert train_cli.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "training diverged: g_loss is nan at step 1 (epoch 1)" in err
    assert "no checkpoint had been saved yet" in err and "smaller --lr" in err
    assert not checkpoint.epochs_in(workdir)
    assert (workdir / "metrics.jsonl").read_text() == ""


@pytest.mark.slow
def test_nan_mid_run_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, mnist_5k):
    data = Dataset(mnist_5k.images[:640], mnist_5k.labels[:640], "mnist-5k")  # 20 steps per epoch
    train_steps = train.train_steps

    def poisoned(state, images, batch_indices):  # NaN into D's params once step 45 (epoch 3) is done
        state, metrics = train_steps(state, images, batch_indices)
        bad = state.step >= 45
        d_params = jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), state.d_params)
        return state.replace(d_params=d_params), metrics

    monkeypatch.setattr(train, "train_steps", poisoned)
    config = preset("tiny").replace(epochs=5, log_every=5)
    with pytest.raises(train.Diverged) as info:
        train.train_and_evaluate(
            config, tmp_path, load_dataset=data_lib.given(data), progress=False, log=lambda _: None
        )
    message = str(info.value)
    # The NaN params show in the loss of the next step.
    assert "training diverged: d_loss is nan at step 46 (epoch 3)" in message
    assert f"the last good checkpoint is epoch 2 ({tmp_path.absolute()}/checkpoints/epoch_0002)" in message
    monkeypatch.undo()
    restored = checkpoint.load(tmp_path)
    assert restored.epoch == 2 and int(restored.state.step) == 40
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    _, history = train.train_and_evaluate(
        config.replace(epochs=3), tmp_path, load_dataset=data_lib.given(data), progress=False, log=lambda _: None
    )
    assert [row["epoch"] for row in history] == [1, 2, 3]


# The child dies by SIGKILL inside orbax, after the epoch-2 checkpoint's files are written
# to a temporary directory and before it is renamed into place.
KILL_DURING_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    from orbax.checkpoint._src.path import atomicity

    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def dying_finalize(self, *args, **kwargs):
        if self.get_final().name == "epoch_0002":
            os.kill(os.getpid(), signal.SIGKILL)
        return await finalize(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = dying_finalize
    from jaxgan.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_kill_9_during_a_save_resumes_from_the_last_complete_checkpoint(tmp_path, capsys):
    workdir = tmp_path / "run"
    args = ["--preset", "tiny", "--dataset", "mnist-5k", "--workdir", str(workdir), "--epochs", "3", "--no-progress"]
    proc = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVE, *args], capture_output=True, text=True, env=child_env(), timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    assert "epoch_0001" in leftovers and "epoch_0002" not in leftovers
    assert any("tmp" in name for name in leftovers), leftovers  # the half-done save
    assert checkpoint.load(workdir).epoch == 1
    assert train_cli.main(args) == 0
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["epoch_0001", "epoch_0002", "epoch_0003"]
