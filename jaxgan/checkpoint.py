"""Checkpoints of a run with orbax: the whole `GANState` at epoch boundaries, atomically.

A checkpoint is the directory WORKDIR/checkpoints/epoch_NNNN/ holding two orbax items:

- `state`: every array of the state, as the nested dict `flax.serialization.to_state_dict`
  makes of it (both nets, both Adam states, the step, and the PRNG key as its raw
  `jax.random.key_data`). Generic over the pytree: a field added to `GANState` is saved
  and restored without touching this module.
- `meta` (JSON): the config, the epoch (which is also the data-order position: every
  epoch's shuffle is fold_in(key, SHUFFLE_STREAM, epoch)), the step, the dataset actually
  used, the PRNG implementation, a SHA-256 of the state's bytes, and the metric rows of
  every epoch so far (so metrics.jsonl can be rebuilt to match the checkpoint exactly).

Orbax writes a step into a temporary directory and renames it into place when complete,
so a save killed half-way leaves the previous checkpoints usable; the latest K are kept.
Nothing here unpickles anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxgan import steps
from jaxgan.config import Config, resumable_fields

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
STEP_PREFIX = "epoch"


class CheckpointError(Exception):
    """A missing, unreadable or incompatible checkpoint; the message is one line for the user."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """A checkpoint read back: the state after `epoch` epochs and what the run had logged."""

    state: steps.GANState
    epoch: int
    dataset: str  # the dataset actually trained on ("auto" resolved)
    num_examples: int
    history: list[dict]  # metrics.jsonl rows of epochs 1..epoch
    path: Path


def checkpoint_dir(workdir: str | Path) -> Path:
    return Path(workdir) / CHECKPOINT_DIR


def step_path(directory: Path, epoch: int) -> Path:
    return directory / f"{STEP_PREFIX}_{epoch:04d}"


def state_to_tree(state: steps.GANState) -> dict[str, Any]:
    """GANState -> nested dict of arrays (the typed key as its uint32 key data).

    Fields that are None (g_ema_params with EMA off) are left out, so such a state
    saves exactly as it did before the field existed.
    """
    tree = flax.serialization.to_state_dict(state.replace(key=jax.random.key_data(state.key)))
    return {name: value for name, value in tree.items() if value is not None}


def tree_to_state(target: steps.GANState, tree: dict[str, Any]) -> steps.GANState:
    """Inverse of `state_to_tree` onto `target`'s structure (its None fields stay None)."""
    absent = {name: None for name, value in flax.serialization.to_state_dict(target).items() if value is None}
    return flax.serialization.from_state_dict(target, {**absent, **tree})


def abstract_tree(config: Config) -> dict[str, Any]:
    """The shapes and dtypes `state_to_tree` gives for `config`, computed without any FLOPs."""
    return jax.eval_shape(lambda: state_to_tree(steps.create_state(config, config.seed)))


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
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _check_structure(restored: Any, expected: Any) -> None:
    """ValueError naming the first leaf whose presence, shape or dtype differs."""
    got = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(restored)[0]}
    want = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(expected)[0]}
    for name in sorted(set(want) - set(got)):
        raise ValueError(f"it has no {name}")
    for name in sorted(set(got) - set(want)):
        raise ValueError(f"it has an unexpected {name}")
    for name, leaf in want.items():
        shape, dtype = tuple(np.shape(got[name])), np.asarray(got[name]).dtype
        if shape != tuple(leaf.shape) or dtype != leaf.dtype:
            raise ValueError(
                f"{name} is {dtype}{list(shape)} but its config needs {np.dtype(leaf.dtype)}{list(leaf.shape)}"
            )


class Checkpointer:
    """The checkpoints of one run directory: save, list and restore whole states.

    Use as a context manager (or call `close`): saves are asynchronous, and closing waits
    for the last one to be on disk.
    """

    def __init__(self, workdir: str | Path, *, keep: int = 3, read_only: bool = False):
        self.directory = checkpoint_dir(workdir).absolute()
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        if read_only:  # orbax warns that a read-only manager is read-only
            absl_logger.setLevel(logging.ERROR)
        try:
            options = ocp.CheckpointManagerOptions(
                preservation_policy=ocp.checkpoint_managers.LatestN(keep),
                step_prefix=STEP_PREFIX,
                step_format_fixed_length=4,
                create=not read_only,
                read_only=read_only,
                cleanup_tmp_directories=not read_only,  # debris of a save that was killed
                enable_async_checkpointing=True,
            )
            self.manager = ocp.CheckpointManager(self.directory, options=options)
        finally:
            absl_logger.setLevel(level)

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.manager.close()

    def wait(self) -> None:
        """Block until the last save is complete on disk."""
        self.manager.wait_until_finished()

    def epochs(self) -> list[int]:
        """Epochs with a complete checkpoint, oldest first."""
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def latest(self) -> int | None:
        epochs = self.epochs()
        return epochs[-1] if epochs else None

    def save(self, state: steps.GANState, epoch: int, *, dataset: str, num_examples: int, history: list[dict]) -> Path:
        """Save `state` (after `epoch` epochs) and the run's metric rows; returns the step's path.

        The arrays are copied to host memory before this returns, so the caller may
        donate the state's buffers right away; the write itself finishes in the background.
        """
        tree = jax.tree.map(np.array, state_to_tree(state))  # host copies, independent of device buffers
        meta = {
            "format_version": FORMAT_VERSION,
            "epoch": epoch,
            "step": int(tree["step"]),
            "config": state.config.to_dict(),
            "dataset": dataset,
            "num_examples": num_examples,
            "key_impl": str(jax.random.key_impl(state.key)),
            "checksum": tree_checksum(tree),
            "history": history[:epoch],
        }
        self.manager.save(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        return step_path(self.directory, epoch)

    def read_meta(self, epoch: int) -> dict[str, Any]:
        meta = self.manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError("its metadata is not a jaxgan checkpoint of format version 1")
        return meta

    def _restore(self, epoch: int) -> Restored:
        """Read one checkpoint, verifying structure and checksum (any failure raises)."""
        meta = self.read_meta(epoch)
        config = Config.from_dict(meta["config"])
        expected = abstract_tree(config)
        tree = self.manager.restore(epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
        tree = jax.tree.map(np.asarray, tree)
        _check_structure(tree, expected)
        if tree_checksum(tree) != meta["checksum"]:
            raise ValueError("its arrays do not match the checksum saved with them")
        target = jax.eval_shape(lambda: steps.create_state(config, config.seed))
        target = target.replace(key=expected["key"])
        state = tree_to_state(target, jax.device_put(tree))
        state = state.replace(key=jax.random.wrap_key_data(state.key, impl=meta["key_impl"]))
        return Restored(
            state=state,
            epoch=int(meta["epoch"]),
            dataset=meta["dataset"],
            num_examples=int(meta["num_examples"]),
            history=list(meta["history"]),
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


def has_checkpoint(workdir: str | Path) -> bool:
    """True when `workdir` has at least one complete checkpoint (no orbax needed to tell)."""
    directory = checkpoint_dir(workdir)
    return directory.is_dir() and any(
        p.is_dir() and p.name.startswith(STEP_PREFIX + "_") and p.name[len(STEP_PREFIX) + 1 :].isdigit()
        for p in directory.iterdir()
    )


def check_workdir(workdir: str | Path) -> Path:
    """`workdir` as a Path if it is a directory holding checkpoints; CheckpointError otherwise."""
    path = Path(workdir)
    if not path.exists():
        raise CheckpointError(f"workdir {str(path)!r} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"workdir {str(path)!r} is not a directory")
    if not has_checkpoint(path):
        raise CheckpointError(
            f"workdir {str(path)!r} has no checkpoint (train first: python -m jaxgan.train --workdir {path})"
        )
    return path


def load(workdir: str | Path, epoch: int | None = None) -> Restored:
    """The checkpoint of `epoch` (default: the latest) of the run in `workdir`, read-only."""
    path = check_workdir(workdir)
    try:
        checkpointer = Checkpointer(path, read_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read the checkpoints in {checkpoint_dir(path)}: {_first_line(err)}") from None
    with checkpointer:
        return checkpointer.restore(epoch)


def load_state(workdir: str | Path, epoch: int | None = None) -> steps.GANState:
    """The GANState of the latest checkpoint in `workdir` (or of `epoch`); CheckpointError otherwise."""
    return load(workdir, epoch).state


def read_config(workdir: str | Path) -> Config:
    """The config of the latest checkpoint in `workdir` (CheckpointError if there is none)."""
    path = check_workdir(workdir)
    with Checkpointer(path, read_only=True) as checkpointer:
        latest = checkpointer.latest()
        if latest is None:
            raise CheckpointError(f"no checkpoint in {checkpoint_dir(path)}")
        try:
            return Config.from_dict(checkpointer.read_meta(latest)["config"])
        except Exception as err:
            raise CheckpointError(
                f"checkpoint {step_path(checkpointer.directory, latest)} is unusable: {_first_line(err)}"
            ) from None
