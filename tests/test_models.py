"""Parameter counts, output shapes and the PyTorch-default initialisation of every preset."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.config import PRESETS
from jaxgan.models import Discriminator, Generator, count_params, expected_param_count, init_params

# Hand-computed from the seeds' layer lists: sum of in*out + out over Linear layers.
PARAM_COUNTS = {
    "small": (100 * 128 + 128 + 128 * 784 + 784, 784 * 128 + 128 + 128 + 1),  # 114,064 and 100,609
    "small-beta09": (114_064, 100_609),
    "wide": (64 * 256 + 256 + 256 * 256 + 256 + 256 * 784 + 784, 784 * 256 + 256 + 256 * 256 + 256 + 257),
    "deep": (100 * 256 + 256 + 256 * 512 + 512 + 512 * 784 + 784, 784 * 512 + 512 + 512 * 256 + 256 + 257),
}


@pytest.mark.parametrize("name", PRESETS)
def test_param_counts_and_shapes(name):
    config = PRESETS[name]
    g_params, d_params = init_params(config, jax.random.key(0))
    g_expected = expected_param_count((config.latent_dim, *config.g_hidden, 784))
    d_expected = expected_param_count((784, *config.d_hidden, 1))
    assert (count_params(g_params), count_params(d_params)) == (g_expected, d_expected)
    if name in PARAM_COUNTS:
        assert (g_expected, d_expected) == PARAM_COUNTS[name]

    z = jax.random.normal(jax.random.key(1), (5, config.latent_dim))
    images = Generator(config).apply({"params": g_params}, z)
    assert images.shape == (5, 28, 28, 1) and images.dtype == jnp.float32
    assert float(jnp.abs(images).max()) <= 1.0  # Tanh
    logits = Discriminator(config).apply({"params": d_params}, images)
    assert logits.shape == (5,)


def test_layers_are_named_in_order_with_torch_shapes_transposed():
    g_params, d_params = init_params(PRESETS["deep"], jax.random.key(0))
    assert list(g_params["net"]) == ["linear_0", "linear_1", "linear_2"]
    assert g_params["net"]["linear_1"]["kernel"].shape == (256, 512)  # torch weight is (512, 256)
    assert d_params["net"]["linear_2"]["bias"].shape == (1,)


def test_init_is_pytorch_linear_default():
    """Weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)): bounded, with the uniform's std."""
    g_params, _ = init_params(PRESETS["deep"], jax.random.key(0))
    for layer, fan_in in (("linear_0", 100), ("linear_1", 256), ("linear_2", 512)):
        bound = 1 / np.sqrt(fan_in)
        kernel = np.asarray(g_params["net"][layer]["kernel"])
        bias = np.asarray(g_params["net"][layer]["bias"])
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
        assert kernel.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)
        assert kernel.max() > 0.95 * bound  # not a narrower distribution


def test_init_depends_on_key_only():
    a, _ = init_params(PRESETS["small"], jax.random.key(3))
    b, _ = init_params(PRESETS["small"], jax.random.key(3))
    c, _ = init_params(PRESETS["small"], jax.random.key(4))
    same = jax.tree.map(lambda x, y: bool((x == y).all()), a, b)
    assert all(jax.tree.leaves(same))
    assert not np.array_equal(a["net"]["linear_0"]["kernel"], c["net"]["linear_0"]["kernel"])
