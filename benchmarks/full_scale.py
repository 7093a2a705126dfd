"""`python -m benchmarks.full_scale --dataset DIR`: the seeds' own workload, epochs of a full
IDX dataset (60,000 images for MNIST or Fashion-MNIST) at the seeds' batch 64.

    python -m benchmarks.full_scale --dataset /usr/share/datasets/fashion-mnist
    python -m benchmarks.full_scale --dataset ./data/MNIST/raw --repeats 5
    python -m benchmarks.full_scale --dataset DIR --quick      # tiny preset, a smoke run (CI)

Two measurements:

1. The epoch ratio: both pipelines in this process, their epochs timed round-robin after a warm-up
   (`benchmarks.end_to_end.bench`): jaxgan's data path against the seeds' per-sample ToTensor +
   Normalize `Dataset` through `DataLoader(batch_size=64, shuffle=True)` feeding torch_ref's step,
   at each of `--torch-threads` (the faster is the baseline).
2. Start-up and memory, each pipeline in a fresh process of its own (`--child`; torch at the thread
   count found fastest in 1), timed from the moment the process is spawned: imports, reading the
   IDX files, building the state, the first step (jaxgan's first jitted chunk of `log_every` steps,
   100, is its first result on the host, so both pipelines report the time until that many steps
   are done), then the rest of the first epoch. Each child reports its peak resident memory
   (ru_maxrss) and the device memory of its arrays: XLA's allocator peak where the device reports
   one (GPU, TPU); on CPU jax's arrays live in host memory (inside the RSS) and the child reports
   its live jax buffers plus the compiled chunk's temporaries instead.

Writes OUT/full-scale-<device>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

MODULE_START = time.monotonic()  # a child's interpreter is up and this module imported
RESULTS = Path(__file__).parent / "results"
CHILD_KINDS = ("jax", "torch")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.full_scale", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="a directory of IDX files (as jaxgan's --dataset)")
    p.add_argument("--preset", default=None, help="preset (default small; tiny with --quick)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default the seeds' 64; 32 with --quick)")
    p.add_argument("--repeats", type=int, default=None, help="timed epochs per pipeline after one warm-up (default 3)")
    p.add_argument("--examples", type=int, default=None, help="use only the first N images (default all)")
    p.add_argument("--torch-threads", nargs="+", type=int, help="torch thread counts to try (default 1 and all cores)")
    p.add_argument("--quick", action="store_true", help="tiny preset, batch 32, 1 repeat, 1 torch thread")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for full-scale-<device>.json")
    p.add_argument("--child", choices=CHILD_KINDS, help=argparse.SUPPRESS)  # internal: one pipeline's start-up
    p.add_argument("--spawned-at", type=float, default=None, help=argparse.SUPPRESS)  # time.monotonic() at spawn
    args = p.parse_args(argv)
    quick = args.quick
    args.preset = args.preset or ("tiny" if quick else "small")
    args.batch_size = args.batch_size or (32 if quick else 64)
    args.repeats = args.repeats or (1 if quick else 3)
    if args.torch_threads is None:
        args.torch_threads = [1] if quick else sorted({1, os.cpu_count() or 1})
    if args.batch_size <= 0 or args.repeats <= 0 or (args.examples is not None and args.examples <= 0):
        p.error("--batch-size, --repeats and --examples must be positive")
    if not Path(args.dataset).expanduser().is_dir():
        p.error(f"--dataset {args.dataset!r} is not a directory of IDX files")
    return args


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------ one pipeline per process


def child_jax(args: argparse.Namespace, since: float) -> dict:
    """jaxgan's start-up as `train.train_and_evaluate` does it, then its first epoch; seconds since spawn."""
    marks = {"python_up_s": round(MODULE_START - since, 4)}
    import jax
    from tqdm.auto import tqdm

    from jaxgan import data as data_lib
    from jaxgan import steps, train
    from jaxgan.config import preset

    marks["imported_s"] = _now(since)
    dataset = data_lib.load(str(Path(args.dataset).expanduser().resolve()))
    images_np = dataset.images[: args.examples]  # (N, 28, 28, 1) float32 in [-1, 1]
    marks["data_loaded_s"] = _now(since)
    num_examples = len(images_np)
    config = preset(args.preset).replace(batch_size=args.batch_size)
    images = jax.device_put(images_np)
    state = steps.stack([steps.create_state(config, config.seed)], config)  # a run of one, as the loop trains it
    run_steps = jax.jit(train.RUNS_STEPS["map"], donate_argnums=0)
    batch_indices = jax.jit(steps.runs_batch_indices, static_argnums=(2, 3))
    num_steps = num_examples // config.batch_size
    chunk = min(config.log_every, num_steps)
    indices = batch_indices(state.key, 0, num_examples, config.batch_size)  # (1, steps, B)
    jax.block_until_ready((images, state, indices))
    marks["state_ready_s"] = _now(since)
    state, metrics = run_steps(state, images, indices[:, :chunk])  # compiles, then runs `chunk` steps
    jax.device_get(metrics)  # the loop's host sync: the first steps' losses are on the host
    marks["first_chunk_s"] = _now(since)
    if num_steps > chunk:  # the rest of the epoch, as the loop runs it
        with tqdm(disable=True) as bar:
            state, _, _ = train.run_epoch(state, (images,), indices[:, chunk:], run_steps, epoch=1, first_step=chunk,
                                          chunk=chunk, bar=bar, active={0})  # fmt: skip
    marks["epoch_1_done_s"] = _now(since)
    memory = run_steps.lower(state, images, indices[:, :chunk]).compile().memory_analysis()
    stats = jax.devices()[0].memory_stats() or {}
    live = sum(x.nbytes for x in jax.live_arrays())
    return {
        "kind": "jax",
        "chunk": chunk,
        "marks": marks,
        "time_to_first_chunk_s": marks["first_chunk_s"],
        "steps_per_epoch": num_steps,
        "peak_rss_bytes": peak_rss_bytes(),
        "device": jax.devices()[0].platform,
        "device_peak_bytes": stats.get("peak_bytes_in_use"),
        "device_live_bytes": live,  # after the epochs: images + state + last indices
        "chunk_temp_bytes": None if memory is None else memory.temp_size_in_bytes,
        "images_bytes": images.nbytes,
    }


def child_torch(args: argparse.Namespace, since: float) -> dict:
    """The seeds' start-up (their uint8 tensor, a per-sample transform, a shuffling DataLoader,
    torch_ref's state), the first step, as many steps as jaxgan's first chunk, the first epoch;
    seconds since spawn. Torch runs at the first of `--torch-threads`."""
    marks = {"python_up_s": round(MODULE_START - since, 4)}
    import torch

    import torch_ref
    from benchmarks.end_to_end import SeedsMNIST
    from benchmarks.torch_bench import state_bytes
    from jaxgan import data as data_lib
    from jaxgan.config import preset

    marks["imported_s"] = _now(since)
    torch.set_num_threads(args.torch_threads[0])
    pixels, labels = data_lib.load_idx(data_lib.find_idx_dir(str(Path(args.dataset).expanduser())))
    pixels, labels = pixels[: args.examples].copy(), labels[: args.examples]  # uint8 (N, 28, 28, 1), writable
    marks["data_loaded_s"] = _now(since)
    config = preset(args.preset).replace(batch_size=args.batch_size)
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(SeedsMNIST(pixels, labels), batch_size=config.batch_size, shuffle=True)
    state = torch_ref.create_state(config, 0)
    chunk = min(config.log_every, len(pixels) // config.batch_size)  # jaxgan's first chunk
    marks["state_ready_s"] = _now(since)

    for step, (real, _) in enumerate(loader, 1):  # the first epoch
        z_d, z_g = torch.randn(real.shape[0], config.latent_dim), torch.randn(real.shape[0], config.latent_dim)
        metrics = torch_ref.train_step(state, real, z_d, z_g)
        if step in (1, chunk):
            float(metrics["d_loss"])  # synchronous on CPU; as a loop that logs it would
            marks["first_step_s" if step == 1 else "first_chunk_s"] = _now(since)
    marks["epoch_1_done_s"] = _now(since)
    return {
        "kind": "torch",
        "threads": torch.get_num_threads(),
        "chunk": chunk,
        "marks": marks,
        "time_to_first_step_s": marks["first_step_s"],
        "time_to_first_chunk_s": marks["first_chunk_s"],
        "steps_per_epoch": len(loader),
        "peak_rss_bytes": peak_rss_bytes(),
        "device": "cpu",
        "tensor_bytes": state_bytes(state) + loader.dataset.pixels.nbytes,  # params, Adam, uint8 images
    }


def _now(since: float) -> float:
    return round(time.monotonic() - since, 4)


def spawn_child(kind: str, args: argparse.Namespace, argv: list[str]) -> dict:
    """Run one pipeline in a fresh interpreter; its JSON result is its stdout's last line."""
    spawned = time.monotonic()
    command = [sys.executable, "-m", "benchmarks.full_scale", *argv, "--child", kind, "--spawned-at", repr(spawned)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} child failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(time.monotonic() - spawned, 3)
    return result


# ------------------------------------------------------------------ the whole benchmark


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    from benchmarks.timing import load_average

    started = time.perf_counter()
    load_start = load_average()
    user_argv = list(sys.argv[1:] if argv is None else argv)

    import torch

    from benchmarks import end_to_end, jax_bench
    from jaxgan import data as data_lib
    from jaxgan.config import preset

    directory = data_lib.find_idx_dir(str(Path(args.dataset).expanduser()))
    pixels, labels = data_lib.load_idx(directory)
    pixels, labels = pixels[: args.examples].copy(), labels[: args.examples]  # writable, as torch wants
    config = preset(args.preset).replace(batch_size=args.batch_size)
    threads = torch.get_num_threads()
    try:
        e2e = end_to_end.bench(config, pixels, labels, repeats=args.repeats, threads=args.torch_threads)
    finally:
        torch.set_num_threads(threads)
    load_after_epochs = load_average()
    child_argv = [*user_argv, "--torch-threads", str(e2e.torch_threads)]  # the last --torch-threads counts
    children = {kind: spawn_child(kind, args, child_argv) for kind in CHILD_KINDS}  # one at a time
    result = {
        **jax_bench.run_record("full_scale", user_argv, load_start),
        "load_average_after_epochs": load_after_epochs,
        "dataset": str(directory),
        "examples": len(pixels),
        "preset": args.preset,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "epoch": {
            "jax_s": e2e.jax_epoch.median_s,
            "torch_s": e2e.torch_epoch.median_s,
            "ratio": e2e.torch_epoch.median_s / e2e.jax_epoch.median_s,
            "torch_threads": e2e.torch_threads,
            "jax_steps": e2e.jax_steps,
            "torch_steps": e2e.torch_steps,
            "jax_s_min_max": [e2e.jax_epoch.min_s, e2e.jax_epoch.max_s],
            "torch_s_min_max": [e2e.torch_epoch.min_s, e2e.torch_epoch.max_s],
        },
        "startup": children,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"full-scale-{result['device']}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    print(f"\n{path}; {result['seconds']:.0f} s in all, load average {load_start} -> {result['load_average_end']}")
    return 0


def markdown(result: dict) -> str:
    """The run's figures as two markdown tables: the epochs' ratio, then start-up and memory."""
    e, jx, pt = result["epoch"], result["startup"]["jax"], result["startup"]["torch"]
    mib = 2**20
    if jx["device_peak_bytes"] is not None:
        device_jax = f"{jx['device_peak_bytes'] / mib:,.0f} (XLA's peak)"
    else:
        live, temp = jx["device_live_bytes"] / mib, (jx["chunk_temp_bytes"] or 0) / mib
        device_jax = f"{live:,.0f} + {temp:,.0f} (live arrays + a chunk's temporaries; host memory, in the RSS)"

    def startup(r: dict, first_step: str, device: str) -> str:
        m = r["marks"]
        return (
            f"{m['python_up_s']:.1f} | {m['imported_s']:.1f} | {m['data_loaded_s']:.1f} | {m['state_ready_s']:.1f} | "
            f"{first_step} | {r['time_to_first_chunk_s']:.2f} | {m['epoch_1_done_s']:.1f} | "
            f"{r['peak_rss_bytes'] / mib:,.0f} | {device} |"
        )

    return "\n".join(
        [
            f"One epoch of {result['examples']:,} images, preset {result['preset']}, batch {result['batch_size']}, "
            f"median of {result['repeats']} round-robin epochs after a warm-up:",
            "",
            "| pipeline | steps | epoch s | speed-up |",
            "|---|---|---|---|",
            f"| jaxgan: device-resident images, shuffle on the device, jitted chunks | {e['jax_steps']} | "
            f"{e['jax_s']:.2f} | {e['ratio']:.2f}x |",
            f"| the seeds: per-sample ToTensor + Normalize, DataLoader(shuffle=True), torch_ref's step, "
            f"{e['torch_threads']} thread(s) | {e['torch_steps']} | {e['torch_s']:.2f} | 1 |",
            "",
            f"Start-up and memory, each pipeline in a fresh process, seconds from its spawn ({jx['chunk']} steps = "
            "jaxgan's first jitted chunk, its first result on the host):",
            "",
            f"| pipeline | python up | imports | data read | state ready | first step | {jx['chunk']} steps "
            "| epoch 1 done | peak RSS MiB | device MiB |",
            "|---|---|---|---|---|---|---|---|---|---|",
            "| jaxgan | " + startup(jx, "(in the chunk)", device_jax),
            "| the seeds | "
            + startup(pt, f"{pt['time_to_first_step_s']:.2f}", f"- (host; tensors {pt['tensor_bytes'] / mib:,.0f})"),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        since = args.spawned_at if args.spawned_at is not None else time.monotonic()
        result = (child_jax if args.child == "jax" else child_torch)(args, since)
        print(json.dumps(result))
        return 0
    return run(args, argv)


if __name__ == "__main__":
    sys.exit(main())
