"""`python -m jaxgan.evaluate`: the sample quality of a trained generator (see `jaxgan.metrics`).

    python -m jaxgan.evaluate --workdir runs/small [--epoch N] [--num 1000] [--seed 0] [--no-ema] [--json]
    python -m jaxgan.evaluate --from-pt generator.pt [--dataset mnist-5k] ...   # torch_ref weights (jaxgan.convert)

Reads the run's latest checkpoint (or `--epoch N`) read-only, generates `--num` images and
prints the Frechet distance (FD@num), classifier score, coverage KL and mean max-probability
against the dataset's held-out real images, beside the ceiling (real training images) and
the floor (an untrained generator of the same config). With EMA on (`--ema-decay`) the EMA
generator is measured unless `--no-ema`. The dataset's classifier is trained on first use
and cached (`jaxgan.classifier`). Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from jaxgan.cli import OneLineParser, UsageError

PROG = "python -m jaxgan.evaluate"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Measure the sample quality of a trained generator.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="a training run's directory (its latest checkpoint is used)")
    source.add_argument("--from-pt", help="a PyTorch .pt file of torch_ref weights (see jaxgan.convert)")
    parser.add_argument(
        "--dataset",
        default=None,
        help="dataset to measure against with --from-pt (default: its config's, else mnist-5k)",
    )
    parser.add_argument("--epoch", type=int, default=None, help="use the checkpoint of this epoch (default: latest)")
    parser.add_argument("--num", type=int, default=None, help="images per metric (default: 1000, the FD's N)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the generator noise and ceiling sample (default: 0)"
    )
    parser.add_argument(
        "--no-ema", action="store_true", help="measure the raw generator even when the run keeps an EMA"
    )
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON object instead of a table")
    return parser


def evaluate(args: argparse.Namespace, log=None) -> dict:
    """{"generator": metrics, "ceiling": ..., "floor": ..., plus run facts} for the arguments."""
    from jaxgan import checkpoint, metrics, steps

    log = log or (lambda msg: print(msg, file=sys.stderr))
    if args.from_pt is not None:
        return evaluate_pt(args, log)
    try:
        restored = checkpoint.load(args.workdir, args.epoch)
    except checkpoint.CheckpointError as err:
        raise UsageError(str(err)) from None
    state = restored.state
    use_ema = state.g_ema_params is not None and not args.no_ema
    g_params = steps.sampling_params(state) if use_ema else state.g_params
    evaluator = metrics.Evaluator.for_dataset(restored.dataset, n=args.num or metrics.FD_N, log=log)
    return {
        "workdir": str(args.workdir),
        "epoch": restored.epoch,
        "step": int(state.step),
        "dataset": restored.dataset,
        "generator_weights": "ema" if use_ema else "raw",
        "ema_decay": state.config.ema_decay,
        "classifier_test_accuracy": evaluator.classifier.info["test_accuracy"],
        "generator": evaluator.generator(state.config, g_params, args.seed),
        "ceiling": evaluator.ceiling(args.seed),
        "floor": evaluator.floor(state.config, args.seed),
    }


def evaluate_pt(args: argparse.Namespace, log) -> dict:
    """`evaluate` for the generator of a .pt file (its weights as saved; no EMA)."""
    from jaxgan import convert, metrics
    from jaxgan import data as data_lib

    try:
        state = convert.load_pt(args.from_pt)
    except ValueError as err:
        raise UsageError(str(err)) from None
    config = state.config
    dataset = args.dataset or (config.dataset if config.dataset != data_lib.AUTO else data_lib.MNIST_5K)
    evaluator = metrics.Evaluator.for_dataset(dataset, n=args.num or metrics.FD_N, log=log)
    return {
        "workdir": str(args.from_pt),
        "epoch": None,
        "step": None,
        "dataset": dataset,
        "generator_weights": "pt",
        "ema_decay": config.ema_decay,
        "classifier_test_accuracy": evaluator.classifier.info["test_accuracy"],
        "generator": evaluator.generator(config, state.g_params, args.seed),
        "ceiling": evaluator.ceiling(args.seed),
        "floor": evaluator.floor(config, args.seed),
    }


def check_args(args: argparse.Namespace) -> None:
    """UsageError for a bad --num or a generator source that does not exist (cheap, before any work)."""
    from jaxgan.generate import check_source

    if args.num is not None and args.num < 2:
        raise UsageError(f"--num must be at least 2, got {args.num}")
    check_source(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m jaxgan.evaluate`; returns the exit status."""
    from jaxgan import metrics

    try:
        args = build_parser().parse_args(argv)
        check_args(args)
        result = evaluate(args)
    except (UsageError, ValueError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    weights = result["generator_weights"] + (f" {result['ema_decay']}" if result["generator_weights"] == "ema" else "")
    where = f"epoch {result['epoch']}, step {result['step']}" if result["epoch"] is not None else "torch_ref weights"
    print(
        f"{result['workdir']}: {where}, {result['dataset']}; "
        f"classifier test accuracy {result['classifier_test_accuracy']:.2%}"
    )
    rows = [
        (f"generator ({weights})", result["generator"]),
        ("ceiling (real)", result["ceiling"]),
        ("floor (untrained)", result["floor"]),
    ]
    print(metrics.format_table(rows))
    print("coverage (digits 0-9): " + " ".join(f"{x:.3f}" for x in result["generator"]["coverage"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
