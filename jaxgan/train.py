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

import functools
import math
import os
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

from jaxgan import checkpoint, losses, parallel, rundir, sampling, signals
from jaxgan import data as data_lib
from jaxgan.cli import UserError
from jaxgan.config import MAX_COUNT, Config
from jaxgan.models import discriminate_train, generate_train, init_variables
from jaxgan.optim import AdamHyper, torch_adam

Params = Any
Metrics = dict[str, jax.Array]

# Independent random streams derived from the run's key (jax.random.fold_in tags);
# sampling.SAMPLE_STREAM (3) is the noise of sample grids and generated images.
INIT_STREAM, NOISE_STREAM, SHUFFLE_STREAM = 0, 1, 2
LABEL_STREAM, PENALTY_STREAM = 4, 5  # a conditional GAN's fake labels; wgan-gp's interpolation weights
METRIC_NAMES = ("d_loss", "g_loss", "d_real", "d_fake")


@flax.struct.dataclass
class GANState:
    """Everything that changes during training, as one pytree.

    step: int32 scalar, the number of steps taken.
    key: the run's PRNG key; never split in place, every use folds in a stream tag
        and the step or epoch, so a resumed run draws the same numbers.
    g_ema_params: the exponential moving average of g_params (`ema_update`), or None
        when config.ema_decay is 0: then the pytree is exactly the one without EMA.
    g_batch_stats, d_batch_stats: the DCGAN's BatchNorm running statistics (Flax's
        `batch_stats` collection: mean, var, num_batches_tracked per BatchNorm), or None for
        the MLPs, whose pytree (and checkpoints) are then exactly the ones without them.
        The EMA generator samples with g_batch_stats: only the weights are averaged.
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
    g_batch_stats: Params | None
    d_batch_stats: Params | None
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
    """A fresh state: initial params (and BatchNorm statistics) of both nets, both Adam states, step 0, and `rng`."""
    key = jax.random.key(rng) if isinstance(rng, int) else rng
    g_variables, d_variables = init_variables(config, jax.random.fold_in(key, INIT_STREAM))
    g_params, d_params = g_variables["params"], d_variables["params"]
    tx = optimizer(config)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params,
        d_params=d_params,
        g_opt_state=tx.init(g_params),
        d_opt_state=tx.init(d_params),
        key=key,
        g_ema_params=jax.tree.map(jnp.copy, g_params) if config.ema_decay > 0 else None,
        g_batch_stats=g_variables.get("batch_stats"),
        d_batch_stats=d_variables.get("batch_stats"),
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
    """The generator params to sample and evaluate with: the EMA when it is on, else g_params.
    (With BatchNorm they go with state.g_batch_stats, in eval mode.)"""
    return state.g_ema_params if state.g_ema_params is not None else state.g_params


def d_loss_fn(config: Config, d_params: Params, d_batch_stats, real, fake, labels=None, fake_labels=None, gp_eps=None):
    """config.loss's discriminator loss -> (loss, (mean D(real), mean D(fake), updated d_batch_stats)).

    real, fake: (B, 28, 28, 1); labels, fake_labels: their (B,) digits when conditional;
    gp_eps: (B,) for wgan-gp, whose loss adds gp_weight * the gradient penalty at the
    interpolates (critic conditioned on the real labels). D(.) is `losses.discriminator_output`:
    sigmoid(logit) for bce and minimax, the logit otherwise. Two discriminator passes, as in the
    seeds (one pass over [real; fake] measured slower: docs/performance.md; with BatchNorm it would
    also mix the two batches' statistics). BatchNorm statistics thread through in torch's order:
    D(real), D(fake), then the penalty's D(x_hat).
    """
    real_logits, d_batch_stats = discriminate_train(config, d_params, d_batch_stats, real, labels)
    fake_logits, d_batch_stats = discriminate_train(config, d_params, d_batch_stats, fake, fake_labels)
    loss = losses.d_loss(config.loss, real_logits, fake_logits)
    if config.loss == "wgan-gp":
        stats = d_batch_stats

        def critic(x):
            return discriminate_train(config, d_params, stats, x, labels)

        penalty, d_batch_stats = losses.gradient_penalty(critic, real, fake, gp_eps, has_aux=True)
        loss = loss + config.gp_weight * penalty
    d_real = losses.discriminator_output(config.loss, real_logits).mean()
    d_fake = losses.discriminator_output(config.loss, fake_logits).mean()
    return loss, (d_real, d_fake, d_batch_stats)


def g_loss_fn(config: Config, g_params: Params, g_batch_stats, d_params: Params, d_batch_stats, z, labels=None):
    """config.loss's generator loss of D(G(z)) -> (loss, (updated g_batch_stats, updated d_batch_stats)).

    z: (B, latent_dim), labels: (B,) digits for G and D when conditional. D is in train mode
    here too (as torch's D, which is never switched to eval): its BatchNorm uses this batch's
    statistics and updates its running ones.
    """
    fake, g_batch_stats = generate_train(config, g_params, g_batch_stats, z, labels)
    logits, d_batch_stats = discriminate_train(config, d_params, d_batch_stats, fake, labels)
    return losses.g_loss(config.loss, logits), (g_batch_stats, d_batch_stats)


def check_step_inputs(config: Config, labels, fake_labels, gp_eps) -> None:
    """ValueError when the config's step needs an input it did not get (labels for a conditional
    GAN, the penalty's eps for wgan-gp)."""
    if config.conditional and (labels is None or fake_labels is None):
        raise ValueError("a conditional GAN's step needs the real labels and fake_labels (y_d, y_g)")
    if config.loss == "wgan-gp" and gp_eps is None:
        raise ValueError("the wgan-gp step needs gp_eps, the interpolation weights of its penalty")


def train_step(
    state: GANState,
    real: jax.Array,
    z_d: jax.Array,
    z_g: jax.Array,
    labels: jax.Array | None = None,
    fake_labels: tuple[jax.Array, jax.Array] | None = None,
    gp_eps: jax.Array | None = None,
) -> tuple[GANState, Metrics]:
    """One D update then one G update, with explicit noise.

    real: (B, 28, 28, 1) float32 in [-1, 1]; z_d, z_g: (B, latent_dim). Conditional configs
    also take labels (B,) int32, the real images' digits, and fake_labels (y_d, y_g), the (B,)
    digits asked of G with z_d and z_g (`step_labels`); wgan-gp takes gp_eps (B,) in [0, 1)
    (`step_penalty_eps`). With config.ema_decay > 0, g_ema_params is also updated (`ema_update`).
    The DCGAN's BatchNorm statistics are threaded in torch's forward order: G(z_d), D(real),
    D(fake) [, D(x_hat)], G(z_g), D(G(z_g)).
    Returns the new state and scalar metrics d_loss, g_loss, d_real (mean D(x)) and
    d_fake (mean D(G(z_d)), before the D update).
    """
    config = state.config
    check_step_inputs(config, labels, fake_labels, gp_eps)
    y_d, y_g = fake_labels if fake_labels is not None else (None, None)
    tx = optimizer(config, state.adam)

    # (1) Update D on real and fake images; stop_gradient is the seeds' fake.detach().
    fake, g_batch_stats = generate_train(config, state.g_params, state.g_batch_stats, z_d, y_d)
    fake = jax.lax.stop_gradient(fake)
    (d_loss, (d_real, d_fake, d_batch_stats)), d_grads = jax.value_and_grad(d_loss_fn, argnums=1, has_aux=True)(
        config, state.d_params, state.d_batch_stats, real, fake, labels, y_d, gp_eps
    )
    d_updates, d_opt_state = tx.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    # (2) Update G through the updated D, on fresh noise (and fresh labels).
    (g_loss, (g_batch_stats, d_batch_stats)), g_grads = jax.value_and_grad(g_loss_fn, argnums=1, has_aux=True)(
        config, state.g_params, g_batch_stats, d_params, d_batch_stats, z_g, y_g
    )
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
        g_batch_stats=g_batch_stats,
        d_batch_stats=d_batch_stats,
    )
    metrics = {"d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake}
    return new_state, metrics


def step_key(state: GANState, stream: int) -> jax.Array:
    """The key of step `state.step` in random stream `stream`."""
    return jax.random.fold_in(jax.random.fold_in(state.key, stream), state.step)


def step_noise(state: GANState, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """The (z_d, z_g) noise of step `state.step`, each (batch_size, latent_dim)."""
    d_key, g_key = jax.random.split(step_key(state, NOISE_STREAM))
    shape = (batch_size, state.config.latent_dim)
    return jax.random.normal(d_key, shape), jax.random.normal(g_key, shape)


def step_labels(state: GANState, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """The digits (y_d, y_g) a conditional GAN asks of G at step `state.step`: each (batch_size,)
    int32, uniform over the classes, drawn independently of everything else."""
    d_key, g_key = jax.random.split(step_key(state, LABEL_STREAM))
    draw = functools.partial(jax.random.randint, shape=(batch_size,), minval=0, maxval=state.config.num_classes)
    return draw(d_key), draw(g_key)


def step_penalty_eps(state: GANState, batch_size: int) -> jax.Array:
    """wgan-gp's interpolation weights of step `state.step`: (batch_size,) uniform in [0, 1)."""
    return jax.random.uniform(step_key(state, PENALTY_STREAM), (batch_size,))


def step_extras(state: GANState, batch_size: int) -> dict[str, Any]:
    """The step's random inputs besides the noise, as `train_step` keywords: fake_labels for a
    conditional config, gp_eps for wgan-gp; {} for the seeds' recipes."""
    extras: dict[str, Any] = {}
    if state.config.conditional:
        extras["fake_labels"] = step_labels(state, batch_size)
    if state.config.loss == "wgan-gp":
        extras["gp_eps"] = step_penalty_eps(state, batch_size)
    return extras


def train_step_keyed(state: GANState, real: jax.Array, labels: jax.Array | None = None) -> tuple[GANState, Metrics]:
    """`train_step` with noise (and fake labels, penalty weights) drawn from the state's key and step."""
    z_d, z_g = step_noise(state, real.shape[0])
    return train_step(state, real, z_d, z_g, labels, **step_extras(state, real.shape[0]))


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


def steps_extras(state: GANState, num_steps: int, batch_size: int) -> dict[str, Any]:
    """`step_extras` of the next num_steps steps, each leaf with a leading (num_steps,) axis."""
    if not (state.config.conditional or state.config.loss == "wgan-gp"):
        return {}  # nothing to draw (step_extras' {}), and nothing added to the seeds' computation
    step_numbers = state.step + jnp.arange(num_steps, dtype=state.step.dtype)
    return jax.vmap(lambda step: step_extras(state.replace(step=step), batch_size))(step_numbers)


def train_steps(
    state: GANState, images: jax.Array, batch_indices: jax.Array, labels: jax.Array | None = None
) -> tuple[GANState, Metrics]:
    """Run `train_step_keyed` over each row of batch_indices in one `lax.scan`.

    images: (N, 28, 28, 1) device-resident dataset; batch_indices: (steps, B); labels: the
    dataset's (N,) digits, gathered with the same indices (conditional configs only).
    Returns the final state and metrics stacked over steps, each (steps,).
    The noise of all the steps is drawn before the loop (`steps_noise`, `steps_extras`): bit
    for bit the numbers `train_step_keyed` draws, without a small RNG computation inside every step.
    """
    if state.config.conditional and labels is None:
        raise ValueError("a conditional GAN trains on labelled images: pass the dataset's labels")
    z_d, z_g = steps_noise(state, *batch_indices.shape)
    extras = steps_extras(state, *batch_indices.shape)

    def body(state, batch):
        idx, z_d, z_g, extras = batch
        real_labels = None if labels is None else labels[idx]
        return train_step(state, images[idx], z_d, z_g, real_labels, **extras)

    return jax.lax.scan(body, state, (batch_indices, z_d, z_g, extras))


def device_data(config: Config, dataset: data_lib.Dataset, replicate: Callable[[Any], Any]) -> tuple:
    """`train_steps`' dataset arguments, put on every device by `replicate`: (images,) (N, 28, 28, 1),
    or for a conditional GAN (images, labels (N,))."""
    images = replicate(dataset.images)
    return (images, replicate(dataset.labels)) if config.conditional else (images,)


def train_epoch(state: GANState, images: jax.Array, labels: jax.Array | None = None) -> tuple[GANState, Metrics]:
    """Every step of one epoch in one call; the epoch is state.step // steps_per_epoch.

    Start from a state at an epoch boundary. Metrics are (steps_per_epoch,) arrays.
    """
    num_examples, batch_size = images.shape[0], state.config.batch_size
    epoch = state.step // (num_examples // batch_size)
    return train_steps(state, images, epoch_batch_indices(state.key, epoch, num_examples, batch_size), labels)


# The loop ------------------------------------------------------------------------------------


class Diverged(Exception):
    """Training produced a non-finite loss or parameter; the message names the step and metric."""


def learned(state: GANState) -> tuple:
    """What training changes and divergence can spoil: both networks' params and (a DCGAN's)
    BatchNorm running statistics."""
    return (state.g_params, state.d_params, state.g_batch_stats, state.d_batch_stats)


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


def run_epoch(state, data, indices, run_steps, *, epoch: int, chunk: int, bar) -> tuple[GANState, dict]:
    """Run one epoch's batches `indices` (steps, B) in jitted chunks of `chunk` steps.

    data: `train_steps`' dataset arguments, (images,) or, for a conditional GAN, (images, labels).

    Returns the new state and the epoch means of METRIC_NAMES; raises Diverged at the
    first non-finite metric (checked per chunk) or parameter (checked at the end).
    """
    per_step = {name: [] for name in METRIC_NAMES}  # host arrays, one per chunk
    for first in range(0, len(indices), chunk):
        state, metrics = run_steps(state, data[0], indices[first : first + chunk], *data[1:])
        metrics = jax.device_get(metrics)  # the one host sync per chunk
        check_finite(metrics, int(state.step) - len(metrics["d_loss"]), epoch)
        for name in METRIC_NAMES:
            per_step[name].append(metrics[name])
        bar.update(len(metrics["d_loss"]))
        bar.set_postfix(d_loss=f"{metrics['d_loss'][-1]:.3f}", g_loss=f"{metrics['g_loss'][-1]:.3f}")
    if not all_finite(learned(state)):
        raise Diverged(f"the parameters are not finite after epoch {epoch}")
    # Means over the epoch's steps in one fixed order: the same for any chunk size.
    return state, {name: float(np.mean(np.concatenate(per_step[name]), dtype=np.float64)) for name in METRIC_NAMES}


def sampling_grid_noise(state: GANState) -> tuple[jax.Array, jax.Array | None]:
    """The run's fixed sample-grid inputs (`sampling.grid_inputs` of its key): noise (n, latent_dim)
    and, for a conditional GAN, the digits (n,), one row per digit."""
    return sampling.grid_inputs(state.config, state.key)


def format_epoch_line(row: dict, epochs: int) -> str:
    """The per-epoch log line, in the seeds' words."""
    return (
        f"Epoch [{row['epoch']}/{epochs}] step {row['step']}  D loss: {row['d_loss']:.4f}  G loss: {row['g_loss']:.4f}  "
        f"D(x): {row['d_real']:.3f}  D(G(z)): {row['d_fake']:.3f}  {row['seconds']:.2f}s  {row['images_per_s']:,.0f} img/s"
    )


def format_quality_line(row: dict) -> str:
    """The log line of an epoch's sample-quality metrics."""
    conditional = f"  conditional accuracy {row['cond_acc']:.3f}" if "cond_acc" in row else ""
    return (
        f"  quality: FD@{row['fd_n']} {row['fd']:.2f}  score {row['score']:.2f}  "
        f"coverage KL {row['coverage_kl']:.3f}  max-prob {row['max_prob']:.3f}{conditional}"
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
    if config.conditional:
        data_lib.check_labels(dataset, config.num_classes)
    if config.batch_size > len(dataset.images):
        raise data_lib.DataError(
            f"batch_size {config.batch_size} is larger than the {len(dataset.images):,} images of {dataset.name}"
        )
    steps = config.resolved(len(dataset.images)).epochs * (len(dataset.images) // config.batch_size)
    if steps > MAX_COUNT:
        raise data_lib.DataError(f"{steps:,} steps in all is more than the step counter holds ({MAX_COUNT:,})")
    check_memory(config, len(dataset.images))
    parallel.check_same_data(dataset.images)
    return dataset


def memory_estimate(config: Config, num_examples: int) -> dict[str, int]:
    """Bytes a run of `config` on `num_examples` images holds at once, at the least, by part.

    state: the GANState twice (before and after a step) and the gradients; data: the images on
    the device and on the host; step: one chunk's noise and a step's activations, forward and
    backward; grid: a sample grid. From shapes alone (`jax.eval_shape`): nothing is allocated.
    """
    abstract = jax.eval_shape(lambda: create_state(config, 0))

    def nbytes(tree) -> int:
        return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))

    if config.arch == "dcgan":  # activations per image: G (BatchNorm keeps pre and post) and D
        g_act = 4 * config.g_features * 49 + 2 * config.g_features * 196 + config.image_size
        d_act = config.d_features * 196 + 4 * config.d_features * 49 + 1
    else:
        g_act, d_act = sum(config.g_hidden) + config.image_size, sum(config.d_hidden) + 1
    batch, f32 = config.batch_size, 4
    chunk = max(1, min(config.log_every, num_examples // batch))
    # G runs twice per step (for D, then for G) and D three times (real, fake, and for G).
    per_image = 2 * config.latent_dim + 2 * g_act + 3 * (config.image_size + d_act)
    return {
        "state": 2 * nbytes(abstract) + nbytes((abstract.g_params, abstract.d_params)),
        "data": 2 * num_examples * config.image_size * f32,
        "step": f32 * (2 * chunk * batch * config.latent_dim + 2 * batch * per_image),
        "grid": f32 * config.grid_size**2 * (config.latent_dim + g_act),
    }


def memory_available() -> tuple[int, str]:
    """(bytes, whose) a run may use: the first accelerator's memory limit, or the machine's RAM on CPU."""
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"the {device.platform.upper()} device's"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's"


def gigabytes(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_memory(config: Config, num_examples: int) -> None:
    """UserError in one line when `memory_estimate` is more than `memory_available`: refused before
    anything is compiled or allocated."""
    parts = memory_estimate(config, num_examples)
    need, (have, whose) = sum(parts.values()), memory_available()
    if need > have:
        detail = ", ".join(f"{name} {gigabytes(n)}" for name, n in sorted(parts.items(), key=lambda kv: -kv[1]))
        raise UserError(
            f"this config needs at least {gigabytes(need)} of memory ({detail}), more than {whose} "
            f"{gigabytes(have)}: use smaller --g-hidden, --d-hidden, --latent-dim, --batch-size or a smaller dataset"
        )


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
    Returns the final state and the per-epoch metric rows (also in metrics.jsonl). The run holds
    the workdir's lock (`rundir.RunDir.lock`) until it returns.
    """
    with rundir.RunDir(workdir) as run:
        return _train_and_evaluate(
            config, run, resume=resume, explicit=explicit, load_dataset=load_dataset, progress=progress, log=log,
            evaluator=evaluator,
        )  # fmt: skip


def _train_and_evaluate(
    config: Config, run: rundir.RunDir, *, resume, explicit, load_dataset, progress, log, evaluator
):
    """`train_and_evaluate` in `run`."""
    placement = parallel.Placement(config.data_parallel)
    primary = parallel.is_primary()  # only process 0 writes files and logs
    log = (log or (lambda msg: tqdm.write(msg, file=sys.stdout))) if primary else (lambda msg: None)
    if primary:
        run.prepare()  # the lock and the pre-flight, before anything is loaded or deleted
    start = checkpoint.restore_or_init(
        config, run.workdir, resume, explicit=explicit, log=log, recorded=run.read_config(),
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
    data = device_data(config, dataset, placement.replicate)  # stays on the device(s)
    state = placement.replicate(start.state.replace(config=config))
    batch_size = config.batch_size
    steps_per_epoch = num_examples // batch_size
    run_steps = placement.jit_train_steps(train_steps, with_labels=config.conditional)
    batch_indices = placement.jit_batch_indices(epoch_batch_indices)
    grid_noise, grid_labels = sampling_grid_noise(state)
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
                    state, means = run_epoch(state, data, indices, run_steps, epoch=epoch, chunk=min(config.log_every, steps_per_epoch), bar=bar)  # fmt: skip
                except Diverged as err:
                    saver.wait()
                    raise Diverged(f"training diverged: {err}; {kept_checkpoint(saver, last_saved)}. Try a smaller --lr") from None  # fmt: skip
            seconds = time.perf_counter() - started
            row = {"epoch": epoch, "step": int(state.step), **means, "seconds": round(seconds, 4),
                   "images_per_s": round(steps_per_epoch * batch_size / seconds, 1)}  # fmt: skip
            if config.eval_every and due(config.eval_every, epoch, config.epochs):
                evaluator = evaluator or _evaluator(dataset.name, config, log, progress)
                row.update(
                    evaluator.generator(config, sampling_params(state), config.seed, batch_stats=state.g_batch_stats)
                )
                log(format_quality_line(row))
            history.append(row)
            if primary:
                run.append(row)
            log(format_epoch_line(row, config.epochs))
            if due(config.sample_every, epoch, config.epochs):
                grid = np.asarray(sampling.generate(config, sampling_params(state), grid_noise, grid_labels, state.g_batch_stats))  # every process  # fmt: skip
                if primary:
                    run.save_grid(grid, epoch, config.grid_size)
            saver.check()  # a save that failed in the background stops the run now
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
        # Still inside StopOnSignal: a signal now lets the last save and the pictures finish.
        saver.wait()
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


def _evaluator(dataset: str, config: Config, log: Callable[[str], None], progress: bool):
    """The dataset's evaluator; training its classifier shows a progress bar only if the run does."""
    from jaxgan import metrics  # the classifier and scipy only when quality is measured

    return metrics.Evaluator.for_dataset(dataset, data_dir=config.data_dir, log=log, progress=progress)


def _quality_table(config: Config, final: dict, evaluator) -> str:
    from jaxgan import metrics

    weights = f"EMA {config.ema_decay}" if config.ema_decay else "raw"
    return metrics.format_table(
        [
            (f"epoch {final['epoch']} ({weights})", final),
            ("ceiling (real)", evaluator.ceiling(config.seed, conditional=config.conditional)),
            ("floor (untrained)", evaluator.floor(config, config.seed)),
        ]
    )


if __name__ == "__main__":  # python -m jaxgan.train
    from jaxgan.main import main

    sys.exit(main())
