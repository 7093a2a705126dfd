"""`python -m benchmarks.multirun`: K runs in one program, in each mode, against K runs one after another.

For each preset and batch size, timed round-robin in one run (`timing.time_interleaved`):
- **map K** and **vmap K** (K = 1, 2, 4, 8, 16): the training loop's jitted `steps.runs_steps`
  (`train.RUNS_STEPS`) in mode "map" (the runs one after another inside the one program, each
  bit for bit its single run) and "vmap" (the runs batched), K runs of `n` steps each in one
  call, the stacked state donated;
- **jax single**: one run's jitted `steps.train_steps` over the same `n` steps (K runs one
  after another take K times as long: its images/s per run is theirs);
- **torch eager**: `torch_ref`'s step, `n` steps per call, at 1 thread and at all cores (the
  faster is the baseline).
Reported per run: images/s of one run inside the group, and the ratios of each mode to jax single
(above 1: the group beats K sequential jaxgan runs) and to torch eager. Also each program's
compile time (trace + lower + compile; K single runs compile K times, since the seed is part of
a single run's static config) and XLA's buffers (arguments + outputs + temporaries - donated,
without the resident images).

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
from jaxgan import steps, train
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


def prepare_group(config, images, num_runs: int, num_steps: int, mode: str) -> tuple[Call, float, float]:
    """(timed call of K runs x `num_steps` steps, its compile time, XLA MiB) for one program in `mode`."""
    state = steps.stack([steps.create_state(config.replace(seed=s), s) for s in range(num_runs)], config)
    state = jax.device_put(state)
    keys = jax.random.split(jax.random.key(0), num_runs)
    indices = steps.runs_batch_indices(keys, 0, images.shape[0], config.batch_size)  # (K, steps/epoch, B)
    indices = jax.numpy.resize(indices, (num_runs, num_steps, config.batch_size))
    return prepare(train.RUNS_STEPS[mode], state, images, indices, num_steps)


def prepare_single(config, images, num_steps: int) -> tuple[Call, float, float]:
    """(timed call of one run x `num_steps` steps, its compile time, XLA MiB): one jitted `train_steps`."""
    state = steps.create_state(config, 0)
    indices = steps.epoch_batch_indices(state.key, 0, images.shape[0], config.batch_size)
    indices = jax.numpy.resize(indices, (num_steps, config.batch_size))
    return prepare(steps.train_steps, state, images, indices, num_steps)


def run_row(name: str, batch_size: int, images_np: np.ndarray, images, args) -> list[dict]:
    """Every K and mode of one preset at one batch size, timed round-robin with the single run and torch."""
    config = preset(name).replace(batch_size=batch_size)
    num_steps = steps_per_call(batch_size, args.quick)
    single, single_compile_s, single_mb = prepare_single(config, images, num_steps)
    groups = {(k, mode): prepare_group(config, images, k, num_steps, mode) for k in args.runs for mode in steps.MODES}
    eager = {
        t: torch_bench.prepare_eager(config, images_np, steps_per_call=num_steps, threads=t) for t in args.torch_threads
    }
    calls = {"jax_single": single, **{f"{mode}_{k}": g[0] for (k, mode), g in groups.items()}}
    calls |= {f"torch_{t}": e.call for t, e in eager.items()}
    timings = time_interleaved(calls, repeats=args.repeats)
    best = min(args.torch_threads, key=lambda t: timings[f"torch_{t}"].median_s)
    single_s, torch_s = timings["jax_single"].median_s, timings[f"torch_{best}"].median_s  # per step of one run
    rows = []
    for k in args.runs:
        row = {
            "preset": name,
            "batch_size": batch_size,
            "runs": k,
            "steps_per_call": num_steps,
            "single_images_per_s": batch_size / single_s,
            "torch_images_per_s": batch_size / torch_s,
            "torch_threads": best,
            "single_compile_s": single_compile_s,
            "single_xla_mb": single_mb,
        }
        for mode in steps.MODES:
            _, compile_s, megabytes = groups[k, mode]
            group = timings[f"{mode}_{k}"]
            per_run_s = group.median_s / k  # seconds per step of one run inside the group
            row |= {
                f"{mode}_ms_per_group_step": group.median_s * 1e3,
                f"{mode}_ms_min_max": [group.min_s * 1e3, group.max_s * 1e3],
                f"{mode}_images_per_s_per_run": batch_size / per_run_s,
                f"{mode}_vs_single": single_s / per_run_s,
                f"{mode}_vs_torch": torch_s / per_run_s,
                f"{mode}_compile_s": compile_s,
                f"{mode}_xla_mb": megabytes,  # without the resident images
            }
        rows.append(row)
    return rows


def crossovers(rows: list[dict]) -> list[dict]:
    """Per preset, batch size and mode: the smallest K at which the group beats K sequential runs, and the best K."""
    out = []
    for key in dict.fromkeys((r["preset"], r["batch_size"]) for r in rows):
        mine = [r for r in rows if (r["preset"], r["batch_size"]) == key and r["runs"] > 1]
        for mode in steps.MODES:
            winning = [r["runs"] for r in mine if r[f"{mode}_vs_single"] > 1]
            best = max(mine, key=lambda r, mode=mode: r[f"{mode}_vs_single"], default=None)
            out.append(
                {
                    "preset": key[0],
                    "batch_size": key[1],
                    "mode": mode,
                    "wins_from_k": winning[0] if winning else None,
                    "best_k": best and best["runs"],
                    "best_ratio": best and best[f"{mode}_vs_single"],
                }
            )
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "| preset | B | K | map img/s per run | vmap img/s per run | jax single img/s | torch eager img/s "
        "| map/single | vmap/single | map/torch | vmap/torch | map compile s | vmap compile s | single compile s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['batch_size']} | {r['runs']} | {r['map_images_per_s_per_run']:,.0f} | "
            f"{r['vmap_images_per_s_per_run']:,.0f} | {r['single_images_per_s']:,.0f} | {r['torch_images_per_s']:,.0f} | "
            f"{r['map_vs_single']:.2f} | {r['vmap_vs_single']:.2f} | {r['map_vs_torch']:.2f} | {r['vmap_vs_torch']:.2f} | "
            f"{r['map_compile_s']:.2f} | {r['vmap_compile_s']:.2f} | {r['single_compile_s']:.2f} |"
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
        wins = f"from K = {c['wins_from_k']}" if c["wins_from_k"] else "at no K measured"
        print(f"{c['preset']} B={c['batch_size']}, {c['mode']}: beats K sequential runs {wins}; best K = {c['best_k']} "
              f"({c['best_ratio']:.2f}x)")  # fmt: skip
    print(f"\nload average {load_start} at the start, {result['load_average_end']} at the end; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
