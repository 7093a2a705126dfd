"""Images from a generator: the one noise rule and the one jitted sampler.

Every image jaxgan shows is drawn the same way: the noise of `num` images for seed `s` is
`jax.random.normal(fold_in(key(s), SAMPLE_STREAM), (num, latent_dim))`. A run's sample
grids use the run's seed, so `python -m jaxgan.generate --seed S --num 64` on a run of seed
S (grid size 8) draws exactly the images of its last grid.

A conditional generator is asked for digits: `labelled_inputs` lays them out one row per
digit, `per_digit` images each, and the columns share their noise (`noise(seed, per_digit)`),
so each column is one "style" written as every digit. A conditional run's grids are the ten
digits' rows (`grid_inputs`), which `jaxgan.generate --labels 0-9 --num 8 --seed S` redraws.
Images are always generated in eval mode: a DCGAN's BatchNorm uses its running statistics.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan.config import Config
from jaxgan.models import generate as apply_generator

SAMPLE_STREAM = 3  # fold_in tag; train.py uses 0-2 for init, training noise and shuffling


def noise(seed: int | jax.Array, num: int, latent_dim: int) -> jax.Array:
    """The sampling noise (num, latent_dim) of `seed` (an int, or the run's PRNG key)."""
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    return jax.random.normal(jax.random.fold_in(key, SAMPLE_STREAM), (num, latent_dim))


def labelled_inputs(
    seed: int | jax.Array, digits: Sequence[int], per_digit: int, latent_dim: int
) -> tuple[jax.Array, jax.Array]:
    """(noise (len(digits) * per_digit, latent_dim), labels (same,) int32): one row per digit,
    whose columns share `noise(seed, per_digit, latent_dim)`."""
    z = noise(seed, per_digit, latent_dim)
    return jnp.tile(z, (len(digits), 1)), jnp.repeat(jnp.asarray(digits, jnp.int32), per_digit)


def grid_inputs(config: Config, seed: int | jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """A run's sample-grid inputs: noise (grid_size**2, latent_dim) and no labels, or for a
    conditional run (num_classes * grid_size, latent_dim) and the digits 0..9, one row each."""
    if config.conditional:
        return labelled_inputs(seed, range(config.num_classes), config.grid_size, config.latent_dim)
    return noise(seed, config.grid_size**2, config.latent_dim), None


def balanced_labels(config: Config, num: int) -> jax.Array:
    """The digits asked of a conditional generator when measuring it: 0, 1, ..., 9, 0, 1, ... (num,)."""
    return jnp.arange(num, dtype=jnp.int32) % config.num_classes


@functools.partial(jax.jit, static_argnums=0)
def generate(config: Config, g_params, z: jax.Array, labels: jax.Array | None = None, batch_stats=None) -> jax.Array:
    """The jitted generator in eval mode: z (B, latent_dim), labels (B,) when conditional ->
    images (B, 28, 28, 1) in [-1, 1]. `batch_stats`: a DCGAN's running statistics."""
    return apply_generator(config, g_params, z, labels, batch_stats)


def images(
    config: Config, g_params, num: int, seed: int, batch_size: int = 500, *, labels=None, batch_stats=None
) -> tuple[np.ndarray, np.ndarray]:
    """(images (num, 28, 28, 1) float32 in [-1, 1], their noise (num, latent_dim)) for `seed`,
    generated `batch_size` at a time. A conditional generator draws `labels` (num,) (default:
    `balanced_labels`). UserError if any image is not finite."""
    z = noise(seed, num, config.latent_dim)
    if config.conditional and labels is None:
        labels = balanced_labels(config, num)
    images = images_of(config, g_params, z, labels, batch_stats, batch_size)
    if not np.isfinite(images).all():
        from jaxgan.cli import UserError

        raise UserError("the generator's output is not finite (NaN or inf): its weights are not usable")
    return images, np.asarray(z, np.float32)


def images_of(config: Config, g_params, z, labels=None, batch_stats=None, batch_size: int = 500) -> np.ndarray:
    """`generate` on given noise z (num, latent_dim) (and labels (num,)), batch_size at a time -> float32 numpy."""
    out = []
    for i in range(0, len(z), batch_size):
        part = None if labels is None else labels[i : i + batch_size]
        out.append(np.asarray(generate(config, g_params, z[i : i + batch_size], part, batch_stats)))
    return np.concatenate(out).astype(np.float32)
