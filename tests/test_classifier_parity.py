"""jaxgan's LeNet classifier against torch_ref's: the same weights give the same logits, features
and training losses (its convolutions are jaxgan.convolution's matrix products on the CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")

from jaxgan import classifier  # noqa: E402
from torch_ref import classifier as torch_classifier  # noqa: E402

pytestmark = pytest.mark.parity


def batch(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, n)


def nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def test_same_weights_give_the_same_logits_and_features():
    params = classifier.init_params(jax.random.key(3))
    images, _ = batch(16)
    logits, features = classifier.apply(params, jnp.asarray(images))
    model, _ = torch_classifier.create(params)
    with torch.no_grad():
        torch_logits, torch_features = model(nchw(images))
    np.testing.assert_allclose(np.asarray(logits), torch_logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(features), torch_features.numpy(), rtol=1e-5, atol=1e-5)


def test_a_converted_state_dict_has_torchs_keys_and_shapes():
    params = classifier.init_params(jax.random.key(0))
    converted = torch_classifier.state_dict_from_flax(params)
    expected = torch_classifier.LeNet().state_dict()
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in expected.items()}


def test_training_steps_give_the_same_losses():
    """train_chunk on a set of exactly one batch draws a permutation of it every step: full-batch
    Adam steps, the same as torch_ref's on the whole set (the mean loss ignores the order)."""
    images, labels = batch(32, seed=1)
    key = jax.random.key(5)
    params = classifier.init_params(key)
    carry = (params, optax.adam(classifier.LEARNING_RATE).init(params))
    _, losses = classifier.train_chunk(
        carry, jnp.asarray(images), jnp.asarray(labels), key, jnp.arange(4), batch_size=len(images)
    )
    model, optimizer = torch_classifier.create(params)
    targets = torch.from_numpy(labels)
    torch_losses = [float(torch_classifier.train_step(model, optimizer, nchw(images), targets)) for _ in range(4)]
    assert losses[0] > losses[-1]  # it learns
    np.testing.assert_allclose(np.asarray(losses), torch_losses, rtol=2e-5)
