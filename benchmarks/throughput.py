"""`python -m benchmarks.throughput`: jaxgan vs torch_ref, side by side in one run.

For each preset and batch size: jaxgan with one jitted call per step and with a whole
epoch in one `lax.scan` call; torch_ref eager (at 1 thread and at all cores: the faster
is the baseline) and `torch.compile` where asked; steps/s, images/s, the ratios, % of the
matmul roofline measured in the same run, first-call (compile) times and peak memory.
Then one end-to-end epoch per preset including the input pipeline, at the seeds' batch 64.

Writes benchmarks/results/<device>.json and <device>.png (or into --out), prints a table
and a markdown version of it for docs/performance.md. `--quick` is a seconds-long smoke run
(CI); it writes into a new temporary directory unless --out names one, and never into
benchmarks/results/, which holds the published results. Needs torch (`pip install -e '.[torch]'`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import jax

from benchmarks import jax_bench
from benchmarks.timing import load_average, time_interleaved
from jaxgan import data as data_lib
from jaxgan.cli import OneLineParser, UsageError, require, run
from jaxgan.config import preset

PROG = "python -m benchmarks.throughput"
RESULTS = Path(__file__).parent / "results"  # the published results: full runs only
FULL = {
    # small-beta09 has small's networks and step: same speed; cgan-small and dcgan: --presets
    "presets": ["small", "wide", "deep"],
    "batch_sizes": [64, 128, 256, 1024],
    "repeats": 5,
    "matmul_n": 2048,
    "examples": 5000,
    "torch_compile": "one",
}
QUICK = {
    "presets": ["tiny"],
    "batch_sizes": [32],
    "repeats": 2,
    "matmul_n": 256,
    "examples": 128,
    "torch_compile": "off",
}
COMPILE_ROW = ("small", 64)  # the seeds' preset and batch: the row --torch-compile one times


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The checked arguments; UsageError (one line, exit 2 through `cli.run`) for bad ones."""
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny preset, small batches, 2 repeats: a CI smoke run")
    p.add_argument("--presets", nargs="+", help=f"presets to run (default {' '.join(FULL['presets'])})")
    p.add_argument("--batch-sizes", nargs="+", type=int, help="batch sizes (default 64 128 256 1024)")
    p.add_argument("--repeats", type=int, help="timed repeats per measurement, after one warm-up (default 5)")
    p.add_argument("--examples", type=int, help="images of mnist-5k to use (default all 5000)")
    p.add_argument("--matmul-n", type=int, help="size of the square matmul that measures the peak (default 2048)")
    p.add_argument(
        "--torch-compile",
        choices=["off", "one", "all"],
        help="torch.compile for no row, only small at B=64 (default; slow when its cache is cold), or every row",
    )
    p.add_argument(
        "--torch-threads", nargs="+", type=int, help="torch eager thread counts to try (default 1 and all cores)"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="directory for <device>.json and .png (default: benchmarks/results, or with --quick a new temporary one)",
    )
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.torch_threads is None:
        args.torch_threads = sorted({1, os.cpu_count() or 1})
    if any(b <= 0 for b in args.batch_sizes) or args.repeats <= 0 or args.examples <= 0:
        raise UsageError("batch sizes, --repeats and --examples must be positive")
    for name in args.presets:
        try:
            preset(name)
        except ValueError as err:
            raise UsageError(str(err)) from None
    if max(args.batch_sizes) > args.examples:
        raise UsageError(f"batch size {max(args.batch_sizes)} is larger than --examples {args.examples}")
    if args.quick and args.out is not None and args.out.resolve() == RESULTS.resolve():
        raise UsageError(f"--quick never writes the published results in {RESULTS}; choose another --out")
    return args


def steps_per_call(batch_size: int, quick: bool) -> int:
    """Steps per timed call: about 3,200 images (at least 4 steps), so each call is well above timer noise."""
    return 4 if quick else max(4, min(50, 3200 // batch_size))


def run_row(name: str, batch_size: int, images_np, images, args, labels_np=None) -> dict:
    """One preset at one batch size: jaxgan (step, scan) and torch eager (each thread count), timed round-robin.
    labels_np: the images' (N,) digits (used by conditional presets)."""
    import torch

    from benchmarks import torch_bench

    config = preset(name).replace(batch_size=batch_size)
    n = steps_per_call(batch_size, args.quick)
    labels = jax.device_put(labels_np) if labels_np is not None else None
    jx = jax_bench.prepare(config, images, steps_per_call=n, labels=labels)
    eager = {
        t: torch_bench.prepare_eager(config, images_np, steps_per_call=n, threads=t, labels=labels_np)
        for t in args.torch_threads
    }
    calls = {**jx.calls, **{f"torch_{t}": e.call for t, e in eager.items()}}
    timings = time_interleaved(calls, repeats=args.repeats)
    best = min(args.torch_threads, key=lambda t: timings[f"torch_{t}"].median_s)
    torch.set_num_threads(best)
    compiled = None
    if args.torch_compile == "all" or (args.torch_compile == "one" and (name, batch_size) == COMPILE_ROW):
        compiled = torch_bench.bench_compiled(
            config, images_np, steps_per_call=n, repeats=args.repeats, max_compile_s=30.0, labels=labels_np
        )
    step, scan, torch_step = timings["jax_step"], timings["jax_scan"], timings[f"torch_{best}"]
    torch_s = torch_step.median_s
    return {
        "preset": name,
        "batch_size": batch_size,
        "steps_per_call": n,
        "jax_step_ms": step.median_s * 1e3,
        "jax_scan_ms": scan.median_s * 1e3,
        "torch_eager_ms": torch_s * 1e3,
        "torch_eager_threads": best,
        "torch_eager_ms_by_threads": {str(t): timings[f"torch_{t}"].median_s * 1e3 for t in args.torch_threads},
        "torch_compile_ms": compiled.step.median_s * 1e3 if compiled and compiled.step else None,
        "torch_compile_s": compiled.compile_s if compiled else None,
        "torch_compile_error": compiled.error if compiled else None,
        "jax_step_ratio": torch_s / step.median_s,
        "jax_scan_ratio": torch_s / scan.median_s,
        "jax_scan_images_per_s": batch_size / scan.median_s,
        "torch_eager_images_per_s": batch_size / torch_s,
        "flops_per_step": jx.flops_per_step,
        "jax_step_gflops": jx.flops_per_step / step.median_s / 1e9,
        "jax_scan_gflops": jx.flops_per_step / scan.median_s / 1e9,
        "jax_compile_s": jx.compile_s,
        "jax_scan_compile_s": jx.scan_compile_s,
        "torch_first_call_s": eager[best].first_call_s,
        "jax_peak_mb": jx.peak_bytes / 2**20,
        "torch_peak_mb": eager[best].peak_bytes / 2**20,
        "spread": {
            "jax_step_ms_min_max": [step.min_s * 1e3, step.max_s * 1e3],
            "jax_scan_ms_min_max": [scan.min_s * 1e3, scan.max_s * 1e3],
            "torch_eager_ms_min_max": [torch_step.min_s * 1e3, torch_step.max_s * 1e3],
        },
    }


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


COLUMNS = [
    ("preset", "preset", "s"),
    ("B", "batch_size", "d"),
    ("jax step/s", "jax_step_ms", "rate"),
    ("jax scan step/s", "jax_scan_ms", "rate"),
    ("torch eager step/s", "torch_eager_ms", "rate"),
    ("torch.compile step/s", "torch_compile_ms", "rate"),
    ("scan/eager", "jax_scan_ratio", ".2f"),
    ("step/eager", "jax_step_ratio", ".2f"),
    ("jax img/s", "jax_scan_images_per_s", ",.0f"),
    ("torch img/s", "torch_eager_images_per_s", ",.0f"),
    ("MFLOP/step", "flops_per_step", "mflop"),
    ("% roofline scan", "roofline_scan_pct", ".1f"),
    ("jax compile s", "jax_compile_s", ".2f"),
    ("torch 1st call s", "torch_first_call_s", ".3f"),
    ("jax MB", "jax_peak_mb", ".1f"),
    ("torch MB", "torch_peak_mb", ".1f"),
]


def cells(row: dict) -> list[str]:
    out = []
    for _, key, spec in COLUMNS:
        value = row[key]
        if spec == "rate":
            out.append("-" if value is None else f"{1e3 / value:,.0f}")
        elif spec == "mflop":
            out.append(f"{value / 1e6:.1f}")
        else:
            out.append(fmt(value, spec))
    return out


def text_table(rows: list[dict], peak_flops: float | None = None) -> str:
    """The rows as aligned text; peak_flops fills in % roofline for rows that have none yet."""
    header = [title for title, _, _ in COLUMNS]
    if peak_flops is not None:
        rows = [{"roofline_scan_pct": 100 * r["jax_scan_gflops"] * 1e9 / peak_flops, **r} for r in rows]
    body = [cells(r) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    lines = ["  ".join(x.rjust(w) for x, w in zip(line, widths, strict=True)) for line in [header, *body]]
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    header = [title for title, _, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def e2e_markdown(e2e: list[dict]) -> str:
    lines = [
        "| preset | B | jaxgan epoch s | seeds' DataLoader epoch s | ratio |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {e['preset']} | {e['batch_size']} | {e['jax_epoch_s']:.3f} | {e['torch_epoch_s']:.3f} | {e['ratio']:.2f} |"
        for e in e2e
    ]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, name in enumerate(dict.fromkeys(r["preset"] for r in rows)):
        mine = [r for r in rows if r["preset"] == name]
        bs = [r["batch_size"] for r in mine]
        color = f"C{i}"
        ax.plot(bs, [r["jax_scan_images_per_s"] for r in mine], "-o", color=color, label=f"{name}: jaxgan scan")
        ax.plot(
            bs,
            [r["batch_size"] * 1e3 / r["jax_step_ms"] for r in mine],
            ":^",
            color=color,
            label=f"{name}: jaxgan step",
        )
        ax.plot(bs, [r["torch_eager_images_per_s"] for r in mine], "--s", color=color, label=f"{name}: torch eager")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("training images / s")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m benchmarks.throughput`; returns the exit status."""

    def body() -> int:
        args = parse_args(argv)
        require("torch")
        import torch

        threads = torch.get_num_threads()
        try:
            return measure(args, argv)
        finally:
            torch.set_num_threads(threads)

    return run(PROG, body)


def measure(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run the benchmark, write its JSON and plot, print its tables; exit status 0."""

    from benchmarks import end_to_end

    started = time.perf_counter()
    out = args.out or (Path(tempfile.mkdtemp(prefix="jaxgan-benchmark-")) if args.quick else RESULTS)
    load_start = load_average()
    device = jax_bench.device_name()
    pixels, labels = data_lib.load_mnist_5k()
    pixels, labels = pixels[: args.examples], labels[: args.examples]
    images_np = data_lib.to_model_range(pixels)  # (N, 28, 28, 1) float32 in [-1, 1]
    images = jax.device_put(images_np)
    # The peak is measured before every row; the run's peak is the best of them (a busy
    # machine lowers a measurement, never raises it), so % roofline errs low, not high.
    peaks = [jax_bench.matmul_peak_flops(args.matmul_n, repeats=max(3, args.repeats))]
    print(
        f"device {device} ({jax.devices()[0].device_kind}), matmul peak {peaks[0] / 1e9:.1f} GFLOP/s "
        f"({args.matmul_n}x{args.matmul_n} float32), load average {load_start}",
        flush=True,
    )
    rows = []
    for name in args.presets:
        for batch_size in args.batch_sizes:
            if rows:
                peaks.append(jax_bench.matmul_peak_flops(args.matmul_n, repeats=max(3, args.repeats)))
            rows.append(run_row(name, batch_size, images_np, images, args, labels.astype("int32")))
            rows[-1]["matmul_peak_gflops_before"] = peaks[-1] / 1e9
            print(text_table(rows[-1:], peaks[-1]).splitlines()[-1], flush=True)
    peak_flops = max(peaks)
    for row in rows:
        row["roofline_step_pct"] = 100 * row["jax_step_gflops"] * 1e9 / peak_flops
        row["roofline_scan_pct"] = 100 * row["jax_scan_gflops"] * 1e9 / peak_flops
    e2e = []
    e2e_batch = 32 if args.quick else 64
    for name in args.presets:
        r = end_to_end.bench(
            preset(name).replace(batch_size=e2e_batch), pixels, labels, repeats=args.repeats, threads=args.torch_threads
        )
        e2e.append(
            {
                "preset": name,
                "batch_size": e2e_batch,
                "jax_epoch_s": r.jax_epoch.median_s,
                "torch_epoch_s": r.torch_epoch.median_s,
                "ratio": r.torch_epoch.median_s / r.jax_epoch.median_s,
                "jax_steps": r.jax_steps,
                "torch_steps": r.torch_steps,
                "torch_threads": r.torch_threads,
            }
        )
    result = {
        **jax_bench.run_record("throughput", sys.argv[1:] if argv is None else argv, load_start),
        "quick": args.quick,
        "repeats": args.repeats,
        "examples": args.examples,
        "matmul_n": args.matmul_n,
        "matmul_peak_gflops": peak_flops / 1e9,
        "matmul_peaks_gflops": [p / 1e9 for p in peaks],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "rows": rows,
        "end_to_end": e2e,
        "seconds": time.perf_counter() - started,
    }
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{device}.json"
    json_path.write_text(json.dumps(result, indent=1, default=_jsonable) + "\n")
    png_path = out / f"{device}.png"
    plot(rows, png_path, f"{device}, {result['date_utc']} UTC, load {load_start}")

    print()
    print(text_table(rows))
    print()
    print(f"End to end, one epoch of {args.examples} images including the input pipeline:")
    for e in e2e:
        print(
            f"  {e['preset']} B={e['batch_size']}: jaxgan {e['jax_epoch_s']:.3f} s ({e['jax_steps']} steps), "
            f"seeds' DataLoader loop {e['torch_epoch_s']:.3f} s ({e['torch_steps']} steps): {e['ratio']:.2f}x"
        )
    print(f"\nmatmul peak {peak_flops / 1e9:.1f} GFLOP/s (best of {len(peaks)} measurements in this run)")
    print(f"\nMarkdown for docs/performance.md ({json_path}, {png_path}):\n")
    print(markdown_table(rows))
    print()
    print(e2e_markdown(e2e))
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    return 0


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    return float(x)


if __name__ == "__main__":
    sys.exit(main())
