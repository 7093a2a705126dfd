"""The GAN's training computation, pure: its state, one train step, a chunk of steps as one
`lax.scan`, and the same for K runs stacked on a leading run axis.

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

K runs at once (`stack`, `runs_steps`): every leaf of the state gets a leading run axis (K, ...),
and `runs_steps` runs `train_steps` for each run, either one run after another inside the one
program (`lax.map`, mode "map": each run computes exactly what its single run computes, bit for
bit) or all runs batched (`vmap`, mode "vmap": faster on accelerators, equal up to float32
reduction order). This module imports no file, checkpoint or loop code.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgan import losses
from jaxgan.config import Config
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


def train_epoch(state: GANState, images: jax.Array, labels: jax.Array | None = None) -> tuple[GANState, Metrics]:
    """Every step of one epoch in one call; the epoch is state.step // steps_per_epoch.

    Start from a state at an epoch boundary. Metrics are (steps_per_epoch,) arrays.
    """
    num_examples, batch_size = images.shape[0], state.config.batch_size
    epoch = state.step // (num_examples // batch_size)
    return train_steps(state, images, epoch_batch_indices(state.key, epoch, num_examples, batch_size), labels)


def learned(state: GANState) -> tuple:
    """What training changes and divergence can spoil: both networks' params and (a DCGAN's)
    BatchNorm running statistics."""
    return (state.g_params, state.d_params, state.g_batch_stats, state.d_batch_stats)


@jax.jit
def all_finite(tree) -> jax.Array:
    """True when every leaf of `tree` is finite (one scalar, computed on the device)."""
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


# K runs on a leading run axis -------------------------------------------------------------------

MODES = ("map", "vmap")  # how `runs_steps` runs the K runs of a stacked state


def default_mode(platform: str | None = None) -> str:
    """ "map" on CPU, where batching K small runs gains nothing and "map" keeps every run bit for bit
    its single run (docs/multirun.md measures both); "vmap" on accelerators, where batching pays."""
    return "map" if (platform or jax.default_backend()) == "cpu" else "vmap"


def stack(states: list[GANState], template: Config) -> GANState:
    """The runs' states as one stacked state: every leaf (K, ...), static config `template`, and
    `adam` holding lr and beta1 as (K,) arrays when they differ between runs (else None).
    Stacked in host memory (no compilation per leaf shape)."""
    impl = jax.random.key_impl(states[0].key)
    host = [jax.device_get(s.replace(key=jax.random.key_data(s.key), config=template, adam=None)) for s in states]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *host)
    stacked = stacked.replace(key=jax.random.wrap_key_data(stacked.key, impl=impl))
    if len({(s.config.lr, s.config.beta1) for s in states}) > 1:
        hypers = [AdamHyper.of(s.config.lr, s.config.beta1) for s in states]
        stacked = stacked.replace(adam=jax.tree.map(lambda *xs: np.stack(xs), *hypers))
    return stacked


def unstack(stacked: GANState, configs: list[Config]) -> list[GANState]:
    """The runs' single-run states (config their own, adam None), on the host, in one transfer."""
    host = jax.device_get(stacked.replace(key=jax.random.key_data(stacked.key), adam=None))
    impl = jax.random.key_impl(stacked.key)
    return [
        jax.tree.map(lambda x, k=k: x[k], host).replace(
            key=jax.random.wrap_key_data(host.key[k], impl=impl), config=config
        )
        for k, config in enumerate(configs)
    ]


def runs_steps(
    mode: str, stacked: GANState, images: jax.Array, batch_indices: jax.Array, labels: jax.Array | None = None
) -> tuple[GANState, Metrics]:
    """`train_steps` of every run: batch_indices (K, steps, B) -> (stacked state, metrics each (K, steps)).

    images (N, 28, 28, 1) and a conditional GAN's labels (N,) are every run's. mode "map": the runs
    one after another (`lax.map`), each exactly its single run's computation; "vmap": batched.
    """
    if mode == "vmap":
        return jax.vmap(train_steps, in_axes=(0, None, 0, None))(stacked, images, batch_indices, labels)
    if mode != "map":
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return jax.lax.map(lambda run: train_steps(run[0], images, run[1], labels), (stacked, batch_indices))


def runs_batch_indices(keys: jax.Array, epoch: jax.Array | int, num_examples: int, batch_size: int) -> jax.Array:
    """`epoch_batch_indices` of every run's key (K,): (K, steps, B)."""
    return jax.vmap(lambda key: epoch_batch_indices(key, epoch, num_examples, batch_size))(keys)


@jax.jit
def runs_finite(stacked: GANState) -> jax.Array:
    """(K,) bool: every parameter (and BatchNorm statistic) of the run is finite."""
    return jax.vmap(lambda s: all_finite(learned(s)))(stacked)
