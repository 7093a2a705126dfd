"""Regenerate the sample-quality tables of docs/quality.md (docs/NAME.md and .json) from real runs.

    python docs/quality_table.py                       # small and deep, seeds 0 1 2, default epochs
    python docs/quality_table.py --presets small --seeds 0 1 --epochs 5 --out /tmp/q   # a quick look
    python docs/quality_table.py --presets small --dataset /usr/share/datasets/fashion-mnist --name quality_fashion

For each preset and seed it trains the preset's default recipe on `--dataset` (default mnist-5k;
an IDX directory's classifier trains on its train split and measures on its t10k files) twice, with
--ema-decay 0.99 and 0.999 (EMA only watches the generator: both runs train the very same
G and D, which this script checks), and measures with `jaxgan.metrics` (N = 1000):
the raw generator, each EMA, the untrained generator (floor) and real training images
(ceiling). Rows are mean ± std over seeds. Writes OUT/NAME.md, OUT/NAME.json
and, for the first seed, 8x8 sample grids of the raw and EMA generators (quality_PRESET_raw.png,
quality_PRESET_emaD.png; quality_DIRNAME_PRESET_... for a dataset other than mnist-5k).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxgan import data as data_lib  # noqa: E402
from jaxgan import metrics, models, sampling, train, visualize  # noqa: E402
from jaxgan.config import preset  # noqa: E402

KEYS = ("fd", "score", "coverage_kl", "max_prob")
DIGITS = (1, 2, 3, 3)


def mean_std(values: list[float], digits: int) -> str:
    """Mean ± std over seeds (sample std) as text; the value alone for one seed, "—" for none."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def table_row(name: str, steps_text: str, results: list[dict], keys=KEYS, digits=DIGITS) -> str:
    """One markdown row: each key's mean ± std over the results that have it."""
    cells = [mean_std([r[k] for r in results if k in r], d) for k, d in zip(keys, digits, strict=True)]
    return f"| {name} | {steps_text} | " + " | ".join(cells) + " |"


def write_table(out: Path, name: str, caption: str, header: str, rows: list[str]) -> None:
    """Write and print OUT/NAME.md: the caption, then the markdown table of `header` and `rows`."""
    rule = "|" + "---|" * header.count(" | ") + "---|"
    table = "\n".join([caption, "", header, rule, *rows]) + "\n"
    (out / f"{name}.md").write_text(table)
    print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "deep"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--ema", nargs="+", type=float, default=[0.99, 0.999])
    parser.add_argument(
        "--epochs", type=int, default=None, help="override every preset's epochs (default: its seed step budget)"
    )
    parser.add_argument("--dataset", default="mnist-5k", help="mnist-5k (default) or a directory of IDX files")
    parser.add_argument("--runs", default="runs/quality", help="where the training runs go")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the runs found in --runs (bit for bit, e.g. after a kill) instead of starting them over",
    )
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where the table, JSON and grids go")
    parser.add_argument("--name", default="quality_table", help="file name stem of the table and JSON")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    dataset = data_lib.load(args.dataset)
    evaluator = metrics.Evaluator.for_dataset(dataset.name)
    grid_stem = "quality" if dataset.name == data_lib.MNIST_5K else f"quality_{Path(dataset.name).name}"
    accuracy = evaluator.classifier.info["test_accuracy"]
    print(f"{dataset.description}: classifier test accuracy {accuracy:.2%}", flush=True)
    results: dict = {
        "command": "python docs/quality_table.py " + " ".join(sys.argv[1:]),
        "dataset": dataset.name,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "classifier": evaluator.classifier.info,
        "fd_n": evaluator.n,
        "runs": [],
    }
    started = time.time()
    lines = []
    ceilings = [evaluator.ceiling(seed) for seed in args.seeds]
    for name in args.presets:
        base = preset(name).replace(dataset=dataset.name, eval_every=0, checkpoint_every=10**6)
        if args.epochs is not None:
            base = base.replace(epochs=args.epochs)
        per_row: dict[str, list[dict]] = {"raw": [], "floor": []}
        for decay in args.ema:
            per_row[f"ema {decay}"] = []
        total_steps = None
        for seed in args.seeds:
            raw_params = None
            for decay in args.ema:
                config = base.replace(seed=seed, ema_decay=decay)
                workdir = Path(args.runs) / f"{name}-seed{seed}-ema{decay}"
                t0 = time.time()
                state, _ = train.train_and_evaluate(
                    config,
                    workdir,
                    load_dataset=data_lib.given(dataset),
                    progress=False,
                    log=lambda _: None,
                    resume=None if args.resume else False,
                )
                total_steps = int(state.step)
                ema = evaluator.generator(config, state.g_ema_params, seed)
                per_row[f"ema {decay}"].append(ema)
                if raw_params is None:
                    raw_params = state.g_params
                    raw = evaluator.generator(config, raw_params, seed)
                    per_row["raw"].append(raw)
                    if seed == args.seeds[0]:
                        grid_noise = sampling.noise(state.key, 64, state.config.latent_dim)
                        for label, params in (("raw", state.g_params), (f"ema{decay}", state.g_ema_params)):
                            images = np.asarray(models.generate(config, params, grid_noise))
                            visualize.save_grid(images, out / f"{grid_stem}_{name}_{label}.png", 8)
                else:  # EMA only watches: the raw generator is the same whatever the decay
                    same = all(
                        np.array_equal(a, b)
                        for a, b in zip(jax_leaves(raw_params), jax_leaves(state.g_params), strict=True)
                    )
                    assert same, "the raw generator differs between EMA decays"
                run = {"preset": name, "seed": seed, "ema_decay": decay, "steps": total_steps, "ema": ema}
                run["raw"] = per_row["raw"][-1]
                run["train_seconds"] = round(time.time() - t0, 1)
                results["runs"].append(run)
                print(
                    f"{name} seed {seed} ema {decay}: {total_steps} steps, raw FD {run['raw']['fd']:.1f}, "
                    f"EMA FD {ema['fd']:.1f} ({run['train_seconds']:.0f}s; {time.time() - started:.0f}s total)",
                    flush=True,
                )
            per_row["floor"].append(evaluator.floor(base, seed))
        epochs = base.resolved(len(dataset.images)).epochs
        lines.append(table_row(f"`{name}` raw", f"{total_steps} ({epochs} ep)", per_row["raw"]))
        for decay in args.ema:
            lines.append(table_row(f"`{name}` EMA {decay}", f"{total_steps} ({epochs} ep)", per_row[f"ema {decay}"]))
        lines.append(table_row(f"`{name}` untrained (floor)", "0", per_row["floor"]))
        results[name] = per_row
    results["ceiling"] = ceilings
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    caption = (
        f"FD@{evaluator.n} (lower is better), classifier score (max 10), coverage KL to uniform (0 = all digits "
        f"equally often, 2.303 = one digit), mean max-probability; mean ± std over seeds {args.seeds}; "
        f"classifier test accuracy {accuracy:.1%} on {evaluator.classifier.info['heldout_images']} held-out images."
    )
    header = "| generator | steps | FD@1000 | score | coverage KL | max-prob |"
    write_table(out, args.name, caption, header, [table_row("real training images (ceiling)", "—", ceilings), *lines])
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"took {time.time() - started:.0f}s", flush=True)


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


if __name__ == "__main__":
    main()
