"""Command-line parsing for `python -m jaxgan.train`: flags -> a validated Config.

The flags are generated from `Config`'s fields, so every field is overridable.
Bad input is one line on stderr and exit status 2, never a traceback. Exit status 1
means training diverged (non-finite loss or parameters); 130 / 143 mean SIGINT /
SIGTERM stopped it after saving a checkpoint. A workdir holding a checkpoint is resumed
with the checkpoint's config; flags then only change the fields marked resumable in `Config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import typing
from pathlib import Path

from jaxgan import checkpoint, parallel
from jaxgan import config as config_lib
from jaxgan import data as data_lib

PROG = "python -m jaxgan.train"


class UsageError(Exception):
    """Bad input from the user; the message is the whole one-line explanation."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 256,512, got {text!r}") from None


def _flag_type(field: dataclasses.Field):
    hint = typing.get_type_hints(config_lib.Config)[field.name]
    if hint == tuple[int, ...]:
        return _widths
    optional = [t for t in typing.get_args(hint) if t is not type(None)]  # `int | None` -> int (None: automatic)
    hint = optional[0] if len(optional) == 1 else hint
    if hint in (int, float, str):
        return hint
    return str


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Train an MLP GAN on 28x28 grayscale images. Values start from --preset; any flag overrides one field.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--preset", default=None, help=f"one of: {', '.join(config_lib.PRESETS)} (default: small, or the checkpoint's)"
    )
    parser.add_argument("--workdir", default=None, help="where the run's files go (default: runs/<preset>)")
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--resume: continue from the workdir's latest checkpoint (which must exist); --no-resume: start over, "
        "deleting its checkpoints; neither: resume when there is a checkpoint, else start afresh",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    hosts = parser.add_argument_group(
        "several processes or hosts (jax.distributed; use with --data-parallel)",
        "Any of these calls jax.distributed.initialize before training. Unset values come from "
        "JAXGAN_COORDINATOR_ADDRESS, JAXGAN_NUM_PROCESSES, JAXGAN_PROCESS_ID; with none of them, "
        "JAX detects the cluster (SLURM, Open MPI, ...).",
    )
    hosts.add_argument("--distributed", action="store_true", help="join a multi-process run")
    hosts.add_argument("--coordinator-address", default=None, help="HOST:PORT of process 0's coordinator service")
    hosts.add_argument("--num-processes", type=int, default=None, help="how many processes the run has")
    hosts.add_argument("--process-id", type=int, default=None, help="this process's index, 0 .. num_processes-1")
    fields = parser.add_argument_group("config overrides (default: the preset's value)")
    hints = typing.get_type_hints(config_lib.Config)
    for field in dataclasses.fields(config_lib.Config):
        if field.name == "preset":
            continue
        flag = "--" + field.name.replace("_", "-")
        if hints[field.name] is bool:
            fields.add_argument(
                flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=field.metadata["help"]
            )
        else:
            fields.add_argument(
                flag, dest=field.name, type=_flag_type(field), default=None, help=field.metadata["help"]
            )
    return parser


def wants_distributed(args: argparse.Namespace) -> bool:
    return args.distributed or any(
        v is not None for v in (args.coordinator_address, args.num_processes, args.process_id)
    )


def initialize_distributed(args: argparse.Namespace) -> None:
    """jax.distributed.initialize from the flags (UsageError for impossible values)."""
    if args.num_processes is not None and args.num_processes < 1:
        raise UsageError(f"--num-processes must be positive, got {args.num_processes}")
    pid, count = args.process_id, args.num_processes
    if pid is not None and (pid < 0 or (count is not None and pid >= count)):
        span = f"0 .. {count - 1}" if count is not None else "0 .. num_processes-1"
        raise UsageError(f"--process-id must be in {span}, got {pid}")
    parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)


def explicit_overrides(args: argparse.Namespace) -> dict:
    """The config fields given on the command line (not the preset's name)."""
    names = [f.name for f in dataclasses.fields(config_lib.Config) if f.name != "preset"]
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def config_from_args(args: argparse.Namespace) -> config_lib.Config:
    """The preset's config with every given flag applied, validated (ValueError if bad)."""
    base = config_lib.preset(args.preset or "small")
    return base.replace(**explicit_overrides(args)).validate()


def resume_config(saved: config_lib.Config, args: argparse.Namespace) -> config_lib.Config:
    """The checkpoint's config with the flags given on the command line applied.

    Flags may only change the fields marked resumable in `Config`; any other flag (or --preset)
    that disagrees with the checkpoint is a CheckpointError naming it.
    """
    if args.preset is not None and args.preset != saved.preset:
        raise checkpoint.CheckpointError(
            f"--preset {args.preset} conflicts with the checkpoint, which has preset={saved.preset} "
            "(use another --workdir, or --no-resume to start over)"
        )
    config = saved.replace(**explicit_overrides(args)).validate()
    checkpoint.check_resumable(saved, config)
    return config


def prepare_workdir(workdir: str | Path) -> Path:
    """Create `workdir` and check it is writable; UsageError in one line otherwise."""
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"workdir {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UsageError(f"workdir {str(path)!r} is not writable: {err.strerror or err}") from None
    return path


def parse(argv: list[str] | None = None) -> tuple[config_lib.Config, Path, argparse.Namespace]:
    """argv -> (config, workdir, args), raising UsageError for any bad input."""
    args = build_parser().parse_args(argv)
    if wants_distributed(args):  # before anything touches a device
        initialize_distributed(args)
    try:
        config = config_from_args(args)
        data_lib.check_name(config.dataset, config.data_dir)
    except ValueError as err:
        raise UsageError(str(err)) from None
    workdir = prepare_workdir(args.workdir or os.path.join("runs", config.preset))
    if args.resume is not False and checkpoint.has_checkpoint(workdir):
        try:
            config = resume_config(checkpoint.read_config(workdir), args)
        except ValueError as err:
            raise UsageError(str(err)) from None
    return config, workdir, args


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m jaxgan.train`; returns the exit status."""
    from jaxgan import loop  # after parsing: --help and bad flags stay fast

    try:
        config, workdir, args = parse(argv)
        loop.fit(config, workdir, progress=not args.no_progress, resume=args.resume)
    except (UsageError, data_lib.DataError, checkpoint.CheckpointError, parallel.ParallelError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except loop.Diverged as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except loop.Interrupted as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the last complete checkpoint (if any) is kept", file=sys.stderr)
        return 130
    return 0
