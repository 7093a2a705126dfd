"""Devices with JAX's own machinery: 1-D device meshes, shardings, `jax.distributed`.

`Placement` says where the loop's arrays live. The loop trains a stacked state with a leading
run axis (K runs; one run is K = 1). Single-device (the default for one run) it is plain `jax.jit`
on the default device. A group of K runs is spread over the local devices (axis "runs"), each
device training its own runs with no communication. With `data_parallel` (one run) it builds a
1-D `jax.sharding.Mesh` over every device of every process (axis "data"):

- the state (params, optimizer states, step, key; any field GANState gains) and the
  dataset (and its labels) are replicated on every device;
- each epoch's batch indices (K, steps, B) are sharded along B, so every device gathers
  its own B / num_devices images of each batch from its replica of the dataset;
- the same pure `steps.runs_steps` runs under `jax.jit` with these in/out shardings:
  XLA's partitioner inserts the all-reduce of the gradients. No per-device Python.

Results equal the single-device run's up to float32 reduction order: every random number
is drawn from the state's key and step, whatever the sharding (threefry is partitionable).
That includes the DCGAN's BatchNorm: its batch statistics are means over the batch axis of
the global (sharded) batch, so XLA all-reduces them across devices and they are the
single-device statistics of the whole batch (not per-device ones, as torch's DataParallel
without SyncBatchNorm would have).

Several hosts (or processes): `initialize_distributed` calls `jax.distributed.initialize`
before anything touches a device; then `jax.devices()` is every process's devices and the
mesh spans them all. Every process computes the same batch indices from the same key, and
each process's devices read only their slice of each batch; `check_same_data` verifies
that every process loaded the same images. Only process 0 writes the workdir's files.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxgan.cli import UserError

AXIS = "data"  # the batch axis of a data-parallel run
RUNS_AXIS = "runs"  # the run axis of a group spread over devices
ENV_PREFIX = "JAXGAN_"  # JAXGAN_COORDINATOR_ADDRESS, JAXGAN_NUM_PROCESSES, JAXGAN_PROCESS_ID


class ParallelError(UserError, ValueError):
    """A data-parallel or multi-process setting that cannot work; the message is one line."""


def initialize_distributed(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """`jax.distributed.initialize`, with unset arguments taken from JAXGAN_* environment variables.

    With none given anywhere, JAX detects the cluster itself (SLURM, Open MPI, Kubernetes,
    Cloud TPU). Must run before anything touches a device. On CPU the cross-process
    collectives go over gloo (TCP).
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_PREFIX + "COORDINATOR_ADDRESS") or None
    if num_processes is None and os.environ.get(ENV_PREFIX + "NUM_PROCESSES"):
        num_processes = int(os.environ[ENV_PREFIX + "NUM_PROCESSES"])
    if process_id is None and os.environ.get(ENV_PREFIX + "PROCESS_ID"):
        process_id = int(os.environ[ENV_PREFIX + "PROCESS_ID"])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only used by CPU devices
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def is_primary() -> bool:
    """True in process 0, the one process that writes files and logs."""
    return jax.process_index() == 0


def check_batch_size(batch_size: int, num_devices: int) -> None:
    """ParallelError unless the global batch splits evenly over the devices."""
    if batch_size % num_devices:
        raise ParallelError(
            f"--batch-size {batch_size} does not divide by the {num_devices} devices of --data-parallel; "
            f"use a multiple of {num_devices}, e.g. {max(num_devices, batch_size // num_devices * num_devices)}"
        )


def images_checksum(images: np.ndarray) -> int:
    """CRC-32 of the images' bytes (dtype and shape included)."""
    header = f"{images.dtype.str}{images.shape}".encode()
    return zlib.crc32(np.ascontiguousarray(images).tobytes(), zlib.crc32(header))


def check_same_data(images: np.ndarray) -> None:
    """ParallelError unless every process loaded the very same images (no-op in one process)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    crcs = multihost_utils.process_allgather(np.uint32(images_checksum(images)))
    if len(set(np.asarray(crcs).tolist())) != 1:
        raise ParallelError(
            f"the processes loaded different images (CRC-32 per process: {', '.join(f'{int(c):08x}' for c in crcs)}); "
            "every process must see the same dataset (same --dataset and --data-dir contents)"
        )


class Placement:
    """Where the training loop's arrays live, and its jitted functions with matching shardings.

    The loop's state has a leading run axis (K runs; a single run is K = 1, `jaxgan.steps.stack`).

    - data_parallel False, K runs: spread over a 1-D mesh (axis "runs") of the largest number of
      local devices that divides K (`devices_for`), the state and batch indices split along the run
      axis, the images on every device; each device trains its own runs, with no collective. One
      device (and every single run): plain `jax.jit` on the default device.
    - data_parallel True (one run, K = 1): a 1-D mesh over `devices` (default: every device of every
      process, axis "data"), the state and images replicated, each step's batch split along B.
    """

    def __init__(self, data_parallel: bool = False, num_runs: int = 1, devices: list[jax.Device] | None = None):
        self.data_parallel = data_parallel
        self.num_runs = num_runs
        self.mesh = None
        if data_parallel:
            if num_runs != 1:
                raise ParallelError(
                    "--data-parallel shards one run's batches; a group spreads its runs over the devices instead: "
                    "drop --data-parallel"
                )
            devices = list(jax.devices() if devices is None else devices)
            self.mesh = Mesh(np.array(devices), (AXIS,))
            self.num_devices = len(devices)
            self.state_sharding = NamedSharding(self.mesh, P())
            self.batch_sharding = NamedSharding(self.mesh, P(None, None, AXIS))  # (K, steps, B) split along B
            self.replicated = NamedSharding(self.mesh, P())
            return
        if jax.process_count() > 1:
            raise ParallelError(
                f"{jax.process_count()} processes need --data-parallel (without it each would train alone)"
                if num_runs == 1
                else "a group of runs trains in one process (its runs are spread over its devices)"
            )
        devices = list(jax.local_devices() if devices is None else devices)
        self.num_devices = devices_for(num_runs, len(devices))
        if self.num_devices > 1:
            self.mesh = Mesh(np.array(devices[: self.num_devices]), (RUNS_AXIS,))
            self.state_sharding = self.batch_sharding = NamedSharding(self.mesh, P(RUNS_AXIS))
            self.replicated = NamedSharding(self.mesh, P())

    def describe(self) -> str:
        platform = jax.devices()[0].platform.upper()
        if self.mesh is None:
            return platform
        if self.data_parallel:
            processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
            return f"{self.num_devices} {platform} devices{processes} (data-parallel)"
        return f"{self.num_devices} {platform} devices, {self.num_runs // self.num_devices} run(s) each"

    def check_batch_size(self, batch_size: int) -> None:
        if self.data_parallel:
            check_batch_size(batch_size, self.num_devices)

    def _put(self, tree: Any, sharding) -> Any:
        if self.mesh is None:
            return jax.device_put(tree)

        def put(x):
            if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
                return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
            # Via host memory: the same value in every process becomes one global array.
            return jax.device_put(np.asarray(x), sharding)

        return jax.tree.map(put, tree)

    def replicate(self, tree: Any) -> Any:
        """Every leaf of `tree` (any pytree, typed PRNG keys included) on every device of the mesh."""
        return self._put(tree, self.mesh and self.replicated)

    def put_state(self, stacked: Any) -> Any:
        """The stacked state (K, ...) where it trains: split along the run axis, or replicated."""
        return self._put(stacked, self.mesh and self.state_sharding)

    def jit_steps(self, steps_fn: Callable, with_labels: bool = False) -> Callable:
        """Jitted `steps_fn(stacked, images, batch_indices (K, steps, B)[, labels])`; the state is donated.
        with_labels: it is called with the dataset's labels too (a conditional GAN), replicated."""
        if self.mesh is None:
            return jax.jit(steps_fn, donate_argnums=0)
        labels = (self.replicated,) if with_labels else ()
        return jax.jit(
            steps_fn,
            in_shardings=(self.state_sharding, self.replicated, self.batch_sharding, *labels),
            out_shardings=(self.state_sharding, self.state_sharding),
            donate_argnums=0,
        )

    def jit_batch_indices(self, batch_indices: Callable) -> Callable:
        """Jitted `batch_indices(keys (K,), epoch, num_examples, batch_size)` -> (K, steps, B), placed
        as the steps take them."""
        if self.mesh is None:
            return jax.jit(batch_indices, static_argnums=(2, 3))
        return jax.jit(batch_indices, static_argnums=(2, 3), out_shardings=self.batch_sharding)


def devices_for(num_runs: int, num_devices: int) -> int:
    """How many devices K runs are spread over: the most (up to num_devices) that divide K."""
    return max(n for n in range(1, num_devices + 1) if num_runs % n == 0)
