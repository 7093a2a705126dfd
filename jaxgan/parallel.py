"""Data parallelism with JAX's own machinery: a 1-D device mesh, shardings, `jax.distributed`.

`Placement` says where the loop's arrays live. Single-device (the default) it is plain
`jax.jit` on the default device, exactly as without this module. With `data_parallel`
it builds a 1-D `jax.sharding.Mesh` over every device of every process (axis "data"):

- the state (params, optimizer states, step, key; any field GANState gains) and the
  dataset (and its labels) are replicated on every device;
- each epoch's batch indices (steps, B) are sharded along B, so every device gathers
  its own B / num_devices images of each batch from its replica of the dataset;
- the same pure `train.train_steps` runs under `jax.jit` with these in/out shardings:
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

AXIS = "data"
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

    data_parallel False: the default device, plain `jax.jit` (unchanged single-device runs).
    data_parallel True: a 1-D mesh over `devices` (default: every device of every process).
    """

    def __init__(self, data_parallel: bool, devices: list[jax.Device] | None = None):
        self.data_parallel = data_parallel
        if not data_parallel:
            if jax.process_count() > 1:
                raise ParallelError(
                    f"{jax.process_count()} processes need --data-parallel (without it each would train alone)"
                )
            self.mesh = None
            self.num_devices = 1
            return
        devices = list(jax.devices() if devices is None else devices)
        self.mesh = Mesh(np.array(devices), (AXIS,))
        self.num_devices = len(devices)
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_rows = NamedSharding(self.mesh, P(None, AXIS))  # (steps, B) sharded along B

    def describe(self) -> str:
        platform = jax.devices()[0].platform.upper()
        if not self.data_parallel:
            return platform
        processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
        return f"{self.num_devices} {platform} devices{processes} (data-parallel)"

    def check_batch_size(self, batch_size: int) -> None:
        check_batch_size(batch_size, self.num_devices)

    def replicate(self, tree: Any) -> Any:
        """Every leaf of `tree` (any pytree, typed PRNG keys included) on every device of the mesh."""
        if not self.data_parallel:
            return jax.device_put(tree)

        def put(x):
            if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
                return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
            # Via host memory: the same value in every process becomes one global array.
            return jax.device_put(np.asarray(x), self.replicated)

        return jax.tree.map(put, tree)

    def jit_train_steps(self, train_steps: Callable, with_labels: bool = False) -> Callable:
        """Jitted `train_steps(state, images, batch_indices[, labels])`; the state is donated.
        with_labels: it is called with the dataset's labels too (a conditional GAN), replicated."""
        if not self.data_parallel:
            return jax.jit(train_steps, donate_argnums=0)
        labels = (self.replicated,) if with_labels else ()
        return jax.jit(
            train_steps,
            in_shardings=(self.replicated, self.replicated, self.batch_rows, *labels),
            out_shardings=(self.replicated, self.replicated),
            donate_argnums=0,
        )

    def jit_batch_indices(self, batch_indices: Callable) -> Callable:
        """Jitted `batch_indices(key, epoch, num_examples, batch_size)` -> (steps, B), sharded along B."""
        if not self.data_parallel:
            return jax.jit(batch_indices, static_argnums=(2, 3))
        return jax.jit(batch_indices, static_argnums=(2, 3), out_shardings=self.batch_rows)
