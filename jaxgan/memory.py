"""Will a run fit? Memory checks made before anything is compiled, and after compiling.

`check_memory` refuses, from shapes alone, a config (times K runs) that cannot fit the device or
the machine; `check_compiled` refuses a compiled chunk of steps whose XLA buffers exceed the
memory free now. Both are one-line `UserError`s saying what to make smaller.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp

from jaxgan.cli import UserError
from jaxgan.config import Config
from jaxgan.steps import create_state


def memory_estimate(config: Config, num_examples: int, num_runs: int = 1) -> dict[str, int]:
    """Bytes `num_runs` runs of `config` on `num_examples` images hold at once, at the least, by part.

    state: the GANState twice (before and after a step) and the gradients; data: the images on
    the device and on the host (shared by the runs); step: one chunk's noise and a step's
    activations, forward and backward; grid: a sample grid. From shapes alone (`jax.eval_shape`):
    nothing is allocated.
    """
    abstract = jax.eval_shape(lambda: create_state(config, 0))

    def nbytes(tree) -> int:
        return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))

    if config.arch == "dcgan":  # activations per image: G (BatchNorm keeps pre and post) and D
        g_act = 4 * config.g_features * 49 + 2 * config.g_features * 196 + config.image_size
        d_act = config.d_features * 196 + 4 * config.d_features * 49 + 1
    else:
        g_act, d_act = sum(config.g_hidden) + config.image_size, sum(config.d_hidden) + 1
    batch, f32 = config.batch_size, 4
    chunk = max(1, min(config.log_every, num_examples // batch))
    # G runs twice per step (for D, then for G) and D three times (real, fake, and for G).
    per_image = 2 * config.latent_dim + 2 * g_act + 3 * (config.image_size + d_act)
    return {
        "state": num_runs * (2 * nbytes(abstract) + nbytes((abstract.g_params, abstract.d_params))),
        "data": 2 * num_examples * config.image_size * f32,
        "step": num_runs * f32 * (2 * chunk * batch * config.latent_dim + 2 * batch * per_image),
        "grid": num_runs * f32 * config.grid_size**2 * (config.latent_dim + g_act),
    }


def memory_available() -> tuple[int, str]:
    """(bytes, whose) a run may use: the first accelerator's memory limit, or the machine's RAM on CPU."""
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"the {device.platform.upper()} device's"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's"


def gigabytes(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_memory(config: Config, num_examples: int, num_runs: int = 1) -> None:
    """UserError in one line when `memory_estimate` is more than `memory_available`: refused before
    anything is compiled or allocated."""
    parts = memory_estimate(config, num_examples, num_runs)
    need, (have, whose) = sum(parts.values()), memory_available()
    if need > have:
        detail = ", ".join(f"{name} {gigabytes(n)}" for name, n in sorted(parts.items(), key=lambda kv: -kv[1]))
        runs = "this config needs" if num_runs == 1 else f"{num_runs} runs of this config need"
        raise UserError(
            f"{runs} at least {gigabytes(need)} of memory ({detail}), more than {whose} "
            f"{gigabytes(have)}: use smaller --g-hidden, --d-hidden, --latent-dim, --batch-size or a smaller dataset"
            + ("" if num_runs == 1 else ", or train fewer runs at once")
        )


def free_memory(device: jax.Device) -> int | None:
    """Bytes free on `device` (an accelerator's allocator, or the host's MemAvailable), None if unknown."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def out_of_memory_advice(num_runs: int) -> str:
    if num_runs == 1:
        return "the device ran out of memory: use a smaller --batch-size, --g-hidden, --d-hidden or --log-every"
    return (
        f"the device ran out of memory training {num_runs} runs at once: train fewer at once (split the list "
        "over several --workdir) or use a smaller --batch-size"
    )


def check_fits(needed: int, free: int | None, num_runs: int, per_device: int, platform: str) -> None:
    """UserError, with what to do, when `needed` bytes per device (XLA's buffers for a chunk of
    steps of `per_device` runs) exceed `free`."""
    if free is None or needed <= free:
        return
    if num_runs == 1:
        raise UserError(
            f"one chunk of steps needs about {needed / 2**30:.2f} GiB of {platform} memory but "
            f"{free / 2**30:.2f} GiB is free: use a smaller --batch-size or --log-every"
        )
    per_run = needed / per_device
    fit = max(1, int(free // per_run))
    raise UserError(
        f"{num_runs} runs at once need about {needed / 2**30:.2f} GiB per {platform} device "
        f"({per_run / 2**20:,.0f} MiB a run) but {free / 2**30:.2f} GiB is free: train at most {fit} at once "
        "(split the list over several --workdir) or use a smaller --batch-size"
    )


def check_compiled(run_steps, stacked, data: tuple, chunk: int, batch_size: int, num_runs: int, num_devices: int):
    """UserError (`check_fits`) when XLA's buffers for one chunk of steps exceed the free memory.
    run_steps: the jitted steps; stacked: the state (K, ...); data: (images,) or (images, labels).
    Compiling here is not wasted: jax caches the executable for the first call."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), stacked)
    indices = jax.ShapeDtypeStruct((num_runs, chunk, batch_size), jnp.int32)
    try:
        stats = run_steps.lower(abstract, data[0], indices, *data[1:]).compile().memory_analysis()
    except jax.errors.JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" in str(err):
            raise UserError(out_of_memory_advice(num_runs)) from None
        raise
    if stats is None:
        return
    needed = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    needed -= stats.alias_size_in_bytes
    device = jax.local_devices()[0]
    check_fits(needed, free_memory(device), num_runs, num_runs // num_devices, device.platform.upper())
