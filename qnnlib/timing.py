"""One way to time: functions compared in alternation (notebook 06 §4, benchmarks/).

Notebook 06_runtime_and_energy compares the bit-packed network with torch float32 on a
machine shared with other processes. A load that comes and goes would favour whichever
function ran while the machine was quiet, so `race` takes its samples in alternation
(a, b, a, b, ...): drift in load hits every function alike. Each sample times `calls`
consecutive calls with `timeit.Timer` (the garbage collector off, as timeit does), and
`calls` is calibrated the way `timeit.Timer.autorange` does it (1, 2, 5, 10, 20, ...
calls) until a sample lasts at least `min_sample_s`. Each function reports the best and
the median seconds per call over `repeats` samples.

For a GPU, pass `synchronize` (e.g. `torch.cuda.synchronize`): the clock then waits for
queued work before it reads the time, at the start and at the end of every sample.
"""
from __future__ import annotations

import statistics
import time
import timeit
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Timing", "race", "calibrate"]


@dataclass
class Timing:
    """Seconds per call of one function: one entry per sample of `calls` calls."""

    calls: int
    samples_s: list[float] = field(default_factory=list)

    @property
    def best_s(self) -> float:
        """Fastest sample: the least disturbed by other processes."""
        return min(self.samples_s)

    @property
    def median_s(self) -> float:
        """Median sample: typical under the load of the moment."""
        return statistics.median(self.samples_s)

    def to_dict(self) -> dict:
        """JSON-ready {"best_s", "median_s", "calls", "samples_s"}."""
        return {"best_s": self.best_s, "median_s": self.median_s, "calls": self.calls,
                "samples_s": list(self.samples_s)}


def _timer(function: Callable[[], object], clock, synchronize) -> timeit.Timer:
    if synchronize is None:
        return timeit.Timer(function, timer=clock)

    def synchronized_clock():
        synchronize()
        return clock()
    return timeit.Timer(function, timer=synchronized_clock)


def calibrate(timer: timeit.Timer, min_sample_s: float) -> int:
    """Calls per sample so that one sample lasts at least `min_sample_s` (autorange's
    sequence 1, 2, 5, 10, 20, 50, ...)."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            number = step * scale
            if timer.timeit(number) >= min_sample_s:
                return number
        scale *= 10


def race(functions: Mapping[str, Callable[[], object]], repeats: int = 5, min_sample_s: float = 0.05,
         calls: int | None = None, warmup: int = 1, synchronize: Callable[[], object] | None = None,
         clock: Callable[[], float] = time.perf_counter) -> dict[str, Timing]:
    """Time `functions` (name -> no-argument callable) in alternation (notebook 06 §4).

    Each function is first called `warmup` times (caches, thread pools, Numba
    compilation), then its calls per sample are calibrated to last `min_sample_s`
    (or fixed by `calls`). Then `repeats` rounds each take one sample of every function
    in turn. Returns name -> `Timing` (seconds per call, best and median).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    timers = {name: _timer(function, clock, synchronize) for name, function in functions.items()}
    timings = {}
    for name, timer in timers.items():
        if warmup:
            timer.timeit(warmup)
        timings[name] = Timing(calls or calibrate(timer, min_sample_s))
    for _ in range(repeats):
        for name, timer in timers.items():
            timing = timings[name]
            timing.samples_s.append(timer.timeit(timing.calls) / timing.calls)
    return timings
