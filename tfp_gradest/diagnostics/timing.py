"""Wall-clock step time of compiled functions (for reports and benchmarks, never for tests)."""

import math
import time
from typing import NamedTuple

import numpy as np

__all__ = ["StepTime", "interleaved_step_seconds", "median_step_seconds"]


class StepTime(NamedTuple):
    """Seconds per call: the median over repeats and the quartiles, its spread."""

    median: float
    low: float  # 25th percentile over repeats
    high: float  # 75th percentile over repeats


def median_step_seconds(step, args=(), repeats=5, calls_per_repeat=20):
    """Median over `repeats` of the mean seconds per call of `step(*args)`.

    Calls `step` once first so tracing and compilation are not timed, and
    forces each result to host so asynchronous execution is counted.
    """
    return interleaved_step_seconds([step], args, repeats, calls_per_repeat)[0].median


def interleaved_step_seconds(
    steps, args=(), repeats=9, calls_per_repeat=10, min_repeat_seconds=0.02
):
    """Seconds per call of each of `steps`, timed in alternation, as `StepTime`s.

    Each step is called once first (compilation is not timed) and once more to
    size its rounds. Then, `repeats` times, each step in turn runs at least
    `calls_per_repeat` calls, and enough to last `min_repeat_seconds` (a round
    of a few microseconds would measure the scheduler, not the step); a slow
    spell of a shared machine hits every step alike instead of one of them, and
    the median over repeats ignores the worst spells. The quartiles show what is
    left of the noise: two steps whose quartile ranges overlap are not told apart.

    Args:
      steps: callables, each called as `step(*args)`.
      args: the arguments of every call.
      repeats: Python `int`, rounds of alternation.
      calls_per_repeat: Python `int`, the fewest calls per step per round.
      min_repeat_seconds: Python `float`, the shortest round per step.

    Returns:
      A list of `StepTime`, one per step.
    """
    calls = []
    for step in steps:
        _block(step(*args))
        start = time.perf_counter()
        _block(step(*args))
        once = max(time.perf_counter() - start, 1e-9)
        calls.append(max(calls_per_repeat, math.ceil(min_repeat_seconds / once)))
    times = [[] for _ in steps]
    for _ in range(repeats):
        for step, record, count in zip(steps, times, calls):
            start = time.perf_counter()
            for _ in range(count):
                result = step(*args)
            _block(result)
            record.append((time.perf_counter() - start) / count)
    return [StepTime(*(float(np.percentile(t, q)) for q in (50, 25, 75))) for t in times]


def _block(result):
    import tensorflow as tf

    for t in tf.nest.flatten(result):
        if hasattr(t, "numpy"):
            t.numpy()
