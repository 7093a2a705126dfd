"""`python -m benchmarks.dcgan_layers`: each of the DCGAN's six convolutions alone, forward and
forward + backward, jaxgan's against torch's, side by side in one run.

    python -m benchmarks.dcgan_layers                      # dcgan's layers at B=64
    python -m benchmarks.dcgan_layers --preset tiny-dcgan --batch-size 8 --repeats 2

Each layer is `jaxgan.models.Conv` / `ConvTranspose` with one implementation of
`models.CONV_IMPLS` (`--impls`; default gemm, jaxgan.convolution's matrix products, and xla,
`lax.conv_general_dilated`), jitted: the forward pass, and the gradient of sum(sin(layer(x)))
with respect to the input and the kernel (what a training step computes). torch's is
torch.nn.functional.conv2d / conv_transpose2d, eager, at torch's default threads, the same
kernel. Shapes are the unconditional DCGAN's (`layers`). Everything is timed round-robin
(`benchmarks.timing.time_interleaved`); the table gives milliseconds per call and torch's ms /
gemm's (above 1: jaxgan is faster), with the load average.
"""

from __future__ import annotations

import argparse
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import Call, load_average, no_sync, time_interleaved
from jaxgan import models
from jaxgan.config import preset


class Layer(NamedTuple):
    name: str
    transposed: bool
    channels: int  # in
    features: int  # out
    kernel: int
    stride: int
    padding: int
    size: int  # input height and width


def layers(config) -> list[Layer]:
    """The six convolutions of the unconditional DCGAN of `config`, generator first."""
    ngf, ndf = config.g_features, config.d_features
    return [
        Layer("G conv_transpose_0", True, config.latent_dim, 2 * ngf, 7, 1, 0, 1),
        Layer("G conv_transpose_1", True, 2 * ngf, ngf, 4, 2, 1, 7),
        Layer("G conv_transpose_2", True, ngf, 1, 4, 2, 1, 14),
        Layer("D conv_0", False, 1, ndf, 4, 2, 1, 28),
        Layer("D conv_1", False, ndf, 2 * ndf, 4, 2, 1, 14),
        Layer("D conv_2", False, 2 * ndf, 1, 7, 1, 0, 7),
    ]


def kernel_shape(layer: Layer) -> tuple[int, int, int, int]:
    """jaxgan's kernel of `layer`: (k, k, in, out) for Conv, (k, k, out, in) for ConvTranspose."""
    io = (layer.features, layer.channels) if layer.transposed else (layer.channels, layer.features)
    return (layer.kernel, layer.kernel, *io)


def out_size(layer: Layer) -> int:
    k, s, p, n = layer.kernel, layer.stride, layer.padding, layer.size
    return (n - 1) * s - 2 * p + k if layer.transposed else (n + 2 * p - k) // s + 1


def jax_calls(layer: Layer, impl: str, x: jax.Array, kernel: jax.Array) -> dict[str, Call]:
    """Forward and forward + backward of `layer` with `impl`, jitted and compiled, as Calls."""
    module_type = models.ConvTranspose if layer.transposed else models.Conv
    module = module_type(layer.features, layer.kernel, layer.stride, layer.padding, impl=impl)

    def forward(x, kernel):
        return module.apply({"params": {"kernel": kernel}}, x)

    backward = jax.jit(jax.grad(lambda x, kernel: jnp.sum(jnp.sin(forward(x, kernel))), argnums=(0, 1)))
    forward = jax.jit(forward)
    jax.block_until_ready((forward(x, kernel), backward(x, kernel)))  # compile outside the timing
    return {
        "fwd": Call(lambda: forward(x, kernel), jax.block_until_ready),
        "fwd+bwd": Call(lambda: backward(x, kernel), jax.block_until_ready),
    }


def torch_calls(layer: Layer, x: np.ndarray, kernel: np.ndarray) -> dict[str, Call]:
    """The same layer in torch.nn.functional, eager: forward, and forward + backward."""
    import torch

    from jaxgan.convert import torch_weight

    functional = torch.nn.functional.conv_transpose2d if layer.transposed else torch.nn.functional.conv2d
    weight = torch.from_numpy(torch_weight(kernel)).requires_grad_()
    inputs = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_()

    def forward():
        with torch.no_grad():
            return functional(inputs, weight, stride=layer.stride, padding=layer.padding)

    def backward():
        return torch.autograd.grad(
            torch.sin(functional(inputs, weight, stride=layer.stride, padding=layer.padding)).sum(), (inputs, weight)
        )

    backward()
    return {"fwd": Call(forward, no_sync), "fwd+bwd": Call(backward, no_sync)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dcgan", help="a DCGAN preset (default dcgan)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per contestant, after one warm-up")
    parser.add_argument("--impls", nargs="+", default=["gemm", "xla"], choices=models.CONV_IMPLS)
    args = parser.parse_args(argv)
    config = preset(args.preset)
    if config.arch != "dcgan":
        parser.error(f"--preset {args.preset} is an MLP; choose a DCGAN preset (dcgan, tiny-dcgan)")
    if args.batch_size < 1 or args.repeats < 1:
        parser.error("--batch-size and --repeats must be positive")

    rng = np.random.default_rng(0)
    load_start = load_average()
    calls: dict[str, Call] = {}
    for layer in layers(config):
        x = rng.standard_normal((args.batch_size, layer.size, layer.size, layer.channels)).astype(np.float32)
        kernel = (0.02 * rng.standard_normal(kernel_shape(layer))).astype(np.float32)
        for impl in args.impls:
            for pass_, call in jax_calls(layer, impl, jnp.asarray(x), jnp.asarray(kernel)).items():
                calls[f"{layer.name}|{impl}|{pass_}"] = call
        for pass_, call in torch_calls(layer, x, kernel).items():
            calls[f"{layer.name}|torch|{pass_}"] = call
    timings = time_interleaved(calls, repeats=args.repeats)
    ms = {name: 1000 * t.median_s for name, t in timings.items()}

    contestants = [*args.impls, "torch"]
    print(f"{args.preset}'s convolutions, B={args.batch_size}, ms per call, median of {args.repeats}")
    header = [f"{c} {p}" for c in contestants for p in ("fwd", "fwd+bwd")]
    print("| layer | " + " | ".join(header) + " | torch / gemm fwd+bwd |")
    print("|---" * (len(header) + 2) + "|")
    for layer in layers(config):
        shape = f"{layer.size}x{layer.size}x{layer.channels} -> {out_size(layer)}x{out_size(layer)}x{layer.features}"
        cells = [f"{ms[f'{layer.name}|{c}|{p}']:.2f}" for c in contestants for p in ("fwd", "fwd+bwd")]
        ratio = (
            f"{ms[f'{layer.name}|torch|fwd+bwd'] / ms[f'{layer.name}|gemm|fwd+bwd']:.2f}"
            if "gemm" in args.impls
            else "—"
        )
        print(f"| {layer.name}, {shape} | " + " | ".join(cells) + f" | {ratio} |")
    print(f"load average: {load_start} at the start, {load_average()} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
