"""`python -m benchmarks.conv_flags`: the DCGAN's training scan and step under each of XLA:CPU's
convolution paths, with each of jaxgan's convolution implementations, against torch_ref eager.

    python -m benchmarks.conv_flags                          # dcgan, B=64, 2 rounds -> docs/performance.md
    python -m benchmarks.conv_flags --preset tiny-dcgan --batch-size 32 --steps 4 --rounds 1 --repeats 1

XLA reads XLA_FLAGS once per process, so each flag setting (`SETTINGS`) runs in a worker process of
its own (`--worker`), which times every implementation of `jaxgan.models.CONV_IMPLS` (gemm:
jaxgan.convolution's matrix products; xla: `lax.conv_general_dilated`; xla-pad: the same with a transposed
convolution's input dilated by padding, so no lhs dilation) interleaved, and reads from the
optimized HLO which path each convolution and matrix product took (a YNNPACK fusion, a oneDNN custom
call, or XLA's own Eigen code). The driver runs the workers and torch_ref's eager step (the faster
of 1 and 2 threads) in turn, `--rounds` times, and prints each variant's median ms per step and its
speed relative to torch eager (torch ms / jaxgan ms: above 1 is faster than PyTorch), with the
load average.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys

# setting -> XLA_FLAGS. jaxlib 0.10.2 fuses convolutions into YNNPACK by default
# (--xla_cpu_experimental_ynn_fusion_type; an empty value turns it off).
SETTINGS = {
    "default (YNNPACK)": "",
    "YNNPACK off (Eigen)": "--xla_cpu_experimental_ynn_fusion_type=",
    "XNNPACK": "--xla_cpu_use_xnnpack=true",
    "oneDNN custom calls": "--xla_cpu_experimental_onednn_custom_call=true",
}


def hlo_paths(hlo: str) -> dict[str, int]:
    """Counts of `convolution` and `dot` ops in optimized HLO text by where they run: inside a
    YNNPACK fusion ("ynn"), as a oneDNN custom call ("onednn"), or in XLA's own code ("xla")."""
    computations: dict[str, str] = {}
    name, lines = None, []
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            name, lines = header.group(1), []
        elif line.startswith("}") and name is not None:
            computations[name] = "\n".join(lines)
            name = None
        elif name is not None:
            lines.append(line)
    ynn = {m.group(1) for m in re.finditer(r"calls=%([\w.\-]+)[^\n]*__ynn_fusion", hlo)}
    counts: collections.Counter = collections.Counter()
    for computation, text in computations.items():
        place = "ynn" if computation in ynn else "xla"
        for op in ("convolution", "dot"):
            counts[f"{op} {place}"] += len(re.findall(rf"= [^=]*\b{op}\(", text))
    counts["onednn"] = len(re.findall(r'custom_call_target="__onednn\$[^"]*"', hlo))
    return {k: v for k, v in sorted(counts.items()) if v}


def worker(args: argparse.Namespace) -> None:
    """One flag setting (already in XLA_FLAGS): every implementation's epoch scan and single step."""
    import jax

    from benchmarks.conv_layers import forced_conv_impl
    from benchmarks.timing import Call, time_first_call, time_interleaved
    from jaxgan import models, steps
    from jaxgan.config import preset

    config = preset(args.preset).replace(batch_size=args.batch_size)
    images = jax.random.uniform(jax.random.key(1), (args.batch_size * args.steps, 28, 28, 1), minval=-1, maxval=1)
    calls, out = {}, {}
    for impl in models.CONV_IMPLS:
        with forced_conv_impl(impl):  # traced inside: the layers read it at trace time
            epoch = jax.jit(lambda state, images: steps.train_epoch(state, images))
            step = jax.jit(lambda state, batch: steps.train_step_keyed(state, batch))
            state = steps.create_state(config, 0)
            first_s, _ = time_first_call(lambda e=epoch, s=state: e(s, images), jax.block_until_ready)
            jax.block_until_ready(step(state, images[: args.batch_size]))
            paths = hlo_paths(epoch.lower(state, images).compile().as_text())
        calls[f"{impl} scan"] = Call(lambda e=epoch, s=state: e(s, images), jax.block_until_ready, per=args.steps)
        calls[f"{impl} step"] = Call(lambda f=step, s=state: f(s, images[: args.batch_size]), jax.block_until_ready)
        out[impl] = {"first_call_s": first_s, "paths": paths}
    timings = time_interleaved(calls, repeats=args.repeats)
    for impl in models.CONV_IMPLS:
        out[impl]["scan_ms"] = 1000 * timings[f"{impl} scan"].median_s
        out[impl]["step_ms"] = 1000 * timings[f"{impl} step"].median_s
    print(json.dumps(out))


def torch_eager_ms(args: argparse.Namespace) -> float:
    """torch_ref's eager step, ms per step: the faster of 1 and 2 threads."""
    import numpy as np

    from benchmarks import torch_bench
    from benchmarks.timing import time_interleaved
    from jaxgan.config import preset

    config = preset(args.preset).replace(batch_size=args.batch_size)
    images = np.random.default_rng(1).uniform(-1, 1, (args.batch_size * args.steps, 28, 28, 1)).astype(np.float32)
    calls = {
        threads: torch_bench.prepare_eager(config, images, steps_per_call=args.steps, threads=threads).call
        for threads in (1, 2)
    }
    timings = time_interleaved(calls, repeats=args.repeats)
    return 1000 * min(t.median_s for t in timings.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dcgan", help="a DCGAN preset (default dcgan)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed epoch scan")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per variant and round, after a warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="times every setting and torch eager run, in turn")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    from benchmarks.timing import load_average

    load_start = load_average()
    flags = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("preset", "batch_size", "steps", "repeats")]
    runs: dict[str, list[dict]] = collections.defaultdict(list)
    torch_ms: list[float] = []
    for _ in range(args.rounds):
        for setting, xla_flags in SETTINGS.items():
            env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()}
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.conv_flags", "--worker", *flags],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(f"{setting}: the worker failed: {done.stderr.strip().splitlines()[-1:]}")
            runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
        torch_ms.append(torch_eager_ms(args))

    import numpy as np

    torch_median = float(np.median(torch_ms))
    print(f"{args.preset}, B={args.batch_size}: median ms per step over {args.rounds} rounds of {args.repeats} calls")
    print(
        "| XLA flags | convolutions | scan ms/step | vs torch eager | step ms | vs torch eager | paths in the scan (HLO) |"
    )
    print("|---|---|---|---|---|---|---|")
    for setting, results in runs.items():
        for impl in results[0]:
            scan = float(np.median([r[impl]["scan_ms"] for r in results]))
            step = float(np.median([r[impl]["step_ms"] for r in results]))
            paths = ", ".join(f"{k} {v}" for k, v in results[0][impl]["paths"].items())
            print(
                f"| {setting} | {impl} | {scan:.0f} | {torch_median / scan:.2f} | {step:.0f} | "
                f"{torch_median / step:.2f} | {paths} |"
            )
    print(f"| torch_ref eager (best of 1 and 2 threads) | — | {torch_median:.0f} | 1.00 | | | |")
    print(f"load average: {load_start} at the start, {load_average()} at the end")


if __name__ == "__main__":
    main()
