"""`python -m benchmarks.multirun`: K runs in one vmapped program against K runs one after another.

For each preset and batch size, timed round-robin in one run (`timing.time_interleaved`):
- **vmap K** (K = 1, 2, 4, 8, 16): `jaxgan.multirun`'s jitted `group_steps`, K runs of `n`
  steps each in one call, the group's state donated;
- **jax single**: one run's jitted `train.train_steps` over the same `n` steps (K runs one
  after another take K times as long: its images/s per run is theirs);
- **torch eager**: `torch_ref`'s step, `n` steps per call, at 1 thread and at all cores (the
  faster is the baseline).
Reported per run: images/s of one run inside the group, and the ratios vmap K / jax single
(above 1: the group beats K sequential jaxgan runs) and vmap K / torch eager. Also each
program's compile time (trace + lower + compile; K single runs compile K times, since the
seed is part of a single run's static config) and XLA's buffers (arguments + outputs +
temporaries - donated, without the resident images).

Writes benchmarks/results/multirun_<device>.json and prints a markdown table. `--quick`: a
seconds-long smoke run (tiny preset, B=32, K = 1, 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
import torch

from benchmarks import jax_bench, torch_bench
from benchmarks.timing import Call, load_average, time_interleaved
from jaxgan import data as data_lib
from jaxgan import multirun, train
from jaxgan.config import preset

RESULTS = Path(__file__).parent / "results"
FULL = {"presets": ["small", "deep"], "batch_sizes": [64, 256], "runs": [1, 2, 4, 8, 16], "repeats": 3}
QUICK = {"presets": ["tiny"], "batch_sizes": [32], "runs": [1, 2], "repeats": 1}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.multirun", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny preset, B=32, K = 1, 2, one repeat: a smoke run")
    p.add_argument("--presets", nargs="+", help="presets (default small deep)")
    p.add_argument("--batch-sizes", nargs="+", type=int, help="batch sizes (default 64 256)")
    p.add_argument("--runs", nargs="+", type=int, help="runs per program, K (default 1 2 4 8 16)")
    p.add_argument("--repeats", type=int, help="timed calls per contestant, after a warm-up (default 3)")
    p.add_argument("--torch-threads", nargs="+", type=int, help="torch thread counts to try (default 1 and all)")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for multirun_<device>.json")
    args = p.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.torch_threads is None:
        args.torch_threads = sorted({1, os.cpu_count() or 1})
    if min(*args.batch_sizes, *args.runs, args.repeats) <= 0:
        p.error("batch sizes, runs and --repeats must be positive")
    for name in args.presets:
        try:
            preset(name)
        except ValueError as err:
            p.error(str(err))
    return args


def steps_per_call(batch_size: int, quick: bool) -> int:
    """Steps of each run per timed call: about 3,200 images a run (at least 4 steps)."""
    return 4 if quick else max(4, min(50, 3200 // batch_size))


def compile_stats(jitted, state, images, indices) -> tuple[float, float]:
    """(seconds to trace, lower and compile `jitted` at these arguments; XLA's buffers of the call in
    MiB: arguments + outputs + temporaries - donated, without the resident images). The first call
    afterwards finds the executable in jax's cache."""
    started = time.perf_counter()
    stats = jitted.lower(state, images, indices).compile().memory_analysis()
    seconds = time.perf_counter() - started
    if stats is None:
        return seconds, float("nan")
    total = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    return seconds, (total - stats.alias_size_in_bytes - images.nbytes) / 2**20


def prepare(steps_fn, state, images, indices, steps: int) -> tuple[Call, float, float]:
    """Jit `steps_fn(state, images, indices)` with the state donated, compile it, and return (a call that
    runs `steps` steps and carries the state on, its compile time, XLA MiB)."""
    run = jax.jit(steps_fn, donate_argnums=0)
    compile_s, megabytes = compile_stats(run, state, images, indices)
    holder = {"state": state}

    def call():
        holder["state"], metrics = run(holder["state"], images, indices)
        return metrics

    return Call(call, jax.block_until_ready, per=steps), compile_s, megabytes


def prepare_group(config, images, num_runs: int, steps: int) -> tuple[Call, float, float]:
    """(timed call of K runs x `steps` steps, its compile time, XLA MiB) for one vmapped program."""
    state = multirun.stack([train.create_state(config.replace(seed=s), s) for s in range(num_runs)], config)
    state = jax.device_put(state)
    keys = jax.random.split(jax.random.key(0), num_runs)
    indices = multirun.group_batch_indices(keys, 0, images.shape[0], config.batch_size)  # (K, steps/epoch, B)
    indices = jax.numpy.resize(indices, (num_runs, steps, config.batch_size))
    return prepare(multirun.group_steps, state, images, indices, steps)


def prepare_single(config, images, steps: int) -> tuple[Call, float, float]:
    """(timed call of one run x `steps` steps, its compile time, XLA MiB): one jitted `train_steps`."""
    state = train.create_state(config, 0)
    indices = train.epoch_batch_indices(state.key, 0, images.shape[0], config.batch_size)
    indices = jax.numpy.resize(indices, (steps, config.batch_size))
    return prepare(train.train_steps, state, images, indices, steps)


def run_row(name: str, batch_size: int, images_np: np.ndarray, images, args) -> list[dict]:
    """Every K of one preset at one batch size, timed round-robin with the single run and torch."""
    config = preset(name).replace(batch_size=batch_size)
    steps = steps_per_call(batch_size, args.quick)
    single, single_compile_s, single_mb = prepare_single(config, images, steps)
    groups = {k: prepare_group(config, images, k, steps) for k in args.runs}
    eager = {
        t: torch_bench.prepare_eager(config, images_np, steps_per_call=steps, threads=t) for t in args.torch_threads
    }
    calls = {"jax_single": single, **{f"vmap_{k}": g[0] for k, g in groups.items()}}
    calls |= {f"torch_{t}": e.call for t, e in eager.items()}
    timings = time_interleaved(calls, repeats=args.repeats)
    best = min(args.torch_threads, key=lambda t: timings[f"torch_{t}"].median_s)
    single_s, torch_s = timings["jax_single"].median_s, timings[f"torch_{best}"].median_s  # per step of one run
    rows = []
    for k, (_, compile_s, megabytes) in groups.items():
        group = timings[f"vmap_{k}"]
        per_run_s = group.median_s / k  # seconds per step of one run inside the group
        rows.append(
            {
                "preset": name,
                "batch_size": batch_size,
                "runs": k,
                "steps_per_call": steps,
                "vmap_ms_per_group_step": group.median_s * 1e3,
                "vmap_ms_min_max": [group.min_s * 1e3, group.max_s * 1e3],
                "vmap_images_per_s_per_run": batch_size / per_run_s,
                "single_images_per_s": batch_size / single_s,
                "torch_images_per_s": batch_size / torch_s,
                "torch_threads": best,
                "vmap_vs_single": single_s / per_run_s,
                "vmap_vs_torch": torch_s / per_run_s,
                "vmap_compile_s": compile_s,
                "single_compile_s": single_compile_s,
                "vmap_xla_mb": megabytes,  # without the resident images
                "single_xla_mb": single_mb,
            }
        )
    return rows


def crossovers(rows: list[dict]) -> list[dict]:
    """Per preset and batch size: the smallest K at which the group beats K sequential runs, and the best K."""
    out = []
    for key in dict.fromkeys((r["preset"], r["batch_size"]) for r in rows):
        mine = [r for r in rows if (r["preset"], r["batch_size"]) == key and r["runs"] > 1]
        winning = [r["runs"] for r in mine if r["vmap_vs_single"] > 1]
        best = max(mine, key=lambda r: r["vmap_vs_single"], default=None)
        out.append(
            {
                "preset": key[0],
                "batch_size": key[1],
                "vmap_wins_from_k": winning[0] if winning else None,
                "best_k": best and best["runs"],
                "best_ratio": best and best["vmap_vs_single"],
            }
        )
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "| preset | B | K | vmap img/s per run | jax single img/s | torch eager img/s | vmap/single | vmap/torch "
        "| vmap compile s | single compile s | vmap XLA MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['batch_size']} | {r['runs']} | {r['vmap_images_per_s_per_run']:,.0f} | "
            f"{r['single_images_per_s']:,.0f} | {r['torch_images_per_s']:,.0f} | {r['vmap_vs_single']:.2f} | "
            f"{r['vmap_vs_torch']:.2f} | {r['vmap_compile_s']:.2f} | {r['single_compile_s']:.2f} | "
            f"{r['vmap_xla_mb']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        return run(args, argv)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    started = time.perf_counter()
    load_start = load_average()
    device = jax_bench.device_name()
    images_np = data_lib.load(data_lib.MNIST_5K).images  # (5000, 28, 28, 1) in [-1, 1]
    images = jax.device_put(images_np)
    print(f"device {device}, load average {load_start}", flush=True)
    rows = []
    for name in args.presets:
        for batch_size in args.batch_sizes:
            rows += run_row(name, batch_size, images_np, images, args)
            print(markdown(rows[-len(args.runs) :]).splitlines()[-1], flush=True)
    result = {
        **jax_bench.run_record("multirun", sys.argv[1:] if argv is None else argv, load_start),
        "quick": args.quick,
        "repeats": args.repeats,
        "rows": rows,
        "crossovers": crossovers(rows),
        "seconds": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"multirun_{device}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{markdown(rows)}\n")
    for c in result["crossovers"]:
        wins = f"from K = {c['vmap_wins_from_k']}" if c["vmap_wins_from_k"] else "at no K measured"
        print(f"{c['preset']} B={c['batch_size']}: vmap beats K sequential runs {wins}; best K = {c['best_k']} "
              f"({c['best_ratio']:.2f}x)")  # fmt: skip
    print(f"\nload average {load_start} at the start, {result['load_average_end']} at the end; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
