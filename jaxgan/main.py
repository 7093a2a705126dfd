"""`python -m jaxgan.train` (also `jaxgan-train`, `python -m jaxgan`): flags -> Config -> training.

Thin by design: the flags are generated from `Config`'s fields (each field's help text is
its flag's help), and all the work is `train.train_and_evaluate`; or, given lists (`--seeds 0-7`,
`--lr 1e-4,2e-4`, `--beta1 0.5,0.9`) or a group's workdir, `train.train_group`. Exit status:
0 done (a group: at least one run finished); 2 bad input (one line on stderr); 1 training
diverged (a group: every run); 130 / 143 a SIGINT / SIGTERM stopped it (after saving a
checkpoint once training had begun).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing

from jaxgan import cli
from jaxgan import config as config_lib

PROG = "python -m jaxgan.train"
DEFAULT_PRESET = "small"
SWEEPABLE = ("lr", "beta1")  # config fields that take a list: one run per value (jaxgan.multirun)
LISTS = "only --seeds, --lr and --beta1 take lists, one run per value"


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 256,512, got {text!r}") from None


def _seeds(text: str) -> tuple[int, ...]:
    """'0,1,2,3', '0-7' or '0-3,8' -> the seeds (non-negative integers), in order."""
    seeds = []
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            start, stop = int(first), int(last) if dash else int(first)
            if start < 0 or stop < start:
                raise ValueError
            seeds.extend(range(start, stop + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0,1,2 or 0-7, got {text!r}") from None
    return tuple(seeds)


def _one_value(kind):
    """int or float, with a clear word for a list where one value is meant."""

    def parse(text: str):
        if "," in text:
            raise argparse.ArgumentTypeError(f"takes one value for every run, got {text!r} ({LISTS})")
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None

    return parse


def _float_list(text: str) -> float | tuple[float, ...]:
    """'2e-4' -> 2e-4; '1e-4,2e-4' -> a list: one run per value."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a list like 1e-4,2e-4, got {text!r}") from None
    return values if "," in text else values[0]


def _flag_type(hint):
    if hint == tuple[int, ...]:
        return _widths
    optional = [t for t in typing.get_args(hint) if t is not type(None)]  # `int | None` -> int (None: automatic)
    hint = optional[0] if len(optional) == 1 else hint
    if hint in (int, float):
        return _one_value(hint)
    return str


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.OneLineParser(
        prog=PROG,
        description="Train a GAN on 28x28 grayscale images. Values start from --preset; any flag overrides one field.",
    )
    parser.add_argument(
        "--preset",
        default=None,
        help=f"one of: {', '.join(config_lib.PRESETS)} (default: {DEFAULT_PRESET}, or the checkpoint's)",
    )
    parser.add_argument("--workdir", default=None, help="where the run's files go (default: runs/<preset>)")
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--resume: continue from the workdir's latest checkpoint (which must exist); --no-resume: start over, "
        "deleting its checkpoints, metrics and samples; neither: resume when there is a checkpoint, else start afresh",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    group = parser.add_argument_group(
        "many runs in one program (jaxgan.multirun; docs/multirun.md)",
        "--seeds, and --lr / --beta1 given as lists, train one run per combination, each in WORKDIR/NAME/. "
        "Run the same command, or --workdir WORKDIR alone, to continue the group.",
    )
    group.add_argument("--seeds", type=_seeds, default=None, help="one run per seed: 0,1,2,3 or 0-7 or 0-3,8")
    group.add_argument(
        "--group-mode",
        choices=multirun_modes(),
        default=None,
        help="map: the runs one after another inside the one program, each bit for bit its single run (default on "
        "CPU); vmap: the runs batched, equal to their single runs up to float32 reduction order (default on GPU/TPU)",
    )
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
    fields = parser.add_argument_group(
        f"config overrides (default: the preset's value; shown: preset {DEFAULT_PRESET}'s; "
        "marked *: may change when resuming)"
    )
    hints = typing.get_type_hints(config_lib.Config)
    defaults = config_lib.PRESETS[DEFAULT_PRESET]
    for field in dataclasses.fields(config_lib.Config):
        if field.name == "preset":
            continue
        flag = "--" + field.name.replace("_", "-")
        mark = " *" if field.metadata["resumable"] else ""
        help_text = field.metadata["help"]
        if "(default:" not in help_text:  # a field whose help says what its automatic value is keeps that
            help_text += f" (default: {_show(getattr(defaults, field.name))})"
        help_text += mark
        if hints[field.name] is bool:
            kind = {"action": argparse.BooleanOptionalAction}
        elif field.name in SWEEPABLE:
            kind = {"type": _float_list}
            help_text += "; a list (e.g. 1e-4,2e-4) trains one run per value"
        else:
            kind = {"type": _flag_type(hints[field.name])}
        fields.add_argument(flag, dest=field.name, default=None, help=help_text.replace("%", "%%"), **kind)
    return parser


def wants_distributed(args: argparse.Namespace) -> bool:
    return args.distributed or any(
        v is not None for v in (args.coordinator_address, args.num_processes, args.process_id)
    )


def initialize_distributed(args: argparse.Namespace) -> None:
    """jax.distributed.initialize from the flags (UsageError for impossible values, and for a run
    that cannot join: no cluster detected and no coordinator given)."""
    from jaxgan import parallel

    if args.num_processes is not None and args.num_processes < 1:
        raise cli.UsageError(f"--num-processes must be positive, got {args.num_processes}")
    pid, count = args.process_id, args.num_processes
    if pid is not None and (pid < 0 or (count is not None and pid >= count)):
        span = f"0 .. {count - 1}" if count is not None else "0 .. num_processes-1"
        raise cli.UsageError(f"--process-id must be in {span}, got {pid}")
    address = args.coordinator_address or os.environ.get(parallel.ENV_PREFIX + "COORDINATOR_ADDRESS")
    if address:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise cli.UsageError(f"--coordinator-address must be HOST:PORT (a port 1-65535), got {address!r}")
    try:
        parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    except (ValueError, IndexError) as err:
        raise cli.UsageError(
            f"cannot join a multi-process run: {cli.first_line(err)} (outside a cluster JAX detects, give "
            "--coordinator-address, --num-processes and --process-id, or JAXGAN_* variables)"
        ) from None


def explicit_overrides(args: argparse.Namespace) -> dict:
    """The config fields given on the command line (not the preset's name)."""
    names = [f.name for f in dataclasses.fields(config_lib.Config) if f.name != "preset"]
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def multirun_modes() -> tuple[str, ...]:
    return ("map", "vmap")  # jaxgan.steps.MODES (not imported here: it imports jax)


def parse(argv: list[str] | None = None) -> tuple[config_lib.Config, frozenset[str], argparse.Namespace]:
    """argv -> (config, the names of the fields given explicitly, args); UsageError for bad input.

    args.lists holds the lists of a group of runs ({"seed": (0, 1), "lr": (1e-4, 2e-4)}, empty
    for one run); config then has each list's first value, and every value is validated.
    """
    args = build_parser().parse_args(argv)
    if wants_distributed(args):  # before anything touches a device
        initialize_distributed(args)
    overrides = explicit_overrides(args)
    lists = {name: overrides.pop(name) for name in SWEEPABLE if isinstance(overrides.get(name), tuple)}
    if args.seeds is not None:
        if "seed" in overrides:
            raise cli.UsageError("give --seed (one run) or --seeds (a group of runs), not both")
        lists["seed"] = args.seeds
    for name, values in lists.items():
        if len(set(values)) != len(values):
            flag = "--seeds" if name == "seed" else "--" + name.replace("_", "-")
            raise cli.UsageError(f"{flag} lists a value twice: {','.join(map(str, values))}")
    try:
        config = config_lib.preset(args.preset or DEFAULT_PRESET).replace(**overrides).validate()
        for name, values in lists.items():
            for value in values:
                config.replace(**{name: value}).validate()
    except ValueError as err:
        raise cli.UsageError(str(err)) from None
    config = config.replace(**{name: values[0] for name, values in lists.items()})
    from jaxgan import data as data_lib

    data_lib.check_name(config.dataset, config.data_dir)
    explicit = frozenset(overrides) | frozenset(lists) | ({"preset"} if args.preset is not None else set())
    args.lists = lists
    return config, explicit, args


def main(argv: list[str] | None = None, *, load_dataset=None) -> int:
    """Entry point of `python -m jaxgan.train`; returns the exit status. `load_dataset` replaces
    `data.load` (tests)."""
    from jaxgan import signals

    def body() -> int:
        with signals.exit_at_once(PROG):  # until training installs its own handler (StopOnSignal)
            config, explicit, args = parse(argv)
            from jaxgan import train  # after parsing: --help and bad flags stay fast

            workdir = args.workdir or os.path.join("runs", config.preset + ("-group" if args.lists else ""))
            if args.lists or is_group(workdir):
                return train_group(config, explicit, args, workdir, load_dataset)
            if args.group_mode is not None:
                raise cli.UsageError("--group-mode is for a group of runs (--seeds, or lists for --lr or --beta1)")
            status, _ = run_training(
                train.train_and_evaluate,
                config,
                workdir,
                resume=args.resume,
                explicit=explicit,
                load_dataset=load_dataset,
                progress=not args.no_progress,
            )
            return status

    return cli.run(PROG, body)


def run_training(train_fn, *args, **kwargs) -> tuple[int, typing.Any]:
    """(exit status, result) of `train_fn(*args, **kwargs)`: 0 when it returns, 1 with one line when
    training diverged, 128 + N when signal N stopped it (its checkpoint is saved)."""
    from jaxgan import signals, train

    try:
        return 0, train_fn(*args, **kwargs)
    except train.Diverged as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1, None
    except signals.Interrupted as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 128 + err.signum, None


def is_group(workdir: str) -> bool:
    return os.path.isfile(os.path.join(workdir, "group.json"))  # multirun.GROUP_FILE


def train_group(config, explicit: frozenset[str], args: argparse.Namespace, workdir: str, load_dataset) -> int:
    """A group of runs (`train.train_group`) -> the exit status."""
    from jaxgan import train

    status, result = run_training(
        train.train_group,
        config,
        args.lists,
        workdir,
        resume=args.resume,
        explicit=explicit,
        mode=args.group_mode,
        load_dataset=load_dataset,
        progress=not args.no_progress,
    )
    if status:
        return status
    if result.frozen:
        names = ", ".join(result.frozen)
        print(
            f"{PROG}: {len(result.frozen)} of {len(result.members)} runs diverged and were frozen ({names}): "
            f"see {os.path.join(workdir, 'group.json')}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
