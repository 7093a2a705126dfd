"""`python -m torch_ref.train`: the seed recipe's training loop in PyTorch (mirrors jaxgan/loop.py).

    python -m torch_ref.train --preset small --dataset mnist-5k [--epochs N] [--seed S] [--max-steps K] [--out x.pt]

It runs jaxgan's run, step for step, in PyTorch: the same data (`jaxgan.data.load`, handed
over as tensors), the same initial weights (jaxgan's, through `jaxgan.convert`), the same
shuffled batches (`jaxgan.steps.epoch_batch_indices`) and noise (`jaxgan.steps.step_noise`).
At the end it writes the weights as a .pt file in `jaxgan.convert`'s format, which
`python -m jaxgan.generate --from-pt FILE` samples from. Bad input exits 2 in one line.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

PROG = "python -m torch_ref.train"


def train(config, images: np.ndarray, max_steps: int | None = None, log=print):
    """Train torch_ref on `images` (N, 28, 28, 1) for config.epochs epochs (None: the seed's
    step budget, `Config.resolved`) or max_steps steps.

    Returns the TorchGAN and the per-epoch mean metrics.
    """
    import jax
    import jax.numpy as jnp

    from jaxgan import steps
    from torch_ref.steps import create_state, train_step

    config = config.resolved(len(images))
    template = steps.create_state(config, config.seed)  # jaxgan's initial weights and PRNG key
    G, D = convert_models(config, template)
    gan = create_state(config, generator=G, discriminator=D)
    data = torch.from_numpy(np.asarray(images, np.float32))  # (N, 28, 28, 1) in [-1, 1]
    num_examples, batch_size = len(data), config.batch_size
    steps_per_epoch = num_examples // batch_size
    noise = jax.jit(lambda state: steps.step_noise(state, batch_size))
    history = []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        indices = torch.tensor(np.asarray(steps.epoch_batch_indices(template.key, epoch - 1, num_examples, batch_size)))
        sums = dict.fromkeys(("d_loss", "g_loss", "d_real", "d_fake"), 0.0)
        taken = 0
        for row in indices:
            if max_steps is not None and gan.step >= max_steps:
                break
            z_d, z_g = (torch.tensor(np.asarray(z)) for z in noise(template.replace(step=jnp.int32(gan.step))))
            metrics = train_step(gan, data[row], z_d, z_g)
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
    """torch_ref networks holding a jaxgan state's weights."""
    from jaxgan import convert
    from torch_ref.models import build_models

    G, D = build_models(config)
    g_sd, d_sd = convert.to_torch_state_dict(state)
    G.load_state_dict(g_sd)
    D.load_state_dict(d_sd)
    return G, D


def main(argv: list[str] | None = None) -> int:
    from jaxgan import convert
    from jaxgan import data as data_lib
    from jaxgan.cli import OneLineParser, UsageError
    from jaxgan.config import PRESETS, preset

    parser = OneLineParser(
        prog=PROG, description="Train the seed recipe in PyTorch on jaxgan's data, batches and noise."
    )
    parser.add_argument("--preset", default="small", help=f"one of: {', '.join(PRESETS)} (default: small)")
    parser.add_argument("--dataset", default="mnist-5k", help="a jaxgan dataset name (default: mnist-5k)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the preset's seed step budget)")
    parser.add_argument("--seed", type=int, default=0, help="seed of jaxgan's init, noise and shuffling (default: 0)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in total")
    parser.add_argument("--out", default="torch_ref.pt", help="where to write the weights (default: torch_ref.pt)")
    try:
        args = parser.parse_args(argv)
        config = preset(args.preset).replace(dataset=args.dataset, seed=args.seed)
        if args.epochs is not None:
            config = config.replace(epochs=args.epochs)
        config.validate()
        if args.max_steps is not None and args.max_steps <= 0:
            raise UsageError(f"--max-steps must be positive, got {args.max_steps}")
        if not args.out.endswith(".pt"):
            raise UsageError(f"--out {args.out!r} must end in .pt")
        dataset = data_lib.load(config.dataset, config.data_dir)
        gan, _ = train(config, dataset.images, args.max_steps)
        convert.write_pt(args.out, config, gan.generator.state_dict(), gan.discriminator.state_dict())
    except (UsageError, ValueError, OSError, data_lib.DataError) as err:
        print(f"{PROG}: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} after {gan.step} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
