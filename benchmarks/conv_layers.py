"""`python -m benchmarks.conv_layers`: the DCGAN's training epoch with XLA's convolutions against
jaxgan's convolutions as matrix products, side by side in one run.

    python -m benchmarks.conv_layers                                   # dcgan at B=64, 10 steps per epoch
    python -m benchmarks.conv_layers --preset tiny-dcgan --batch-size 32 --steps 20

jaxgan.models.Conv / ConvTranspose compute PyTorch's Conv2d / ConvTranspose2d as matrix products
(`jaxgan.convolution`: space-to-depth, then an unfolding or every tap's products, shifted and
summed). The alternative is flax's nn.Conv / nn.ConvTranspose (XLA's convolution op), with the
same parameters; `xla_layers()` swaps them in. Both variants train the same state on the same
random images with one jitted `steps.train_epoch` (a lax.scan) each, timed round-robin; the
printed ratio is xla seconds / jaxgan seconds per step, with the first call (trace + compile + run)
and the largest difference of the first epoch's metrics.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks.timing import Call, load_average, time_first_call, time_interleaved
from jaxgan import models, steps
from jaxgan.config import preset


def xla_conv(features: int, kernel: int, stride: int, padding: int, name: str) -> nn.Conv:
    """models.torch_conv as flax's nn.Conv: the same kernel (kernel, kernel, in, features)."""
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=False,
        kernel_init=models.dcgan_kernel_init,
        name=name,
    )


def xla_conv_transpose(features: int, kernel: int, stride: int, padding: int, name: str) -> nn.ConvTranspose:
    """models.torch_conv_transpose as flax's nn.ConvTranspose: PyTorch's is the gradient of Conv2d
    (input dilated by the stride, padded by kernel - 1 - padding, flipped kernel: transpose_kernel)."""
    edge = kernel - 1 - padding
    return nn.ConvTranspose(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((edge, edge), (edge, edge)),
        use_bias=False,
        transpose_kernel=True,
        kernel_init=models.dcgan_kernel_init,
        name=name,
    )


@contextlib.contextmanager
def xla_layers() -> Iterator[None]:
    """Within the block, the DCGAN modules build flax's XLA convolutions instead of jaxgan's."""
    saved = models.torch_conv, models.torch_conv_transpose
    models.torch_conv, models.torch_conv_transpose = xla_conv, xla_conv_transpose
    try:
        yield
    finally:
        models.torch_conv, models.torch_conv_transpose = saved


@contextlib.contextmanager
def forced_conv_impl(impl: str) -> Iterator[None]:
    """Within the block, `models.Conv` and `ConvTranspose` compute with `impl` (one of
    models.CONV_IMPLS) on every backend: what they read at trace time, so trace inside it."""
    saved = models.conv_impl
    models.conv_impl = lambda backend=None: impl
    try:
        yield
    finally:
        models.conv_impl = saved


def compiled_epoch(layers, config, images: jax.Array, labels: jax.Array | None) -> tuple[Call, float, dict]:
    """(a Call of one jitted epoch of `config` built inside `layers()`, its first call's seconds,
    the first epoch's metrics (steps,) per name)."""
    with layers():
        # a new function per variant, traced inside the block: jit would reuse an earlier trace
        epoch = jax.jit(lambda state, images, labels: steps.train_epoch(state, images, labels))
        state = steps.create_state(config, 0)
        first_s, (_, metrics) = time_first_call(lambda: epoch(state, images, labels), jax.block_until_ready)
    return Call(lambda: epoch(state, images, labels), jax.block_until_ready), first_s, metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dcgan", help="a DCGAN preset (default dcgan)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per variant, after one warm-up")
    args = parser.parse_args(argv)
    config = preset(args.preset).replace(batch_size=args.batch_size)
    if config.arch != "dcgan":
        parser.error(f"--preset {args.preset} is an MLP; choose a DCGAN preset (dcgan, tiny-dcgan)")
    images = jax.random.uniform(jax.random.key(1), (args.batch_size * args.steps, 28, 28, 1), minval=-1, maxval=1)
    labels = jax.random.randint(jax.random.key(2), images.shape[:1], 0, 10) if config.conditional else None
    load_start = load_average()

    calls, first, metrics = {}, {}, {}
    for name, layers in (("xla conv", xla_layers), ("jaxgan gemm", contextlib.nullcontext)):
        calls[name], first[name], metrics[name] = compiled_epoch(layers, config, images, labels)
    gap = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(metrics["xla conv"]), jax.tree.leaves(metrics["jaxgan gemm"]), strict=True)
    )
    timings = time_interleaved(calls, repeats=args.repeats)

    print(f"{args.preset}, B={args.batch_size}, {args.steps} steps per epoch, median of {args.repeats} epochs")
    print("| layers | ms/step | images/s | first call s |")
    print("|---|---|---|---|")
    for name, timing in timings.items():
        ms = 1000 * timing.median_s / args.steps
        print(f"| {name} | {ms:.0f} | {args.batch_size * args.steps / timing.median_s:.0f} | {first[name]:.1f} |")
    ratio = timings["xla conv"].median_s / timings["jaxgan gemm"].median_s
    print(f"jaxgan gemm / xla conv speed: {ratio:.2f}x; first epoch's metrics differ by {gap:.2g}")
    print(f"load average: {load_start} at the start, {load_average()} at the end")


if __name__ == "__main__":
    main()
