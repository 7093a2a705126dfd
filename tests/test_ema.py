"""Generator EMA: the update maths, EMA off leaves everything as before, checkpoints and resume."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import checkpoint, steps
from jaxgan.config import preset


@pytest.fixture(scope="module")
def batches(mnist_5k):
    return jnp.asarray(mnist_5k.images[:96]).reshape(3, 32, 28, 28, 1)


@pytest.fixture(scope="module")
def runs(batches):
    """The states of 3 steps from the same init and data with EMA off and with EMA 0.99."""
    return {"off": run(preset("tiny"), batches), "on": run(preset("tiny").replace(ema_decay=0.99), batches)}


def run(config, batches):
    state = steps.create_state(config, 0)
    step = jax.jit(steps.train_step_keyed)
    history = [state]
    for real in batches:
        state, _ = step(state, real)
        history.append(state)
    return history


def test_decay_warms_up_then_is_the_configured_value():
    assert float(steps.ema_decay_at(0.999, 0)) == pytest.approx(0.1)
    assert float(steps.ema_decay_at(0.999, 90)) == pytest.approx(91 / 100)
    assert float(steps.ema_decay_at(0.99, 10_000)) == pytest.approx(0.99)


@pytest.mark.slow
def test_each_step_averages_the_new_generator_weights(runs):
    history = runs["on"]
    first = history[0]
    assert first.g_ema_params is not None
    for a, b in zip(jax.tree.leaves(first.g_ema_params), jax.tree.leaves(first.g_params), strict=True):
        np.testing.assert_array_equal(a, b)  # starts at the initial weights
    for before, after in itertools.pairwise(history):
        d = min(0.99, (1 + int(before.step)) / (10 + int(before.step)))
        expected = jax.tree.map(lambda e, g, d=d: d * e + (1 - d) * g, before.g_ema_params, after.g_params)
        for a, b in zip(jax.tree.leaves(after.g_ema_params), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert steps.sampling_params(history[-1]) is history[-1].g_ema_params


@pytest.mark.slow
def test_ema_off_is_the_state_without_ema_and_does_not_change_training(runs):
    off, on = runs["off"][-1], runs["on"][-1]
    assert off.g_ema_params is None and steps.sampling_params(off) is off.g_params
    # The off state has exactly the leaves of the state before EMA existed.
    saved = {
        checkpoint._dotted(path).split(".")[0]
        for path, _ in jax.tree_util.tree_flatten_with_path(checkpoint.saved_tree(off))[0]
    }
    assert saved == {"step", "g_params", "d_params", "g_opt_state", "d_opt_state", "key"}
    # EMA only watches: G and D train identically with it on.
    for a, b in zip(
        jax.tree.leaves((off.g_params, off.d_params)), jax.tree.leaves((on.g_params, on.d_params)), strict=True
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_ema_checkpoint_round_trip_and_decay_cannot_change_on_resume(tmp_path, runs):
    state = runs["on"][-1]
    config = state.config
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        ckpt.save(state, 1, dataset="mnist-5k", num_examples=96)
    restored = checkpoint.load_state(tmp_path)
    assert restored.config.ema_decay == 0.99
    for a, b in zip(jax.tree.leaves(restored.g_ema_params), jax.tree.leaves(state.g_ema_params), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(checkpoint.CheckpointError, match=r"--ema-decay 0\.999 conflicts with the checkpoint"):
        checkpoint.check_resumable(config, config.replace(ema_decay=0.999))
    checkpoint.check_resumable(config, config.replace(eval_every=5))  # evaluation does not change training
