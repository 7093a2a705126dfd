"""`python -m benchmarks.classifier`: the evaluator's LeNet training step, jaxgan against torch_ref
eager, side by side in one run.

    python -m benchmarks.classifier                       # B=128 (the classifier's), 10 steps per call
    python -m benchmarks.classifier --steps 2 --repeats 1 # a smoke run

jaxgan trains the classifier (`jaxgan.classifier.train_chunk`) in scans of jitted steps, each
drawing its batch on the device; timed here once per implementation of `jaxgan.models.Conv`
(`--impls`: "gemm", jaxgan.convolution's matrix products, the CPU default; "xla",
`lax.conv_general_dilated`, the GPU/TPU default). torch_ref.classifier's eager step (the same
LeNet, Adam, cross-entropy) draws its batch with torch.randperm, at 1 and 2 threads. All run
round-robin on the same random images (`benchmarks.timing.time_interleaved`); the table gives ms
per step and torch's best ms / each one's (above 1 is faster than PyTorch), with the first call
(trace + compile + one chunk) and the load average.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.conv_layers import forced_conv_impl
from benchmarks.timing import Call, load_average, no_sync, time_first_call, time_interleaved
from jaxgan import classifier, models


def jax_call(impl: str, images: jax.Array, labels: jax.Array, args: argparse.Namespace) -> tuple[Call, float]:
    """A Call of `args.steps` classifier steps in one scan with `impl` convolutions, and its first call's seconds."""
    with forced_conv_impl(impl):  # traced inside: the layers read it at trace time
        # a new jitted function per implementation: jit would reuse the other's trace
        chunk = jax.jit(classifier.train_chunk.__wrapped__, static_argnames="batch_size")
        params = classifier.init_params(jax.random.key(0))
        carry = (params, optax.adam(classifier.LEARNING_RATE).init(params))
        key, steps = jax.random.key(1), jnp.arange(args.steps)

        def run():
            return chunk(carry, images, labels, key, steps, batch_size=args.batch_size)

        first_s, _ = time_first_call(run, jax.block_until_ready)
    return Call(run, jax.block_until_ready, per=args.steps), first_s


def torch_call(images: np.ndarray, labels: np.ndarray, threads: int, args: argparse.Namespace) -> tuple[Call, float]:
    """A Call of `args.steps` torch_ref eager steps at `threads` threads, and its first step's seconds."""
    import torch

    from torch_ref import classifier as torch_classifier

    torch.set_num_threads(threads)
    model, optimizer = torch_classifier.create(seed=0)
    x, y = torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(0)

    def one_step():
        idx = torch.randperm(len(x), generator=generator)[: args.batch_size]
        return torch_classifier.train_step(model, optimizer, x[idx], y[idx])

    def run():
        for _ in range(args.steps):
            loss = one_step()
        return loss

    first_s, _ = time_first_call(one_step, no_sync)
    return Call(run, no_sync, per=args.steps, setup=lambda: torch.set_num_threads(threads)), first_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=classifier.BATCH_SIZE)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per contestant, after one warm-up")
    parser.add_argument("--examples", type=int, default=5000, help="random images to draw batches from")
    parser.add_argument(
        "--impls",
        nargs="+",
        default=list(models.CONV_IMPLS[:2]),
        choices=models.CONV_IMPLS,
        help="jaxgan's convolutions",
    )
    args = parser.parse_args(argv)
    if min(args.batch_size, args.steps, args.repeats) < 1 or args.examples < args.batch_size:
        parser.error("--batch-size, --steps and --repeats must be positive and --examples at least --batch-size")
    import torch

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (args.examples, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, classifier.NUM_CLASSES, args.examples)
    load_start = load_average()
    threads = torch.get_num_threads()
    calls, first = {}, {}
    for impl in args.impls:
        calls[f"jaxgan {impl}"], first[f"jaxgan {impl}"] = jax_call(
            impl, jnp.asarray(images), jnp.asarray(labels), args
        )
    for n in sorted({1, threads}):
        calls[f"torch eager {n} thr"], first[f"torch eager {n} thr"] = torch_call(images, labels, n, args)
    timings = time_interleaved(calls, repeats=args.repeats)
    torch.set_num_threads(threads)
    torch_best = min(t.median_s for name, t in timings.items() if name.startswith("torch"))

    print(f"classifier (LeNet), B={args.batch_size}, {args.steps} steps per call, median of {args.repeats} calls")
    print("| contestant | ms/step | vs torch eager | first call s |")
    print("|---|---|---|---|")
    for name, timing in timings.items():
        print(f"| {name} | {1000 * timing.median_s:.1f} | {torch_best / timing.median_s:.2f} | {first[name]:.2f} |")
    print(f"load average: {load_start} at the start, {load_average()} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
