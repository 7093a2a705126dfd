"""Faults: signals, non-finite training, kill -9 during a save, and every item of issue 14 (a workdir's
lock, unwritable and full disks, signals at the edges, hostile files, sizes). Real subprocesses where it
matters; tests that need root for setpriv or a tmpfs skip themselves where that is not available."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgan.main as train_cli
from jaxgan import checkpoint, rundir, steps, train
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
    run_steps = train.RUNS_STEPS["map"]

    def poisoned(stacked, images, batch_indices, labels=None):  # NaN into D's params once step 45 (epoch 3) is done
        stacked, metrics = run_steps(stacked, images, batch_indices, labels)
        bad = stacked.step[0] >= 45
        d_params = jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), stacked.d_params)
        return stacked.replace(d_params=d_params), metrics

    monkeypatch.setitem(train.RUNS_STEPS, "map", poisoned)
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


# Issue 14: never lose a run. One test per numbered item, as a user runs the programs: many command
# lines share one process (tests/cli_cases.py: one JAX start-up, each case's own stdout/stderr).

CASES = [sys.executable, str(ROOT / "tests" / "cli_cases.py")]
IMAGES = 320  # 10 steps per epoch at the tiny preset's batch of 32
TINY = "--preset tiny --dataset mnist-5k --no-progress"


def run_cases(*cases: str, cwd, prefix=(), timeout=300) -> list[dict]:
    """Run `cases` ('PROGRAM ARGS') in one child process; each case's argv, status, stdout, stderr.

    The child's own stderr (outside every case) must hold no traceback either."""
    env = {**child_env(), "JAXGAN_TEST_IMAGES": str(IMAGES)}
    proc = subprocess.run([*prefix, *CASES, *cases], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(cases), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr, proc.stderr[-3000:]
    return results


def one_line_error(result: dict, program: str = "train") -> str:
    """The error line of a case that must exit 2 with exactly one line on stderr and no traceback."""
    err = result["stderr"]
    assert result["status"] == 2, result
    assert err.count("\n") == 1 and err.startswith(f"python -m jaxgan.{program}: error: "), result
    return err.strip()


def snapshot(workdir: Path) -> dict[str, bytes]:
    """Every file under `workdir` (but its lock) and its bytes: to show that nothing changed."""
    return {
        str(p.relative_to(workdir)): p.read_bytes()
        for p in sorted(workdir.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_5k) -> Path:
    """R: a finished 2-epoch tiny run on IMAGES images, a checkpoint, sample grid and row per epoch."""
    workdir = tmp_path_factory.mktemp("finished") / "R"
    subset = Dataset(mnist_5k.images[:IMAGES], mnist_5k.labels[:IMAGES], "mnist-5k")
    config = preset("tiny").replace(dataset="mnist-5k", epochs=2, checkpoint_every=1, sample_every=1)
    train.train_and_evaluate(config, workdir, load_dataset=data_lib.given(subset), progress=False, log=lambda _: None)
    return workdir


@pytest.fixture
def copy_of(finished_run, tmp_path):
    """copy_of(name): a fresh copy of the finished run R."""

    def make(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(finished_run, target, symlinks=True)
        return target

    return make


def unprivileged_prefix() -> list[str] | None:
    """A command prefix under which file permissions hold ([] for a normal user; for root, setpriv
    dropping the capabilities that bypass them); None when root cannot drop them."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        return None
    return prefix


def test_item1_unwritable_paths_are_refused_before_training(copy_of, tmp_path):
    """chmod 555/444 on what a run writes: one line naming it, exit 2, nothing changed (not orbax's 300 s wait)."""
    prefix = unprivileged_prefix()
    if prefix is None:
        pytest.skip("root without setpriv cannot make a directory unwritable to itself")
    modes = {"checkpoints": 0o555, ".": 0o555, "samples": 0o555, "metrics.jsonl": 0o444, "config.json": 0o444}
    workdirs, before = {}, {}
    for name, mode in modes.items():
        workdir = copy_of(f"w_{name.strip('.') or 'workdir'}")
        before[name] = snapshot(workdir)
        (workdir / name).chmod(mode)
        workdirs[name] = workdir
    results = run_cases(
        *(f"train --workdir {w} --epochs 4 --no-progress" for w in workdirs.values()), cwd=tmp_path, prefix=prefix
    )
    for (name, workdir), result in zip(workdirs.items(), results, strict=True):
        message = one_line_error(result)
        assert "Permission denied" in message and str(workdir / name).rstrip("/.") in message, message
        (workdir / name).chmod(0o755 if (workdir / name).is_dir() else 0o644)
        assert snapshot(workdir) == before[name], name


@pytest.mark.slow
def test_item1_a_save_that_fails_later_stops_at_once_in_one_line(tmp_path):
    """checkpoints/ replaced by a file mid-run: the next save fails, one line names it; exit 2 within seconds."""
    workdir = tmp_path / "run"
    flags = f"{TINY} --workdir {workdir} --epochs 100000 --checkpoint-every 1 --sample-every 100000"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "subset_train.py"), flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**child_env(), "JAXGAN_TEST_IMAGES": str(IMAGES)},
    )  # fmt: skip
    try:
        for line in proc.stdout:
            if line.startswith("Epoch [3/"):
                break
        blocker = tmp_path / "blocker"
        blocker.write_text("not a directory any more")
        (workdir / "checkpoints").rename(tmp_path / "moved")
        for _ in range(100):  # the run's next save may have made checkpoints/ again in between
            try:
                blocker.rename(workdir / "checkpoints")  # atomic; fails onto a directory
                break
            except OSError:
                shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
        assert (workdir / "checkpoints").is_file()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "python -m jaxgan.train: error: cannot save checkpoint" in err, err
    # The OS error depends on where the save was when the directory went: a file in its place,
    # or the directory gone from under an asynchronous write.
    assert "Not a directory" in err or "No such file or directory" in err, err
    assert "no complete checkpoint is left" in err or "the last good checkpoint is" in err, err


def privileged_mounts(tmp_path) -> bool:
    """Whether this process may mount a tmpfs in a mount namespace of its own (unshare -m)."""
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    result = subprocess.run(
        ["unshare", "-m", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True
    )
    return result.returncode == 0


@pytest.mark.slow
def test_item8_full_read_only_and_inodeless_disks(tmp_path):
    """tmpfs of 1 MB and 300 KB (disk full mid-run and at the first save), read-only, out of inodes:
    one line each, exit 2; after a full disk the last good checkpoint is kept and usable."""
    if not privileged_mounts(tmp_path):
        pytest.skip("needs unshare -m and mount (root) for a tmpfs")
    mounts = {"full": "size=1m", "tiny": "size=300k", "ro": "size=1m,ro", "inodes": "size=1m,nr_inodes=8"}
    script = ["set -e"]
    for name, options in mounts.items():
        (tmp_path / name).mkdir()
        script.append(f"mount -t tmpfs -o {options} tmpfs {tmp_path / name}")
    script.append(f"for i in 1 2 3 4 5 6 7 8 9; do touch {tmp_path / 'inodes'}/f$i 2>/dev/null || true; done")
    cases = [
        f"train {TINY} --workdir {tmp_path}/full/run --epochs 8 --checkpoint-every 1 --keep-checkpoints 8",
        f"generate --workdir {tmp_path}/full/run --num 4 --out {tmp_path}/kept.npy",
        f"train {TINY} --workdir {tmp_path}/tiny/run --epochs 3",
        f"train {TINY} --workdir {tmp_path}/ro/run --epochs 3",
        f"train {TINY} --workdir {tmp_path}/inodes/run --epochs 3",
    ]
    script.append("exec " + " ".join(map(shlex.quote, [*CASES, *cases])))
    env = {**child_env(), "JAXGAN_TEST_IMAGES": str(IMAGES)}
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", "\n".join(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(cases), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    full, kept, tiny, read_only, inodes = results
    assert "No space left on device" in one_line_error(full)
    assert "Epoch [1/8]" in full["stdout"]  # it trained, then the disk filled up
    assert kept["status"] == 0, kept  # the last good checkpoint is usable
    assert "No space left on device" in one_line_error(tiny)
    assert "Read-only file system" in one_line_error(read_only)
    assert "No space left on device" in one_line_error(inodes)


def start_training(workdir: Path, cwd: Path, *flags: str, images: int = IMAGES) -> subprocess.Popen:
    """A long tiny run on `images` images in `workdir` (checkpoints every epoch), returned once its
    first epoch is done."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "subset_train.py"),
         f"{TINY} --workdir {workdir} --epochs 100000 --checkpoint-every 1 --sample-every 100000 " + " ".join(flags)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
        env={**child_env(), "JAXGAN_TEST_IMAGES": str(images)},
    )  # fmt: skip
    for line in proc.stdout:
        if line.startswith("Epoch [1/"):
            return proc
    proc.kill()
    raise AssertionError(proc.stderr.read())


@pytest.mark.slow
def test_item2_a_workdir_has_one_run_and_readers_tolerate_it(tmp_path):
    """A second run (and a --no-resume) on a live workdir exits 2 at once naming the holder's PID;
    generate keeps reading the live run through its keep-N cleanup; kill -9 leaves no stale lock."""
    workdir = tmp_path / "run"
    # Epochs of 50 steps: a checkpoint lives a few tenths of a second, about as long as one read.
    live = start_training(workdir, tmp_path, "--keep-checkpoints 2", images=1600)
    try:
        cases = [f"train {TINY} --workdir {workdir} --epochs 3", f"train {TINY} --workdir {workdir} --no-resume"]
        cases += [f"generate --workdir {workdir} --num 4 --out {tmp_path}/g{i}.npy" for i in range(8)]
        results = run_cases(*cases, cwd=tmp_path)
        assert live.poll() is None  # still training, its checkpoints untouched by the --no-resume
        assert checkpoint.epochs_in(workdir)
    finally:
        live.kill()  # SIGKILL: the OS releases the lock
        live.wait()
    for result in results[:2]:
        message = one_line_error(result)
        assert f"is in use by another run (PID {live.pid} on " in message, message
    for result in results[2:]:
        assert result["status"] == 0 and result["stderr"] == "", result
    rundir.RunDir(workdir).lock()  # no stale lock after kill -9


def test_item3_no_resume_changes_nothing_until_everything_was_checked(copy_of, tmp_path):
    """--no-resume with a batch larger than the data, data that cannot load, or a bad flag: exit 2,
    and the old run's checkpoints, metrics and samples are all still there."""
    workdir = copy_of("R")
    (tmp_path / "nodata").mkdir()
    before = snapshot(workdir)
    results = run_cases(
        f"train {TINY} --workdir {workdir} --no-resume --batch-size 6000",
        f"train --preset tiny --no-progress --workdir {workdir} --no-resume --dataset ./nodata",
        f"train {TINY} --workdir {workdir} --no-resume --latent-dim 1000000000",
        cwd=tmp_path,
    )
    messages = [one_line_error(r) for r in results]
    assert "batch_size 6000 is larger than the 320 images" in messages[0]
    assert "no IDX files in" in messages[1]
    assert "latent_dim must be at most 65,536" in messages[2]
    assert snapshot(workdir) == before
    assert checkpoint.epochs_in(workdir) == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_item4_a_signal_after_the_last_epoch_lets_the_final_save_finish(tmp_path, signum):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "subset_train.py"), f"{TINY} --workdir {workdir} --epochs 2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**child_env(), "JAXGAN_TEST_IMAGES": str(IMAGES)},
    )  # fmt: skip
    try:
        for line in proc.stdout:
            if line.startswith("Epoch [2/2]"):
                proc.send_signal(signum)  # during the final save, the pictures or the summary
                break
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and err == "", err  # the run is complete: nothing lost, nothing to resume
    assert "done: 2 epochs" in out
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["epoch_0001", "epoch_0002"]
    assert checkpoint.load(workdir).epoch == 2
    assert (workdir / "samples" / "progress.gif").is_file()


# tests/subset_train.py with a signal to itself as the run starts its closing pictures and summary.
SIGNAL_IN_FINISH = """
import os, runpy, signal, sys
from jaxgan import train
signum, sys.argv = int(sys.argv[-1]), sys.argv[1:-1]  # [script, flags]
finish = train.Loop.finish
def signalled_finish(self, *args):
    os.kill(os.getpid(), signum)
    return finish(self, *args)
train.Loop.finish = signalled_finish
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_item4_a_signal_while_the_closing_pictures_are_drawn_lets_them_finish(tmp_path, signum):
    """The run's last epoch is saved: a signal during its pictures and summary asks to stop after
    them (not "stopped before training began", nor pictures left half drawn)."""
    workdir = tmp_path / "run"
    script = str(ROOT / "tests" / "subset_train.py")
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_IN_FINISH, script, f"{TINY} --workdir {workdir} --epochs 2", str(int(signum))],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**child_env(), "JAXGAN_TEST_IMAGES": str(IMAGES)},
    )  # fmt: skip
    assert done.returncode == 0 and "before training began" not in done.stderr, done.stderr
    assert f"received {signum.name}" in done.stdout + done.stderr and "done: 2 epochs" in done.stdout
    assert (workdir / "losses.png").is_file() and (workdir / "samples" / "progress.gif").is_file()
    assert checkpoint.load(workdir).epoch == 2


def wait_until_catching(pid: int, signum: int, timeout: float = 120) -> None:
    """Wait until process `pid` has a handler for `signum` (Linux: SigCgt in /proc/PID/status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        if caught >> (signum - 1) & 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never handled signal {signum}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc to see the handler")
def test_item5_ctrl_c_during_start_up_always_stops_at_once(tmp_path):
    """SIGINT at any moment of start-up once jaxgan's first line ran (imports, JAX's own start-up, data,
    compiling): exit 130 and one line. (Python's own start-up before that is Python's.)

    On a fast machine with XLA's cache warm, the later delays may land after start-up, in the first
    epoch: that is a stop during training (exit 130, the stop line with its resume advice; tested in
    full above), not a start-up one. The first delay, 0, always lands in start-up."""
    for program, delay in [("train", d) for d in (0.0, 0.3, 0.7, 1.2, 2.0)] + [("generate", d) for d in (0.0, 1.0)]:
        workdir, out = tmp_path / f"{program}{delay}", tmp_path / f"{program}{delay}.npy"
        args = ["--preset", "tiny", "--dataset", "mnist-5k", "--workdir", str(workdir), "--epochs", "2"]
        if program == "generate":
            args = ["--workdir", str(tmp_path / "missing"), "--out", str(out)]
        proc = subprocess.Popen(
            [sys.executable, "-m", f"jaxgan.{program}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=child_env(),
        )  # fmt: skip
        wait_until_catching(proc.pid, signal.SIGTERM)  # jaxgan/__init__ ran: Python does not catch SIGTERM
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (program, delay, err)
        assert f"python -m jaxgan.{program}: stopped by SIGINT" in err.splitlines()[-1], (program, delay, err)
        if "Resume with" in err and delay > 0:  # start-up was over: a stop in the first epoch
            continue
        assert err.count("\n") == 1, (program, delay, err)
        assert not checkpoint.epochs_in(workdir) and not out.exists()


def copy_in_another_runs_checkpoint(workdir: Path, tmp_path: Path, *, relabel: bool) -> None:
    """Put a small-preset checkpoint of epoch 1 into tiny run `workdir` as epoch_0005; with
    `relabel`, its metadata is edited to say epoch 5 too."""
    other = tmp_path / f"other{relabel}"
    with checkpoint.Checkpointer(other) as saver:
        saver.save(steps.create_state(preset("small"), 0), 1, dataset="mnist-5k", num_examples=IMAGES)
    target = workdir / "checkpoints" / "epoch_0005"
    shutil.copytree(other / "checkpoints" / "epoch_0001", target)
    if relabel:
        meta = json.loads((target / "meta" / "metadata").read_text())
        (target / "meta" / "metadata").write_text(json.dumps({**meta, "epoch": 5}))


def test_item6_a_copied_in_checkpoint_is_refused_before_anything_is_written(copy_of, tmp_path):
    mislabelled, relabelled = copy_of("mislabelled"), copy_of("relabelled")
    copy_in_another_runs_checkpoint(mislabelled, tmp_path, relabel=False)
    copy_in_another_runs_checkpoint(relabelled, tmp_path, relabel=True)
    before = {w: snapshot(w) for w in (mislabelled, relabelled)}
    results = run_cases(
        f"train --workdir {mislabelled} --epochs 7 --no-progress",
        f"train --workdir {relabelled} --epochs 7 --no-progress",
        f"generate --workdir {mislabelled} --out {tmp_path}/g.png",
        cwd=tmp_path,
    )
    mislabelled_line, relabelled_line = one_line_error(results[0]), one_line_error(results[1])
    assert (
        "epoch_0005 is unusable: ValueError: its metadata says it is epoch 1, not 5 as its name says"
        in mislabelled_line
    )
    assert "the checkpoint of epoch 2 is usable: delete" in mislabelled_line
    assert "epoch_0005 is not this run's: it has preset=small, the run's config.json preset=tiny" in relabelled_line
    assert "its metadata says it is epoch 1, not 5" in one_line_error(results[2], "generate")
    for workdir, files in before.items():
        assert snapshot(workdir) == files


@pytest.mark.slow  # torch, or several programs that compile
def test_item7_convert_refuses_a_non_empty_directory_without_force(finished_run, tmp_path):
    pytest.importorskip("torch")
    from jaxgan import convert

    pt = tmp_path / "good.pt"
    state = checkpoint.load_state(finished_run)
    convert.save_pt(pt, state.config, state)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "config.json").write_text("the user's own file")
    results = run_cases(
        f"convert {pt} {existing}",
        f"convert {pt} {existing} --force",
        f"convert {pt} {finished_run} --force",
        cwd=tmp_path,
    )
    assert "is not empty; choose a new directory, or add --force" in one_line_error(results[0], "convert")
    assert results[1]["status"] == 0, results[1]
    assert json.loads((existing / "config.json").read_text())["preset"] == "tiny"  # replaced, as --force said
    assert checkpoint.epochs_in(existing) == [0]
    assert "already holds checkpoints" in one_line_error(results[2], "convert")


def truncate_data_files(step_dir: Path) -> None:
    """Cut the array data files of a checkpoint in half (its metadata stays readable)."""
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d" and path.stat().st_size > 0:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.slow  # reads and generates from several checkpoints
def test_item9_corrupt_checkpoints_are_one_line_with_the_fallback_hint(copy_of, tmp_path):
    data, meta, orbax_meta, everything = (copy_of(n) for n in ("data", "meta", "orbax_meta", "everything"))
    truncate_data_files(data / "checkpoints" / "epoch_0002")
    (meta / "checkpoints" / "epoch_0002" / "meta" / "metadata").write_text("{not json")
    (orbax_meta / "checkpoints" / "epoch_0002" / "_CHECKPOINT_METADATA").write_text("{not json")
    for epoch in (1, 2):
        truncate_data_files(everything / "checkpoints" / f"epoch_{epoch:04d}")
    results = run_cases(
        f"train --workdir {data} --epochs 3 --no-progress",
        f"generate --workdir {data} --out {tmp_path}/a.png",
        f"train --workdir {meta} --epochs 3 --no-progress",
        f"generate --workdir {orbax_meta} --out {tmp_path}/b.png",
        f"train --workdir {everything} --epochs 3 --no-progress",
        cwd=tmp_path,
    )
    hint = "the checkpoint of epoch 1 is usable: delete"
    assert "epoch_0002 is unusable" in (line := one_line_error(results[0])) and hint in line
    assert hint in one_line_error(results[1], "generate")
    assert "epoch_0002 is unusable: JSONDecodeError" in (line := one_line_error(results[2])) and hint in line
    assert results[3]["status"] == 0 and results[3]["stderr"] == "", results[3]  # orbax's own metadata is not needed
    assert "no older checkpoint is usable" in one_line_error(results[4])


def hostile_pt_files(tmp_path: Path, state) -> dict[str, Path]:
    """.pt files that are empty, hold tensors NumPy cannot take, odd keys, or configs of the wrong types and sizes."""
    import torch

    from jaxgan import convert

    g_sd, d_sd = convert.to_torch_state_dict(state)
    config = state.config.to_dict()
    blobs = {
        "bf16": {"generator": {k: v.bfloat16() for k, v in g_sd.items()}},
        "sparse": {"generator": {k: v.to_sparse() for k, v in g_sd.items()}},
        "int keys": {"generator": dict(enumerate(g_sd.values()))},
        "tuple keys": {"generator": {(i,): v for i, v in enumerate(g_sd.values())}},
        "a list state dict": {"generator": list(g_sd.values())},
        "latent_dim '16'": {"config": {**config, "latent_dim": "16"}},
        "latent_dim None": {"config": {**config, "latent_dim": None}},
        "g_hidden 32": {"config": {**config, "g_hidden": 32}},
        "a list config": {"config": [1, 2]},
        "seed 2**70": {"config": {**config, "seed": 2**70}},
        "latent_dim 10**9": {"config": {**config, "latent_dim": 10**9}},
        "no config": {"config": None},
    }
    files = {"empty": tmp_path / "empty.pt"}
    files["empty"].write_bytes(b"")
    for name, change in blobs.items():
        blob = {"generator": g_sd, "discriminator": d_sd, "config": config, **change}
        if blob["config"] is None:
            del blob["config"]
        files[name] = tmp_path / (name.replace(" ", "_").replace("'", "").replace("*", "") + ".pt")
        torch.save(blob, files[name])
    return files


@pytest.mark.slow  # torch, or several programs that compile
def test_item10_hostile_pt_files_and_metadata_are_one_line(finished_run, copy_of, tmp_path):
    pytest.importorskip("torch")
    files = hostile_pt_files(tmp_path, checkpoint.load_state(finished_run))
    bad_meta = copy_of("bad_meta")
    meta_file = bad_meta / "checkpoints" / "epoch_0002" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "config": {**meta["config"], "lr": "abc"}}))
    cases = [f"convert {shlex.quote(str(f))} {tmp_path / f'out{i}'}" for i, f in enumerate(files.values())]
    cases += [f"generate --from-pt {shlex.quote(str(f))} --out {tmp_path}/g.npy" for f in files.values()]
    cases.append(f"train --workdir {bad_meta} --epochs 3 --no-progress")
    results = run_cases(*cases, cwd=tmp_path)
    n = len(files)
    expected = {
        "empty": "cannot read", "bf16": "net.0.weight has dtype bfloat16, expected float32",
        "sparse": "net.0.weight is a sparse_coo tensor", "int keys": "unexpected key 0",
        "tuple keys": "unexpected key (0,)", "a list state dict": "generator state dict is a list",
        "latent_dim '16'": "latent_dim must be an integer, got '16'", "latent_dim None": "latent_dim must be an integer, got None",
        "g_hidden 32": "g_hidden must be a list of integers, got 32", "a list config": "a config must be a mapping",
        "seed 2**70": "seed must be an integer in [0, 2**32)", "latent_dim 10**9": "latent_dim must be at most 65,536",
        "no config": "has no config: name its preset with python -m jaxgan.convert",
    }  # fmt: skip
    for i, name in enumerate(files):
        for program, result in (("convert", results[i]), ("generate", results[n + i])):
            assert expected[name] in one_line_error(result, program), (name, program)
    line = one_line_error(results[-1])
    assert "lr must be a number, got 'abc'" in line and "the checkpoint of epoch 1 is usable" in line
    assert not any((tmp_path / f"out{i}").exists() for i in range(n)) and not (tmp_path / "g.npy").exists()


def test_item11_sizes_that_cannot_fit_are_refused_before_compiling(copy_of, tmp_path):
    workdir = copy_of("R")
    huge = ",".join(["65536"] * 16)  # within every bound, but about 1.8 TB of parameters and Adam states
    flags = {
        "--latent-dim 1000000000": "latent_dim must be at most 65,536, got 1,000,000,000",
        "--g-hidden 100000000": "g_hidden must be at most 32 widths of at most 65,536, got 100000000",
        "--g-hidden 2147483648": "g_hidden must be at most 32 widths of at most 65,536",
        "--grid-size 1000": "grid_size must be at most 32, got 1,000",
        f"--grid-size {2**70}": "grid_size must be at most 32",
        f"--latent-dim {2**70}": "latent_dim must be at most 65,536",
        f"--seed {2**64}": "seed must be an integer in [0, 2**32)",
        f"--seed {2**32}": "seed must be an integer in [0, 2**32), got 4294967296",  # would alias seed 0
        f"--g-hidden {huge}": "of memory (state",
    }
    cases = [f"train {TINY} --workdir {tmp_path}/new --epochs 1 {flag}" for flag in flags]
    cases += [
        f"train --workdir {workdir} --epochs 3 --grid-size 1000 --no-progress",  # the same bound on resume
        f"generate --workdir {workdir} --num 10000000 --out {tmp_path}/g.npy",
        f"generate --workdir {workdir} --num 2000 --out {tmp_path}/g.png",
    ]
    results = run_cases(*cases, cwd=tmp_path)
    for (flag, message), result in zip(flags.items(), results, strict=False):
        assert message in one_line_error(result), flag
        assert "Epoch [" not in result["stdout"]
    assert "grid_size must be at most 32, got 1,000" in one_line_error(results[len(flags)])
    assert "--num must be at most 1,000,000" in one_line_error(results[-2], "generate")
    assert "at most 1024 for a .png grid" in one_line_error(results[-1], "generate")
    assert not (tmp_path / "new" / "checkpoints").exists()


def test_item12_workdir_entries_of_the_wrong_kind_are_found_before_training(copy_of, tmp_path):
    kinds = {
        "metrics.jsonl is a directory": ("metrics.jsonl", "is a directory, where the run writes a file"),
        "samples is a file": ("samples", "exists and is not a directory"),
        "checkpoints is a file": ("checkpoints", "exists and is not a directory"),
        "checkpoints is a symlink loop": ("checkpoints", "is a broken symbolic link (or a loop of them)"),
    }
    workdirs = {}
    for i, (case, (name, _)) in enumerate(kinds.items()):
        workdir = tmp_path / f"w{i}"
        workdir.mkdir()
        target = workdir / name
        if "directory" in case:
            target.mkdir()
        elif "loop" in case:
            target.symlink_to(target)
        else:
            target.write_text("a file")
        workdirs[case] = workdir
    remaining = 4056 - len(
        str(tmp_path)
    )  # a workdir path of 4,056 bytes: its files fit in PATH_MAX, not its checkpoints
    parts = ["d" * 200] * (remaining // 201) + ["e" * (remaining % 201 - 1)] * (remaining % 201 > 1)
    deep = tmp_path.joinpath(*parts)
    assert len(str(deep)) in (4055, 4056)
    results = run_cases(*(f"train {TINY} --workdir {w} --epochs 1" for w in [*workdirs.values(), deep]), cwd=tmp_path)
    for (case, (name, message)), result in zip(kinds.items(), results, strict=False):
        line = one_line_error(result)
        assert message in line and name in line, case
    assert "is too deep: its checkpoints need paths of up to" in one_line_error(results[-1])
    assert all(not (w / "config.json").exists() for w in workdirs.values())


@pytest.mark.slow  # torch, or several programs that compile
def test_item13_smaller_ones(finished_run, copy_of, tmp_path):
    """torch_ref.train checks --out first; --distributed and --coordinator-address in one line; generate
    removes a killed run's temporary file; non-finite weights; one seed rule; --leaky-slope bounded."""
    pytest.importorskip("torch")
    nan_run = tmp_path / "nan"
    state = checkpoint.load_state(finished_run)
    with checkpoint.Checkpointer(nan_run) as saver:
        nan = jax.tree.map(lambda p: p * jnp.nan, state.g_params)
        saver.save(state.replace(g_params=nan), 2, dataset="mnist-5k", num_examples=IMAGES)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".out.npz.{int(dead.stdout)}.tmp.npz"  # generate killed mid-write, by that process
    leftover.write_bytes(b"half an npz")
    (tmp_path / "adir.pt").mkdir()
    cases = {
        f"torch_ref.train --preset tiny --out {tmp_path}/adir.pt": f"--out {str(tmp_path / 'adir.pt')!r} is a directory",
        f"torch_ref.train --preset tiny --out {tmp_path}/no/x.pt": "does not exist",
        "train --preset tiny --no-progress --distributed": "cannot join a multi-process run",
        "train --preset tiny --no-progress --coordinator-address localhost": "--coordinator-address must be HOST:PORT",
        f"generate --workdir {nan_run} --out {tmp_path}/n.png": "are not finite (NaN or inf)",
        f"evaluate --workdir {nan_run}": "are not finite (NaN or inf)",
        f"train {TINY} --workdir {tmp_path}/s --seed -1": "seed must be an integer in [0, 2**32), got -1",
        f"generate --workdir {finished_run} --seed -1": "--seed must be an integer in [0, 2**32), got -1",
        f"evaluate --workdir {finished_run} --seed -1": "--seed must be an integer in [0, 2**32), got -1",
        f"train {TINY} --workdir {tmp_path}/s --leaky-slope inf": "leaky_slope must be in [0, 1], got inf",
    }
    results = run_cases(*cases, f"generate --workdir {finished_run} --num 4 --out {tmp_path}/out.npz", cwd=tmp_path)
    for (case, message), result in zip(cases.items(), results, strict=False):
        program = case.split()[0].removeprefix("torch_ref.")
        err = result["stderr"]
        assert result["status"] == 2 and err.count("\n") == 1 and message in err, (case, result)
        assert "step" not in result["stdout"], case  # nothing trained before the refusal
        if program == "train" and case.startswith("torch_ref"):
            assert err.startswith("python -m torch_ref.train: error: ")
    assert results[-1]["status"] == 0 and not leftover.exists()
    with np.load(tmp_path / "out.npz") as f:
        assert f["images"].shape == (4, 28, 28, 1)
