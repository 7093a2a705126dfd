"""Training: the GAN's state, its pure train step, a whole epoch as one `lax.scan`, and the loop.

One step does what every seed does per batch:

  (1) Update D: maximise log D(x) + log(1 - D(G(z_d))), with G held fixed
      (the seeds' `fake.detach()`);
  (2) Update G: maximise log D'(G(z_g)) through the *updated* discriminator D'
      on fresh noise z_g (the non-saturating generator loss).

Nothing inside `jit` reads a global: the networks and optimisers are rebuilt from the
state's static `config`, and all randomness comes from the state's key and step counter
(`step_noise`, `epoch_batch_indices`), so a run is a pure function of (config, data).

Losses use logits. For a logit l and target y, `optax.sigmoid_binary_cross_entropy`
computes -[y log sigmoid(l) + (1-y) log(1 - sigmoid(l))] in a stable form, which is
exactly the seeds' `nn.Sigmoid()` + `nn.BCELoss()` wherever PyTorch's clamp of each
log term at -100 is not hit. In float32 that clamp only bites once sigmoid(l)
rounds to exactly 0 or 1 (|l| above about 17 for 1 - sigmoid, 88 for sigmoid), where
the seeds' loss and gradient saturate and this one stays exact.

The loop, `train_and_evaluate(config, workdir)`, only drives: it restores or starts the
state (`jaxgan.checkpoint.restore_or_init`), runs each epoch as jitted chunks of
`train_steps`, and hands the run's files to `jaxgan.rundir`. Metrics come back to the
host once per chunk (`config.log_every` steps), which is also when the progress bar moves.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxgan import checkpoint, parallel, rundir, sampling, signals
from jaxgan import data as data_lib
from jaxgan.cli import UserError
from jaxgan.config import Config
from jaxgan.losses import bce_with_logits
from jaxgan.models import discriminate, generate, init_params
from jaxgan.optim import AdamHyper, torch_adam

Params = Any
Metrics = dict[str, jax.Array]

# Independent random streams derived from the run's key (jax.random.fold_in tags);
# sampling.SAMPLE_STREAM (3) is the noise of sample grids and generated images.
INIT_STREAM, NOISE_STREAM, SHUFFLE_STREAM = 0, 1, 2
METRIC_NAMES = ("d_loss", "g_loss", "d_real", "d_fake")


@flax.struct.dataclass
class GANState:
    """Everything that changes during training, as one pytree.

    step: int32 scalar, the number of steps taken.
    key: the run's PRNG key; never split in place, every use folds in a stream tag
        and the step or epoch, so a resumed run draws the same numbers.
    g_ema_params: the exponential moving average of g_params (`ema_update`), or None
        when config.ema_decay is 0: then the pytree is exactly the one without EMA.
    config: static (not traced); changing it means a new compilation.
    adam: None (every single run): Adam's lr and beta1 are config's, compiled in. A group of
        runs sweeping them (`jaxgan.multirun`) holds them here as traced arrays instead
        (`optim.AdamHyper`), so one compilation serves the whole grid; never checkpointed.
    """

    step: jax.Array
    g_params: Params
    d_params: Params
    g_opt_state: optax.OptState
    d_opt_state: optax.OptState
    key: jax.Array
    g_ema_params: Params | None
    config: Config = flax.struct.field(pytree_node=False)
    adam: AdamHyper | None = None


def optimizer(config: Config, adam: AdamHyper | None = None) -> optax.GradientTransformation:
    """torch.optim.Adam(lr, betas=(beta1, beta2), eps=1e-8), the same for G and D, with
    PyTorch's rounding (`jaxgan.optim.torch_adam`; optax.adam's state layout).
    lr and beta1 are config's, or `adam`'s traced values when given (a sweep)."""
    if adam is not None:
        return torch_adam(adam.lr, b1=adam.beta1, b2=config.beta2, eps=1e-8)
    return torch_adam(config.lr, b1=config.beta1, b2=config.beta2, eps=1e-8)


def create_state(config: Config, rng: jax.Array | int) -> GANState:
    """A fresh state: initial params of both nets, both Adam states, step 0, and `rng`."""
    key = jax.random.key(rng) if isinstance(rng, int) else rng
    g_params, d_params = init_params(config, jax.random.fold_in(key, INIT_STREAM))
    tx = optimizer(config)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params,
        d_params=d_params,
        g_opt_state=tx.init(g_params),
        d_opt_state=tx.init(d_params),
        key=key,
        g_ema_params=jax.tree.map(jnp.copy, g_params) if config.ema_decay > 0 else None,
        config=config,
    )


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
    """The EMA decay used after `step` steps: min(decay, (1 + step) / (10 + step)).

    The warm-up keeps the average from being dominated by the random init early on
    (as in TensorFlow's ExponentialMovingAverage with num_updates).
    """
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))


def ema_update(ema_params: Params, params: Params, decay: jax.Array) -> Params:
    """decay * ema + (1 - decay) * params, leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


def sampling_params(state: GANState) -> Params:
    """The generator params to sample and evaluate with: the EMA when it is on, else g_params."""
    return state.g_ema_params if state.g_ema_params is not None else state.g_params


def d_loss_fn(config: Config, d_params: Params, real: jax.Array, fake: jax.Array):
    """BCE(D(real), 1) + BCE(D(fake), 0) -> (loss, (mean D(real), mean D(fake))).

    Two discriminator passes, as in the seeds (one pass over [real; fake] measured slower:
    docs/performance.md).
    """
    real_logits = discriminate(config, d_params, real)
    fake_logits = discriminate(config, d_params, fake)
    loss = bce_with_logits(real_logits, 1.0) + bce_with_logits(fake_logits, 0.0)
    return loss, (jax.nn.sigmoid(real_logits).mean(), jax.nn.sigmoid(fake_logits).mean())


def g_loss_fn(config: Config, g_params: Params, d_params: Params, z: jax.Array) -> jax.Array:
    """Non-saturating generator loss BCE(D(G(z)), 1)."""
    return bce_with_logits(discriminate(config, d_params, generate(config, g_params, z)), 1.0)


def train_step(state: GANState, real: jax.Array, z_d: jax.Array, z_g: jax.Array) -> tuple[GANState, Metrics]:
    """One D update then one G update, with explicit noise.

    real: (B, 28, 28, 1) float32 in [-1, 1]; z_d, z_g: (B, latent_dim).
    With config.ema_decay > 0, g_ema_params is also updated (`ema_update`).
    Returns the new state and scalar metrics d_loss, g_loss, d_real (mean D(x)) and
    d_fake (mean D(G(z_d)), before the D update).
    """
    config = state.config
    tx = optimizer(config, state.adam)

    # (1) Update D on real and fake images; stop_gradient is the seeds' fake.detach().
    fake = jax.lax.stop_gradient(generate(config, state.g_params, z_d))
    (d_loss, (d_real, d_fake)), d_grads = jax.value_and_grad(d_loss_fn, argnums=1, has_aux=True)(
        config, state.d_params, real, fake
    )
    d_updates, d_opt_state = tx.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    # (2) Update G through the updated D, on fresh noise.
    g_loss, g_grads = jax.value_and_grad(g_loss_fn, argnums=1)(config, state.g_params, d_params, z_g)
    g_updates, g_opt_state = tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    # (3) Generator EMA (when on): average the new G weights, with the decay of this step.
    g_ema_params = state.g_ema_params
    if g_ema_params is not None:
        g_ema_params = ema_update(g_ema_params, g_params, ema_decay_at(config.ema_decay, state.step))

    new_state = state.replace(
        step=state.step + 1,
        g_params=g_params,
        d_params=d_params,
        g_opt_state=g_opt_state,
        d_opt_state=d_opt_state,
        g_ema_params=g_ema_params,
    )
    metrics = {"d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake}
    return new_state, metrics


def step_noise(state: GANState, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """The (z_d, z_g) noise of step `state.step`, each (batch_size, latent_dim)."""
    key = jax.random.fold_in(jax.random.fold_in(state.key, NOISE_STREAM), state.step)
    d_key, g_key = jax.random.split(key)
    shape = (batch_size, state.config.latent_dim)
    return jax.random.normal(d_key, shape), jax.random.normal(g_key, shape)


def train_step_keyed(state: GANState, real: jax.Array) -> tuple[GANState, Metrics]:
    """`train_step` with noise drawn from the state's key and step (`step_noise`)."""
    z_d, z_g = step_noise(state, real.shape[0])
    return train_step(state, real, z_d, z_g)


def epoch_batch_indices(key: jax.Array, epoch: jax.Array | int, num_examples: int, batch_size: int) -> jax.Array:
    """The shuffled example indices of every full batch of `epoch`: (steps, batch_size) int32.

    The last num_examples % batch_size examples of each permutation are left out:
    XLA compiles for static shapes, and a fresh permutation every epoch means every
    example is still seen.
    """
    steps = num_examples // batch_size
    perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, SHUFFLE_STREAM), epoch), num_examples)
    return perm[: steps * batch_size].reshape(steps, batch_size).astype(jnp.int32)


def steps_noise(state: GANState, num_steps: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """`step_noise` of steps state.step ... state.step + num_steps - 1: (z_d, z_g), each (num_steps, B, latent_dim).

    The same numbers as calling `step_noise` step by step (threefry is exact integer
    arithmetic), drawn in one vectorised pass.
    """
    step_numbers = state.step + jnp.arange(num_steps, dtype=state.step.dtype)
    return jax.vmap(lambda step: step_noise(state.replace(step=step), batch_size))(step_numbers)


def train_steps(state: GANState, images: jax.Array, batch_indices: jax.Array) -> tuple[GANState, Metrics]:
    """Run `train_step_keyed` over each row of batch_indices in one `lax.scan`.

    images: (N, 28, 28, 1) device-resident dataset; batch_indices: (steps, B).
    Returns the final state and metrics stacked over steps, each (steps,).
    The noise of all the steps is drawn before the loop (`steps_noise`): bit for bit the
    noise `train_step_keyed` draws, without a small RNG computation inside every step.
    """
    z_d, z_g = steps_noise(state, *batch_indices.shape)

    def body(state, batch):
        idx, z_d, z_g = batch
        return train_step(state, images[idx], z_d, z_g)

    return jax.lax.scan(body, state, (batch_indices, z_d, z_g))


def train_epoch(state: GANState, images: jax.Array) -> tuple[GANState, Metrics]:
    """Every step of one epoch in one call; the epoch is state.step // steps_per_epoch.

    Start from a state at an epoch boundary. Metrics are (steps_per_epoch,) arrays.
    """
    num_examples, batch_size = images.shape[0], state.config.batch_size
    epoch = state.step // (num_examples // batch_size)
    return train_steps(state, images, epoch_batch_indices(state.key, epoch, num_examples, batch_size))


# The loop ------------------------------------------------------------------------------------


class Diverged(Exception):
    """Training produced a non-finite loss or parameter; the message names the step and metric."""


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


def run_epoch(state, images, indices, run_steps, *, epoch: int, chunk: int, bar) -> tuple[GANState, dict]:
    """Run one epoch's batches `indices` (steps, B) in jitted chunks of `chunk` steps.

    Returns the new state and the epoch means of METRIC_NAMES; raises Diverged at the
    first non-finite metric (checked per chunk) or parameter (checked at the end).
    """
    per_step = {name: [] for name in METRIC_NAMES}  # host arrays, one per chunk
    for first in range(0, len(indices), chunk):
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


def sampling_grid_noise(state: GANState) -> jax.Array:
    """The run's fixed sample-grid noise (grid_size**2, latent_dim): `sampling.noise` of its key."""
    return sampling.noise(state.key, state.config.grid_size**2, state.config.latent_dim)


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


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def due(every: int, epoch: int, last: int) -> bool:
    """True every `every`-th epoch and at the last one."""
    return epoch % every == 0 or epoch == last


def load_checked(config: Config, placement: parallel.Placement, log: Callable[[str], None], load_dataset=None):
    """The run's dataset, checked against the config and devices (DataError/ParallelError if it cannot
    train): the one place the batch size is checked against the data and the devices."""
    dataset = (load_dataset or data_lib.load)(config.dataset, config.data_dir, notify=log)
    placement.check_batch_size(config.batch_size)
    if config.batch_size > len(dataset.images):
        raise data_lib.DataError(
            f"batch_size {config.batch_size} is larger than the {len(dataset.images):,} images of {dataset.name}"
        )
    parallel.check_same_data(dataset.images)
    return dataset


def check_trainable(config: Config) -> None:
    """UserError unless the train step can train `config`."""
    if (config.arch, config.conditional, config.loss) != ("mlp", False, "bce"):
        # The networks, losses and their torch mirrors exist (jaxgan.models, jaxgan.losses); the
        # train step does not use them yet.
        raise UserError("training dcgan, conditional or non-bce-loss configs is not implemented yet")


def train_and_evaluate(
    config: Config,
    workdir: str | Path,
    *,
    resume: bool | None = None,
    explicit: frozenset[str] | None = None,
    load_dataset: Callable[..., data_lib.Dataset] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    evaluator=None,
) -> tuple[GANState, list[dict]]:
    """Train `config` for config.epochs epochs in total, writing the run's files to `workdir`.

    Continues from the latest checkpoint in `workdir` (`checkpoint.restore_or_init`: `resume`
    None resumes when there is one, True requires one, False starts over; `explicit` names the
    fields given on the command line; None: all of `config`), bit for bit as if never stopped. Saves a checkpoint
    every config.checkpoint_every epochs, at the end, and when SIGINT/SIGTERM asks to stop
    (then raises signals.Interrupted). Raises Diverged on a non-finite loss or parameter,
    keeping the checkpoints saved before it. With config.eval_every > 0 the sample-quality
    metrics of `jaxgan.metrics` join the rows of every eval_every-th and the last epoch.
    Returns the final state and the per-epoch metric rows (also in metrics.jsonl).
    """
    check_trainable(config)
    placement = parallel.Placement(config.data_parallel)
    primary = parallel.is_primary()  # only process 0 writes files and logs
    log = (log or (lambda msg: tqdm.write(msg, file=sys.stdout))) if primary else (lambda msg: None)
    run = rundir.RunDir(workdir)
    if primary:
        run.prepare()
    start = checkpoint.restore_or_init(
        config, run.workdir, resume, explicit=explicit, log=log,
        prepare=lambda cfg: load_checked(cfg, placement, log, load_dataset),
    )  # fmt: skip
    dataset, history, num_examples = start.dataset, run.read_metrics(start.epoch), len(start.dataset.images)
    epochs_line = start.config.describe_epochs(num_examples, dataset.description or dataset.name)
    config = start.config.resolved(num_examples)  # concrete epochs, sample_every, checkpoint_every
    if start.epoch >= config.epochs:
        log(f"{run.workdir} has already trained {plural(start.epoch, 'epoch')} (--epochs {config.epochs}): "
            "nothing to do; raise --epochs to train longer")  # fmt: skip
        return start.state, history
    if primary:
        if start.epoch == 0:
            run.clear_outputs()
        run.begin(config, dataset.name, dataset.description, history)
    images = placement.replicate(dataset.images)  # (N, 28, 28, 1), stays on the device(s)
    state = placement.replicate(start.state.replace(config=config))
    batch_size = config.batch_size
    steps_per_epoch = num_examples // batch_size
    run_steps, batch_indices = placement.jit_train_steps(train_steps), placement.jit_batch_indices(epoch_batch_indices)
    grid_noise = sampling_grid_noise(state)
    resumed = f", resuming after epoch {start.epoch}" if start.epoch else ""
    log(f"jaxgan: preset {config.preset}, {dataset.description or dataset.name} ({plural(num_examples, 'image')}), "
        f"batch {batch_size}, {steps_per_epoch} steps/epoch, {plural(config.epochs, 'epoch')}{resumed} on "
        f"{placement.describe()} -> {run.workdir}\nepochs: {epochs_line}")  # fmt: skip
    with checkpoint.Checkpointer(run.workdir, keep=config.keep_checkpoints) as saver, signals.StopOnSignal(log) as stop:
        last_saved = start.epoch or None
        for epoch in range(start.epoch + 1, config.epochs + 1):
            started = time.perf_counter()
            indices = batch_indices(state.key, epoch - 1, num_examples, batch_size)  # (steps, B)
            with tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}", unit="step", leave=False,
                      disable=not (progress and primary)) as bar:  # fmt: skip
                try:
                    state, means = run_epoch(state, images, indices, run_steps, epoch=epoch, chunk=min(config.log_every, steps_per_epoch), bar=bar)  # fmt: skip
                except Diverged as err:
                    saver.wait()
                    raise Diverged(f"training diverged: {err}; {kept_checkpoint(saver, last_saved)}. Try a smaller --lr") from None  # fmt: skip
            seconds = time.perf_counter() - started
            row = {"epoch": epoch, "step": int(state.step), **means, "seconds": round(seconds, 4),
                   "images_per_s": round(steps_per_epoch * batch_size / seconds, 1)}  # fmt: skip
            if config.eval_every and due(config.eval_every, epoch, config.epochs):
                evaluator = evaluator or _evaluator(dataset.name, config, log)
                row.update(evaluator.generator(config, sampling_params(state), config.seed))
                log(format_quality_line(row))
            history.append(row)
            if primary:
                run.append(row)
            log(format_epoch_line(row, config.epochs))
            if due(config.sample_every, epoch, config.epochs):
                grid = np.asarray(sampling.generate(config, sampling_params(state), grid_noise))  # every process
                if primary:
                    run.save_grid(grid, epoch, config.grid_size)
            stop_signal = stop.agreed()  # every process stops after the same epoch
            if due(config.checkpoint_every, epoch, config.epochs) or stop_signal is not None:
                saved_at = saver.save(state, epoch, dataset=dataset.name, num_examples=num_examples, data_checksum=start.data_checksum)  # fmt: skip
                last_saved = epoch
            if stop_signal is not None and epoch < config.epochs:
                saver.wait()
                name = signal.Signals(stop_signal).name
                raise signals.Interrupted(
                    f"stopped by {name} after epoch {epoch}/{config.epochs}; checkpoint saved in {saved_at}. "
                    f"Resume with: python -m jaxgan.train --workdir {run.workdir}",
                    stop_signal,
                )
        saver.wait()  # still inside StopOnSignal: a signal now waits for the last save instead of killing it
    if primary:
        run.finish(history)
    log(summary(config, state, history, start.epoch, run))
    if "fd" in history[-1] and evaluator is not None:
        log(_quality_table(config, history[-1], evaluator))
    return state, history


def kept_checkpoint(saver: checkpoint.Checkpointer, last_saved: int | None) -> str:
    if last_saved is None:
        return "no checkpoint had been saved yet"
    return f"the last good checkpoint is epoch {last_saved} ({checkpoint.step_path(saver.directory, last_saved)})"


def summary(config: Config, state: GANState, history: list[dict], first_epoch: int, run: rundir.RunDir) -> str:
    """The run's closing line."""
    final, trained = history[-1], history[first_epoch:]
    return (
        f"done: {plural(config.epochs, 'epoch')}, {plural(int(state.step), 'step')} "
        f"({plural(len(trained), 'epoch')} in {sum(r['seconds'] for r in trained):.1f}s this run); "
        f"final D loss {final['d_loss']:.4f}, G loss {final['g_loss']:.4f}; "
        f"samples in {run.samples}, checkpoints in {checkpoint.checkpoint_dir(run.workdir)}"
    )


def _evaluator(dataset: str, config: Config, log: Callable[[str], None]):
    from jaxgan import metrics  # the classifier and scipy only when quality is measured

    return metrics.Evaluator.for_dataset(dataset, data_dir=config.data_dir, log=log)


def _quality_table(config: Config, final: dict, evaluator) -> str:
    from jaxgan import metrics

    weights = f"EMA {config.ema_decay}" if config.ema_decay else "raw"
    return metrics.format_table(
        [
            (f"epoch {final['epoch']} ({weights})", final),
            ("ceiling (real)", evaluator.ceiling(config.seed)),
            ("floor (untrained)", evaluator.floor(config, config.seed)),
        ]
    )


if __name__ == "__main__":  # python -m jaxgan.train
    from jaxgan.main import main

    sys.exit(main())
