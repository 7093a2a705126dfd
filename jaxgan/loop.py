"""The training loop: data on the device, jitted chunks of steps, logs, samples and plots.

The loop only drives; all maths is in `jaxgan.steps`. Each epoch's shuffled batch
indices are computed on the device, then the epoch runs as ceil(steps / log_every)
calls of the jitted `train_steps` scan (one call per epoch when log_every >= steps).
Metrics come back to the host once per call, which is also when the progress bar moves.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxgan import checkpoint, parallel, steps, visualize
from jaxgan import data as data_lib
from jaxgan.config import Config

METRIC_NAMES = ("d_loss", "g_loss", "d_real", "d_fake")


class RunPaths:
    """Where a run writes: DIR/config.json, metrics.jsonl, losses.png, quality.png (with
    --eval-every), samples/epoch_XXXX.png and checkpoints/epoch_XXXX/ (see `jaxgan.checkpoint`)."""

    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.config = self.workdir / "config.json"
        self.metrics = self.workdir / "metrics.jsonl"
        self.losses = self.workdir / "losses.png"
        self.quality = self.workdir / "quality.png"
        self.samples = self.workdir / "samples"

    def sample(self, epoch: int) -> Path:
        return self.samples / f"epoch_{epoch:04d}.png"


def format_epoch_line(row: dict, epochs: int) -> str:
    """The per-epoch log line, in the seeds' words."""
    return (
        f"Epoch [{row['epoch']}/{epochs}] step {row['step']}  D loss: {row['d_loss']:.4f}  G loss: {row['g_loss']:.4f}  "
        f"D(x): {row['d_real']:.3f}  D(G(z)): {row['d_fake']:.3f}  {row['seconds']:.2f}s  {row['images_per_s']:,.0f} img/s"
    )


def format_quality_line(row: dict) -> str:
    """The log line of an epoch's sample-quality metrics."""
    return (
        f"  quality: FD@{row['fd_n']} {row['fd']:.2f}  score {row['score']:.2f}  "
        f"coverage KL {row['coverage_kl']:.3f}  max-prob {row['max_prob']:.3f}"
    )


class Diverged(Exception):
    """Training produced a non-finite loss or parameter; the message names the epoch and metric."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run after a checkpoint was saved."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class StopOnSignal:
    """Turns the first SIGINT/SIGTERM into a request to stop at the next epoch boundary.

    A second signal stops the process at once (exit 128 + signal number), keeping the
    last complete checkpoint. Outside the main thread signals cannot be caught; then
    this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, notify: Callable[[str], None]):
        self.notify = notify
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            # Stop now. os._exit, not an exception: an asynchronous save may be running in
            # a background thread; it is left as a temporary directory, never half-committed.
            print(
                f"stopped at once by a second {signal.Signals(signum).name}; the last complete checkpoint is kept",
                file=sys.stderr,
                flush=True,
            )
            sys.stdout.flush()
            os._exit(128 + signum)
        self.signum = signum
        self.notify(
            f"received {signal.Signals(signum).name}: stopping after this epoch and saving a checkpoint "
            "(send it again to stop at once, keeping the last checkpoint)"
        )


@jax.jit
def all_finite(tree) -> jax.Array:
    """True when every leaf of `tree` is finite (one scalar, computed on the device)."""
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


def check_finite(metrics: dict, first_step: int, epoch: int) -> None:
    """Diverged naming the first step and metric that is not finite in a chunk's (n,) metrics."""
    for i in range(len(metrics["d_loss"])):
        for name in METRIC_NAMES:
            if not np.isfinite(metrics[name][i]):
                raise Diverged(f"{name} is {metrics[name][i]} at step {first_step + i + 1} (epoch {epoch})")


def run_epoch(state, images, indices, run_steps, *, epoch: int, chunk: int, bar) -> tuple[steps.GANState, dict]:
    """Run one epoch's batches `indices` (steps, B) in jitted chunks of `chunk` steps.

    Returns the new state and the epoch means of METRIC_NAMES; raises Diverged at the
    first non-finite metric (checked per chunk) or parameter (checked at the end).
    """
    steps_per_epoch = len(indices)
    per_step = {name: [] for name in METRIC_NAMES}  # host arrays, one per chunk
    for first in range(0, steps_per_epoch, chunk):
        state, metrics = run_steps(state, images, indices[first : first + chunk])
        metrics = jax.device_get(metrics)  # the one host sync per chunk
        check_finite(metrics, int(state.step) - len(metrics["d_loss"]), epoch)
        for name in METRIC_NAMES:
            per_step[name].append(metrics[name])
        bar.update(len(metrics["d_loss"]))
        bar.set_postfix(d_loss=f"{metrics['d_loss'][-1]:.3f}", g_loss=f"{metrics['g_loss'][-1]:.3f}")
    if not all_finite((state.g_params, state.d_params)):
        raise Diverged(f"the parameters are not finite after epoch {epoch}")
    # Means over the epoch's steps in one fixed order: the same for any chunk size.
    return state, {name: float(np.mean(np.concatenate(per_step[name]), dtype=np.float64)) for name in METRIC_NAMES}


def resume_point(
    checkpointer: checkpoint.Checkpointer, config: Config, resume: bool | None, log: Callable[[str], None]
) -> checkpoint.Restored | None:
    """The checkpoint to continue from, or None to start afresh.

    resume None: the latest checkpoint if there is one; True: the latest, which must
    exist; False: start over, deleting the run's old checkpoints.
    """
    epochs = checkpointer.epochs()
    if resume is False:
        if epochs:
            log(f"--no-resume: deleting {len(epochs)} old checkpoint(s) in {checkpointer.directory}")
            for epoch in epochs:
                checkpointer.manager.delete(epoch)
        return None
    if not epochs:
        if resume:
            raise checkpoint.CheckpointError(f"--resume: no checkpoint to resume from in {checkpointer.directory}")
        return None
    restored = checkpointer.restore()
    checkpoint.check_resumable(restored.state.config, config)
    return restored


def fit(
    config: Config,
    workdir: str | Path,
    *,
    dataset: data_lib.Dataset | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    resume: bool | None = None,
    evaluator=None,
) -> tuple[steps.GANState, list[dict]]:
    """Train `config` for config.epochs epochs in total, writing the run's files to `workdir`.

    Continues from the latest checkpoint in `workdir` when there is one (see
    `resume_point` for `resume`), bit for bit as if never stopped. Saves a checkpoint
    every config.checkpoint_every epochs, at the end, and when SIGINT/SIGTERM asks to
    stop (then raises Interrupted). Raises Diverged on a non-finite loss or parameter,
    keeping the checkpoints saved before it, and CheckpointError for a checkpoint that
    cannot be used. Returns the final state and the per-epoch metric rows (also in
    metrics.jsonl). With config.eval_every > 0 the sample-quality metrics of
    `jaxgan.metrics` join the rows of every eval_every-th and the last epoch, measured
    with `evaluator` (default: the dataset's, `metrics.Evaluator.for_dataset`).
    """
    placement = parallel.Placement(config.data_parallel)
    placement.check_batch_size(config.batch_size)
    primary = parallel.is_primary()  # only process 0 writes files and logs
    if not primary:
        log, progress = (lambda msg: None), False
    log = log or (lambda msg: tqdm.write(msg, file=sys.stdout))
    paths = RunPaths(workdir)
    if primary:
        paths.samples.mkdir(parents=True, exist_ok=True)
    with checkpoint.Checkpointer(paths.workdir, keep=config.keep_checkpoints) as checkpointer:
        start = resume_point(checkpointer, config, resume, log)
        if start is not None and start.epoch >= (total := config.resolved(start.num_examples).epochs):
            log(
                f"{paths.workdir} has already trained {start.epoch} epochs (--epochs {total}): nothing to do; "
                f"raise --epochs to train longer"
            )
            return start.state, start.history
        if dataset is None:
            name = start.dataset if start is not None else config.dataset
            dataset = data_lib.load(name, config.data_dir, notify=log)
        parallel.check_same_data(dataset.images)
        num_examples, batch_size = len(dataset.images), config.batch_size
        steps_per_epoch = num_examples // batch_size
        if steps_per_epoch == 0:
            raise data_lib.DataError(
                f"batch_size {batch_size} is larger than the {num_examples} images of {dataset.name}"
            )
        epochs_line = config.describe_epochs(num_examples, dataset.name)
        config = config.resolved(num_examples)  # concrete epochs, sample_every, checkpoint_every
        if start is not None and (start.dataset, start.num_examples) != (dataset.name, num_examples):
            raise checkpoint.CheckpointError(
                f"the checkpoint was trained on {start.dataset} ({start.num_examples:,} images), "
                f"not {dataset.name} ({num_examples:,} images)"
            )
        history = list(start.history) if start is not None else []
        if primary:
            paths.config.write_text(json.dumps({**config.to_dict(), "dataset_resolved": dataset.name}, indent=2) + "\n")
            # metrics.jsonl holds exactly the epochs of the state we continue from.
            paths.metrics.write_text("".join(json.dumps(row) + "\n" for row in history))

        images = placement.replicate(dataset.images)  # (N, 28, 28, 1), stays on the device(s)
        state = start.state if start is not None else steps.create_state(config, config.seed)
        state = placement.replicate(state.replace(config=config))  # the resumable fields may have changed
        first_epoch = start.epoch + 1 if start is not None else 1
        if int(state.step) != (first_epoch - 1) * steps_per_epoch:
            raise checkpoint.CheckpointError(
                f"checkpoint step {int(state.step)} is not epoch {first_epoch - 1} x {steps_per_epoch} steps"
            )
        run_steps = placement.train_steps()
        batch_indices = placement.batch_indices()
        sample = placement.generate()
        fixed_noise = steps.sample_noise(state, config.grid_size**2)
        chunk = min(config.log_every, steps_per_epoch)
        resumed = f", resuming after epoch {start.epoch}" if start is not None else ""
        log(
            f"jaxgan: preset {config.preset}, {dataset.name} ({num_examples:,} images), batch {batch_size}, "
            f"{steps_per_epoch} steps/epoch, {config.epochs} epochs{resumed} on "
            f"{placement.describe()} -> {paths.workdir}"
        )
        log(f"epochs: {epochs_line}")

        def save(state: steps.GANState, epoch: int) -> Path:
            return checkpointer.save(state, epoch, dataset=dataset.name, num_examples=num_examples, history=history)

        def evaluate(state: steps.GANState) -> dict:
            nonlocal evaluator
            if evaluator is None:
                from jaxgan import metrics

                evaluator = metrics.Evaluator.for_dataset(dataset.name, data_dir=config.data_dir, log=log)
            return evaluator.generator(config, steps.sampling_params(state), config.seed)

        last_saved = start.epoch if start is not None else None
        with StopOnSignal(log) as stop:
            for epoch in range(first_epoch, config.epochs + 1):
                start_time = time.perf_counter()
                indices = batch_indices(state.key, epoch - 1, num_examples, batch_size)  # (steps, B)
                bar = tqdm(
                    total=steps_per_epoch,
                    desc=f"epoch {epoch}/{config.epochs}",
                    unit="step",
                    leave=False,
                    disable=not progress,
                )
                try:
                    state, means = run_epoch(state, images, indices, run_steps, epoch=epoch, chunk=chunk, bar=bar)
                except Diverged as err:
                    checkpointer.wait()
                    kept = (
                        f"the last good checkpoint is epoch {last_saved} ({checkpoint.step_path(checkpointer.directory, last_saved)})"
                        if last_saved is not None
                        else "no checkpoint had been saved yet"
                    )
                    raise Diverged(f"training diverged: {err}; {kept}. Try a smaller --lr") from None
                finally:
                    bar.close()
                seconds = time.perf_counter() - start_time
                row = {
                    "epoch": epoch,
                    "step": int(state.step),
                    **means,
                    "seconds": round(seconds, 4),
                    "images_per_s": round(steps_per_epoch * batch_size / seconds, 1),
                }
                if config.eval_every and (epoch % config.eval_every == 0 or epoch == config.epochs):
                    row.update(evaluate(state))
                    log(format_quality_line(row))
                history.append(row)
                if primary:
                    with paths.metrics.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                log(format_epoch_line(row, config.epochs))
                if epoch % config.sample_every == 0 or epoch == config.epochs:
                    grid = np.asarray(sample(config, steps.sampling_params(state), fixed_noise))  # every process
                    if primary:
                        visualize.save_grid(grid, paths.sample(epoch), config.grid_size)
                if epoch % config.checkpoint_every == 0 or epoch == config.epochs or stop.signum is not None:
                    saved_at = save(state, epoch)
                    last_saved = epoch
                if stop.signum is not None and epoch < config.epochs:
                    checkpointer.wait()
                    name = signal.Signals(stop.signum).name
                    raise Interrupted(
                        f"stopped by {name} after epoch {epoch}/{config.epochs}; checkpoint saved in {saved_at}. "
                        f"Resume with: python -m jaxgan.train --workdir {paths.workdir}",
                        stop.signum,
                    )
    if primary:
        visualize.plot_history(history, paths.losses)
        if any("fd" in row for row in history):
            visualize.plot_quality(history, paths.quality)
    final = history[-1]
    trained = history[first_epoch - 1 :]
    log(
        f"done: {config.epochs} epochs, {int(state.step)} steps ({len(trained)} epochs in "
        f"{sum(r['seconds'] for r in trained):.1f}s this run); final D loss {final['d_loss']:.4f}, "
        f"G loss {final['g_loss']:.4f}; samples in {paths.samples}, checkpoints in {checkpointer.directory}"
    )
    if "fd" in final and evaluator is not None:
        from jaxgan import metrics

        weights = f"EMA {config.ema_decay}" if config.ema_decay else "raw"
        log(
            metrics.format_table(
                [
                    (f"epoch {final['epoch']} ({weights})", final),
                    ("ceiling (real)", evaluator.ceiling(config.seed)),
                    ("floor (untrained)", evaluator.floor(config, config.seed)),
                ]
            )
        )
    return state, history
