"""The seed recipe in PyTorch: its state, its training step, and its loop (mirrors jaxgan/train.py).

One step, as in the seeds:
  (1) Update D: BCE(D(real), 1) + BCE(D(fake.detach()), 0), Adam step on D;
  (2) Update G: BCE(D(G(z_g)), 1) through the updated D, Adam step on G.
Noise is passed in explicitly so jaxgan and torch_ref can be fed identical numbers.

    python -m torch_ref.train --preset small --dataset mnist-5k [--epochs N] [--seed S] [--max-steps K] [--out x.pt]
        [--loss bce|minimax|lsgan|hinge|wgan-gp] [--conditional]     # any preset: dcgan, cgan-small, ...

The loop runs jaxgan's run, step for step, in PyTorch: the same data (`jaxgan.data.load`,
handed over as tensors), the same initial weights (jaxgan's, through `jaxgan.convert`), the
same shuffled batches (`jaxgan.train.epoch_batch_indices`) and noise (`jaxgan.train.step_noise`).
At the end it writes the weights as a .pt file in `jaxgan.convert`'s format, which
`python -m jaxgan.generate --from-pt FILE` samples from. Bad input exits 2 in one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from jaxgan.cli import report_missing
from jaxgan.config import Config

try:
    import torch
    from torch import nn
except ModuleNotFoundError as err:  # as a command, one line naming the extra to install (exit 2)
    if __name__ != "__main__":
        raise
    sys.exit(report_missing("python -m torch_ref.train", err))


from torch_ref import losses
from torch_ref.models import Discriminator, Generator, build_models

PROG = "python -m torch_ref.train"


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


def train(config, images: np.ndarray, max_steps: int | None = None, log=print, labels: np.ndarray | None = None):
    """Train torch_ref on `images` (N, 28, 28, 1) (and their `labels` (N,), for a conditional
    config) for config.epochs epochs (None: the seed's step budget, `Config.resolved`) or
    max_steps steps: jaxgan's batches, noise, fake labels and penalty weights.

    Returns the TorchGAN and the per-epoch mean metrics.
    """
    import jax
    import jax.numpy as jnp

    from jaxgan import train as jaxgan_train

    if config.conditional and labels is None:
        raise ValueError("a conditional config trains on labelled images: pass labels")
    config = config.resolved(len(images))
    template = jaxgan_train.create_state(config, config.seed)  # jaxgan's initial weights and PRNG key
    G, D = convert_models(config, template)
    gan = create_state(config, generator=G, discriminator=D)
    data = torch.from_numpy(np.asarray(images, np.float32))  # (N, 28, 28, 1) in [-1, 1]
    targets = torch.from_numpy(np.asarray(labels, np.int64)) if config.conditional else None
    num_examples, batch_size = len(data), config.batch_size
    steps_per_epoch = num_examples // batch_size
    draws = jax.jit(
        lambda state: (jaxgan_train.step_noise(state, batch_size), jaxgan_train.step_extras(state, batch_size))
    )
    history = []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        indices = torch.tensor(
            np.asarray(jaxgan_train.epoch_batch_indices(template.key, epoch - 1, num_examples, batch_size))
        )
        sums = dict.fromkeys(("d_loss", "g_loss", "d_real", "d_fake"), 0.0)
        taken = 0
        for row in indices:
            if max_steps is not None and gan.step >= max_steps:
                break
            (z_d, z_g), extras = jax.tree.map(
                lambda x: torch.tensor(np.asarray(x)), draws(template.replace(step=jnp.int32(gan.step)))
            )
            real_labels = None if targets is None else targets[row]
            metrics = train_step(gan, data[row], z_d, z_g, real_labels, **extras)
            for name, value in metrics.items():
                sums[name] += float(value)
            taken += 1
        if taken == 0:
            break
        row = {"epoch": epoch, "step": gan.step, **{k: v / taken for k, v in sums.items()}}
        history.append(row)
        log(
            f"Epoch [{epoch}/{config.epochs}] step {gan.step}  D loss: {row['d_loss']:.4f}  G loss: {row['g_loss']:.4f}  "
            f"D(x): {row['d_real']:.3f}  D(G(z)): {row['d_fake']:.3f}  {time.perf_counter() - start:.2f}s"
        )
        if taken < steps_per_epoch:
            break
    return gan, history


def convert_models(config, state):
    """torch_ref networks holding a jaxgan state's weights (and BatchNorm running statistics)."""
    from jaxgan import convert

    G, D = build_models(config)
    g_sd, d_sd = convert.to_torch_state_dict(state)
    G.load_state_dict(g_sd)
    D.load_state_dict(d_sd)
    return G, D


def main(argv: list[str] | None = None) -> int:
    from jaxgan import convert
    from jaxgan import data as data_lib
    from jaxgan.cli import OneLineParser, UsageError, check_writable, run
    from jaxgan.config import LOSSES, PRESETS, preset

    parser = OneLineParser(
        prog=PROG, description="Train the seed recipe in PyTorch on jaxgan's data, batches and noise."
    )
    parser.add_argument("--preset", default="small", help=f"one of: {', '.join(PRESETS)} (default: small)")
    parser.add_argument("--dataset", default="mnist-5k", help="a jaxgan dataset name (default: mnist-5k)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the preset's seed step budget)")
    parser.add_argument("--seed", type=int, default=0, help="seed of jaxgan's init, noise and shuffling (default: 0)")
    parser.add_argument("--loss", default=None, help="GAN loss (default: the preset's): " + ", ".join(LOSSES))
    parser.add_argument(
        "--conditional", action=argparse.BooleanOptionalAction, default=None, help="class-conditional G and D"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in total")
    parser.add_argument("--out", default="torch_ref.pt", help="where to write the weights (default: torch_ref.pt)")

    def body() -> None:
        args = parser.parse_args(argv)
        try:
            config = preset(args.preset).replace(dataset=args.dataset, seed=args.seed)
            if args.epochs is not None:
                config = config.replace(epochs=args.epochs)
            if args.loss is not None:
                config = config.replace(loss=args.loss)
            if args.conditional is not None:
                config = config.replace(conditional=args.conditional)
            config.validate()
        except ValueError as err:
            raise UsageError(str(err)) from None
        if args.max_steps is not None and args.max_steps <= 0:
            raise UsageError(f"--max-steps must be positive, got {args.max_steps}")
        if not args.out.endswith(".pt"):
            raise UsageError(f"--out {args.out!r} must end in .pt")
        check_writable(args.out, "--out")  # before training, not after
        dataset = data_lib.load(config.dataset, config.data_dir)
        if config.conditional:
            data_lib.check_labels(dataset, config.num_classes)
        gan, _ = train(config, dataset.images, args.max_steps, labels=dataset.labels)
        convert.write_pt(args.out, config, gan.generator.state_dict(), gan.discriminator.state_dict())
        print(f"wrote {args.out} after {gan.step} steps")

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
