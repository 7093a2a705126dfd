"""The GAN losses in PyTorch (mirrors jaxgan/losses.py).

real_out, fake_out: torch_ref's Discriminator outputs, (B, 1). For bce and minimax the
discriminator ends in the seeds' nn.Sigmoid, so the outputs are D(x) = P(real) and the
losses are the seeds' nn.BCELoss; for lsgan, hinge and wgan-gp it ends in the bare logit (no
Sigmoid; `final_activation`) and the losses read it directly. Each returns a scalar to minimise;
wgan-gp's critic loss is `d_loss` + config.gp_weight * `gradient_penalty`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from jaxgan.config import LOSSES

SIGMOID_LOSSES = ("bce", "minimax")


def final_activation(kind: str) -> nn.Module:
    """The discriminator's last module for loss `kind`: nn.Sigmoid (bce, minimax) or nn.Identity."""
    _check(kind)
    return nn.Sigmoid() if kind in SIGMOID_LOSSES else nn.Identity()


def _check(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; choose one of: {', '.join(LOSSES)}")


def bce(out: torch.Tensor, target: float) -> torch.Tensor:
    """The seeds' nn.BCELoss() of probabilities `out` against a constant target."""
    return nn.BCELoss()(out, torch.full_like(out, target))


def d_loss(kind: str, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss: D's outputs on real and on generated images -> scalar."""
    _check(kind)
    if kind in SIGMOID_LOSSES:  # maximise log D(x) + log(1 - D(G(z)))
        return bce(real_out, 1.0) + bce(fake_out, 0.0)
    if kind == "lsgan":
        return 0.5 * nn.functional.mse_loss(real_out, torch.ones_like(real_out)) + 0.5 * nn.functional.mse_loss(
            fake_out, torch.zeros_like(fake_out)
        )
    if kind == "wgan-gp":
        return fake_out.mean() - real_out.mean()
    return nn.functional.relu(1.0 - real_out).mean() + nn.functional.relu(1.0 + fake_out).mean()  # hinge


def g_loss(kind: str, fake_out: torch.Tensor) -> torch.Tensor:
    """The generator's loss: D's output on G(z) -> scalar."""
    _check(kind)
    if kind == "bce":  # maximise log D(G(z))
        return bce(fake_out, 1.0)
    if kind == "minimax":  # minimise log(1 - D(G(z)))
        return -bce(fake_out, 0.0)
    if kind == "lsgan":
        return 0.5 * nn.functional.mse_loss(fake_out, torch.ones_like(fake_out))
    return -fake_out.mean()  # hinge, wgan-gp


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP's E[(||grad_x critic(x_hat)||_2 - 1)^2] at x_hat = eps real + (1 - eps) fake.

    real, fake: (B, 1, 28, 28) (fake detached); eps: (B,) in [0, 1]. create_graph=True keeps the
    input gradient differentiable, so backward() reaches the critic's parameters through it.
    """
    mix = eps.view(-1, 1, 1, 1)
    x_hat = (mix * real + (1 - mix) * fake).detach().requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grads.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
