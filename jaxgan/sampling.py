"""Images from a generator: the one noise rule and the one jitted sampler.

Every image jaxgan shows is drawn the same way: the noise of `num` images for seed `s` is
`jax.random.normal(fold_in(key(s), SAMPLE_STREAM), (num, latent_dim))`. A run's sample
grids use the run's seed, so `python -m jaxgan.generate --seed S --num 64` on a run of seed
S (grid size 8) draws exactly the images of its last grid.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import numpy as np

from jaxgan.config import Config
from jaxgan.models import generate as apply_generator

SAMPLE_STREAM = 3  # fold_in tag; train.py uses 0-2 for init, training noise and shuffling


def noise(seed: int | jax.Array, num: int, latent_dim: int) -> jax.Array:
    """The sampling noise (num, latent_dim) of `seed` (an int, or the run's PRNG key)."""
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    return jax.random.normal(jax.random.fold_in(key, SAMPLE_STREAM), (num, latent_dim))


@functools.partial(jax.jit, static_argnums=0)
def generate(config: Config, g_params, z: jax.Array) -> jax.Array:
    """The jitted generator: z (B, latent_dim) -> images (B, 28, 28, 1) in [-1, 1]."""
    return apply_generator(config, g_params, z)


def images(config: Config, g_params, num: int, seed: int, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(images (num, 28, 28, 1) float32 in [-1, 1], their noise (num, latent_dim)) for `seed`,
    generated `batch_size` at a time; UserError if any image is not finite."""
    z = noise(seed, num, config.latent_dim)
    out = [np.asarray(generate(config, g_params, z[i : i + batch_size])) for i in range(0, num, batch_size)]
    images = np.concatenate(out).astype(np.float32)
    if not np.isfinite(images).all():
        from jaxgan.cli import UserError

        raise UserError("the generator's output is not finite (NaN or inf): its weights are not usable")
    return images, np.asarray(z, np.float32)


def check_source(workdir: str | None, from_pt: str | None) -> None:
    """UserError unless the generator's source exists (cheap checks, before any output)."""
    from jaxgan import checkpoint
    from jaxgan.cli import UsageError

    if from_pt is not None:
        if not Path(from_pt).is_file():
            raise UsageError(f"--from-pt {from_pt!r} is not a file")
        return
    checkpoint.check_workdir(workdir)


def load_generator(workdir: str | None, from_pt: str | None, epoch: int | None = None, ema: bool = True):
    """(config, generator params, what they are: "ema" | "raw" | "pt", restored checkpoint or None)
    from a run directory's checkpoint (the EMA generator when the run keeps one and `ema`) or a .pt file.
    UserError if the weights are not all finite."""
    from jaxgan import checkpoint

    if from_pt is not None:
        from jaxgan import convert

        state = convert.load_pt(from_pt)
        config, params, weights, restored, source = state.config, state.g_params, "pt", None, repr(from_pt)
    else:
        restored = checkpoint.load(workdir, epoch)
        state, source = restored.state, str(restored.path)
        if ema and state.g_ema_params is not None:
            config, params, weights = state.config, state.g_ema_params, "ema"
        else:
            config, params, weights = state.config, state.g_params, "raw"
    if not all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params)):
        from jaxgan.cli import UserError

        raise UserError(
            f"the generator weights of {source} are not finite (NaN or inf): its output would not be either"
        )
    return config, params, weights, restored
