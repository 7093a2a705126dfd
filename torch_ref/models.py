"""The generator and discriminator in plain PyTorch (mirrors jaxgan/models.py).

mlp: the seeds' nn.Sequential MLPs. State-dict keys are `net.0.weight`, `net.0.bias`,
`net.2.weight`, ... : the Linear layers sit at even indices of `net`, each followed by its
activation (Tanh / the discriminator's final activation last).

dcgan: pytorch/examples dcgan scaled to 28x28x1 (docs/presets-dcgan.md), its `main`
Sequential with ngf = config.g_features, ndf = config.d_features and its `weights_init`:

    G  net.0 ConvTranspose2d(nz [+10], 2ngf, 7, 1, 0)  (B, 2ngf, 7, 7)
       net.1 BatchNorm2d, net.2 ReLU
       net.3 ConvTranspose2d(2ngf, ngf, 4, 2, 1)       (B, ngf, 14, 14)
       net.4 BatchNorm2d, net.5 ReLU
       net.6 ConvTranspose2d(ngf, 1, 4, 2, 1), net.7 Tanh   (B, 1, 28, 28)
    D  net.0 Conv2d(1 [+10], ndf, 4, 2, 1), net.1 LeakyReLU(0.2)   (B, ndf, 14, 14)
       net.2 Conv2d(ndf, 2ndf, 4, 2, 1), net.3 BatchNorm2d, net.4 LeakyReLU(0.2)   (B, 2ndf, 7, 7)
       net.5 Conv2d(2ndf, 1, 7, 1, 0), net.6 final activation   (B, 1, 1, 1) -> (B, 1)

Every discriminator ends in `torch_ref.losses.final_activation(config.loss)`: the seeds'
nn.Sigmoid for bce and minimax, nn.Identity (the bare logit) for lsgan, hinge and wgan-gp.
Conditional networks take z ⊕ one-hot(label) and flatten(x) ⊕ one-hot(label) (mlp), or
x with 10 constant one-hot planes after its channel (dcgan D); a projection discriminator
(conditioning "projection") takes the bare image and adds <embed(label), φ(x)> to its logit,
its nn.Embedding `embed` beside `net` (state-dict key `embed.weight`).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from jaxgan.config import Config
from torch_ref.losses import final_activation

DCGAN_INIT_STD = 0.02


def activation(name: str, leaky_slope: float) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.LeakyReLU(leaky_slope)


def mlp(widths: list[int], act: str, leaky_slope: float, last: nn.Module) -> nn.Sequential:
    """Linear(widths[0], widths[1]), act, ..., Linear(widths[-2], widths[-1]), last."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(fan_in, fan_out))
        layers.append(activation(act, leaky_slope) if i < len(widths) - 2 else last)
    return nn.Sequential(*layers)


def dcgan_generator(config: Config, in_channels: int) -> nn.Sequential:
    ngf, act = config.g_features, config.g_activation
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, 2 * ngf, 7, 1, 0, bias=False),
        nn.BatchNorm2d(2 * ngf),
        activation(act, config.leaky_slope),
        nn.ConvTranspose2d(2 * ngf, ngf, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf),
        activation(act, config.leaky_slope),
        nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False),
        nn.Tanh(),
    )


def dcgan_discriminator(config: Config, in_channels: int) -> nn.Sequential:
    ndf, act = config.d_features, config.d_activation
    return nn.Sequential(
        nn.Conv2d(in_channels, ndf, 4, 2, 1, bias=False),
        activation(act, config.leaky_slope),
        nn.Conv2d(ndf, 2 * ndf, 4, 2, 1, bias=False),
        nn.BatchNorm2d(2 * ndf),
        activation(act, config.leaky_slope),
        nn.Conv2d(2 * ndf, 1, 7, 1, 0, bias=False),
        final_activation(config.loss),
    )


def dcgan_weights_init(module: nn.Module) -> None:
    """pytorch/examples dcgan `weights_init`: conv weights N(0, 0.02), BatchNorm N(1, 0.02) and 0;
    a projection discriminator's label embedding N(0, 0.02) like the conv weights."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):  # Embedding: a projection D's
        nn.init.normal_(module.weight, 0.0, DCGAN_INIT_STD)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, DCGAN_INIT_STD)
        nn.init.zeros_(module.bias)


def one_hot_labels(config: Config, labels: torch.Tensor | None, network: str) -> torch.Tensor | None:
    """labels (B,) int -> one-hot (B, 10) float32, or None for an unconditional config."""
    if config.conditional and labels is None:
        raise ValueError(f"the conditional {network} needs labels")
    if not config.conditional and labels is not None:
        raise ValueError(f"the {network} is not conditional (config.conditional is False) but got labels")
    if labels is None:
        return None
    return nn.functional.one_hot(labels.long(), config.num_classes).float()


class Generator(nn.Module):
    """z (B, latent_dim), labels (B,) when conditional -> images (B, 1, 28, 28) in [-1, 1]."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        in_features = config.latent_dim + (config.num_classes if config.conditional else 0)
        if config.arch == "dcgan":
            self.net = dcgan_generator(config, in_features)
        else:
            widths = [in_features, *config.g_hidden, config.image_size]
            self.net = mlp(widths, config.g_activation, config.leaky_slope, nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        one_hot = one_hot_labels(self.config, labels, "generator")
        x = z if one_hot is None else torch.cat([z, one_hot], 1)  # (B, latent_dim [+10])
        if self.config.arch == "dcgan":
            return self.net(x[:, :, None, None])
        return self.net(x).view(-1, 1, 28, 28)


class Discriminator(nn.Module):
    """images (B, 1, 28, 28) (or (B, 28, 28, 1): one channel, the same memory), labels (B,) when
    conditional -> (B, 1): D(x) = P(real) through the seeds' final Sigmoid (bce, minimax), or
    the logit (lsgan, hinge, wgan-gp).

    conditioning "projection": the image alone goes through `net` up to its last layer, whose input
    φ(x) (the MLP's last hidden layer; the DCGAN's 7x7 features summed over space) also meets the
    label's `embed` row: logit = last(φ) + <embed(label), φ>, then the final activation.
    """

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.projection = config.projection_discriminator
        extra = config.num_classes if config.conditional and not self.projection else 0
        if config.arch == "dcgan":
            self.net = dcgan_discriminator(config, 1 + extra)
            width = 2 * config.d_features
        else:
            widths = [config.image_size + extra, *config.d_hidden, 1]
            self.net = mlp(widths, config.d_activation, config.leaky_slope, final_activation(config.loss))
            width = config.d_hidden[-1]
        if self.projection:
            self.embed = nn.Embedding(config.num_classes, width)  # N(0, 1), PyTorch's default (dcgan: weights_init's)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        one_hot = one_hot_labels(self.config, labels, "discriminator")
        if self.config.arch == "dcgan":
            x = images.reshape(-1, 1, 28, 28)
            if self.projection:
                return self.project(x, labels, spatial=True).view(-1, 1)
            if one_hot is not None:  # one constant plane per class, after the image channel
                x = torch.cat([x, one_hot[:, :, None, None].expand(-1, -1, 28, 28)], 1)  # (B, 11, 28, 28)
            return self.net(x).view(-1, 1)
        x = images.flatten(1)  # (B, 784)
        if self.projection:
            return self.project(x, labels, spatial=False)
        if one_hot is not None:
            x = torch.cat([x, one_hot], 1)  # (B, 794)
        return self.net(x)

    def project(self, x: torch.Tensor, labels: torch.Tensor, spatial: bool) -> torch.Tensor:
        """`net` with the projection term added before its final activation: (B, 1) or (B, 1, 1, 1)."""
        features = self.net[:-2](x)  # φ(x): (B, d_hidden[-1]) or (B, 2ndf, 7, 7)
        logits = self.net[-2](features)
        pooled = features.sum((2, 3)) if spatial else features  # (B, F)
        term = (self.embed(labels.long()) * pooled).sum(1)  # (B,)
        return self.net[-1](logits + term.view(-1, *[1] * (logits.dim() - 1)))


def build_models(config: Config, seed: int = 0) -> tuple[Generator, Discriminator]:
    """Freshly initialised generator and discriminator: PyTorch's nn.Linear default (mlp), or the
    DCGAN example's `weights_init` (dcgan)."""
    torch.manual_seed(seed)
    generator, discriminator = Generator(config), Discriminator(config)
    if config.arch == "dcgan":
        generator.apply(dcgan_weights_init)
        discriminator.apply(dcgan_weights_init)
    return generator, discriminator
