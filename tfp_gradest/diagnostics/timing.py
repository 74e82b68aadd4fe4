"""Wall-clock step time of a compiled function (for reports and benchmarks, never for tests)."""

import time

import numpy as np

__all__ = ["median_step_seconds"]


def median_step_seconds(step, args=(), repeats=5, calls_per_repeat=20):
    """Median over `repeats` of the mean seconds per call of `step(*args)`.

    Calls `step` once first so tracing and compilation are not timed, and
    forces each result to host so asynchronous execution is counted.
    """
    _block(step(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls_per_repeat):
            result = step(*args)
        _block(result)
        times.append((time.perf_counter() - start) / calls_per_repeat)
    return float(np.median(times))


def _block(result):
    import tensorflow as tf

    for t in tf.nest.flatten(result):
        if hasattr(t, "numpy"):
            t.numpy()
