"""A run's directory and the files the loop writes there (process 0 only).

WORKDIR/config.json          the run's config, and the dataset actually used
        metrics.jsonl        one JSON row per epoch (the epochs of the state it continues from)
        losses.png           D/G losses and D(x)/D(G(z)) over epochs
        quality.png          with --eval-every: FD and classifier score over epochs
        samples/epoch_XXXX.png  sample grids
        samples/progress.gif    the grids in order, as one animation
        checkpoints/epoch_XXXX/ the whole training state (jaxgan.checkpoint)
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from jaxgan import visualize
from jaxgan.cli import UserError
from jaxgan.config import Config


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

    def prepare(self) -> None:
        """Create the workdir if needed; UserError in one line unless it is a writable directory."""
        if self.workdir.exists() and not self.workdir.is_dir():
            raise UserError(f"workdir {str(self.workdir)!r} exists and is not a directory")
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.workdir):
                pass
        except OSError as err:
            raise UserError(f"workdir {str(self.workdir)!r} is not writable: {err.strerror or err}") from None

    def sample(self, epoch: int) -> Path:
        return self.samples / f"epoch_{epoch:04d}.png"

    def read_metrics(self, up_to_epoch: int) -> list[dict]:
        """The metrics.jsonl rows of epochs 1..up_to_epoch (rows of later epochs, written before a
        crash or stop, belong to no checkpoint and are dropped)."""
        if not self.metrics.is_file():
            return []
        rows = [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]
        return [row for row in rows if row.get("epoch", 0) <= up_to_epoch]

    def clear_outputs(self) -> None:
        """Remove a previous run's metrics, plots and sample grids (a run that starts at epoch 0)."""
        for path in (self.metrics, self.losses, self.quality, self.progress):
            path.unlink(missing_ok=True)
        if self.samples.is_dir():
            for grid in self.samples.glob("epoch_*.png"):
                grid.unlink()

    def begin(self, config: Config, dataset: str, description: str, history: list[dict]) -> None:
        """Write config.json and a metrics.jsonl holding exactly `history` (the restored epochs)."""
        self.samples.mkdir(parents=True, exist_ok=True)
        record = {**config.to_dict(), "dataset_resolved": dataset, "dataset_description": description}
        self.config.write_text(json.dumps(record, indent=2) + "\n")
        self.metrics.write_text("".join(json.dumps(row) + "\n" for row in history))

    def append(self, row: dict) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def save_grid(self, images: np.ndarray, epoch: int, grid_size: int) -> None:
        visualize.save_grid(images, self.sample(epoch), grid_size)

    def finish(self, history: list[dict]) -> None:
        """The run's pictures: losses.png, samples/progress.gif (every grid so far, in order), and
        quality.png when some rows were evaluated."""
        visualize.plot_history(history, self.losses)
        visualize.save_progress_gif(sorted(self.samples.glob("epoch_*.png")), self.progress)
        if any("fd" in row for row in history):
            visualize.plot_quality(history, self.quality)
