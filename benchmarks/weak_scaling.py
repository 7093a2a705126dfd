"""`python -m benchmarks.weak_scaling`: data-parallel weak scaling, per-device batch fixed.

For 1, 2, 4, ... devices, `--data-parallel`'s jitted `train_steps` (jaxgan.parallel.Placement
over the first k devices) runs `--steps` steps per call at a global batch of k x
`--per-device-batch`; prints ms/step, images/s and the weak-scaling efficiency
t(1 device) / t(k devices) (1.0 = perfect: k times the images in the same time).

On a CPU-only machine it forces `--devices` host devices (XLA_FLAGS
--xla_force_host_platform_device_count) before JAX starts. Those devices share the
machine's cores, so the efficiency there measures the sharing, not a real cluster.
Writes benchmarks/results/weak_scaling_<device>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.weak_scaling", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small", help="networks of this preset (default small)")
    p.add_argument("--per-device-batch", type=int, default=64, help="images per device per step (default 64)")
    p.add_argument("--devices", type=int, default=8, help="largest device count; forced on CPU (default 8)")
    p.add_argument("--steps", type=int, default=50, help="steps per timed call, one lax.scan (default 50)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per device count, after a warm-up")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON result")
    args = p.parse_args(argv)
    if min(args.per_device_batch, args.devices, args.steps, args.repeats) <= 0:
        p.error("--per-device-batch, --devices, --steps and --repeats must be positive")
    return args


def device_counts(available: int, largest: int) -> list[int]:
    """1, 2, 4, ... up to min(available, largest), and that count itself if not a power of two."""
    top = min(available, largest)
    counts = [1 << i for i in range(top.bit_length()) if 1 << i <= top]
    return counts if counts[-1] == top else [*counts, top]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "jax" in sys.modules:
        raise RuntimeError("run this as a fresh process: the device count is fixed when JAX starts")
    if not any(os.environ.get("JAX_PLATFORMS", "").startswith(p) for p in ("cuda", "gpu", "tpu")):
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
        ).strip()

    import jax
    import numpy as np

    from benchmarks.jax_bench import device_name
    from benchmarks.timing import load_average, time_calls
    from jaxgan import data as data_lib
    from jaxgan import parallel, steps, train
    from jaxgan.config import preset

    load_before = load_average()
    images_np = data_lib.load(data_lib.MNIST_5K).images
    devices = jax.devices()
    rows = []
    for k in device_counts(len(devices), args.devices):
        batch = k * args.per_device_batch
        config = preset(args.preset).replace(batch_size=batch, data_parallel=True)
        placement = parallel.Placement(True, devices=devices[:k])
        images = placement.replicate(images_np)
        state = placement.put_state(steps.stack([steps.create_state(config, 0)], config))  # a run of one
        run = placement.jit_steps(train.RUNS_STEPS["map"])
        rng = np.random.default_rng(0)
        idx = rng.integers(0, len(images_np), (1, args.steps, batch), dtype=np.int32)
        idx = jax.device_put(idx, placement.batch_sharding)
        holder = {"state": state}

        def call(run=run, images=images, idx=idx, holder=holder):
            holder["state"], metrics = run(holder["state"], images, idx)  # the state is donated
            return metrics

        timing = time_calls(call, jax.block_until_ready, repeats=args.repeats, warmup=1).per(args.steps)
        rows.append(
            {
                "devices": k,
                "global_batch": batch,
                "ms_per_step": timing.median_s * 1e3,
                "ms_per_step_min_max": [timing.min_s * 1e3, timing.max_s * 1e3],
                "images_per_s": batch / timing.median_s,
            }
        )
        print(f"{k} device(s): {rows[-1]['ms_per_step']:.2f} ms/step", file=sys.stderr, flush=True)
    for row in rows:
        row["efficiency"] = rows[0]["ms_per_step"] / row["ms_per_step"]

    name = device_name()
    print(f"\nweak scaling, preset {args.preset}, {args.per_device_batch} images per device, on {name}")
    load_after = load_average()
    print(
        f"{os.cpu_count()} cores; 1-minute load average {load_before and load_before[0]} before, "
        f"{load_after and load_after[0]} after\n"
    )
    print("| devices | global batch | ms/step | images/s | efficiency |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['devices']} | {r['global_batch']} | {r['ms_per_step']:.2f} | {r['images_per_s']:,.0f} | "
            f"{r['efficiency']:.2f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"weak_scaling_{name}.json"
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": name,
        "platform": devices[0].platform,
        "cores": os.cpu_count(),
        "forced_host_devices": devices[0].platform == "cpu",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "argv": sys.argv,
        **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows,
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
