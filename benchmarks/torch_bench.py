"""torch_ref's side: the eager step, torch.compile of it where that works, and its memory."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import sys
import time

import numpy as np
import torch

import torch_ref
from benchmarks.timing import Call, Timing, no_sync, time_calls, time_first_call
from jaxgan.config import Config


@dataclasses.dataclass(frozen=True)
class TorchPrepared:
    """torch_ref's eager step ready to time with `time_interleaved`."""

    call: Call  # steps_per_call steps; timings per step
    first_call_s: float  # the first step: lazy initialisation
    peak_bytes: int  # params + Adam state + the step's allocation high-water mark


@dataclasses.dataclass(frozen=True)
class TorchResult:
    step: Timing | None  # seconds per step; None when it failed
    compile_s: float | None  # first call: dynamo + inductor
    error: str | None = None  # why torch.compile is missing, in one line


def state_bytes(state: torch_ref.TorchGAN) -> int:
    """Bytes of both nets' parameters and both Adam states."""
    tensors = [p for m in (state.generator, state.discriminator) for p in m.parameters()]
    for opt in (state.g_opt, state.d_opt):
        tensors += [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors)


@contextlib.contextmanager
def native_stderr_silenced():
    """File descriptor 2 sent to /dev/null while the block runs, then restored: torch.profiler's
    C++ side (kineto) prints a profiler_start and a profiler_stop line there on every use."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def step_allocation_peak(state: torch_ref.TorchGAN, step_fn) -> int:
    """High-water mark of the memory a step allocates beyond what it started with, from torch.profiler.

    Measured from `state` without gradients (as `zero_grad` leaves it), so every block freed
    during the step was allocated during it and the profiler knows its size.
    """
    from torch.profiler import ProfilerActivity, profile

    state.g_opt.zero_grad(set_to_none=True)
    state.d_opt.zero_grad(set_to_none=True)
    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step_fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    running = itertools.accumulate(e.self_cpu_memory_usage for e in events)
    return max(running, default=0)


def step_extras(config: Config, batch_size: int, labels: torch.Tensor | None) -> dict:
    """torch_ref.train_step's inputs beyond images and noise, fresh for one step as jaxgan draws them
    on the device: the batch's `labels` (B,) and fake labels (conditional), penalty weights (wgan-gp)."""
    extras = {}
    if config.conditional:
        extras["labels"] = labels
        extras["fake_labels"] = tuple(torch.randint(0, config.num_classes, (batch_size,)) for _ in range(2))
    if config.loss == "wgan-gp":
        extras["gp_eps"] = torch.rand(batch_size)
    return extras


def make_step(
    state: torch_ref.TorchGAN,
    images: torch.Tensor,
    batch_size: int,
    step_fn=torch_ref.train_step,
    labels: torch.Tensor | None = None,
):
    """A closure running one step on the next shuffled batch, with fresh noise (and, as the config
    needs, the batch's labels, fresh fake labels, penalty weights), as jaxgan does on the device."""
    generator = torch.Generator().manual_seed(0)
    config = state.config
    latent_dim = config.latent_dim

    def one_step():
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
        z_d, z_g = torch.randn(batch_size, latent_dim), torch.randn(batch_size, latent_dim)
        extras = step_extras(config, batch_size, None if labels is None else labels[idx])
        return step_fn(state, images[idx], z_d, z_g, **extras)

    return one_step


def prepare_eager(
    config: Config, images: np.ndarray, *, steps_per_call: int, threads: int, labels: np.ndarray | None = None
) -> TorchPrepared:
    """torch_ref.train_step, eager, at `threads` threads, on images (N, 28, 28, 1) float32 in [-1, 1] in one
    tensor (and their (N,) labels, for a conditional config)."""
    torch.set_num_threads(threads)
    state = torch_ref.create_state(config, 0)
    targets = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64))
    one_step = make_step(state, torch.from_numpy(images).permute(0, 3, 1, 2), config.batch_size, labels=targets)
    first_call_s, _ = time_first_call(one_step, no_sync)
    peak = state_bytes(state) + step_allocation_peak(state, one_step)

    def run_steps():
        for _ in range(steps_per_call):
            metrics = one_step()
        return metrics

    call = Call(run_steps, no_sync, per=steps_per_call, setup=lambda: torch.set_num_threads(threads))
    return TorchPrepared(call, first_call_s, peak)


def bench_compiled(
    config: Config,
    images: np.ndarray,
    *,
    steps_per_call: int,
    repeats: int,
    max_compile_s: float,
    labels: np.ndarray | None = None,
) -> TorchResult:
    """torch.compile(torch_ref.train_step) (default mode, inductor): the time of its first call and per step.

    Any failure is caught and reported. When the first call takes longer than max_compile_s,
    one more call is timed instead of `repeats` (a recompile would otherwise dominate the run).
    """
    try:
        torch._dynamo.reset()
        state = torch_ref.create_state(config, 0)
        compiled = torch.compile(torch_ref.train_step)
        targets = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64))
        images_t = torch.from_numpy(images).permute(0, 3, 1, 2)
        one_step = make_step(state, images_t, config.batch_size, compiled, labels=targets)
        compile_s, _ = time_first_call(one_step, no_sync)

        def run_steps():
            for _ in range(steps_per_call):
                metrics = one_step()
            return metrics

        if compile_s > max_compile_s:
            start = time.perf_counter()
            run_steps()
            seconds = time.perf_counter() - start
            timing = Timing(seconds, seconds, seconds, 1).per(steps_per_call)
        else:
            timing = time_calls(run_steps, no_sync, repeats=repeats).per(steps_per_call)
        return TorchResult(timing, compile_s)
    except Exception as err:  # report any compiler failure as data, not a crash
        return TorchResult(None, None, error=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
