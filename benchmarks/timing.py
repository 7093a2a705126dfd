"""Wall-clock timing with warm-up, explicit synchronisation and medians of repeats."""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per call of a timed function: median and spread over `repeats` calls."""

    median_s: float
    min_s: float
    max_s: float
    repeats: int

    def per(self, n: int) -> Timing:
        """The same timing divided by n (a call that ran n steps -> seconds per step)."""
        return Timing(self.median_s / n, self.min_s / n, self.max_s / n, self.repeats)


def time_calls(fn: Callable[[], Any], sync: Callable[[Any], Any], *, repeats: int, warmup: int = 1) -> Timing:
    """Call fn() `warmup` times untimed, then `repeats` times, each ended by sync(result).

    sync must block until the work is done (jax.block_until_ready; torch on CPU is synchronous).
    """
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), min(times), max(times), repeats)


@dataclasses.dataclass(frozen=True)
class Call:
    """One contestant of `time_interleaved`: fn() does the work, sync(result) waits for it,
    setup() (untimed, optional) runs before each call, and the timing is divided by `per`."""

    fn: Callable[[], Any]
    sync: Callable[[Any], Any]
    per: int = 1
    setup: Callable[[], Any] | None = None


def time_interleaved(calls: dict[str, Call], *, repeats: int, warmup: int = 1) -> dict[str, Timing]:
    """Time several calls round-robin: repeat i of every call runs before repeat i + 1 of any.

    On a machine shared with other work, each contestant then meets the same mix of quiet
    and busy moments, so the ratios of their medians are fair even when the absolute times
    are not.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(warmup + repeats):
        for name, call in calls.items():
            if call.setup is not None:
                call.setup()
            start = time.perf_counter()
            call.sync(call.fn())
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {
        name: Timing(statistics.median(t), min(t), max(t), repeats).per(calls[name].per) for name, t in times.items()
    }


def time_first_call(fn: Callable[[], Any], sync: Callable[[Any], Any]) -> tuple[float, Any]:
    """Seconds of one (cold) call, synchronised, and its result: the compile time of a jitted fn."""
    start = time.perf_counter()
    result = fn()
    sync(result)
    return time.perf_counter() - start, result


def no_sync(result: Any) -> Any:
    """Synchronisation for code that is already synchronous (PyTorch on CPU)."""
    return result


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (what else ran on the machine), None where unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
