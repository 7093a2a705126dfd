"""A run's directory and the files the loop writes there (process 0 only).

WORKDIR/config.json          the run's config, and the dataset actually used
        metrics.jsonl        one JSON row per epoch (the epochs of the state it continues from)
        losses.png           D/G losses and D(x)/D(G(z)) over epochs
        quality.png          with --eval-every: FD and classifier score over epochs
        samples/epoch_XXXX.png  sample grids
        samples/progress.gif    the grids in order, as one animation
        checkpoints/epoch_XXXX/ the whole training state (jaxgan.checkpoint)
        .lock                held (flock) by the run training in it

`RunDir.prepare` is a training run's pre-flight: before any data is loaded or anything is
deleted, it takes the lock and checks that everything the run will write can be written.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from jaxgan import visualize
from jaxgan.checkpoint import CHECKPOINT_DIR
from jaxgan.cli import UserError, first_line
from jaxgan.config import Config

LOCK = ".lock"
# The longest path orbax writes below checkpoints/: a step's temporary directory and its ocdbt data
# files (a 32-character hash), with room for longer epochs and tensorstore's own temporary names.
CHECKPOINT_PATH_TAIL = len("epoch_0000.orbax-checkpoint-tmp/state/ocdbt.process_0/d/") + 32 + 64


class RunDir:
    """The paths of one run directory and the writes the training loop makes to it."""

    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.config = self.workdir / "config.json"
        self.metrics = self.workdir / "metrics.jsonl"
        self.losses = self.workdir / "losses.png"
        self.quality = self.workdir / "quality.png"
        self.samples = self.workdir / "samples"
        self.progress = self.samples / "progress.gif"
        self.checkpoints = self.workdir / CHECKPOINT_DIR
        self._lock: int | None = None  # the file descriptor of WORKDIR/.lock while this process holds it

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def prepare(self) -> None:
        """The pre-flight of a training run; UserError in one line, having changed nothing but
        creating the workdir and its lock file, unless the run can write everything it will write.

        The workdir is created if needed; this process takes its lock (`lock`); checkpoints/ and
        samples/ must be writable directories where they exist, metrics.jsonl, config.json and the
        plots writable files, and the deepest checkpoint path within the system's PATH_MAX.
        """
        _check_dir(self.workdir, "workdir", create=True)
        self.lock()
        for path in (self.checkpoints, self.samples):
            if os.path.lexists(path):
                _check_dir(path, f"{path.name} directory")
        for path in (self.config, self.metrics, self.losses, self.quality, self.progress):
            _check_file(path)
        try:
            limit = os.pathconf(self.workdir, "PC_PATH_MAX")
        except (OSError, ValueError):
            limit = 4096
        longest = len(os.fsencode(self.checkpoints.absolute())) + 1 + CHECKPOINT_PATH_TAIL
        if longest >= limit:
            raise UserError(
                f"workdir {str(self.workdir)!r} is too deep: its checkpoints need paths of up to {longest:,} bytes, "
                f"and this system allows {limit:,} (PATH_MAX); use a shorter --workdir"
            )

    def lock(self, elsewhere: str = "another --workdir") -> None:
        """Hold WORKDIR/.lock (an exclusive `fcntl.flock`) until `release` or the end of the process: the
        OS drops it when the process dies, even by kill -9, so no stale lock is left. UserError naming
        the holder's PID when another run holds it, advising to wait or use `elsewhere`."""
        if self._lock is not None:
            return
        path = self.workdir / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise UserError(f"cannot create the lock file {str(path)!r}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "its PID is not written yet"
            os.close(fd)
            raise UserError(
                f"workdir {str(self.workdir)!r} is in use by another run ({holder}); "
                f"wait for it to finish, or use {elsewhere}"
            ) from None
        except OSError:  # a file system without locks: train without one
            os.close(fd)
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._lock = fd

    def release(self) -> None:
        """Give the lock back (closing its file; the lock file itself stays)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def sample(self, epoch: int) -> Path:
        return self.samples / f"epoch_{epoch:04d}.png"

    def read_config(self) -> Config | None:
        """The config recorded in config.json, or None when there is none that reads as a valid config
        (a run stopped before writing it, or a file that is not ours: it is rewritten when training starts)."""
        try:
            record = json.loads(self.config.read_text())
            fields = set(Config.__dataclass_fields__)
            return Config.from_dict({k: v for k, v in record.items() if k in fields}).validate()
        except (OSError, ValueError, AttributeError):
            return None

    def read_metrics(self, up_to_epoch: int) -> list[dict]:
        """The metrics.jsonl rows of epochs 1..up_to_epoch (rows of later epochs, written before a
        crash or stop, belong to no checkpoint and are dropped)."""
        if not self.metrics.is_file():
            return []
        rows = []
        for line in self.metrics.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):  # a line cut short by a crash, or not ours
                rows.append(json.loads(line))
        return [
            row
            for row in rows
            if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] <= up_to_epoch
        ]

    def clear_outputs(self) -> None:
        """Remove a previous run's metrics, plots and sample grids (a run that starts at epoch 0)."""
        for path in (self.metrics, self.losses, self.quality, self.progress):
            path.unlink(missing_ok=True)
        if self.samples.is_dir():
            for grid in self.samples.glob("epoch_*.png"):
                grid.unlink()

    # Each write below raises UserError naming its path and the OS error (a full disk, ...).

    def begin(self, config: Config, dataset: str, description: str, history: list[dict]) -> None:
        """Write config.json and a metrics.jsonl holding exactly `history` (the restored epochs)."""
        with _writing(self.samples):
            self.samples.mkdir(parents=True, exist_ok=True)
        record = {**config.to_dict(), "dataset_resolved": dataset, "dataset_description": description}
        with _writing(self.config):
            self.config.write_text(json.dumps(record, indent=2) + "\n")
        with _writing(self.metrics):
            self.metrics.write_text("".join(json.dumps(row) + "\n" for row in history))

    def append(self, row: dict) -> None:
        with _writing(self.metrics), self.metrics.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def save_grid(self, images: np.ndarray, epoch: int, grid_size: int) -> None:
        with _writing(self.sample(epoch)):
            visualize.save_grid(images, self.sample(epoch), grid_size)

    def finish(self, history: list[dict]) -> None:
        """The run's pictures: losses.png, samples/progress.gif (every grid so far, in order), and
        quality.png when some rows were evaluated."""
        with _writing(self.losses):
            visualize.plot_history(history, self.losses)
        with _writing(self.progress):
            visualize.save_progress_gif(sorted(self.samples.glob("epoch_*.png")), self.progress)
        if any("fd" in row for row in history):
            with _writing(self.quality):
                visualize.plot_quality(history, self.quality)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """UserError naming `path` and the OS error for an OSError inside the block."""
    try:
        yield
    except OSError as err:
        raise UserError(f"cannot write {str(path)!r}: {err.strerror or first_line(err)}") from None


def _check_dir(path: Path, what: str, create: bool = False) -> None:
    """UserError unless `path` is (or, with `create`, can be made) a directory this process can write in."""
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        pass  # not a directory: said below
    except OSError as err:
        raise UserError(f"cannot create {what} {str(path)!r}: {err.strerror}") from None
    if not path.is_dir():
        if path.is_symlink() and not path.exists():
            raise UserError(f"{what} {str(path)!r} is a broken symbolic link (or a loop of them)")
        raise UserError(f"{what} {str(path)!r} exists and is not a directory")
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UserError(f"{what} {str(path)!r} is not writable: {err.strerror}") from None


def _check_file(path: Path) -> None:
    """UserError unless `path` is absent (its directory was checked) or a regular file this process can write."""
    if not os.path.lexists(path):
        return
    if path.is_dir():
        raise UserError(f"{str(path)!r} is a directory, where the run writes a file")
    if not path.is_file():
        raise UserError(f"{str(path)!r} is not a regular file (a broken link, a pipe, ...), where the run writes one")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))  # opens for writing, changes nothing
    except OSError as err:
        raise UserError(f"{str(path)!r} is not writable: {err.strerror}") from None
