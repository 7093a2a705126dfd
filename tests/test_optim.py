"""jaxgan.optim.torch_adam against torch.optim.Adam itself, on small problems where each
framework computes its own gradients from its own parameters (so differences feed back)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgan.optim import AdamHyper, torch_adam

torch = pytest.importorskip("torch")

STEPS = 150


def regression_problem(seed: int):
    """A small least-squares MLP problem: (x (64, 8), y (64, 1), initial weights w1 (8, 16), w2 (16, 1))."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = np.sin(x.sum(1, keepdims=True)).astype(np.float32)
    w1 = (rng.normal(size=(8, 16)) / np.sqrt(8)).astype(np.float32)
    w2 = (rng.normal(size=(16, 1)) / 4).astype(np.float32)
    return x, y, w1, w2


def train_torch(seed: int, lr: float, b1: float, b2: float) -> list[np.ndarray]:
    x, y, w1, w2 = (torch.tensor(a) for a in regression_problem(seed))
    params = [torch.nn.Parameter(w1), torch.nn.Parameter(w2)]
    opt = torch.optim.Adam(params, lr=lr, betas=(b1, b2), eps=1e-8)
    trajectory = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = ((torch.tanh(x @ params[0]) @ params[1] - y) ** 2).mean()
        loss.backward()
        opt.step()
        trajectory.append(np.concatenate([p.detach().numpy().ravel() for p in params]))
    return trajectory


def train_jax(seed: int, tx: optax.GradientTransformation | None, hyper: AdamHyper | None = None) -> list[np.ndarray]:
    """`tx`'s trajectory; or, with `hyper`, torch_adam's with lr and beta1 as traced jit arguments."""
    x, y, w1, w2 = regression_problem(seed)
    params = (jnp.asarray(w1), jnp.asarray(w2))

    @jax.jit
    def step(params, opt_state, hyper):
        update = tx.update if hyper is None else torch_adam(hyper.lr, hyper.beta1, 0.999).update
        grads = jax.grad(lambda p: ((jnp.tanh(x @ p[0]) @ p[1] - y) ** 2).mean())(params)
        updates, opt_state = update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = (tx or torch_adam(0.1)).init(params)
    trajectory = []
    for _ in range(STEPS):
        params, opt_state = step(params, opt_state, hyper)
        trajectory.append(np.concatenate([np.asarray(p).ravel() for p in params]))
    return trajectory


def worst_gap(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("seed", "lr", "b1", "b2"), [(0, 2e-4, 0.5, 0.999), (1, 1e-2, 0.9, 0.999), (3, 1e-3, 0.5, 0.999)]
)
def test_torch_adam_follows_torch_optim_adam(seed, lr, b1, b2):
    reference = train_torch(seed, lr, b1, b2)
    gap = worst_gap(train_jax(seed, torch_adam(lr, b1, b2)), reference)
    # A few float32 ulps of weights of size ~1: XLA and PyTorch fuse different multiply-adds.
    assert gap <= 1e-6, f"torch_adam vs torch.optim.Adam: worst weight gap {gap:.3g} over {STEPS} steps"


def test_torch_adam_is_closer_to_torch_than_optax_adam():
    """The reason torch_adam exists: optax.adam's float32 bias correction drifts from PyTorch."""
    lr, b1, b2 = 1e-2, 0.9, 0.999
    reference = train_torch(1, lr, b1, b2)
    ours = worst_gap(train_jax(1, torch_adam(lr, b1, b2)), reference)
    theirs = worst_gap(train_jax(1, optax.adam(lr, b1, b2, eps=1e-8)), reference)
    assert theirs > 4 * ours, f"optax.adam gap {theirs:.3g}, torch_adam gap {ours:.3g}"


def test_torch_adam_state_layout_is_optax_adams():
    """Checkpoints hold the optimiser state: after an update it must still be optax.adam's pytree."""
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros((2,))}
    grads = jax.tree.map(lambda p: p + 0.5, params)
    states = []
    for tx in (torch_adam(1e-3), optax.adam(1e-3)):
        states.append(tx.update(grads, tx.init(params), params)[1])
    ours, theirs = states
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)


@pytest.mark.parametrize(("lr", "b1"), [(2e-4, 0.5), (1e-2, 0.9), (1e-3, 0.0), (3e-4, 0.37)])
def test_traced_lr_and_beta1_give_the_constants_numbers_bit_for_bit(lr, b1):
    """A sweep passes lr and beta1 as arrays (AdamHyper): the same float32 arithmetic as the constants."""
    traced = train_jax(2, None, hyper=AdamHyper.of(lr, b1))
    constant = train_jax(2, torch_adam(lr, b1, 0.999))
    assert all(np.array_equal(a, b) for a, b in zip(traced, constant, strict=True))
    assert not np.array_equal(traced[-1], train_jax(2, torch_adam(lr * 1.01, b1, 0.999))[-1])
