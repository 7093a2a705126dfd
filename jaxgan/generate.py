"""`python -m jaxgan.generate`: images from a trained generator.

    python -m jaxgan.generate --workdir runs/small [--num 64] [--seed 0] [--out samples.png|.npy|.npz]
    python -m jaxgan.generate --from-pt generator.pt ...   # torch_ref weights (see jaxgan.convert)

Reads the run's latest checkpoint (or `--epoch N`) read-only and writes
- `.png`: one grid of the images (ceil(sqrt(num)) per row), like the training samples;
- `.npy`: the images, float32 (num, 28, 28, 1) in [-1, 1];
- `.npz`: `images` (as .npy), `pixels` uint8 (num, 28, 28, 1) in [0, 255], and the noise `z`.
The noise is `jaxgan.sampling.noise(seed, num, latent_dim)`: the same seed gives the same
images, and a run's own seed with --num grid_size**2 gives the images of its sample grids.
Bad input is one line on stderr and exit status 2, and leaves every file as it was: the
output is written to a temporary file `.NAME.PID.tmp` beside it (with the permissions the
umask gives, like every other output) and renamed into place. Ctrl-C stops it at once; a
temporary file left by a process that was killed is removed by the next run writing there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from jaxgan.cli import OneLineParser, UsageError, run
from jaxgan.config import check_seed

PROG = "python -m jaxgan.generate"
FORMATS = (".png", ".npy", ".npz")
MAX_NUM = 1_000_000  # images per call
MAX_GRID_IMAGES = 32 * 32  # a .png grid (config.MAX_GRID squared)


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


def temporary_path(out: Path, pid: int) -> Path:
    """Where process `pid` writes `out` before renaming it into place (same directory, same suffix)."""
    return out.parent / f".{out.name}.{pid}.tmp{out.suffix.lower()}"


def remove_leftovers(out: Path) -> None:
    """Remove temporary files of `out` left by generate processes that are gone (killed mid-write)."""
    suffix = out.suffix.lower()
    for leftover in out.parent.glob(f".{out.name}.*.tmp{suffix}"):
        pid = leftover.name[len(out.name) + 2 : -len(f".tmp{suffix}")]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # no such process: nobody is writing it
            leftover.unlink(missing_ok=True)
        except OSError:
            pass


def write(out: Path, images: np.ndarray, z: np.ndarray) -> None:
    """Write `images` to `out` in the format its extension names, atomically (`temporary_path`)."""
    from jaxgan import visualize

    suffix = out.suffix.lower()
    remove_leftovers(out)
    tmp = temporary_path(out, os.getpid())
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))  # the umask decides its mode
    try:
        if suffix == ".png":
            visualize.save_grid(images, tmp)
        elif suffix == ".npy":
            np.save(tmp, images, allow_pickle=False)
        else:
            np.savez(tmp, images=images, pixels=visualize.to_uint8(images), z=z)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def check_num(num: int, out: Path, latent_dim: int | None = None) -> None:
    """UsageError unless `num` images fit: at most MAX_NUM, a .png grid at most MAX_GRID_IMAGES, and
    (given latent_dim) their arrays within the machine's memory."""
    if num <= 0:
        raise UsageError(f"--num must be positive, got {num}")
    if num > MAX_NUM:
        raise UsageError(f"--num must be at most {MAX_NUM:,}, got {num:,}")
    if out.suffix.lower() == ".png" and num > MAX_GRID_IMAGES:
        raise UsageError(f"--num must be at most {MAX_GRID_IMAGES} for a .png grid, got {num:,}; use .npy or .npz")
    if latent_dim is not None:
        from jaxgan import train

        need = 4 * num * (latent_dim + 3 * 28 * 28)  # the noise, the images on the device and host, the file
        have, whose = train.memory_available()
        if need > have:
            raise UsageError(
                f"--num {num:,} needs about {train.gigabytes(need)} of memory, more than {whose} {train.gigabytes(have)}"
            )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m jaxgan.generate`; returns the exit status."""

    def body() -> None:
        from jaxgan import signals

        with signals.exit_at_once(PROG, when=""):
            args = build_parser().parse_args(argv)
            try:
                check_seed(args.seed, "--seed")
            except ValueError as err:
                raise UsageError(str(err)) from None
            from jaxgan import sampling

            sampling.check_source(args.workdir, args.from_pt)
            out = output_path(args)
            check_num(args.num, out)
            config, g_params, _, _ = sampling.load_generator(args.workdir, args.from_pt, args.epoch)
            check_num(args.num, out, config.latent_dim)
            images, z = sampling.images(config, g_params, args.num, args.seed)
            write(out, images, z)
        print(f"wrote {args.num} images (seed {args.seed}) to {out}")

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
