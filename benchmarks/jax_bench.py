"""jaxgan's side: a jitted step per call, a whole epoch per call (lax.scan), XLA's cost and memory analysis,
and a measured matmul peak of the same device (the roofline)."""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
from importlib import metadata

import jax
import jax.numpy as jnp

from benchmarks.timing import Call, cpu_model, load_average, slug, time_calls, time_first_call
from jaxgan import steps
from jaxgan.config import Config


@dataclasses.dataclass(frozen=True)
class JaxPrepared:
    """jaxgan compiled and ready to time: `calls` for `time_interleaved`, plus what the first calls measured."""

    calls: dict[str, Call]  # "jax_step": steps_per_call jitted steps; "jax_scan": one epoch; both per step
    compile_s: float  # first call of the per-step function: trace, lower, compile, run once
    scan_compile_s: float  # first call of the epoch function
    flops_per_step: float  # XLA's cost analysis of the compiled step
    peak_bytes: int  # XLA's buffers for one step: arguments + outputs + temporaries - donated


def device_name() -> str:
    """A file-name-safe name of the device jax runs on, e.g. cpu-amd-epyc-2core or gpu-nvidia-h100-80gb-hbm3."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"cpu-{slug(cpu_model())}-{os.cpu_count()}core"
    return f"{device.platform}-{slug(device.device_kind)}"


def run_record(script: str, argv: list[str], load_start: list[float] | None) -> dict:
    """The fields every benchmark's JSON starts with: where and with what it ran, the command that
    reproduces it, when, and the load averages before and now (what else ran on the machine)."""
    return {
        "device": device_name(),
        "device_kind": jax.devices()[0].device_kind,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "versions": {"python": sys.version.split()[0], "jax": jax.__version__, "torch": metadata.version("torch")},
        "command": " ".join(["python -m benchmarks." + script, *argv]),
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "load_average_start": load_start,
        "load_average_end": load_average(),
    }


def matmul_peak_flops(n: int, repeats: int) -> float:
    """FLOP/s of a jitted (n, n) @ (n, n) float32 matmul: the practical peak of this device."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    timing = time_calls(lambda: dot(a, b), jax.block_until_ready, repeats=repeats, warmup=2)
    return 2 * n**3 / timing.min_s  # the best repeat: the least disturbed by other work


def step_on_device(
    state: steps.GANState, images: jax.Array, idx: jax.Array, labels: jax.Array | None = None
) -> tuple[steps.GANState, steps.Metrics]:
    """One step on the batch images[idx] (and labels[idx], conditional): the device-resident data path, one step per call."""
    return steps.train_step_keyed(state, images[idx], None if labels is None else labels[idx])


def cost_of_step(step, state: steps.GANState, images: jax.Array, idx: jax.Array, labels=None) -> tuple[float, int]:
    """(FLOPs, peak buffer bytes) of the jitted `step_on_device` at these shapes, from XLA's analyses.

    Called after the first call, so the compiled executable comes from jax's cache. The peak is
    the step's own buffers (arguments + outputs + temporaries - donated), not the resident images.
    """
    compiled = step.lower(state, images, idx, labels).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    mem = compiled.memory_analysis()
    if mem is None:
        return float(cost.get("flops", 0.0)), 0
    own = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
    return float(cost.get("flops", 0.0)), int(own - images.nbytes)


def prepare(config: Config, images: jax.Array, *, steps_per_call: int, labels: jax.Array | None = None) -> JaxPrepared:
    """Compile jaxgan at config.batch_size on device-resident images (N, 28, 28, 1) (and their (N,)
    labels, for a conditional config) and time the first calls.

    jax_step: `steps_per_call` calls of the jitted step, state donated, synchronised once at the end.
    jax_scan: one jitted `train_epoch` call (N // B steps), state donated.
    """
    batch_size = config.batch_size
    num_examples = images.shape[0]
    indices = steps.epoch_batch_indices(jax.random.key(0), 0, num_examples, batch_size)  # (N // B, B)
    indices = list(jnp.resize(indices, (steps_per_call, batch_size)))  # cycle when N // B is short; B each
    step = jax.jit(step_on_device, donate_argnums=0)
    epoch = jax.jit(steps.train_epoch, donate_argnums=0)
    holder = {"step": steps.create_state(config, 0), "scan": steps.create_state(config, 0)}
    labels = labels if config.conditional else None

    def run_steps():
        state = holder["step"]
        for idx in indices:
            state, metrics = step(state, images, idx, labels)
        holder["step"] = state
        return metrics

    def first_step():
        holder["step"], metrics = step(holder["step"], images, indices[0], labels)
        return metrics

    def run_epoch():
        holder["scan"], metrics = epoch(holder["scan"], images, labels)
        return metrics

    compile_s, _ = time_first_call(first_step, jax.block_until_ready)
    flops, peak = cost_of_step(step, holder["step"], images, indices[0], labels)
    scan_compile_s, _ = time_first_call(run_epoch, jax.block_until_ready)
    calls = {
        "jax_step": Call(run_steps, jax.block_until_ready, per=steps_per_call),
        "jax_scan": Call(run_epoch, jax.block_until_ready, per=num_examples // batch_size),
    }
    return JaxPrepared(calls, compile_s, scan_compile_s, flops, peak)
