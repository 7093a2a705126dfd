"""jaxgan.losses: each GAN loss's values, and its values and gradients equal to torch_ref.losses'."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import losses
from jaxgan.config import LOSSES

LN2 = float(np.log(2.0))


@pytest.mark.parametrize(
    ("kind", "d_at_zero", "g_at_zero"),
    [
        ("bce", 2 * LN2, LN2),
        ("minimax", 2 * LN2, -LN2),
        ("lsgan", 0.5, 0.5),
        ("hinge", 2.0, 0.0),
        ("wgan-gp", 0.0, 0.0),
    ],
)
def test_values_at_undecided_logits(kind, d_at_zero, g_at_zero):
    """Logits 0: D(x) = 1/2 for every image."""
    zeros = jnp.zeros(5)
    assert float(losses.d_loss(kind, zeros, zeros)) == pytest.approx(d_at_zero, rel=1e-6)
    assert float(losses.g_loss(kind, zeros)) == pytest.approx(g_at_zero, abs=1e-7)


def test_each_d_loss_is_zero_at_its_own_perfect_discriminator():
    assert float(losses.d_loss("bce", jnp.full(3, 30.0), jnp.full(3, -30.0))) < 1e-12
    assert float(losses.d_loss("lsgan", jnp.ones(3), jnp.zeros(3))) == 0.0
    assert float(losses.d_loss("hinge", jnp.array([1.0, 5.0]), jnp.array([-1.0, -7.0]))) == 0.0
    # ...and that perfect point is each loss's own: lsgan's targets are 1 and 0, not +-1.
    assert float(losses.d_loss("lsgan", jnp.ones(3), -jnp.ones(3))) == pytest.approx(0.5)


def test_minimax_generator_loss_saturates_where_the_non_saturating_one_does_not():
    """At D(G(z)) near 0 (logit -10) the original G loss has almost no gradient; bce's is about -1/B."""
    fake = jnp.full(4, -10.0)
    minimax = jax.grad(lambda logits: losses.g_loss("minimax", logits))(fake)
    bce = jax.grad(lambda logits: losses.g_loss("bce", logits))(fake)
    assert np.allclose(bce, -0.25, rtol=1e-4) and np.abs(minimax).max() < 1e-3 * 0.25


def test_hinge_and_lsgan_read_the_logit_not_a_probability():
    logits = jnp.array([-3.0, 0.5, 4.0])
    assert np.array_equal(losses.discriminator_output("hinge", logits), logits)
    assert np.array_equal(losses.discriminator_output("lsgan", logits), logits)
    assert np.allclose(losses.discriminator_output("bce", logits), jax.nn.sigmoid(logits))
    assert float(losses.g_loss("hinge", logits)) == pytest.approx(-0.5)
    assert float(losses.g_loss("lsgan", logits)) == pytest.approx(0.5 * (16 + 0.25 + 9) / 3)


def test_wasserstein_terms_and_the_gradient_penalty():
    real, fake = jnp.array([2.0, 4.0]), jnp.array([-1.0, 0.0])
    assert float(losses.d_loss("wgan-gp", real, fake)) == pytest.approx(-0.5 - 3.0)
    assert float(losses.g_loss("wgan-gp", fake)) == pytest.approx(0.5)
    # A linear critic w.x has input gradient w everywhere: the penalty is (||w|| - 1)^2.
    w = jax.random.normal(jax.random.key(0), (28, 28, 1))
    critic = lambda x: (x * w).sum(axis=(1, 2, 3))  # noqa: E731
    images = jax.random.normal(jax.random.key(1), (2, 3, 28, 28, 1))
    penalty = losses.gradient_penalty(critic, images[0], images[1], jnp.array([0.2, 0.9, 0.5]))
    assert float(penalty) == pytest.approx((float(jnp.linalg.norm(w)) - 1) ** 2, rel=1e-5)


def test_unknown_loss_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown GAN loss 'wgan'; choose one of: bce, minimax, lsgan, hinge, wgan-gp"):
        losses.d_loss("wgan", jnp.zeros(2), jnp.zeros(2))


# ---------------------------------------------------------------- parity with torch_ref.losses

# From measured gaps (docs/presets-dcgan.md): values relative to max(|torch|, 1), gradients
# relative to max |torch gradient|.
VALUE_TOL = 1e-6
GRAD_TOL = 1e-6
MIN_FACTOR = 10


def random_logits(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(real, fake) logits (16,) ~ N(0, 2^2): spread, and far from where BCELoss's clamp bites."""
    rng = np.random.default_rng(seed)
    return (2 * rng.normal(size=(2, 16))).astype(np.float32)


def jax_values_and_grads(kind: str, real: np.ndarray, fake: np.ndarray) -> list[np.ndarray]:
    """[d_loss, d/d real, d/d fake, g_loss, d/d fake] of jaxgan.losses."""
    d, (d_real, d_fake) = jax.value_and_grad(lambda r, f: losses.d_loss(kind, r, f), argnums=(0, 1))(real, fake)
    g, g_fake = jax.value_and_grad(lambda f: losses.g_loss(kind, f))(fake)
    return [np.asarray(x) for x in (d, d_real, d_fake, g, g_fake)]


def torch_values_and_grads(kind: str, real: np.ndarray, fake: np.ndarray) -> list[np.ndarray]:
    """The same from torch_ref.losses, fed the discriminator's output for `kind` ((B, 1) probabilities
    through nn.Sigmoid for bce and minimax, the logits for lsgan and hinge); gradients w.r.t. the logits."""
    torch = pytest.importorskip("torch")
    from torch_ref import losses as torch_losses

    real_t, fake_t = (torch.tensor(x, requires_grad=True) for x in (real, fake))
    final = torch_losses.final_activation(kind)
    d = torch_losses.d_loss(kind, final(real_t[:, None]), final(fake_t[:, None]))
    d_real, d_fake = torch.autograd.grad(d, (real_t, fake_t))
    g = torch_losses.g_loss(kind, final(fake_t[:, None]))
    (g_fake,) = torch.autograd.grad(g, (fake_t,))
    return [x.detach().numpy() for x in (d, d_real, d_fake, g, g_fake)]


def worst_ratio(mine: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    """Worst gap over the values and gradients, as a multiple of its tolerance."""
    ratios = []
    for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if i in (0, 3):  # loss values
            ratios.append(abs(float(a - b)) / max(abs(float(b)), 1.0) / VALUE_TOL)
        else:
            ratios.append(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)) / GRAD_TOL)
    return max(ratios)


@pytest.mark.parity
@pytest.mark.parametrize("kind", LOSSES)
def test_values_and_gradients_equal_torch_refs_on_random_logits(kind):
    worst = 0.0
    for seed in range(3):
        real, fake = random_logits(seed)
        worst = max(
            worst, worst_ratio(jax_values_and_grads(kind, real, fake), torch_values_and_grads(kind, real, fake))
        )
    print(f"PARITY loss {kind}: worst gap {worst:.3g} of its tolerance")
    assert worst <= 1


@pytest.mark.parity
def test_mutation_each_loss_swapped_for_another():
    """jaxgan computing loss `wrong` where torch_ref computes `right` misses the tolerances by >= MIN_FACTOR."""
    real, fake = random_logits()
    torch_side = {kind: torch_values_and_grads(kind, real, fake) for kind in LOSSES}
    factors = {
        f"{right}->{wrong}": worst_ratio(jax_values_and_grads(wrong, real, fake), torch_side[right])
        for right in LOSSES
        for wrong in LOSSES
        if wrong != right
    }
    print("PARITY mutation loss swapped: " + ", ".join(f"{k} {v:.0f}x" for k, v in factors.items()))
    assert min(factors.values()) >= MIN_FACTOR, factors
