"""`python -m benchmarks.step_profile`: where a training scan's time goes, op by op, from a JAX
profiler trace.

    python -m benchmarks.step_profile                          # dcgan, B=64, the 12 costliest ops
    python -m benchmarks.step_profile --preset small --top 20

Runs one jitted epoch (`steps.train_epoch`, `--steps` steps) twice to compile and warm up, then
once under `jax.profiler.trace`, and sums the durations of the XLA:CPU thunks (fusions, dots,
YNNPACK fusions) in its Perfetto trace by name. It prints, per op, ms per step, its share of the
traced wall time, the HLO op it computes (from the optimized HLO's metadata: which layer, forward
or `transpose(jvp(...))` for the backward pass) and its output shape. Thunks run concurrently on
the CPU's threads, so the shares can add up to more than 100%; and XLA's own (Eigen) dots run
asynchronously: their events end before their work does, which shows instead in the ops that run
beside them (a YNNPACK dot that takes 5 ms alone takes 8-10 ms beside one).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
from pathlib import Path

import jax

from jaxgan import steps
from jaxgan.config import preset

RUNTIME_EVENTS = re.compile(r"^(\$|ThunkExecutor|SlinkyThreadPool|TfrtCpu|PjRt)")  # not ops


def op_durations(trace_dir: Path) -> tuple[collections.Counter, float]:
    """(microseconds per op name, summed over the complete events of the trace's Perfetto file;
    microseconds from the first op's start to the last op's end)."""
    (path,) = sorted(trace_dir.glob("**/perfetto_trace.json.gz"))[-1:]
    events = json.loads(gzip.decompress(path.read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    totals: collections.Counter = collections.Counter()
    start, end = float("inf"), float("-inf")
    for event in events:
        if event.get("ph") == "X" and not RUNTIME_EVENTS.match(event["name"]):
            totals[event["name"]] += event["dur"]
            start, end = min(start, event["ts"]), max(end, event["ts"] + event["dur"])
    return totals, max(end - start, 0.0)


def hlo_ops(hlo: str) -> dict[str, tuple[str, str]]:
    """Instruction name -> (its op_name metadata, its shape) in optimized HLO text."""
    ops = {}
    for match in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) [^\n]*?op_name=\"([^\"]*)\"", hlo, re.M):
        ops[match.group(1)] = (match.group(3), match.group(2))
    return ops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dcgan")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="steps in the traced epoch")
    parser.add_argument("--top", type=int, default=12, help="ops to print, costliest first")
    args = parser.parse_args(argv)
    if min(args.batch_size, args.steps, args.top) < 1:
        parser.error("--batch-size, --steps and --top must be positive")
    config = preset(args.preset).replace(batch_size=args.batch_size)
    images = jax.random.uniform(jax.random.key(1), (args.batch_size * args.steps, 28, 28, 1), minval=-1, maxval=1)
    labels = jax.random.randint(jax.random.key(2), images.shape[:1], 0, 10) if config.conditional else None
    epoch = jax.jit(lambda state, images, labels: steps.train_epoch(state, images, labels))
    state = steps.create_state(config, 0)
    for _ in range(2):
        jax.block_until_ready(epoch(state, images, labels))
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            jax.block_until_ready(epoch(state, images, labels))
        totals, wall_us = op_durations(Path(trace_dir))
    ops = hlo_ops(epoch.lower(state, images, labels).compile().as_text())
    print(f"{args.preset}, B={args.batch_size}: the {args.top} costliest ops of {args.steps} traced steps")
    print("| op | ms/step | share | computes | shape |")
    print("|---|---|---|---|---|")
    for name, us in totals.most_common(args.top):
        what, shape = ops.get(name, ("", ""))
        what = what.removeprefix("jit(<lambda>)/").removeprefix("while/body/").removeprefix("closed_call/")
        print(f"| {name} | {us / 1e3 / args.steps:.2f} | {100 * us / wall_us:.0f}% | {what} | {shape} |")
    print(f"traced: {wall_us / 1e3 / args.steps:.1f} ms per step, of which the ops above")
    print(f"add up to {sum(us for _, us in totals.most_common(args.top)) / 1e3 / args.steps:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
