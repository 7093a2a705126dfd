"""Checkpoints of a run with orbax: the whole `GANState` at epoch boundaries, atomically.

A checkpoint is the directory WORKDIR/checkpoints/epoch_NNNN/ holding two orbax items:

- `state`: the `GANState` pytree itself (both nets, both Adam states, the step, the EMA
  when on), with the PRNG key as its raw `jax.random.key_data`. It is restored against the
  abstract state of its config (`jax.eval_shape` of `steps.create_state`), so a field added
  to `GANState` is saved and restored without touching this module.
- `meta` (JSON): the config, the epoch (which is also the data-order position: every
  epoch's shuffle is fold_in(key, SHUFFLE_STREAM, epoch)), the step, the dataset actually
  used (name, size, CRC-32), the PRNG implementation and a SHA-256 of the state's bytes.
  The metric rows live in metrics.jsonl alone (`rundir.RunDir.read_metrics` keeps those
  of the checkpoint's epochs).

Orbax writes a step into a temporary directory and renames it into place when complete,
so a save killed half-way leaves the previous checkpoints usable; the latest K are kept.
The step directory is created before `save` returns, so a directory that cannot be written
fails at once (`SaveError`, one line naming the path and the OS error), and a write that
fails in the background (a full disk) is reported at the next `check`, `save` or `wait`.
Orbax's own log records and the tracebacks its I/O threads leave after a failed read are
silenced: the one-line errors here say what went wrong. Nothing here unpickles anything.
`restore_or_init` is the one place a run's start is decided: it reads a checkpoint's config,
checks it belongs to the run, merges the command line into it, and deletes old checkpoints on
--no-resume (after everything else was checked).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxgan import data as data_lib
from jaxgan.cli import UserError
from jaxgan.config import Config, resumable_fields
from jaxgan.parallel import images_checksum
from jaxgan.steps import GANState, create_state

FORMAT_VERSION = 2  # 2: the state saved as the GANState pytree, metric rows only in metrics.jsonl
CHECKPOINT_DIR = "checkpoints"
STEP_PREFIX = "epoch"
T = TypeVar("T")


class CheckpointError(UserError):
    """A missing, unreadable or incompatible checkpoint; the message is one line for the user."""


class SaveError(CheckpointError):
    """A checkpoint could not be written (permissions, a full disk, the directory gone)."""


def _os_error(err: BaseException) -> str:
    """The OS error at the root of `err`: "[Errno 28] No space left on device: 'path'", also from
    tensorstore's messages (their os_error_code and last path), else its first line."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    text = _first_line(err)
    code = re.search(r"\[os_error_code='?(\d+)'?\]", text)
    if code:
        paths = re.findall(r'"(/[^"]*)"', text[: code.start()])
        return f"[Errno {code[1]}] {os.strerror(int(code[1]))}" + (f": {paths[-1]!r}" if paths else "")
    if re.match(r"(\w+Error: )?NOT_FOUND: ", text):  # tensorstore's file gone, without an os_error_code
        paths = re.findall(r'"(/[^"]*)"', text)
        return f"[Errno {errno.ENOENT}] {os.strerror(errno.ENOENT)}" + (f": {paths[-1]!r}" if paths else "")
    gone = re.match(r"(\w+Error: )*Checkpoint directory does not exist: (/.*?)\.?$", text)  # orbax's words
    if gone:
        return f"[Errno {errno.ENOENT}] {os.strerror(errno.ENOENT)}: {gone[2]!r}"
    return text


class _QuietOrbax(logging.Filter):
    """Drops orbax's log records below CRITICAL: jaxgan reports what failed in one line of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL or f"{os.sep}orbax{os.sep}" not in record.pathname


class _QuietUnreadFutures(logging.Filter):
    """Drops asyncio's "Future/Task exception was never retrieved" records: after a failed read, orbax
    leaves the futures of its other reads holding the same error, which jaxgan has already reported."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "exception was never retrieved" not in str(record.msg).partition("\n")[0]


@functools.cache
def _quiet_orbax() -> None:
    """Silence orbax's logs (`_QuietOrbax`), asyncio's reports of its abandoned futures
    (`_QuietUnreadFutures`) and the "Event loop is closed" errors that tensorstore's callbacks
    raise after a failed read has closed orbax's event loop (sys.unraisablehook); once."""
    logging.getLogger("absl").addFilter(_QuietOrbax())
    logging.getLogger("asyncio").addFilter(_QuietUnreadFutures())
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
            return
        previous(unraisable)

    sys.unraisablehook = hook


@dataclasses.dataclass(frozen=True)
class Restored:
    """A checkpoint read back: the state after `epoch` epochs and the data it was trained on."""

    state: GANState
    epoch: int
    dataset: str  # the dataset actually trained on ("auto" resolved)
    num_examples: int
    data_checksum: int | None
    path: Path


def fresh_state(config: Config) -> GANState:
    """The state a run of `config` starts from: `steps.create_state(config, config.seed)`."""
    return create_state(config, config.seed)


def checkpoint_dir(workdir: str | Path) -> Path:
    return Path(workdir) / CHECKPOINT_DIR


def step_path(directory: Path, epoch: int) -> Path:
    return directory / f"{STEP_PREFIX}_{epoch:04d}"


def saved_tree(state: GANState) -> GANState:
    """The pytree a checkpoint holds: the state with its typed PRNG key as raw key data, on the host."""
    return jax.tree.map(np.array, state.replace(key=jax.random.key_data(state.key)))


def abstract_saved_tree(config: Config) -> GANState:
    """The shapes and dtypes of `saved_tree` for `config`, computed without any FLOPs."""
    return jax.eval_shape(lambda: fresh_state(config).replace(key=jax.random.key_data(jax.random.key(0))))


def tree_checksum(tree: dict[str, Any]) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes, in path order."""
    digest = hashlib.sha256()
    for path, leaf in sorted(
        jax.tree_util.tree_flatten_with_path(tree)[0], key=lambda item: jax.tree_util.keystr(item[0])
    ):
        leaf = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype.str}:{leaf.shape};".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def check_resumable(saved: Config, config: Config) -> None:
    """CheckpointError naming the first field where `config` differs from the checkpoint's,
    ignoring the fields marked resumable in `Config`."""
    for field in dataclasses.fields(Config):
        if field.metadata["resumable"]:
            continue
        old, new = getattr(saved, field.name), getattr(config, field.name)
        if old != new:
            flag = "--" + field.name.replace("_", "-")
            raise CheckpointError(
                f"{flag} {_show(new)} conflicts with the checkpoint, which has {field.name}={_show(old)}; "
                f"only {', '.join('--' + f.replace('_', '-') for f in resumable_fields())} may change on resume "
                "(use another --workdir, or --no-resume to start over)"
            )


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _first_line(err: BaseException) -> str:
    """`Type: first line` of `err`, without the tensorstore spec (a page of JSON) tensorstore appends."""
    text = str(err).strip().splitlines()
    line = text[0].split(" [tensorstore_spec=")[0] if text else ""
    return f"{type(err).__name__}: {line}".rstrip(": ")


def _dotted(path) -> str:
    """A pytree key path as orbax names it: `g_opt_state.0.mu.net.linear_0.kernel`."""
    parts = (getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))) for k in path)
    return ".".join(str(p) for p in parts)


def _check_structure(saved: Any, expected: Any) -> None:
    """ValueError naming the first leaf whose presence, shape or dtype differs (orbax's metadata
    of the saved arrays against the abstract state of the checkpoint's config)."""
    got = {_dotted(p): x for p, x in jax.tree_util.tree_flatten_with_path(saved)[0]}
    want = {_dotted(p): x for p, x in jax.tree_util.tree_flatten_with_path(expected)[0]}
    for name in sorted(set(want) - set(got)):
        raise ValueError(f"it has no {name}")
    for name in sorted(set(got) - set(want)):
        raise ValueError(f"it has an unexpected {name}")
    for name, leaf in want.items():
        shape, dtype = tuple(got[name].shape), np.dtype(got[name].dtype)
        if shape != tuple(leaf.shape) or dtype != leaf.dtype:
            raise ValueError(
                f"{name} is {dtype}{list(shape)} but its config needs {np.dtype(leaf.dtype)}{list(leaf.shape)}"
            )


LIST_ATTEMPTS = 10  # listing a live run's checkpoints while its cleanup deletes one


class Checkpointer:
    """The checkpoints of one run directory: save, list and restore whole states.

    Use as a context manager (or call `close`): saves are asynchronous, and closing waits
    for the last one to be on disk.
    """

    def __init__(self, workdir: str | Path, *, keep: int = 3, read_only: bool = False):
        self.directory = checkpoint_dir(workdir).absolute()
        self._saving: int | None = None  # the epoch of the last save started
        _quiet_orbax()
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            step_prefix=STEP_PREFIX,
            step_format_fixed_length=4,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,  # debris of a save that was killed
            enable_async_checkpointing=True,
            # The step directory is made before save() returns: an unwritable directory fails there,
            # instead of leaving the background writes waiting 300 s for a directory that never comes.
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
        )
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self.manager = self._listing(
            lambda: ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        )

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
            return
        with contextlib.suppress(Exception):  # already failing: that error is the one to report
            self.close()

    def close(self) -> None:
        """Wait for the last save; SaveError if it failed."""
        try:
            self.manager.close()
        except Exception as err:
            raise self._failed(err) from None

    def wait(self) -> None:
        """Block until the last save is complete on disk; SaveError if it failed."""
        try:
            self.manager.wait_until_finished()
        except Exception as err:
            raise self._failed(err) from None

    def check(self) -> None:
        """SaveError if a save has failed in the background (does not wait)."""
        try:
            self.manager.check_for_errors()
        except Exception as err:
            raise self._failed(err) from None

    def _failed(self, err: BaseException) -> SaveError:
        """The SaveError of the save of epoch self._saving, naming the OS error and the last good checkpoint."""
        epoch = self._saving
        what = f"checkpoint {step_path(self.directory, epoch)}" if epoch is not None else f"in {self.directory}"
        try:
            kept = [e for e in self.epochs() if e != epoch]
        except Exception:
            kept = []
        if kept:
            last = f"the last good checkpoint is epoch {kept[-1]} ({step_path(self.directory, kept[-1])})"
        else:
            last = f"no complete checkpoint is left in {self.directory}"
        return SaveError(f"cannot save {what}: {_os_error(err)}; {last}")

    def _listing(self, list_steps: Callable[[], T]) -> T:
        """`list_steps()`, again if a step directory vanished under it: orbax's listing reads each
        step's metadata, and a live run's cleanup may delete a step meanwhile."""
        for attempt in range(1, LIST_ATTEMPTS):
            try:
                return list_steps()
            except (FileNotFoundError, NotADirectoryError):
                if not self.directory.is_dir():
                    raise
                time.sleep(0.05 * attempt)
        return list_steps()

    def epochs(self) -> list[int]:
        """Epochs with a complete checkpoint, oldest first."""
        self._listing(self.manager.reload)
        return sorted(self.manager.all_steps())

    def latest(self) -> int | None:
        epochs = self.epochs()
        return epochs[-1] if epochs else None

    def save(
        self, state: GANState, epoch: int, *, dataset: str, num_examples: int, data_checksum: int | None = None
    ) -> Path:
        """Save `state` (after `epoch` epochs, trained on `dataset`); returns the step's path.

        The arrays are copied to host memory before this returns, so the caller may
        donate the state's buffers right away; the write itself finishes in the background.
        """
        tree = saved_tree(state)  # host copies, independent of device buffers
        meta = {
            "format_version": FORMAT_VERSION,
            "epoch": epoch,
            "step": int(tree.step),
            "config": state.config.to_dict(),
            "dataset": dataset,
            "num_examples": num_examples,
            "data_checksum": data_checksum,
            "key_impl": str(jax.random.key_impl(state.key)),
            "checksum": tree_checksum(tree),
        }
        self.wait()  # as orbax does anyway; a failure of the previous save is reported as that one's
        self._saving = epoch
        try:
            self.manager.save(
                epoch,
                args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
                force=True,
            )
        except Exception as err:
            raise self._failed(err) from None
        return step_path(self.directory, epoch)

    def delete_after(self, epoch: int) -> None:
        """Delete the checkpoints of the epochs after `epoch` (a run that continues from `epoch`)."""
        for later in [e for e in self.epochs() if e > epoch]:
            self.manager.delete(later)

    def read_meta(self, epoch: int) -> dict[str, Any]:
        meta = self.manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            found = meta.get("format_version") if isinstance(meta, dict) else None
            raise ValueError(
                f"its metadata is not a jaxgan checkpoint of format version {FORMAT_VERSION} (found {found})"
            )
        return meta

    def _restore(self, epoch: int) -> Restored:
        """Read one checkpoint, verifying structure and checksum (any failure raises)."""
        meta = self.read_meta(epoch)
        if meta.get("epoch") != epoch:  # a copied or renamed step directory
            raise ValueError(f"its metadata says it is epoch {meta.get('epoch')!r}, not {epoch} as its name says")
        config = Config.from_dict(meta["config"]).validate()
        target = abstract_saved_tree(config)
        on_disk = self.manager.item_metadata(epoch).state  # shapes and dtypes as saved
        _check_structure(on_disk, target)
        tree = self.manager.restore(epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
        if tree_checksum(tree) != meta["checksum"]:
            raise ValueError("its arrays do not match the checksum saved with them")
        state = tree.replace(key=jax.random.wrap_key_data(tree.key, impl=meta["key_impl"]))
        return Restored(
            state=state,
            epoch=int(meta["epoch"]),
            dataset=meta["dataset"],
            num_examples=int(meta["num_examples"]),
            data_checksum=meta.get("data_checksum"),
            path=step_path(self.directory, epoch),
        )

    def restore(self, epoch: int | None = None) -> Restored:
        """The checkpoint of `epoch` (default: the latest); CheckpointError in one line if there
        is none or it cannot be used, naming the newest older checkpoint that can."""
        available = self.epochs()
        if not available:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if epoch is None:
            epoch = available[-1]
        elif epoch not in available:
            raise CheckpointError(
                f"no checkpoint of epoch {epoch} in {self.directory}; there are: {', '.join(map(str, available))}"
            )
        try:
            return self._restore(epoch)
        except Exception as err:  # orbax, tensorstore, JSON and our own checks all end here
            self._check_unchanged(available, epoch)
            problem = f"checkpoint {step_path(self.directory, epoch)} is unusable: {_first_line(err)}"
        for older in reversed([e for e in available if e < epoch]):
            try:
                self._restore(older)
            except Exception:
                continue
            raise CheckpointError(
                f"{problem}; the checkpoint of epoch {older} is usable: delete {step_path(self.directory, epoch)} "
                f"(and any newer ones) to resume from it"
            )
        raise CheckpointError(f"{problem}; no older checkpoint is usable")

    def _check_unchanged(self, listed: list[int], epoch: int) -> None:
        """Vanished if the checkpoint of `epoch` is gone or going, or the checkpoints listed before the
        read have changed since: a live run saved a newer one and deleted old ones (it keeps the latest K)."""
        if not step_path(self.directory, epoch).is_dir() or self.epochs() != listed:
            raise Vanished(f"checkpoint {step_path(self.directory, epoch)} was deleted while it was read")


class Vanished(CheckpointError):
    """A checkpoint disappeared while it was read: a live run deleted it (it keeps only the latest K)."""


def epochs_in(workdir: str | Path) -> list[int]:
    """The epochs with a complete checkpoint in `workdir` (orbax's own listing), oldest first."""
    if not checkpoint_dir(workdir).is_dir():
        return []
    with Checkpointer(workdir, read_only=True) as reader:
        return reader.epochs()


def check_workdir(workdir: str | Path) -> Path:
    """`workdir` as a Path if it is a directory holding checkpoints; CheckpointError otherwise."""
    path = Path(workdir)
    if not path.exists():
        raise CheckpointError(f"workdir {str(path)!r} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"workdir {str(path)!r} is not a directory")
    if not epochs_in(path):
        raise CheckpointError(
            f"workdir {str(path)!r} has no checkpoint (train first: python -m jaxgan.train --workdir {path})"
        )
    return path


READ_RETRY_SECONDS = 30.0  # a live run's cleanup can delete the checkpoint being read: list again and retry


def load(workdir: str | Path, epoch: int | None = None) -> Restored:
    """The checkpoint of `epoch` (default: the latest) of the run in `workdir`, read-only.

    Safe while a run trains in `workdir`: a checkpoint its keep-K cleanup deletes during the
    read is looked up again."""
    deadline, attempt = time.monotonic() + READ_RETRY_SECONDS, 1
    while True:
        try:
            path = check_workdir(workdir)
            try:
                checkpointer = Checkpointer(path, read_only=True)
            except (FileNotFoundError, NotADirectoryError):
                raise
            except Exception as err:
                raise CheckpointError(
                    f"cannot read the checkpoints in {checkpoint_dir(path)}: {_first_line(err)}"
                ) from None
            with checkpointer:
                return checkpointer.restore(epoch)
        except (Vanished, FileNotFoundError, NotADirectoryError) as err:
            if time.monotonic() > deadline:
                raise CheckpointError(
                    f"the checkpoints in {checkpoint_dir(workdir)} kept changing while read for "
                    f"{READ_RETRY_SECONDS:.0f} s ({attempt} attempts): {_first_line(err)}"
                ) from None
            time.sleep(min(0.05 * attempt, 0.5))
            attempt += 1


def load_state(workdir: str | Path, epoch: int | None = None) -> GANState:
    """The GANState of the latest checkpoint in `workdir` (or of `epoch`); CheckpointError otherwise."""
    return load(workdir, epoch).state


def merge_config(saved: Config, config: Config, explicit: frozenset[str] | None) -> Config:
    """The checkpoint's config with the `explicit` fields (given on the command line) taken from
    `config`; CheckpointError naming the first one that may not change on resume."""
    if explicit is None:
        explicit = frozenset(f.name for f in dataclasses.fields(Config))
    if "preset" in explicit and config.preset != saved.preset:
        raise CheckpointError(
            f"--preset {config.preset} conflicts with the checkpoint, which has preset={saved.preset} "
            "(use another --workdir, or --no-resume to start over)"
        )
    merged = saved.replace(**{name: getattr(config, name) for name in explicit if name != "preset"})
    check_resumable(saved, merged)
    return merged.validate()


def check_same_run(restored: Restored, recorded: Config) -> None:
    """CheckpointError unless `restored` agrees with the run's recorded config in every field that
    may not change on resume: otherwise it is another run's checkpoint, copied or moved in."""
    saved = restored.state.config
    for field in dataclasses.fields(Config):
        name = field.name
        if not field.metadata["resumable"] and getattr(saved, name) != getattr(recorded, name):
            raise CheckpointError(
                f"checkpoint {restored.path} is not this run's: it has {name}={_show(getattr(saved, name))}, "
                f"the run's config.json {name}={_show(getattr(recorded, name))}; move it out of the workdir, or train it "
                "in a workdir of its own"
            )


@dataclasses.dataclass(frozen=True)
class Start:
    """Where a run starts: its config, data and state after `epoch` epochs (0: a fresh start)."""

    config: Config
    dataset: data_lib.Dataset
    state: GANState
    epoch: int
    data_checksum: int


def restore_or_init(
    config: Config,
    workdir: str | Path,
    resume: bool | None,
    *,
    prepare: Callable[[Config], data_lib.Dataset],
    explicit: frozenset[str] | None = None,
    log: Callable[[str], None] = print,
    recorded: Config | None = None,
) -> Start:
    """The state a run in `workdir` starts from: its latest checkpoint, or a fresh state.

    resume None: the latest checkpoint if there is one; True: the latest, which must exist;
    False: start over, deleting the old checkpoints. When resuming, the run's config is the
    checkpoint's with the `explicit` fields of `config` applied (only resumable ones may
    differ; None: every field, as when a program hands over a whole config). `prepare(config)` loads and checks the data; it runs before anything is deleted,
    so a command that cannot train changes nothing. `recorded` is the run's own config (its
    config.json), if readable: a checkpoint whose config disagrees with it (in the fields that may
    not change on resume) was copied in from another run and is refused. CheckpointError (one
    line) when the checkpoint cannot be used or was trained on other data.
    """
    epochs = epochs_in(workdir)
    if resume and not epochs:
        raise CheckpointError(f"--resume: no checkpoint to resume from in {checkpoint_dir(workdir)}")
    if not epochs or resume is False:
        dataset = prepare(config)
        if epochs:
            log(f"--no-resume: deleting {len(epochs)} old checkpoint(s) in {checkpoint_dir(workdir)}")
            with Checkpointer(workdir) as writer:
                for epoch in epochs:
                    writer.manager.delete(epoch)
        checksum = images_checksum(dataset.images)
        return Start(config, dataset, fresh_state(config), 0, checksum)
    with Checkpointer(workdir, read_only=True) as reader:
        restored = reader.restore()  # the latest usable one, or CheckpointError naming the one to fall back to
    if recorded is not None:
        check_same_run(restored, recorded)
    config = merge_config(restored.state.config, config, explicit)
    dataset = prepare(config)
    checksum = images_checksum(dataset.images)
    trained_on = (restored.dataset, restored.num_examples, restored.data_checksum)
    if trained_on != (dataset.name, len(dataset.images), restored.data_checksum and checksum):
        raise CheckpointError(
            f"the checkpoint was trained on {restored.dataset} ({restored.num_examples:,} images), "
            f"not on these {dataset.name} images ({len(dataset.images):,})"
        )
    steps_per_epoch = len(dataset.images) // config.batch_size
    if int(restored.state.step) != restored.epoch * steps_per_epoch:
        raise CheckpointError(
            f"checkpoint step {int(restored.state.step)} is not epoch {restored.epoch} x {steps_per_epoch} steps"
        )
    return Start(config, dataset, restored.state.replace(config=config), restored.epoch, checksum)
