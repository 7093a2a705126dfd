"""The training loop: data on the device, jitted chunks of steps, logs, samples and plots.

The loop only drives; all maths is in `jaxgan.steps`. Each epoch's shuffled batch
indices are computed on the device, then the epoch runs as ceil(steps / log_every)
calls of the jitted `train_steps` scan (one call per epoch when log_every >= steps).
Metrics come back to the host once per call, which is also when the progress bar moves.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxgan import data as data_lib
from jaxgan import steps, visualize
from jaxgan.config import Config

METRIC_NAMES = ("d_loss", "g_loss", "d_real", "d_fake")


class RunPaths:
    """Where a run writes: DIR/config.json, metrics.jsonl, losses.png, samples/epoch_XXXX.png."""

    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.config = self.workdir / "config.json"
        self.metrics = self.workdir / "metrics.jsonl"
        self.losses = self.workdir / "losses.png"
        self.samples = self.workdir / "samples"

    def sample(self, epoch: int) -> Path:
        return self.samples / f"epoch_{epoch:04d}.png"


def format_epoch_line(row: dict, epochs: int) -> str:
    """The per-epoch log line, in the seeds' words."""
    return (
        f"Epoch [{row['epoch']}/{epochs}] step {row['step']}  D loss: {row['d_loss']:.4f}  G loss: {row['g_loss']:.4f}  "
        f"D(x): {row['d_real']:.3f}  D(G(z)): {row['d_fake']:.3f}  {row['seconds']:.2f}s  {row['images_per_s']:,.0f} img/s"
    )


def fit(
    config: Config,
    workdir: str | Path,
    *,
    dataset: data_lib.Dataset | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[steps.GANState, list[dict]]:
    """Train `config` for config.epochs epochs, writing the run's files to `workdir`.

    Returns the final state and the per-epoch metric rows (also in metrics.jsonl).
    """
    log = log or (lambda msg: tqdm.write(msg, file=sys.stdout))
    paths = RunPaths(workdir)
    paths.samples.mkdir(parents=True, exist_ok=True)
    if dataset is None:
        dataset = data_lib.load(config.dataset, config.data_dir, notify=log)
    num_examples, batch_size = len(dataset.images), config.batch_size
    steps_per_epoch = num_examples // batch_size
    if steps_per_epoch == 0:
        raise data_lib.DataError(f"batch_size {batch_size} is larger than the {num_examples} images of {dataset.name}")
    paths.config.write_text(json.dumps({**config.to_dict(), "dataset_resolved": dataset.name}, indent=2) + "\n")
    paths.metrics.write_text("")

    images = jax.device_put(dataset.images)  # (N, 28, 28, 1), stays on the device
    state = steps.create_state(config, config.seed)
    run_steps = jax.jit(steps.train_steps, donate_argnums=0)
    batch_indices = jax.jit(steps.epoch_batch_indices, static_argnums=(2, 3))
    sample = jax.jit(steps.generate, static_argnums=0)
    fixed_noise = steps.sample_noise(state, config.grid_size**2)
    chunk = min(config.log_every, steps_per_epoch)
    log(
        f"jaxgan: preset {config.preset}, {dataset.name} ({num_examples:,} images), batch {batch_size}, "
        f"{steps_per_epoch} steps/epoch, {config.epochs} epochs on {jax.devices()[0].platform.upper()} -> {paths.workdir}"
    )

    history: list[dict] = []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        indices = batch_indices(state.key, epoch - 1, num_examples, batch_size)  # (steps, B)
        sums = dict.fromkeys(METRIC_NAMES, 0.0)
        bar = tqdm(
            total=steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}", unit="step", leave=False, disable=not progress
        )
        for first in range(0, steps_per_epoch, chunk):
            state, metrics = run_steps(state, images, indices[first : first + chunk])
            metrics = jax.device_get(metrics)  # the one host sync per chunk
            for name in METRIC_NAMES:
                sums[name] += float(np.sum(metrics[name]))
            bar.update(len(metrics["d_loss"]))
            bar.set_postfix(d_loss=f"{metrics['d_loss'][-1]:.3f}", g_loss=f"{metrics['g_loss'][-1]:.3f}")
        bar.close()
        seconds = time.perf_counter() - start
        row = {
            "epoch": epoch,
            "step": int(state.step),
            **{name: sums[name] / steps_per_epoch for name in METRIC_NAMES},
            "seconds": round(seconds, 4),
            "images_per_s": round(steps_per_epoch * batch_size / seconds, 1),
        }
        history.append(row)
        with paths.metrics.open("a") as f:
            f.write(json.dumps(row) + "\n")
        log(format_epoch_line(row, config.epochs))
        if epoch % config.sample_every == 0 or epoch == config.epochs:
            visualize.save_grid(
                np.asarray(sample(config, state.g_params, fixed_noise)), paths.sample(epoch), config.grid_size
            )
    visualize.plot_history(history, paths.losses)
    final = history[-1]
    log(
        f"done: {config.epochs} epochs, {int(state.step)} steps in {sum(r['seconds'] for r in history):.1f}s; "
        f"final D loss {final['d_loss']:.4f}, G loss {final['g_loss']:.4f}; samples in {paths.samples}"
    )
    return state, history
