"""The generator and discriminator MLPs of the seed recipes, as Flax modules.

Layers are initialised like PyTorch's `nn.Linear` default, so jaxgan and torch_ref
start from the same distribution: weights kaiming-uniform with a=sqrt(5), which is
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
Parameters are named `linear_0`, `linear_1`, ... in layer order; a kernel is
`(in, out)` (PyTorch's weight is its transpose).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.config import Config


def torch_linear_init(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Linear weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def activation(name: str, leaky_slope: float):
    if name == "relu":
        return nn.relu
    return lambda x: nn.leaky_relu(x, negative_slope=leaky_slope)


class MLP(nn.Module):
    """Linear layers of widths `features` with `act` between them (none after the last)."""

    features: Sequence[int]
    act: str
    leaky_slope: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.act, self.leaky_slope)
        for i, width in enumerate(self.features):
            init = torch_linear_init(x.shape[-1])
            x = nn.Dense(width, kernel_init=init, bias_init=init, name=f"linear_{i}")(x)
            if i < len(self.features) - 1:
                x = act(x)
        return x


class Generator(nn.Module):
    """z (B, latent_dim) -> images (B, 28, 28, 1) in [-1, 1] (Tanh output)."""

    config: Config

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        c = self.config
        x = MLP((*c.g_hidden, c.image_size), c.g_activation, c.leaky_slope, name="net")(z)
        return jnp.tanh(x).reshape((z.shape[0], *c.image_shape))


class Discriminator(nn.Module):
    """images (B, 28, 28, 1) -> logits (B,); D(x) = sigmoid(logit) is P(real).

    The seeds end in `nn.Sigmoid()`; jaxgan keeps the logit and folds the sigmoid into
    the loss (see `jaxgan.steps.bce_with_logits`).
    """

    config: Config

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        c = self.config
        x = images.reshape((images.shape[0], -1))  # (B, 784)
        x = MLP((*c.d_hidden, 1), c.d_activation, c.leaky_slope, name="net")(x)
        return x[:, 0]


def init_params(config: Config, key: jax.Array) -> tuple[dict, dict]:
    """Fresh (generator, discriminator) params for `config`."""
    g_key, d_key = jax.random.split(key)
    z = jnp.zeros((1, config.latent_dim), jnp.float32)
    images = jnp.zeros((1, *config.image_shape), jnp.float32)
    g_params = Generator(config).init(g_key, z)["params"]
    d_params = Discriminator(config).init(d_key, images)["params"]
    return g_params, d_params


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def expected_param_count(widths: Sequence[int]) -> int:
    """Parameters of a chain of Linear layers of `widths` (in, h1, ..., out)."""
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def generate(config: Config, g_params, z: jax.Array) -> jax.Array:
    """z (B, latent_dim) -> images (B, 28, 28, 1) in [-1, 1]."""
    return Generator(config).apply({"params": g_params}, z)


def discriminate(config: Config, d_params, images: jax.Array) -> jax.Array:
    """images (B, 28, 28, 1) -> logits (B,)."""
    return Discriminator(config).apply({"params": d_params}, images)
