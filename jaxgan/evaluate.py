"""`python -m jaxgan.evaluate`: the sample quality of a trained generator (see `jaxgan.metrics`).

    python -m jaxgan.evaluate --workdir runs/small [--epoch N] [--num 1000] [--seed 0] [--no-ema] [--json]
    python -m jaxgan.evaluate --from-pt generator.pt [--dataset mnist-5k] ...   # torch_ref weights (jaxgan.convert)
    python -m jaxgan.evaluate --workdir GROUP   # a group of runs (jaxgan.multirun): each run, mean ± std

Reads the run's latest checkpoint (or `--epoch N`) read-only, generates `--num` images and
prints the Frechet distance (FD@num), classifier score, coverage KL and mean max-probability
against the dataset's held-out real images, beside the ceiling (real training images) and
the floor (an untrained generator of the same config); for a conditional generator also the
conditional accuracy (the share of images the classifier reads as the digit asked for). With EMA on (`--ema-decay`) the EMA
generator is measured unless `--no-ema`. The dataset's classifier is trained on first use
and cached (`jaxgan.classifier`). Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from jaxgan.cli import OneLineParser, UsageError, run
from jaxgan.config import check_seed

PROG = "python -m jaxgan.evaluate"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Measure the sample quality of a trained generator.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--workdir", help="a training run's directory (its latest checkpoint is used), or a group of runs' (each run)"
    )
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
    from jaxgan import data as data_lib
    from jaxgan import metrics, weights

    log = log or (lambda msg: print(msg, file=sys.stderr))
    loaded = weights.load_generator(args.workdir, args.from_pt, args.epoch, ema=not args.no_ema)
    config, restored = loaded.config, loaded.restored
    if restored is not None:
        dataset = restored.dataset
    else:  # a .pt file
        dataset = args.dataset or (config.dataset if config.dataset != data_lib.AUTO else data_lib.MNIST_5K)
    evaluator = metrics.Evaluator.for_dataset(dataset, n=args.num or metrics.FD_N, log=log)
    return {
        "workdir": str(args.workdir if restored is not None else args.from_pt),
        "epoch": restored.epoch if restored is not None else None,
        "step": int(restored.state.step) if restored is not None else None,
        "dataset": dataset,
        "generator_weights": loaded.weights,
        "ema_decay": config.ema_decay,
        "classifier_test_accuracy": evaluator.classifier.info["test_accuracy"],
        "generator": evaluator.generator(config, loaded.params, args.seed, batch_stats=loaded.batch_stats),
        "ceiling": evaluator.ceiling(args.seed, conditional=config.conditional),
        "floor": evaluator.floor(config, args.seed),
    }


def evaluate_group(args: argparse.Namespace, log=None) -> dict:
    """The metrics of every run of a group (`jaxgan.multirun`) with a checkpoint, the mean and std
    over its runs that were not frozen, and the ceiling and floor once."""
    from jaxgan import checkpoint, metrics, multirun, report, weights

    log = log or (lambda msg: print(msg, file=sys.stderr))
    group = multirun.GroupDir(args.workdir)
    saved = group.read()
    runs, evaluator, config = {}, None, None
    for member in multirun.members_of(saved["config"], saved["lists"]):
        workdir = group.run(member).workdir
        if not checkpoint.epochs_in(workdir):
            continue
        loaded = weights.load_generator(workdir, None, args.epoch, ema=not args.no_ema)
        config, restored = loaded.config, loaded.restored
        if evaluator is None:
            evaluator = metrics.Evaluator.for_dataset(restored.dataset, n=args.num or metrics.FD_N, log=log)
            dataset = restored.dataset
        runs[member.name] = {
            "epoch": restored.epoch,
            "step": int(restored.state.step),
            "generator_weights": loaded.weights,
            "frozen": saved["frozen"].get(member.name),
            "generator": evaluator.generator(config, loaded.params, args.seed, batch_stats=loaded.batch_stats),
        }
    if evaluator is None:
        raise UsageError(f"no run of the group in {args.workdir} has a checkpoint yet")
    good = [run["generator"] for run in runs.values() if not run["frozen"]]
    keys = (*metrics.METRIC_KEYS, "cond_acc") if config.conditional else metrics.METRIC_KEYS
    stats = {key: report.mean_std([m[key] for m in good]) for key in keys} if good else {}
    return {
        "workdir": str(args.workdir),
        "dataset": dataset,
        "classifier_test_accuracy": evaluator.classifier.info["test_accuracy"],
        "runs": runs,
        "mean": {key: s[0] for key, s in stats.items()},
        "std": {key: s[1] for key, s in stats.items()},
        "ceiling": evaluator.ceiling(args.seed, conditional=config.conditional),
        "floor": evaluator.floor(config, args.seed),
    }


def print_group(result: dict) -> None:
    from jaxgan import metrics

    good = sum(1 for run in result["runs"].values() if not run["frozen"])
    print(
        f"{result['workdir']}: {len(result['runs'])} runs, {result['dataset']}; "
        f"classifier test accuracy {result['classifier_test_accuracy']:.2%}"
    )
    rows = [
        (f"{name} ({'frozen, ' if run['frozen'] else ''}epoch {run['epoch']})", run["generator"])
        for name, run in result["runs"].items()
    ]
    print(metrics.format_table([*rows, ("ceiling (real)", result["ceiling"]), ("floor (untrained)", result["floor"])]))
    if result["mean"]:
        mean, std = result["mean"], result["std"]
        pm = lambda key, spec: format(mean[key], spec) + ("" if std[key] is None else f" ± {std[key]:{spec}}")  # noqa: E731
        conditional = f"  cond acc {pm('cond_acc', '.3f')}" if "cond_acc" in mean else ""
        print(
            f"mean ± std over {good} run(s): FD {pm('fd', '.2f')}  score {pm('score', '.2f')}  "
            f"coverage KL {pm('coverage_kl', '.3f')}  max-prob {pm('max_prob', '.3f')}{conditional}"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m jaxgan.evaluate`; returns the exit status."""

    def body() -> None:
        from jaxgan import signals

        with signals.exit_at_once(PROG, when=""):
            args = build_parser().parse_args(argv)
            if args.num is not None and args.num < 2:
                raise UsageError(f"--num must be at least 2, got {args.num}")
            try:
                check_seed(args.seed, "--seed")
            except ValueError as err:
                raise UsageError(str(err)) from None
            from jaxgan import metrics, multirun, weights

            if args.workdir is not None and multirun.is_group(args.workdir):
                result = evaluate_group(args)
                if args.json:
                    print(json.dumps(result))
                else:
                    print_group(result)
                return
            weights.check_source(args.workdir, args.from_pt)
            result = evaluate(args)
        if args.json:
            print(json.dumps(result))
            return
        weights = result["generator_weights"] + (
            f" {result['ema_decay']}" if result["generator_weights"] == "ema" else ""
        )
        where = (
            f"epoch {result['epoch']}, step {result['step']}" if result["epoch"] is not None else "torch_ref weights"
        )
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

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
