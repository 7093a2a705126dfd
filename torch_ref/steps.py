"""One seed-recipe training step in PyTorch (mirrors jaxgan/steps.py).

  (1) Update D: BCE(D(real), 1) + BCE(D(fake.detach()), 0), Adam step on D;
  (2) Update G: BCE(D(G(z_g)), 1) through the updated D, Adam step on G.

Noise is passed in explicitly so jaxgan and torch_ref can be fed identical numbers.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from jaxgan.config import Config
from torch_ref.models import Discriminator, Generator, build_models


@dataclasses.dataclass
class TorchGAN:
    """Both networks and their optimisers: torch_ref's counterpart of jaxgan's GANState."""

    config: Config
    generator: Generator
    discriminator: Discriminator
    g_opt: torch.optim.Adam
    d_opt: torch.optim.Adam
    criterion: nn.BCELoss = dataclasses.field(default_factory=nn.BCELoss)
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


def train_step(state: TorchGAN, real: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor) -> dict[str, torch.Tensor]:
    """One D then one G update, in place. real: (B, 1, 28, 28) or (B, 28, 28, 1) in [-1, 1].

    Returns detached scalar tensors d_loss, g_loss, d_real (mean D(x)), d_fake (mean D(G(z_d))).
    No .item(): reading them is the caller's (host-sync) choice.
    """
    G, D, criterion = state.generator, state.discriminator, state.criterion
    batch = real.shape[0]
    real_labels = torch.ones(batch, 1)
    fake_labels = torch.zeros(batch, 1)

    # (1) Update D: maximise log(D(x)) + log(1 - D(G(z))).
    state.d_opt.zero_grad()
    real_out = D(real)
    fake_out = D(G(z_d).detach())
    d_loss = criterion(real_out, real_labels) + criterion(fake_out, fake_labels)
    d_loss.backward()
    state.d_opt.step()

    # (2) Update G: maximise log(D(G(z))) through the updated D.
    state.g_opt.zero_grad()
    g_loss = criterion(D(G(z_g)), real_labels)
    g_loss.backward()
    state.g_opt.step()

    state.step += 1
    return {
        "d_loss": d_loss.detach(),
        "g_loss": g_loss.detach(),
        "d_real": real_out.detach().mean(),
        "d_fake": fake_out.detach().mean(),
    }
