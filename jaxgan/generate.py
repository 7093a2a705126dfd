"""`python -m jaxgan.generate`: images from a trained generator.

    python -m jaxgan.generate --workdir runs/small [--num 64] [--seed 0] [--out samples.png|.npy|.npz]
    python -m jaxgan.generate --from-pt generator.pt ...   # torch_ref weights (see jaxgan.convert)
    python -m jaxgan.generate --workdir runs/cgan-small --labels 0-9 [--num 8]   # a conditional run


Reads the run's latest checkpoint (or `--epoch N`) read-only and writes
- `.png`: one grid of the images (ceil(sqrt(num)) per row), like the training samples;
- `.npy`: the images, float32 (num, 28, 28, 1) in [-1, 1];
- `.npz`: `images` (as .npy), `pixels` uint8 (num, 28, 28, 1) in [0, 255], and the noise `z`.
The noise is `jaxgan.sampling.noise(seed, num, latent_dim)`: the same seed gives the same
images, and a run's own seed with --num grid_size**2 gives the images of its sample grids.
A conditional generator draws `--labels` (a digit `7`, a range `0-9`, or a list `1,4,7`;
default 0-9), `--num` images of each (default 8), one row per digit whose columns share their
noise (`jaxgan.sampling.labelled_inputs`); the .npz also holds the `labels`. A run's own seed
with --labels 0-9 --num grid_size gives the images of its sample grids.
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
    parser.add_argument(
        "--num", type=int, default=None, help="how many images (default: 64); with --labels, per digit (default: 8)"
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="a conditional generator's digits, one row each: 7, 0-9 or 1,4,7 (default for a conditional run: 0-9)",
    )
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


def parse_labels(text: str, num_classes: int = 10) -> list[int]:
    """`--labels` text -> digits: "7" -> [7], "0-9" -> [0, ..., 9], "1,4-6" -> [1, 4, 5, 6]; UsageError otherwise."""
    digits: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last) if dash else int(first)
        except ValueError:
            raise UsageError(f"--labels {text!r}: expected digits like 7, 0-9 or 1,4,7") from None
        if not 0 <= low <= high < num_classes:
            raise UsageError(f"--labels {text!r}: digits must be 0-{num_classes - 1}, low to high")
        digits.extend(range(low, high + 1))
    return digits


def write(out: Path, images: np.ndarray, z: np.ndarray, nrow: int | None = None, labels=None) -> None:
    """Write `images` to `out` in the format its extension names, atomically (a .png grid with
    `nrow` images per row; a .npz also holds `labels` when given)."""
    from jaxgan import visualize

    suffix = out.suffix.lower()
    remove_leftovers(out)
    tmp = temporary_path(out, os.getpid())
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))  # the umask decides its mode
    try:
        if suffix == ".png":
            visualize.save_grid(images, tmp, nrow)
        elif suffix == ".npy":
            np.save(tmp, images, allow_pickle=False)
        else:
            extra = {} if labels is None else {"labels": np.asarray(labels)}
            np.savez(tmp, images=images, pixels=visualize.to_uint8(images), z=z, **extra)
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
        from jaxgan import memory

        need = 4 * num * (latent_dim + 3 * 28 * 28)  # the noise, the images on the device and host, the file
        have, whose = memory.memory_available()
        if need > have:
            raise UsageError(
                f"--num {num:,} needs about {memory.gigabytes(need)} of memory, more than {whose} {memory.gigabytes(have)}"
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
            digits = parse_labels(args.labels) if args.labels is not None else None
            from jaxgan import sampling, weights

            weights.check_source(args.workdir, args.from_pt)
            out = output_path(args)
            if args.num is not None:
                check_num(args.num, out)
            loaded = weights.load_generator(args.workdir, args.from_pt, args.epoch)
            config = loaded.config
            if digits is not None and not config.conditional:
                raise UsageError("--labels needs a conditional generator; this one is not (train with --conditional)")
            if not config.conditional:
                num = args.num or 64
                check_num(num, out, config.latent_dim)
                images, z = sampling.images(config, loaded.params, num, args.seed, batch_stats=loaded.batch_stats)
                write(out, images, z)
                print(f"wrote {num} images (seed {args.seed}) to {out}")
                return
            digits = digits if digits is not None else list(range(config.num_classes))
            per_digit = args.num or 8
            check_num(per_digit * len(digits), out, config.latent_dim)
            z, labels = sampling.labelled_inputs(args.seed, digits, per_digit, config.latent_dim)
            images = sampling.images_of(config, loaded.params, z, labels, loaded.batch_stats)
            write(out, images, np.asarray(z), nrow=per_digit, labels=labels)
        shown = ", ".join(map(str, digits))
        print(
            f"wrote {len(images)} images (seed {args.seed}; digits {shown}, {per_digit} each, one row per digit) to {out}"
        )

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
