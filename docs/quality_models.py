"""Sample-quality rows of the models beyond the seeds: the DCGAN, the conditional GANs and each loss on small.

    python docs/quality_models.py                                   # every row, seed 0, the seeds' step budget
    python docs/quality_models.py --rows small-lsgan cgan-small --seeds 0 1 --epochs 5 --out /tmp/q
    python docs/quality_models.py --train-only                      # train (or resume) the runs, measure later
    # docs/quality.md's conditional table (and --epochs 25 --name quality_conditional_25ep):
    python docs/quality_models.py --rows small cgan-small small-projection deep-nets deep-nets-concat \
        cgan-deep-projection --seeds 0 1 2 --name quality_conditional

Each row is a preset with a loss, trained on mnist-5k by `jaxgan.train.train_and_evaluate` (the
loop of `python -m jaxgan.train`; without --epochs, the preset's seed step budget) into its own
run directory RUNS/ROW-seedS: a finished run is only measured, an interrupted one resumes. The
raw generator (no EMA) is measured with `jaxgan.metrics` (N = 1000; a conditional generator also
gets its conditional accuracy `cond_acc`), beside the untrained generator of the same config (floor)
and real training images (ceiling). Rows are mean ± std over seeds. Writes OUT/NAME.md,
OUT/NAME.json and, for the first seed, each row's sample grid (`sampling.grid_inputs` of the
run's key: the run's own grid noise; one row per digit for the conditional GAN) as
OUT/NAME_ROW.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import quality_table  # noqa: E402  (docs/quality_table.py, beside this script: its table helpers)

from jaxgan import data as data_lib  # noqa: E402
from jaxgan import metrics, sampling, train, visualize  # noqa: E402
from jaxgan.config import preset  # noqa: E402

# row -> (preset, config changes)
ROWS = {
    "small": ("small", {}),  # bce, the seeds' loss: the baseline at this commit
    "small-minimax": ("small", {"loss": "minimax"}),
    "small-lsgan": ("small", {"loss": "lsgan"}),
    "small-hinge": ("small", {"loss": "hinge"}),
    "small-wgan-gp": ("small", {"loss": "wgan-gp"}),
    "cgan-small": ("cgan-small", {}),
    "small-projection": ("cgan-small", {"conditioning": "projection"}),
    "deep-nets": ("cgan-deep-projection", {"conditional": False, "conditioning": "concat"}),  # unconditional
    "deep-nets-concat": ("cgan-deep-projection", {"conditioning": "concat"}),
    "cgan-deep-projection": ("cgan-deep-projection", {}),
    "dcgan": ("dcgan", {}),
}
KEYS = ("fd", "class_fd", "score", "coverage_kl", "max_prob", "cond_acc")
DIGITS = (1, 1, 2, 3, 3, 3)


def table_row(name: str, steps_text: str, results: list[dict]) -> str:
    return quality_table.table_row(name, steps_text, results, KEYS, DIGITS)


def row_config(row: str, seed: int, epochs: int | None):
    name, changes = ROWS[row]
    config = preset(name).replace(**changes, dataset=data_lib.MNIST_5K, seed=seed, eval_every=0)
    return config if epochs is None else config.replace(epochs=epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--epochs", type=int, default=None, help="override every row's epochs (default: its seed budget)"
    )
    parser.add_argument("--runs", default="runs/quality_models", help="where the training runs go")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where the table, JSON and grids go")
    parser.add_argument("--name", default="quality_models", help="file name stem of the table, JSON and grids")
    parser.add_argument("--train-only", action="store_true", help="train (or resume) the runs; measure nothing")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = data_lib.load(data_lib.MNIST_5K)
    started = time.time()
    states = {}
    for row in args.rows:
        for seed in args.seeds:
            config = row_config(row, seed, args.epochs)
            t0 = time.time()
            state, history = train.train_and_evaluate(
                config,
                Path(args.runs) / f"{row}-seed{seed}",
                load_dataset=data_lib.given(dataset),
                progress=False,
                log=lambda _: None,
            )
            states[row, seed] = state
            print(
                f"{row} seed {seed}: {int(state.step)} steps, final D loss {history[-1]['d_loss']:.4f}, "
                f"G loss {history[-1]['g_loss']:.4f} ({time.time() - t0:.0f}s; {time.time() - started:.0f}s total)",
                flush=True,
            )
    if args.train_only:
        return

    evaluator = metrics.Evaluator.for_dataset(data_lib.MNIST_5K)
    accuracy = evaluator.classifier.info["test_accuracy"]
    results: dict = {"classifier": evaluator.classifier.info, "fd_n": evaluator.n, "rows": {}}
    ceilings = [evaluator.ceiling(seed, conditional=True) for seed in args.seeds]
    lines = []
    for row in args.rows:
        raw, floor, runs = [], [], []
        for seed in args.seeds:
            state = states[row, seed]
            config = state.config
            raw.append(evaluator.generator(config, state.g_params, seed, batch_stats=state.g_batch_stats))
            floor.append(evaluator.floor(config, seed))
            # from the steps: a finished run's resumed config leaves epochs unresolved (None)
            epochs = int(state.step) // (len(dataset.images) // config.batch_size)
            runs.append({"seed": seed, "steps": int(state.step), "epochs": epochs, "raw": raw[-1]})
            if seed == args.seeds[0]:
                z, labels = sampling.grid_inputs(config, state.key)
                images = sampling.images_of(config, state.g_params, z, labels, state.g_batch_stats)
                visualize.save_grid(images, out / f"{args.name}_{row}.png", config.grid_size)
        name, changes = ROWS[row]
        flags = " ".join(
            f"--no-{k}" if v is False else f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
            for k, v in changes.items()
        )
        label = f"`{name}`" + (f" `{flags}`" if flags else "")
        steps = f"{runs[0]['steps']} ({runs[0]['epochs']} ep)"
        lines.append(table_row(f"{label} raw", steps, raw))
        lines.append(table_row(f"{label} untrained (floor)", "0", floor))
        results["rows"][row] = {"preset": name, "changes": changes, "runs": runs, "floor": floor}
        print(lines[-2], flush=True)
    results["ceiling"] = ceilings
    caption = (
        f"FD@{evaluator.n} (lower is better), per-class FD (mean over the digits of the FD of each digit's "
        "images, asked for or as read, against its held-out real images), classifier score (max 10), coverage KL to uniform (0 = all digits "
        "equally often, 2.303 = one digit), mean max-probability, conditional accuracy (the share of images "
        f"read as the digit asked for; 0.1 = chance); seeds {args.seeds}; classifier test accuracy {accuracy:.1%} "
        f"on {evaluator.classifier.info['heldout_images']} held-out images."
    )
    header = "| generator | steps | FD@1000 ↓ | class FD ↓ | score ↑ | coverage KL ↓ | max-prob ↑ | cond. acc. ↑ |"
    ceiling = table_row("real training images (ceiling)", "—", ceilings)
    quality_table.write_table(out, args.name, caption, header, [ceiling, *lines])
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"took {time.time() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()
