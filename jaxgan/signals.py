"""Stopping on SIGINT / SIGTERM without losing work, agreed by every process of a run.

- Before training (`exit_at_once`): a signal ends the process at once, exit 128 + signum,
  with one line. Nothing has been written yet. (Left to Python's default, Ctrl-C during
  JAX's start-up can land in a garbage-collection callback, which swallows it.)
- During training (`StopOnSignal`): the first signal asks the run to stop at the next epoch
  boundary, where it saves a checkpoint; a second one stops at once, keeping the last
  complete checkpoint. In a multi-process run the processes agree at every epoch boundary
  (one tiny all-gather), so all of them stop after the same epoch, even when only one got
  the signal: otherwise one could enter the checkpoint's collectives and another the next
  epoch's, and both would wait forever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

import jax
import numpy as np

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A signal stopped the run after a checkpoint was saved."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def _exit_now(message: str, signum: int) -> None:
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(128 + signum)


@contextlib.contextmanager
def handlers(handle: Callable[[int, object], None]) -> Iterator[None]:
    """`handle` for SIGINT and SIGTERM inside the block (a no-op outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handle) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def exit_at_once(prog: str) -> contextlib.AbstractContextManager[None]:
    """Inside the block, SIGINT/SIGTERM end the process at once: one line, exit 128 + signum."""
    return handlers(
        lambda signum, frame: _exit_now(
            f"{prog}: stopped by {signal.Signals(signum).name} before training; no checkpoint was changed", signum
        )
    )


class StopOnSignal:
    """Turns the first SIGINT/SIGTERM into a request to stop at the next epoch boundary.

    Use as a context manager around the epochs *and* the last save: a signal that comes
    while the final checkpoint is written waits for it instead of killing it.
    """

    def __init__(self, notify: Callable[[str], None]):
        self.notify = notify
        self.signum: int | None = None
        self._scope = handlers(self._handle)

    def __enter__(self) -> StopOnSignal:
        self._scope.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._scope.__exit__(*exc)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            # os._exit, not an exception: an asynchronous save may be running in a background
            # thread; it is left as a temporary directory, never half-committed.
            _exit_now(
                f"stopped at once by a second {signal.Signals(signum).name}; the last complete checkpoint is kept",
                signum,
            )
        self.signum = signum
        self.notify(
            f"received {signal.Signals(signum).name}: stopping after this epoch and saving a checkpoint "
            "(send it again to stop at once, keeping the last checkpoint)"
        )

    def agreed(self) -> int | None:
        """The signal the run stops on at this epoch boundary, the same in every process, or None.

        In a multi-process run this is a collective: every process must call it at the same point.
        """
        if jax.process_count() == 1:
            return self.signum
        from jax.experimental import multihost_utils

        seen = np.asarray(multihost_utils.process_allgather(np.int32(self.signum or 0)))
        signums = [int(s) for s in seen.ravel() if s]
        return signums[0] if signums else None
