"""The seed recipe's loop in PyTorch (mirrors jaxgan/train.py); its state and step are
`torch_ref.steps`'s.

    python -m torch_ref.train --preset small --dataset mnist-5k [--epochs N] [--seed S] [--max-steps K] [--out x.pt]
        [--loss bce|minimax|lsgan|hinge|wgan-gp] [--conditional]     # any preset: dcgan, cgan-small, ...

The loop runs jaxgan's run, step for step, in PyTorch: the same data (`jaxgan.data.load`,
handed over as tensors), the same initial weights (jaxgan's, through `jaxgan.convert`), the
same shuffled batches (`jaxgan.steps.epoch_batch_indices`) and noise (`jaxgan.steps.step_noise`).
At the end it writes the weights as a .pt file in `jaxgan.convert`'s format, which
`python -m jaxgan.generate --from-pt FILE` samples from. Bad input exits 2 in one line.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from jaxgan.cli import report_missing

try:
    import torch
except ModuleNotFoundError as err:  # as a command, one line naming the extra to install (exit 2)
    if __name__ != "__main__":
        raise
    sys.exit(report_missing("python -m torch_ref.train", err))


from torch_ref.models import build_models
from torch_ref.steps import TorchGAN, create_state, train_step

__all__ = ["TorchGAN", "create_state", "main", "train", "train_step"]

PROG = "python -m torch_ref.train"


def train(config, images: np.ndarray, max_steps: int | None = None, log=print, labels: np.ndarray | None = None):
    """Train torch_ref on `images` (N, 28, 28, 1) (and their `labels` (N,), for a conditional
    config) for config.epochs epochs (None: the seed's step budget, `Config.resolved`) or
    max_steps steps: jaxgan's batches, noise, fake labels and penalty weights.

    Returns the TorchGAN and the per-epoch mean metrics.
    """
    import jax
    import jax.numpy as jnp

    from jaxgan import steps as jaxgan_steps

    if config.conditional and labels is None:
        raise ValueError("a conditional config trains on labelled images: pass labels")
    config = config.resolved(len(images))
    template = jaxgan_steps.create_state(config, config.seed)  # jaxgan's initial weights and PRNG key
    G, D = convert_models(config, template)
    gan = create_state(config, generator=G, discriminator=D)
    data = torch.from_numpy(np.asarray(images, np.float32))  # (N, 28, 28, 1) in [-1, 1]
    targets = torch.from_numpy(np.asarray(labels, np.int64)) if config.conditional else None
    num_examples, batch_size = len(data), config.batch_size
    steps_per_epoch = num_examples // batch_size
    draws = jax.jit(
        lambda state: (jaxgan_steps.step_noise(state, batch_size), jaxgan_steps.step_extras(state, batch_size))
    )
    history = []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        indices = torch.tensor(
            np.asarray(jaxgan_steps.epoch_batch_indices(template.key, epoch - 1, num_examples, batch_size))
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
