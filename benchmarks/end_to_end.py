"""One training epoch including the input pipeline.

jaxgan: the data path of `jaxgan.train.train_and_evaluate` (images device-resident, the epoch's shuffle
computed on the device, `run_epoch`'s jitted chunks, metrics to the host once per chunk).
Seeds: a `Dataset` with a per-sample transform (ToTensor + Normalize, written in plain torch)
through `torch.utils.data.DataLoader(batch_size=64, shuffle=True)` feeding torch_ref's step.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import torch
from tqdm.auto import tqdm

import torch_ref
from benchmarks import torch_bench
from benchmarks.timing import Call, Timing, no_sync, time_interleaved
from jaxgan import steps, train
from jaxgan.config import Config


@dataclasses.dataclass(frozen=True)
class EndToEnd:
    jax_epoch: Timing  # seconds per epoch
    torch_epoch: Timing  # at the fastest of the thread counts tried
    torch_threads: int
    jax_steps: int  # steps per epoch (jaxgan drops the last partial batch; the seeds keep it)
    torch_steps: int


class SeedsMNIST(torch.utils.data.Dataset):
    """The seeds' `datasets.MNIST(transform=Compose([ToTensor(), Normalize((0.5,), (0.5,))]))`:
    uint8 pixels, transformed one sample at a time into a (1, 28, 28) float tensor in [-1, 1]."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray):
        self.pixels = torch.from_numpy(pixels[..., 0])  # (N, 28, 28) uint8
        self.labels = labels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.pixels[i].unsqueeze(0).to(torch.float32).div(255.0)  # ToTensor
        return x.sub(0.5).div(0.5), int(self.labels[i])  # Normalize


def bench(config: Config, pixels: np.ndarray, labels: np.ndarray, *, repeats: int, threads: list[int]) -> EndToEnd:
    """Epoch wall time of both pipelines at config.batch_size on uint8 pixels (N, 28, 28, 1).

    The seeds' loop runs at each of torch's `threads` counts; the fastest is reported.
    The contestants' epochs are timed round-robin (`time_interleaved`) after one warm-up each.
    """
    # jaxgan, as train_and_evaluate runs an epoch.
    images = jax.device_put((pixels.astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5))
    num_examples, batch_size = len(pixels), config.batch_size
    run_steps = jax.jit(train.RUNS_STEPS["map"], donate_argnums=0)
    batch_indices = jax.jit(steps.runs_batch_indices, static_argnums=(2, 3))
    chunk = min(config.log_every, num_examples // batch_size)
    holder = {"state": steps.stack([steps.create_state(config, 0)], config), "epoch": 0}  # a run of one
    data = (images, jax.device_put(labels.astype(np.int32))) if config.conditional else (images,)

    def jax_epoch():
        holder["epoch"] += 1
        indices = batch_indices(holder["state"].key, holder["epoch"] - 1, num_examples, batch_size)  # (1, steps, B)
        first_step = (holder["epoch"] - 1) * (num_examples // batch_size)
        with tqdm(disable=True) as bar:
            holder["state"], means, _ = train.run_epoch(
                holder["state"], data, indices, run_steps, epoch=holder["epoch"], first_step=first_step, chunk=chunk,
                bar=bar, active={0},
            )  # fmt: skip
        return means[0]  # host floats: run_epoch has synchronised

    # The seeds' train.
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(SeedsMNIST(pixels, labels), batch_size=batch_size, shuffle=True)
    state = torch_ref.create_state(config, 0)

    def torch_epoch():
        losses = []
        for real, digits in loader:
            batch = real.shape[0]
            z_d, z_g = torch.randn(batch, config.latent_dim), torch.randn(batch, config.latent_dim)
            extras = torch_bench.step_extras(config, batch, digits)
            losses.append(torch_ref.train_step(state, real, z_d, z_g, **extras)["d_loss"])
        return float(torch.stack(losses).mean())

    calls = {"jax": Call(jax_epoch, no_sync)}
    for n in threads:
        calls[f"torch_{n}"] = Call(torch_epoch, no_sync, setup=functools.partial(torch.set_num_threads, n))
    timings = time_interleaved(calls, repeats=repeats)  # the same moments of a shared machine for all
    best = min(threads, key=lambda n: timings[f"torch_{n}"].median_s)
    return EndToEnd(timings["jax"], timings[f"torch_{best}"], best, num_examples // batch_size, len(loader))
