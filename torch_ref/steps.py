"""The seed recipe's training computation in PyTorch: its state and one training step (mirrors
jaxgan/steps.py).

One step, as in the seeds:
  (1) Update D: BCE(D(real), 1) + BCE(D(fake.detach()), 0), Adam step on D;
  (2) Update G: BCE(D(G(z_g)), 1) through the updated D, Adam step on G.
Noise is passed in explicitly so jaxgan and torch_ref can be fed identical numbers.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from jaxgan.config import Config
from torch_ref import losses
from torch_ref.models import Discriminator, Generator, build_models


@dataclasses.dataclass
class TorchGAN:
    """Both networks and their optimisers: torch_ref's counterpart of jaxgan's GANState
    (a DCGAN's BatchNorm running statistics are the networks' own buffers)."""

    config: Config
    generator: Generator
    discriminator: Discriminator
    g_opt: torch.optim.Adam
    d_opt: torch.optim.Adam
    step: int = 0


def adam(config: Config, module: nn.Module) -> torch.optim.Adam:
    return torch.optim.Adam(module.parameters(), lr=config.lr, betas=(config.beta1, config.beta2), eps=1e-8)


def create_state(
    config: Config, seed: int = 0, generator: Generator | None = None, discriminator: Discriminator | None = None
) -> TorchGAN:
    """Networks (fresh from `seed`, or the ones given) with fresh Adam states."""
    if generator is None or discriminator is None:
        generator, discriminator = build_models(config, seed)
    return TorchGAN(config, generator, discriminator, adam(config, generator), adam(config, discriminator))


def train_step(
    state: TorchGAN,
    real: torch.Tensor,
    z_d: torch.Tensor,
    z_g: torch.Tensor,
    labels: torch.Tensor | None = None,
    fake_labels: tuple[torch.Tensor, torch.Tensor] | None = None,
    gp_eps: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One D then one G update, in place. real: (B, 1, 28, 28) or (B, 28, 28, 1) in [-1, 1].

    Conditional: labels (B,), the real images' digits, and fake_labels (y_d, y_g), the digits asked
    of G with z_d and z_g; wgan-gp: gp_eps (B,), the penalty's interpolation weights. The
    networks stay in train mode throughout (BatchNorm: batch statistics, running ones updated at
    every forward: G(z_d), D(real), D(fake) [, D(x_hat)], G(z_g), D(G(z_g))).
    Returns detached scalar tensors d_loss, g_loss, d_real (mean D(x)), d_fake (mean D(G(z_d))).
    No .item(): reading them is the caller's (host-sync) choice.
    """
    config = state.config
    G, D, kind = state.generator, state.discriminator, config.loss
    y_d, y_g = fake_labels if fake_labels is not None else (None, None)
    real = real.reshape(-1, 1, 28, 28)  # one channel: NHWC and NCHW are the same memory

    # (1) Update D: maximise log(D(x)) + log(1 - D(G(z))) (or the config's loss).
    state.d_opt.zero_grad()
    fake = G(z_d, y_d).detach()
    real_out = D(real, labels)
    fake_out = D(fake, y_d)
    d_loss = losses.d_loss(kind, real_out, fake_out)
    if kind == "wgan-gp":
        d_loss = d_loss + config.gp_weight * losses.gradient_penalty(lambda x: D(x, labels), real, fake, gp_eps)
    d_loss.backward()
    state.d_opt.step()

    # (2) Update G: maximise log(D(G(z))) (or the config's loss) through the updated D.
    state.g_opt.zero_grad()
    g_loss = losses.g_loss(kind, D(G(z_g, y_g), y_g))
    g_loss.backward()
    state.g_opt.step()

    state.step += 1
    return {
        "d_loss": d_loss.detach(),
        "g_loss": g_loss.detach(),
        "d_real": real_out.detach().mean(),
        "d_fake": fake_out.detach().mean(),
    }
