"""Wall-clock time of compiled functions, timed in alternation (for reports and benchmarks,
never for tests). numpy only: a result is waited for by copying it to the host, which
works for TensorFlow and JAX alike."""

import math
import time
from typing import NamedTuple

import numpy as np

__all__ = ["StepTime", "interleaved_step_seconds", "interleaved_times", "median_step_seconds"]


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

    The median and quartiles over repeats of `interleaved_times` (arguments as there).
    Two steps whose quartile ranges overlap are not told apart.

    Returns:
      A list of `StepTime`, one per step.
    """
    times = interleaved_times(steps, args, repeats, calls_per_repeat, min_repeat_seconds)
    return [StepTime(*(float(np.percentile(t, q)) for q in (50, 25, 75))) for t in times]


def interleaved_times(steps, args=(), repeats=9, calls_per_repeat=10, min_repeat_seconds=0.02):
    """Seconds per call of each of `steps` in each round of alternation: `[step, repeat]`.

    Each step is called once first (compilation is not timed) and once more to
    size its rounds. Then, `repeats` times, each step in turn runs at least
    `calls_per_repeat` calls, and enough to last `min_repeat_seconds` (a round
    of a few microseconds would measure the scheduler, not the step); a slow
    spell of a shared machine hits every step alike instead of one of them, and
    the median over repeats ignores the worst spells. Each round's last result is
    copied to the host, so asynchronous execution is counted. The steps of one
    round ran back to back, so the ratio of two steps' times *per round* cancels
    most of the machine's slow drifts (`times[1] / times[0]`, then its median).

    Args:
      steps: callables, each called as `step(*args)`.
      args: the arguments of every call. Default value: `()`.
      repeats: Python `int`, rounds of alternation. Default value: `9`.
      calls_per_repeat: Python `int`, the fewest calls per step per round.
        Default value: `10`.
      min_repeat_seconds: Python `float`, the shortest round per step (`0`: exactly
        `calls_per_repeat` calls). Default value: `0.02`.

    Returns:
      A numpy array of shape `[len(steps), repeats]`.
    """
    calls = []
    for step in steps:
        _wait(step(*args))
        start = time.perf_counter()
        _wait(step(*args))
        once = max(time.perf_counter() - start, 1e-9)
        calls.append(max(calls_per_repeat, math.ceil(min_repeat_seconds / once)))
    times = np.zeros((len(steps), repeats))
    for repeat in range(repeats):
        for index, (step, count) in enumerate(zip(steps, calls)):
            start = time.perf_counter()
            for _ in range(count):
                result = step(*args)
            _wait(result)
            times[index, repeat] = (time.perf_counter() - start) / count
    return times


def _wait(result):
    """Copies every array in `result` (nested lists, tuples, dicts) to the host."""
    if isinstance(result, list | tuple):
        for value in result:
            _wait(value)
    elif isinstance(result, dict):
        for value in result.values():
            _wait(value)
    elif hasattr(result, "__array__"):
        np.asarray(result)
