"""Shared helpers for the benchmark scripts (ratios measured in one process)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import time  # noqa: E402

import numpy as np  # noqa: E402


def compiled_training_loop(loss_fn, variables, num_steps, learning_rate=1e-4):
    """An XLA-compiled loop of `num_steps` SGD steps on `loss_fn(seed)`, compiled once.

    This is the body `tfp.math.minimize` runs (loss, gradient, update, next
    seed), without its per-call recompilation, so two losses can be timed
    against each other without compile-time noise. (TensorFlow is imported here, so
    that benchmarks on the JAX backend can use the rest of this module.)
    """
    import tensorflow as tf
    import tensorflow_probability as tfp

    @tf.function(jit_compile=True, autograph=False)
    def loop(seed):
        def body(i, seed):
            step_seed, seed = tfp.random.split_seed(seed)
            with tf.GradientTape() as tape:
                loss = loss_fn(step_seed)
            grads = tape.gradient(loss, variables)
            with tf.control_dependencies(
                [v.assign_sub(learning_rate * g) for v, g in zip(variables, grads)]
            ):
                return i + 1, tf.identity(seed)

        return tf.while_loop(lambda i, _: i < num_steps, body, (tf.constant(0), seed))[0]

    return loop


def interleaved_times(runs, repeats):
    """Seconds of each call of each zero-argument callable, timed in alternation: `[run][repeat]`.

    Each is called once first (compilation), then the runs alternate
    `repeats` times so that slow drifts of the machine hit every run alike.
    """
    for run in runs:
        run()
    times = [[] for _ in runs]
    for _ in range(repeats):
        for run, record in zip(runs, times):
            start = time.perf_counter()
            run()
            record.append(time.perf_counter() - start)
    return np.asarray(times)


def interleaved_seconds(runs, repeats):
    """Median seconds per call of each zero-argument callable, timed in alternation."""
    return [float(t) for t in np.median(interleaved_times(runs, repeats), axis=1)]


def ratio_with_spread(numerator, denominator):
    """`"median [q25, q75]"` of the per-repeat ratios of two runs timed in alternation.

    Each repeat's pair ran back to back, so their ratio cancels most of the
    machine's slow drifts; the interquartile range over repeats shows what is left.
    """
    ratios = np.asarray(numerator) / np.asarray(denominator)
    low, mid, high = np.percentile(ratios, [25, 50, 75])
    return f"{mid:.3f} [{low:.3f}, {high:.3f}]"


def print_table(title, rows, header):
    print(f"\n{title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
