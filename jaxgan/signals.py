"""Stopping on SIGINT / SIGTERM without losing work, agreed by every process of a run.

- From the first line of `python -m jaxgan.X` (`exit_during_startup`, called by the package's
  __init__ before anything heavy is imported) and before training (`exit_at_once`): a signal
  ends the process at once, exit 128 + signum, with one line. Left to Python's default, Ctrl-C
  during JAX's start-up can land in a garbage-collection callback, which swallows it, or print
  a traceback from inside an import. This module imports nothing heavy, for that reason.
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


def _exit_handler(prog: str, when: str) -> Callable[[int, object], None]:
    return lambda signum, frame: _exit_now(f"{prog}: stopped by {signal.Signals(signum).name} {when}".rstrip(), signum)


def exit_at_once(prog: str, when: str = "before training began") -> contextlib.AbstractContextManager[None]:
    """Inside the block, SIGINT/SIGTERM end the process at once: `{prog}: stopped by SIGINT {when}`,
    exit 128 + signum."""
    return handlers(_exit_handler(prog, when))


def exit_during_startup() -> None:
    """Under `python -m jaxgan` or `python -m jaxgan.X`, make SIGINT/SIGTERM end the process at once
    from now on, until the program installs its own handlers (a no-op in any other program)."""
    argv = list(getattr(sys, "orig_argv", ()))
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
    if (module == "jaxgan" or module.startswith("jaxgan.")) and threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _exit_handler(f"python -m {module}", "while starting"))


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
        import jax
        import numpy as np

        if jax.process_count() == 1:
            return self.signum
        from jax.experimental import multihost_utils

        seen = np.asarray(multihost_utils.process_allgather(np.int32(self.signum or 0)))
        signums = [int(s) for s in seen.ravel() if s]
        return signums[0] if signums else None
