"""Where a generator's weights come from: a run's checkpoint (read-only) or a torch_ref .pt file.

Used by the commands that sample or measure a trained generator (`jaxgan.generate`,
`jaxgan.evaluate`); the images themselves are `jaxgan.sampling`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxgan import checkpoint, convert
from jaxgan.cli import UsageError, UserError
from jaxgan.config import Config


class Loaded(NamedTuple):
    """A generator to sample from: its config, params, BatchNorm statistics (None for the MLPs),
    what the params are ("ema" | "raw" | "pt") and the checkpoint they came from (None for a .pt file)."""

    config: Config
    params: Any
    batch_stats: Any
    weights: str
    restored: Any


def check_source(workdir: str | None, from_pt: str | None) -> None:
    """UserError unless the generator's source exists (cheap checks, before any output)."""
    if from_pt is not None:
        if not Path(from_pt).is_file():
            raise UsageError(f"--from-pt {from_pt!r} is not a file")
        return
    checkpoint.check_workdir(workdir)


def load_generator(workdir: str | None, from_pt: str | None, epoch: int | None = None, ema: bool = True) -> Loaded:
    """The generator of a run directory's checkpoint (the EMA generator when the run keeps one and
    `ema`) or of a .pt file. UserError if the weights are not all finite."""
    if from_pt is not None:
        state = convert.load_pt(from_pt)
        loaded = Loaded(state.config, state.g_params, state.g_batch_stats, "pt", None)
        source = repr(from_pt)
    else:
        restored = checkpoint.load(workdir, epoch)
        state, source = restored.state, str(restored.path)
        if ema and state.g_ema_params is not None:
            loaded = Loaded(state.config, state.g_ema_params, state.g_batch_stats, "ema", restored)
        else:
            loaded = Loaded(state.config, state.g_params, state.g_batch_stats, "raw", restored)
    if not all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(loaded.params)):
        raise UserError(
            f"the generator weights of {source} are not finite (NaN or inf): its output would not be either"
        )
    return loaded
