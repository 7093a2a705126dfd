"""Data parallelism: 8 forced CPU devices and 2 processes (gloo collectives) equal one device.

Device counts are fixed when JAX starts, so the multi-device runs are subprocesses
(tests/subset_train.py: the real CLI on the first IMAGES images). Each subprocess is
shared by several assertions; the one-device reference runs in this process.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxgan.main as train_cli
from jaxgan import checkpoint, parallel, rundir, steps, train
from jaxgan import data as data_lib
from jaxgan.config import preset

ROOT = Path(__file__).resolve().parents[1]
CHILD = [sys.executable, str(ROOT / "tests" / "subset_train.py")]
IMAGES = 320  # 10 steps per epoch at the tiny preset's batch of 32
FLAGS = "--preset tiny --dataset mnist-5k --no-progress"
PARAM_ATOL = 1e-6  # float32 reduction order; measured gaps are 1e-7 to 3e-7 (pytest -s prints them)
METRIC_RTOL = 1e-5
# gloo's C++ logs share the children's stdout, written piece by piece ("[Gloo] Rank ", "2",
# " is connected to ", "3", ...) by several threads, so pieces of two messages can interleave anywhere
GLOO_PIECES = re.compile(
    r"\[Gloo\] Rank |\d+| is connected to |\s*peer ranks\. Expected number of connected peer ranks is : "
)


def without_gloo_log(stdout: str) -> str:
    """What a child printed once gloo's pieces (and every digit and blank) are taken out."""
    return re.sub(r"\s+", "", GLOO_PIECES.sub("", stdout))


def child_env(devices: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAXGAN_TEST_IMAGES": str(IMAGES),
        **extra,
    }


def max_gap(a, b) -> float:
    """Largest absolute difference over every array of two checkpointed states."""
    leaves_a = jax.tree.leaves(checkpoint.saved_tree(a))
    leaves_b = jax.tree.leaves(checkpoint.saved_tree(b))
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def assert_same_run(workdir: Path, reference: Path, epoch: int) -> None:
    got, want = checkpoint.load(workdir, epoch), checkpoint.load(reference, epoch)
    got_rows, want_rows = rundir.RunDir(workdir).read_metrics(epoch), rundir.RunDir(reference).read_metrics(epoch)
    assert len(got_rows) == len(want_rows) == epoch
    assert int(got.state.step) == int(want.state.step)
    gap = max_gap(got.state, want.state)
    params_gap = max_gap(
        want.state.replace(g_params=got.state.g_params, d_params=got.state.d_params), want.state
    )  # the params alone
    rel = max(abs(r[n] / f[n] - 1) for r, f in zip(got_rows, want_rows, strict=True) for n in steps.METRIC_NAMES)
    print(
        f"{workdir.parent.name}/{workdir.name} epoch {epoch}: max |gap| params {params_gap:.2g}, whole state {gap:.2g}; max relative metric gap {rel:.2g}"
    )  # pytest -s
    assert gap < PARAM_ATOL
    for row, ref in zip(got_rows, want_rows, strict=True):
        for name in steps.METRIC_NAMES:
            assert row[name] == pytest.approx(ref[name], rel=METRIC_RTOL), (epoch, name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mnist_5k) -> Path:
    """A one-device run of 2 epochs on IMAGES images: checkpoints of epochs 1 and 2."""
    workdir = tmp_path_factory.mktemp("one_device")
    subset = mnist_5k._replace(images=mnist_5k.images[:IMAGES], labels=mnist_5k.labels[:IMAGES])
    config = preset("tiny").replace(dataset="mnist-5k", epochs=2)
    train.train_and_evaluate(config, workdir, load_dataset=data_lib.given(subset), progress=False, log=lambda msg: None)
    return workdir


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory, reference) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """One process with 8 CPU devices: a data-parallel epoch; its resume to epoch 2 on one device;
    the one-device reference's epoch-1 checkpoint resumed to epoch 2 data-parallel; a batch of 30."""
    workdir = tmp_path_factory.mktemp("eight") / "run"
    from_one = workdir.parent / "from_one_device"
    shutil.copytree(reference, from_one)
    shutil.rmtree(checkpoint.step_path(checkpoint.checkpoint_dir(from_one), 2))
    runs = [
        f"{FLAGS} --workdir {workdir} --epochs 1 --data-parallel",
        f"{FLAGS} --workdir {workdir} --epochs 2 --no-data-parallel",
        f"{FLAGS} --workdir {from_one} --epochs 2 --data-parallel",
        f"{FLAGS} --workdir {workdir}-bad --data-parallel --batch-size 30",
    ]
    proc = subprocess.run(
        [*CHILD, *runs], capture_output=True, text=True, env=child_env(8), cwd=workdir.parent, timeout=600
    )
    return workdir, from_one, proc


@pytest.mark.slow
def test_eight_devices_equal_one(eight_devices, reference):
    workdir, _, proc = eight_devices
    assert proc.stdout.count("exit 0") == 3, proc.stderr
    assert "1 epoch on 8 CPU devices (data-parallel)" in proc.stdout
    assert_same_run(workdir, reference, epoch=1)


@pytest.mark.slow
def test_resume_on_another_device_count_equals_one_device(eight_devices, reference):
    """Checkpoints do not depend on the device count: 8 -> 1 and 1 -> 8 devices."""
    workdir, from_one, proc = eight_devices
    assert "resuming after epoch 1 on CPU ->" in proc.stdout, proc.stderr
    assert "resuming after epoch 1 on 8 CPU devices (data-parallel)" in proc.stdout, proc.stderr
    assert_same_run(workdir, reference, epoch=2)
    assert_same_run(from_one, reference, epoch=2)


@pytest.mark.slow
def test_batch_not_divisible_by_devices_is_a_one_line_error(eight_devices):
    *_, proc = eight_devices
    assert proc.stdout.splitlines()[-1] == "exit 2"
    error = proc.stderr.strip().splitlines()[-1]
    assert error == (
        "python -m jaxgan.train: error: --batch-size 30 does not divide by the 8 devices of --data-parallel; "
        "use a multiple of 8, e.g. 24"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_and_only_process_0_writes(tmp_path, reference):
    """2 processes x 2 CPU devices over gloo; process 0 given flags, process 1 the environment."""
    workdir, port = tmp_path / "run", free_port()
    run = f"{FLAGS} --workdir {workdir} --epochs 1 --data-parallel"
    commands = [
        ([*CHILD, f"{run} --coordinator-address localhost:{port} --num-processes 2 --process-id 0"], {}),
        (
            [*CHILD, f"{run} --distributed"],
            {
                "JAXGAN_COORDINATOR_ADDRESS": f"localhost:{port}",
                "JAXGAN_NUM_PROCESSES": "2",
                "JAXGAN_PROCESS_ID": "1",
            },
        ),
    ]
    procs = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(2, **env), cwd=tmp_path
        )
        for command, env in commands
    ]
    try:
        outputs = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0 and out.splitlines()[-1] == "exit 0", err
    assert "on 4 CPU devices in 2 processes (data-parallel)" in outputs[0][0]
    assert without_gloo_log(outputs[1][0]) == "exit"  # process 1 prints nothing of its own
    assert_same_run(workdir, reference, epoch=1)
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in (workdir / "samples").iterdir()) == ["epoch_0001.png", "progress.gif"]


def test_weak_scaling_device_counts():
    from benchmarks.weak_scaling import device_counts

    assert device_counts(8, 8) == [1, 2, 4, 8]
    assert device_counts(8, 6) == [1, 2, 4, 6]
    assert device_counts(1, 8) == [1]


def test_batch_size_must_divide_by_the_devices():
    parallel.check_batch_size(64, 8)
    with pytest.raises(parallel.ParallelError, match=r"--batch-size 100 does not divide by the 8 devices.*e\.g\. 96"):
        parallel.check_batch_size(100, 8)


def test_images_checksum_sees_any_change(mnist_5k):
    images = mnist_5k.images[:10].copy()
    crc = parallel.images_checksum(images)
    assert parallel.images_checksum(images.copy()) == crc
    images[3, 14, 14, 0] += 0.5
    assert parallel.images_checksum(images) != crc
    assert parallel.images_checksum(mnist_5k.images[:9]) != crc


def test_single_device_placement_is_plain_jit(tiny_config):
    placement = parallel.Placement(False)
    assert placement.mesh is None and placement.num_devices == 1 and placement.describe() == "CPU"
    x = placement.replicate({"a": np.ones(3, np.float32), "none": None})
    assert x["none"] is None and x["a"].sharding.device_set == {jax.devices()[0]}


def test_data_parallel_flag_and_resume(tmp_path):
    assert train_cli.parse(["--data-parallel"])[0].data_parallel
    assert not train_cli.parse(["--no-data-parallel"])[0].data_parallel
    assert not preset("small").data_parallel  # explicit: never switched on by the devices present
    checkpoint.check_resumable(preset("tiny"), preset("tiny").replace(data_parallel=True))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-processes", "0"], "--num-processes must be positive, got 0"),
        (["--num-processes", "2", "--process-id", "2"], "--process-id must be in 0 .. 1, got 2"),
    ],
)
def test_impossible_process_flags_are_usage_errors(tmp_path, flags, message):
    with pytest.raises(train_cli.cli.UsageError, match=message):
        train_cli.parse([*flags, "--workdir", str(tmp_path)])


@pytest.mark.slow
def test_two_processes_agree_to_stop_when_only_one_gets_sigterm(tmp_path):
    """SIGTERM to process 1 alone: both processes stop after the same epoch, exit 143, with that
    epoch's checkpoint saved (neither waits forever in a collective the other never enters)."""
    workdir, port = tmp_path / "run", free_port()
    run = f"{FLAGS} --workdir {workdir} --epochs 100000 --data-parallel"
    commands = [
        f"{run} --coordinator-address localhost:{port} --num-processes 2 --process-id 0",
        f"{run} --coordinator-address localhost:{port} --num-processes 2 --process-id 1",
    ]
    procs = [
        subprocess.Popen(
            [*CHILD, command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(2), cwd=tmp_path
        )
        for command in commands
    ]
    try:
        for line in procs[0].stdout:  # process 0 logs; process 1 is silent
            if "Epoch [1/" in line:  # a piece of gloo's log may precede it on the line
                break
        procs[1].send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    stopped = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 143 and out.splitlines()[-1] == "exit 143", err
        match = re.search(r"stopped by SIGTERM after epoch (\d+)/100000; checkpoint saved in (\S+)\.", err)
        assert match, err
        stopped.append((int(match[1]), match[2]))
    assert stopped[0] == stopped[1]  # the same epoch, the same checkpoint
    epoch = stopped[0][0]
    assert checkpoint.epochs_in(workdir)[-1] == epoch and checkpoint.load(workdir).epoch == epoch
