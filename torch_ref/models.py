"""The seeds' generator and discriminator: nn.Sequential MLPs (mirrors jaxgan/models.py).

State-dict keys are `net.0.weight`, `net.0.bias`, `net.2.weight`, ... : the Linear layers
sit at even indices of `net`, each followed by its activation (Tanh / Sigmoid last).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from jaxgan.config import Config


def activation(name: str, leaky_slope: float) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.LeakyReLU(leaky_slope)


def mlp(widths: list[int], act: str, leaky_slope: float, last: nn.Module) -> nn.Sequential:
    """Linear(widths[0], widths[1]), act, ..., Linear(widths[-2], widths[-1]), last."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(fan_in, fan_out))
        layers.append(activation(act, leaky_slope) if i < len(widths) - 2 else last)
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """z (B, latent_dim) -> images (B, 1, 28, 28) in [-1, 1]."""

    def __init__(self, config: Config):
        super().__init__()
        widths = [config.latent_dim, *config.g_hidden, config.image_size]
        self.net = mlp(widths, config.g_activation, config.leaky_slope, nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 28, 28)


class Discriminator(nn.Module):
    """images (B, 1, 28, 28) -> D(x) = P(real), (B, 1), through the seeds' final Sigmoid."""

    def __init__(self, config: Config):
        super().__init__()
        widths = [config.image_size, *config.d_hidden, 1]
        self.net = mlp(widths, config.d_activation, config.leaky_slope, nn.Sigmoid())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.flatten(1))


def build_models(config: Config, seed: int = 0) -> tuple[Generator, Discriminator]:
    """Freshly initialised (PyTorch's nn.Linear default) generator and discriminator."""
    torch.manual_seed(seed)
    return Generator(config), Discriminator(config)
