"""The GAN losses on discriminator logits, as pure functions (config.loss picks one).

real_logits, fake_logits: (B,) float32, the discriminator's raw outputs l on real images
and on generated ones. Each function returns a scalar to *minimise*:

  kind     D loss                                        G loss
  bce      BCE(D(x), 1) + BCE(D(G(z)), 0)                BCE(D(G(z)), 1)  (non-saturating; the seeds')
  minimax  the same                                      E[log(1 - D(G(z)))]  (the original, saturating)
  lsgan    1/2 E[(l(x) - 1)^2] + 1/2 E[l(G(z))^2]        1/2 E[(l(G(z)) - 1)^2]
  hinge    E[relu(1 - l(x))] + E[relu(1 + l(G(z)))]      -E[l(G(z))]
  wgan-gp  E[l(G(z))] - E[l(x)]  (+ gp_weight * GP)      -E[l(G(z))]

For bce and minimax D(x) = sigmoid(l) is P(real); lsgan (Mao et al., targets a=0, b=c=1),
hinge and wgan-gp (Gulrajani et al., D is the critic) read the logit l itself, with no
sigmoid. The wgan-gp critic's loss also needs D itself: `d_loss` is its Wasserstein term and
the step adds config.gp_weight * `gradient_penalty`. torch_ref.losses mirrors each one:
its discriminator ends in the seeds' nn.Sigmoid for bce and minimax (then nn.BCELoss), and
in the bare logit for the others.

`optax.sigmoid_binary_cross_entropy` computes -[y log sigmoid(l) + (1-y) log(1 - sigmoid(l))]
in a stable form, which is exactly the seeds' `nn.Sigmoid()` + `nn.BCELoss()` wherever
PyTorch's clamp of each log term at -100 is not hit. In float32 that clamp only bites once
sigmoid(l) rounds to exactly 0 or 1 (|l| above about 17 for 1 - sigmoid, 88 for sigmoid),
where the seeds' loss and gradient saturate and this one stays exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxgan.config import LOSSES

SIGMOID_LOSSES = ("bce", "minimax")  # the losses that read D(x) = sigmoid(logit)


def bce_with_logits(logits: jax.Array, target: float) -> jax.Array:
    """Mean binary cross-entropy of sigmoid(logits) against a constant target."""
    return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)).mean()


def _check(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; choose one of: {', '.join(LOSSES)}")


def d_loss(kind: str, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """The discriminator's loss: real_logits (B,), fake_logits (B,) -> scalar."""
    _check(kind)
    if kind in SIGMOID_LOSSES:
        return bce_with_logits(real_logits, 1.0) + bce_with_logits(fake_logits, 0.0)
    if kind == "lsgan":
        return 0.5 * jnp.square(real_logits - 1.0).mean() + 0.5 * jnp.square(fake_logits).mean()
    if kind == "wgan-gp":  # the Wasserstein term; the step adds gp_weight * gradient_penalty
        return fake_logits.mean() - real_logits.mean()
    return jax.nn.relu(1.0 - real_logits).mean() + jax.nn.relu(1.0 + fake_logits).mean()  # hinge


def g_loss(kind: str, fake_logits: jax.Array) -> jax.Array:
    """The generator's loss: fake_logits (B,) = D's logits on G(z) -> scalar."""
    _check(kind)
    if kind == "bce":
        return bce_with_logits(fake_logits, 1.0)
    if kind == "minimax":
        return -bce_with_logits(fake_logits, 0.0)  # E[log(1 - sigmoid(l))]
    if kind == "lsgan":
        return 0.5 * jnp.square(fake_logits - 1.0).mean()
    return -fake_logits.mean()  # hinge, wgan-gp


def discriminator_output(kind: str, logits: jax.Array) -> jax.Array:
    """What torch_ref's discriminator outputs for this loss: sigmoid(logits) = P(real) for bce and
    minimax (the seeds' D(x)), the logits themselves for the others. Shape of `logits`."""
    _check(kind)
    return jax.nn.sigmoid(logits) if kind in SIGMOID_LOSSES else logits


def gradient_penalty(
    critic: Callable[[jax.Array], Any], real: jax.Array, fake: jax.Array, eps: jax.Array, *, has_aux: bool = False
) -> Any:
    """WGAN-GP's penalty E[(||grad_x critic(x_hat)||_2 - 1)^2] at x_hat = eps real + (1 - eps) fake.

    critic: images (B, 28, 28, 1) -> logits (B,) (D with its params and labels bound), or, with
    `has_aux`, -> (logits, aux) and the result is (penalty, aux) (the DCGAN critic's updated
    BatchNorm statistics); real, fake: (B, 28, 28, 1), fake without gradient to G; eps: (B,) in
    [0, 1], one per image. Differentiating this in the critic's params differentiates through the
    input gradient (double backprop), as torch.autograd.grad(create_graph=True) does.
    """
    mix = eps[:, None, None, None]
    x_hat = mix * real + (1.0 - mix) * fake
    if has_aux:
        grads, aux = jax.grad(lambda x: _summed(critic(x)), has_aux=True)(x_hat)
    else:
        grads, aux = jax.grad(lambda x: critic(x).sum())(x_hat), None  # (B, 28, 28, 1): each image's own
    norms = jnp.sqrt(jnp.square(grads).reshape(grads.shape[0], -1).sum(axis=1))  # (B,)
    penalty = jnp.square(norms - 1.0).mean()
    return (penalty, aux) if has_aux else penalty


def _summed(logits_and_aux: tuple[jax.Array, Any]) -> tuple[jax.Array, Any]:
    logits, aux = logits_and_aux
    return logits.sum(), aux
