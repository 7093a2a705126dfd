"""Checkpoints: save/restore of the whole state, exact resume, conflicts and corruption."""

import asyncio
import gc
import json
import shutil

import jax
import numpy as np
import pytest

import jaxgan.main as train_cli
from jaxgan import checkpoint, steps, train
from jaxgan import data as data_lib
from jaxgan.config import preset
from jaxgan.data import Dataset

TIMING = ("seconds", "images_per_s")


@pytest.fixture(scope="module")
def data_640(mnist_5k):
    """The first 640 digits: 20 steps per epoch of the tiny preset."""
    return Dataset(mnist_5k.images[:640], mnist_5k.labels[:640], "mnist-5k")


def leaves(state):
    return jax.tree.leaves(checkpoint.saved_tree(state))


def assert_same_state(a, b):
    assert a.config == b.config
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def rows(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def fit(config, workdir, data, **kwargs):
    log = []
    state, history = train.train_and_evaluate(
        config, workdir, load_dataset=data_lib.given(data), progress=False, log=log.append, **kwargs
    )
    return state, history, "\n".join(log)


def test_roundtrip_restores_every_array_and_the_key(tmp_path, tiny_config, data_640):
    state = steps.create_state(tiny_config, 7)
    step = jax.jit(steps.train_step_keyed)
    state, _ = step(state, data_640.images[:32])  # non-trivial Adam state
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        path = ckpt.save(state, 1, dataset="mnist-5k", num_examples=640, data_checksum=123)
    assert path == tmp_path.absolute() / "checkpoints" / "epoch_0001"
    restored = checkpoint.load(tmp_path)
    assert (restored.epoch, restored.dataset, restored.num_examples, restored.data_checksum) == (
        1,
        "mnist-5k",
        640,
        123,
    )
    assert_same_state(restored.state, state)
    assert jax.dtypes.issubdtype(restored.state.key.dtype, jax.dtypes.prng_key)
    assert int(restored.state.step) == 1
    # Restored arrays behave like fresh ones: the next step agrees bit for bit.
    a, _ = step(state, data_640.images[32:64])
    b, _ = step(restored.state, data_640.images[32:64])
    assert_same_state(a, b)


def test_load_state_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="has no checkpoint"):
        checkpoint.load_state(tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.load_state(tmp_path / "missing")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_640):
    """An uninterrupted 4-epoch run, and 2 epochs + a resumed 2 (with other log_every)."""
    config = preset("tiny").replace(epochs=4, checkpoint_every=1)
    whole, split = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("split")
    state_whole, _, _ = fit(config, whole, data_640)
    fit(config.replace(epochs=2), split, data_640)
    state_split, history_split, log = fit(config.replace(log_every=7), split, data_640)
    return config, whole, split, state_whole, state_split, history_split, log


@pytest.mark.slow
def test_resume_is_bit_identical(runs):
    _, whole, split, state_whole, state_split, history_split, log = runs
    assert "resuming after epoch 2" in log
    assert_same_state(state_whole, state_split.replace(config=state_whole.config))  # log_every differs
    assert rows(whole) == rows(split)
    assert [r["epoch"] for r in history_split] == [1, 2, 3, 4]
    for epoch in range(1, 5):
        name = f"samples/epoch_{epoch:04d}.png"
        assert (whole / name).read_bytes() == (split / name).read_bytes(), name
    # The progress GIF is rebuilt on resume from every grid, so it is the uninterrupted run's.
    assert (split / "samples/progress.gif").read_bytes() == (whole / "samples/progress.gif").read_bytes()
    with checkpoint.Checkpointer(whole) as a, checkpoint.Checkpointer(split) as b:
        assert a.read_meta(4)["checksum"] == b.read_meta(4)["checksum"]


@pytest.mark.slow
def test_resuming_a_finished_run_says_so_and_changes_nothing(runs, data_640):
    config, _, split, *_ = runs
    before = (split / "metrics.jsonl").read_text()
    state, history, log = fit(config, split, data_640)
    assert "already trained 4 epochs" in log and "nothing to do" in log
    assert len(history) == 4 and int(state.step) == 80
    assert (split / "metrics.jsonl").read_text() == before


@pytest.mark.slow
@pytest.mark.parametrize(("change", "field"), [({"latent_dim": 8}, "latent_dim"), ({"lr": 1e-3}, "lr")])
def test_conflicting_config_names_the_field(runs, data_640, change, field):
    config, _, split, *_ = runs
    with pytest.raises(checkpoint.CheckpointError, match=f"has {field}="):
        fit(config.replace(epochs=5, **change), split, data_640)


@pytest.mark.slow
def test_cli_resumes_with_the_checkpoint_config_and_rejects_conflicts(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    common = ["--workdir", workdir, "--no-progress"]
    assert train_cli.main(["--preset", "tiny", "--dataset", "mnist-5k", "--epochs", "1", *common]) == 0
    # No --preset: the checkpoint's config (tiny), with the new total of epochs.
    assert train_cli.main(["--epochs", "2", *common]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["preset"], config["latent_dim"], config["epochs"]) == ("tiny", 16, 2)
    capsys.readouterr()
    assert train_cli.main(["--preset", "small", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert "--preset small conflicts" in err and "preset=tiny" in err and "\n" not in err
    assert train_cli.main(["--g-hidden", "64", *common]) == 2
    assert "--g-hidden 64 conflicts with the checkpoint, which has g_hidden=32" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_flag_needs_a_checkpoint_and_no_resume_starts_over(tmp_path, capsys, data_640):
    assert train_cli.main(["--workdir", str(tmp_path), "--resume", "--preset", "tiny", "--dataset", "mnist-5k"]) == 2
    assert "--resume: no checkpoint to resume from" in capsys.readouterr().err
    config = preset("tiny").replace(epochs=2)
    fit(config, tmp_path, data_640)
    _, history, log = fit(config.replace(epochs=1, lr=1e-3), tmp_path, data_640, resume=False)
    assert "deleting 2 old checkpoint(s)" in log
    assert len(history) == 1 and len(rows(tmp_path)) == 1
    assert checkpoint.load(tmp_path).epoch == 1
    # The old run's samples went with its checkpoints and metrics.
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["epoch_0001.png", "progress.gif"]


def saved_checkpoints(workdir, config, epochs):
    """Save a fresh state of `config` as the checkpoints of `epochs` in `workdir`; return the state."""
    state = steps.create_state(config, 0)
    with checkpoint.Checkpointer(workdir, keep=3) as ckpt:
        for epoch in epochs:
            ckpt.save(state, epoch, dataset="mnist-5k", num_examples=640)
    return state


def test_a_checkpoint_deleted_while_read_is_looked_up_again(tmp_path, tiny_config, monkeypatch):
    """A live run's keep-K cleanup can delete the checkpoint a reader (generate, evaluate) has just
    listed: the reader lists again and reads what is there."""
    saved_checkpoints(tmp_path, tiny_config, (1, 2))
    restore, deleted = checkpoint.Checkpointer._restore, []

    def cleaned_up_meanwhile(self, epoch):
        if not deleted:  # the run's cleanup wins the race once
            shutil.rmtree(checkpoint.step_path(self.directory, epoch))
            deleted.append(epoch)
        return restore(self, epoch)

    monkeypatch.setattr(checkpoint.Checkpointer, "_restore", cleaned_up_meanwhile)
    assert checkpoint.load(tmp_path).epoch == 1 and deleted == [2]


def test_a_checkpoint_half_deleted_while_read_is_looked_up_again(tmp_path, tiny_config, monkeypatch):
    """The cleanup may be midway when the read fails (the directory still there, its files going):
    the run has saved a newer checkpoint meanwhile, so the reader lists again and reads that one."""
    state = saved_checkpoints(tmp_path, tiny_config, (1, 2))
    restore, read = checkpoint.Checkpointer._restore, []

    def saved_and_cleaned_up_meanwhile(self, epoch):
        read.append(epoch)
        if len(read) == 1:
            with checkpoint.Checkpointer(tmp_path, keep=3) as live:
                live.save(state, 3, dataset="mnist-5k", num_examples=640)
            corrupt(checkpoint.step_path(self.directory, epoch), "truncate")  # rmtree under way
        return restore(self, epoch)

    monkeypatch.setattr(checkpoint.Checkpointer, "_restore", saved_and_cleaned_up_meanwhile)
    assert checkpoint.load(tmp_path).epoch == 3 and read == [2, 3]


def test_listing_lists_again_when_a_step_vanishes_under_it(tmp_path, tiny_config, monkeypatch):
    """orbax's listing stats every step directory: one deleted meanwhile fails it; jaxgan lists again."""
    saved_checkpoints(tmp_path, tiny_config, (1,))
    with checkpoint.Checkpointer(tmp_path, read_only=True) as reader:
        reload, failures = reader.manager.reload, [FileNotFoundError(2, "gone"), NotADirectoryError(20, "gone")]

        def vanishing():
            if failures:
                raise failures.pop()
            reload()

        monkeypatch.setattr(reader.manager, "reload", vanishing)
        assert reader.epochs() == [1] and not failures


def test_abandoned_futures_of_a_failed_read_are_not_reported(caplog):
    """A failed orbax read leaves futures holding the same error; asyncio would log each one to
    stderr under the one-line error jaxgan has already printed."""
    checkpoint._quiet_orbax()

    async def fails():
        raise ValueError("OUT_OF_RANGE: truncated")

    loop = asyncio.new_event_loop()
    task = loop.create_task(fails())
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    del task
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def corrupt(step_dir, how):
    """Damage every data file of a checkpoint's state: cut it in half, or zero its bytes."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert files
    for path in files:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if how == "truncate" else bytes(len(data)))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncate", "zero"])
def test_corrupt_checkpoint_names_the_usable_one(tmp_path, data_640, how):
    config = preset("tiny").replace(epochs=3)
    fit(config, tmp_path, data_640)
    corrupt(tmp_path / "checkpoints" / "epoch_0003", how)
    with pytest.raises(
        checkpoint.CheckpointError, match=r"epoch_0003 is unusable: .*the checkpoint of epoch 2 is usable"
    ):
        fit(config.replace(epochs=4), tmp_path, data_640)
    for epoch in (1, 2):
        corrupt(tmp_path / "checkpoints" / f"epoch_{epoch:04d}", how)
    with pytest.raises(checkpoint.CheckpointError, match="no older checkpoint is usable"):
        checkpoint.load_state(tmp_path)


@pytest.mark.slow
def test_cli_bad_workdirs_and_checkpoints_exit_2_in_one_line(tmp_path, capsys, data_640):
    a_file = tmp_path / "file"
    a_file.write_text("not a run")
    assert train_cli.main(["--workdir", str(a_file), "--preset", "tiny", "--dataset", "mnist-5k"]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert a_file.read_text() == "not a run"
    workdir = tmp_path / "run"
    fit(preset("tiny").replace(epochs=1), workdir, data_640)
    corrupt(workdir / "checkpoints" / "epoch_0001", "truncate")
    metrics = (workdir / "metrics.jsonl").read_text()
    assert train_cli.main(["--workdir", str(workdir), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "epoch_0001 is unusable" in err and "no older checkpoint is usable" in err
    assert (workdir / "metrics.jsonl").read_text() == metrics


@pytest.mark.parametrize(
    "message, expected",
    [
        (
            'NOT_FOUND: Error writing "a/0" in OCDBT database at local file "/r/ocdbt/": Error reading '
            'Byte range [0, 449) of local file "/r/ocdbt/d/0b11"',
            "[Errno 2] No such file or directory: '/r/ocdbt/d/0b11'",
        ),
        (
            "Checkpoint directory does not exist: /r/ckpt/epoch_0002.orbax-checkpoint-tmp/state.",
            "[Errno 2] No such file or directory: '/r/ckpt/epoch_0002.orbax-checkpoint-tmp/state'",
        ),
        (
            'Error opening "/r/ckpt/x" [os_error_code=28] No space left on device',
            "[Errno 28] No space left on device: '/r/ckpt/x'",
        ),
    ],
)
def test_tensorstore_errors_are_named_as_os_errors(message, expected):
    """A save's failure names the OS error, also when tensorstore wraps it in its own words."""
    assert checkpoint._os_error(ValueError(message)) == expected
