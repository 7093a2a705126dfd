"""`python -m jaxgan.generate`: images from a trained generator.

    python -m jaxgan.generate --workdir runs/small [--num 64] [--seed 0] [--out samples.png|.npy|.npz]
    python -m jaxgan.generate --from-pt generator.pt ...   # torch_ref weights (see jaxgan.convert)

Reads the run's latest checkpoint (or `--epoch N`) read-only and writes
- `.png`: one grid of the images (ceil(sqrt(num)) per row), like the training samples;
- `.npy`: the images, float32 (num, 28, 28, 1) in [-1, 1];
- `.npz`: `images` (as .npy), `pixels` uint8 (num, 28, 28, 1) in [0, 255], and the noise `z`.
The noise is jax.random.normal(key(seed), (num, latent_dim)): the same seed gives the same
images. Bad input is one line on stderr and exit status 2, and leaves every file as it was
(the output is written to a temporary file and renamed into place).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from jaxgan.cli import OneLineParser, UsageError

PROG = "python -m jaxgan.generate"
FORMATS = (".png", ".npy", ".npz")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Generate images with the generator of a trained run.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="a training run's directory (its latest checkpoint is used)")
    source.add_argument("--from-pt", help="a PyTorch .pt file of torch_ref weights (see jaxgan.convert)")
    parser.add_argument("--epoch", type=int, default=None, help="use the checkpoint of this epoch (default: latest)")
    parser.add_argument("--num", type=int, default=64, help="how many images (default: 64)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the noise; the same seed gives the same images (default: 0)"
    )
    parser.add_argument(
        "--out", default=None, help="output file: .png grid, .npy or .npz arrays (default: WORKDIR/generated.png)"
    )
    return parser


def output_path(args: argparse.Namespace) -> Path:
    """The checked output path; UsageError for an unknown extension or a missing directory."""
    default = Path(args.workdir) if args.workdir is not None else Path(args.from_pt).parent
    out = Path(args.out) if args.out is not None else default / "generated.png"
    if out.suffix.lower() not in FORMATS:
        raise UsageError(f"--out {str(out)!r}: the extension must be one of {', '.join(FORMATS)}")
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a directory")
    if not out.parent.is_dir():
        raise UsageError(f"--out {str(out)!r}: directory {str(out.parent)!r} does not exist")
    return out


def check_source(args: argparse.Namespace) -> None:
    """UsageError unless the generator's source exists (cheap checks, before any output)."""
    from jaxgan import checkpoint

    if args.from_pt is not None:
        if not Path(args.from_pt).is_file():
            raise UsageError(f"--from-pt {args.from_pt!r} is not a file")
        return
    try:
        checkpoint.check_workdir(args.workdir)
    except checkpoint.CheckpointError as err:
        raise UsageError(str(err)) from None


def load_generator(args: argparse.Namespace):
    """(config, generator params) from the source the arguments name."""
    from jaxgan import checkpoint, convert

    if args.from_pt is not None:
        try:
            state = convert.load_pt(args.from_pt)
        except ValueError as err:
            raise UsageError(str(err)) from None
        return state.config, state.g_params
    try:
        state = checkpoint.load_state(args.workdir, args.epoch)
    except checkpoint.CheckpointError as err:
        raise UsageError(str(err)) from None
    from jaxgan import steps

    return state.config, steps.sampling_params(state)  # the EMA generator when the run keeps one


def generate_images(config, g_params, num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (num, 28, 28, 1) float32 in [-1, 1], noise z (num, latent_dim)) for `seed`."""
    import jax

    from jaxgan import steps

    z = jax.random.normal(jax.random.key(seed), (num, config.latent_dim))
    images = jax.jit(steps.generate, static_argnums=0)(config, g_params, z)
    return np.asarray(images, np.float32), np.asarray(z, np.float32)


def write(out: Path, images: np.ndarray, z: np.ndarray) -> None:
    """Write `images` to `out` in the format its extension names, atomically."""
    from jaxgan import visualize

    suffix = out.suffix.lower()
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=suffix)
    os.close(fd)
    try:
        if suffix == ".png":
            visualize.save_grid(images, tmp)
        elif suffix == ".npy":
            np.save(tmp, images, allow_pickle=False)
        else:
            np.savez(tmp, images=images, pixels=visualize.to_uint8(images), z=z)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m jaxgan.generate`; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        if args.num <= 0:
            raise UsageError(f"--num must be positive, got {args.num}")
        check_source(args)
        out = output_path(args)
        config, g_params = load_generator(args)
        images, z = generate_images(config, g_params, args.num, args.seed)
        write(out, images, z)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.num} images (seed {args.seed}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
