"""The pure train step: finite metrics, and the keyed / scan / epoch variants agree with it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import models, sampling, steps
from jaxgan.config import preset
from jaxgan.train import create_state, train_step  # the public names


def tree_max_abs_diff(a, b) -> float:
    """Largest elementwise gap between two pytrees (PRNG keys compared through their data)."""

    def leaves(tree):
        return [
            jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x for x in jax.tree.leaves(tree)
        ]

    pairs = zip(leaves(a), leaves(b), strict=True)
    return max(float(jnp.max(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)))) for x, y in pairs)


@pytest.fixture(scope="module")
def tiny_images(mnist_5k):
    return jnp.asarray(mnist_5k.images[:320])  # 10 tiny batches


def test_one_step_is_finite_with_metrics_in_range(tiny_images):
    config = preset("small")
    state = create_state(config, 0)
    z_d, z_g = steps.step_noise(state, 64)
    new, metrics = jax.jit(train_step)(state, tiny_images[:64], z_d, z_g)
    assert set(metrics) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(m.shape == () and bool(jnp.isfinite(m)) for m in metrics.values())
    assert 0 < float(metrics["d_real"]) < 1 and 0 < float(metrics["d_fake"]) < 1
    assert float(metrics["d_loss"]) > 0 and float(metrics["g_loss"]) > 0
    # At init D is near chance: each BCE term is close to log 2.
    assert float(metrics["d_loss"]) == pytest.approx(2 * np.log(2), abs=0.3)
    assert int(new.step) == 1 and int(state.step) == 0
    assert tree_max_abs_diff(new.g_params, state.g_params) > 0
    assert tree_max_abs_diff(new.d_params, state.d_params) > 0
    # The first Adam step moves every parameter by about lr.
    assert tree_max_abs_diff(new.d_params, state.d_params) == pytest.approx(config.lr, rel=0.05)


@pytest.mark.slow
def test_metrics_match_a_direct_computation(tiny_images):
    """d_loss/d_real/d_fake are of the pre-update D on G(z_d); g_loss is through the updated D."""
    config = preset("tiny")
    state = create_state(config, 1)
    real = tiny_images[:32]
    z_d, z_g = steps.step_noise(state, 32)
    new, metrics = train_step(state, real, z_d, z_g)
    real_p = jax.nn.sigmoid(models.discriminate(config, state.d_params, real))
    fake_p = jax.nn.sigmoid(models.discriminate(config, state.d_params, models.generate(config, state.g_params, z_d)))
    d_loss = -jnp.mean(jnp.log(real_p)) - jnp.mean(jnp.log1p(-fake_p))
    np.testing.assert_allclose(metrics["d_loss"], d_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["d_real"], real_p.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["d_fake"], fake_p.mean(), rtol=1e-6)
    fake_p_after = jax.nn.sigmoid(
        models.discriminate(config, new.d_params, models.generate(config, state.g_params, z_g))
    )
    np.testing.assert_allclose(metrics["g_loss"], -jnp.mean(jnp.log(fake_p_after)), rtol=1e-5)


@pytest.mark.slow
def test_keyed_step_equals_train_step_with_step_noise(tiny_images):
    state = create_state(preset("tiny"), 0)
    real = tiny_images[:32]
    keyed, keyed_metrics = jax.jit(steps.train_step_keyed)(state, real)
    explicit, explicit_metrics = jax.jit(train_step)(state, real, *steps.step_noise(state, 32))
    assert tree_max_abs_diff(keyed, explicit) == 0
    assert all(float(keyed_metrics[k]) == float(explicit_metrics[k]) for k in keyed_metrics)


def test_noise_differs_between_steps_and_between_d_and_g():
    state = create_state(preset("tiny"), 0)
    z_d, z_g = steps.step_noise(state, 8)
    z_d1, _ = steps.step_noise(state.replace(step=state.step + 1), 8)
    assert not np.allclose(z_d, z_g) and not np.allclose(z_d, z_d1)


@pytest.mark.slow
def test_scan_equals_a_loop_of_jitted_steps(tiny_images):
    state = create_state(preset("tiny"), 0)
    indices = steps.epoch_batch_indices(state.key, 0, len(tiny_images), 32)  # (10, 32)
    scanned, scan_metrics = jax.jit(steps.train_steps)(state, tiny_images, indices)
    looped, loop_metrics = state, []
    step = jax.jit(train_step)
    for idx in indices:
        looped, m = step(looped, tiny_images[idx], *steps.step_noise(looped, 32))
        loop_metrics.append(m["g_loss"])
    assert scan_metrics["g_loss"].shape == (10,)
    assert int(scanned.step) == int(looped.step) == 10
    np.testing.assert_allclose(scan_metrics["g_loss"], np.array(loop_metrics), rtol=1e-5, atol=1e-6)
    assert tree_max_abs_diff(scanned.g_params, looped.g_params) < 1e-5


@pytest.mark.slow
def test_scan_with_noise_drawn_up_front_is_bitwise_a_scan_of_keyed_steps(tiny_images):
    state = create_state(preset("tiny"), 0).replace(step=jnp.int32(7))  # noise depends on the step
    indices = steps.epoch_batch_indices(state.key, 0, len(tiny_images), 32)
    scanned, metrics = jax.jit(steps.train_steps)(state, tiny_images, indices)
    keyed, keyed_metrics = jax.jit(
        lambda s: jax.lax.scan(lambda s, i: steps.train_step_keyed(s, tiny_images[i]), s, indices)
    )(state)
    assert tree_max_abs_diff(scanned, keyed) == 0
    assert all(np.array_equal(metrics[k], keyed_metrics[k]) for k in metrics)
    z_d, z_g = steps.steps_noise(state, 3, 32)  # (3, 32, latent_dim) each
    expected_d, expected_g = steps.step_noise(state.replace(step=state.step + 2), 32)
    np.testing.assert_array_equal(z_d[2], expected_d)
    np.testing.assert_array_equal(z_g[2], expected_g)


@pytest.mark.slow
def test_train_epoch_uses_the_epochs_shuffle_and_compiles_once(tiny_images):
    state = create_state(preset("tiny"), 0)
    epoch = jax.jit(steps.train_epoch)
    run = jax.jit(steps.train_steps)
    for e in range(3):
        expected, _ = run(state, tiny_images, steps.epoch_batch_indices(state.key, e, len(tiny_images), 32))
        state, metrics = epoch(state, tiny_images)
        assert metrics["d_loss"].shape == (10,)
        assert tree_max_abs_diff(state.d_params, expected.d_params) == 0
    assert epoch._cache_size() == 1  # no recompiles between epochs


def test_epoch_batches_are_a_fresh_permutation_without_the_partial_batch():
    key = jax.random.key(0)
    first = np.asarray(steps.epoch_batch_indices(key, 0, 100, 32))
    second = np.asarray(steps.epoch_batch_indices(key, 1, 100, 32))
    assert first.shape == (3, 32) and first.dtype == np.int32  # 100 // 32 full batches
    for batches in (first, second):
        assert len(np.unique(batches)) == 96 and batches.min() >= 0 and batches.max() < 100
    assert not np.array_equal(first, second)
    assert not np.array_equal(first.ravel(), np.sort(first.ravel()))  # shuffled
    np.testing.assert_array_equal(first, steps.epoch_batch_indices(key, 0, 100, 32))  # deterministic


def test_a_runs_sample_noise_is_its_seeds():
    """The grid noise comes from the run's key alone, and equals `sampling.noise` of its seed:
    `jaxgan.generate --seed S` draws the images of a seed-S run's grids."""
    state = create_state(preset("tiny"), 5)
    z = sampling.noise(state.key, 16, state.config.latent_dim)
    assert z.shape == (16, 16)
    np.testing.assert_array_equal(z, sampling.noise(5, 16, 16))
    assert not np.array_equal(z, sampling.noise(6, 16, 16))
