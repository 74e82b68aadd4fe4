"""Shared helpers for the benchmark scripts (ratios measured in one process)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def compiled_training_loop(loss_fn, variables, num_steps, learning_rate=1e-4):
    """An XLA-compiled loop of `num_steps` SGD steps on `loss_fn(seed)`, compiled once.

    This is the body `tfp.math.minimize` runs (loss, gradient, update, next
    seed), without its per-call recompilation, so two losses can be timed
    against each other without compile-time noise. The loop returns the sum of the
    steps' losses (float32): a fit records each step's loss (`minimize`'s trace), so
    every arm computes its loss value, which XLA would otherwise drop from an arm whose
    gradient does not need it (tfp.vi's) but not from one whose gradient reads it.
    (TensorFlow is imported here, so that benchmarks on the JAX backend can use the
    rest of this module.)
    """
    import tensorflow as tf
    import tensorflow_probability as tfp

    @tf.function(jit_compile=True, autograph=False)
    def loop(seed):
        def body(i, seed, total):
            step_seed, seed = tfp.random.split_seed(seed)
            with tf.GradientTape() as tape:
                loss = loss_fn(step_seed)
            grads = tape.gradient(loss, variables)
            with tf.control_dependencies(
                [v.assign_sub(learning_rate * g) for v, g in zip(variables, grads)]
            ):
                return i + 1, tf.identity(seed), total + tf.cast(tf.reduce_sum(loss), tf.float32)

        initial = (tf.constant(0), seed, tf.constant(0.0, tf.float32))
        return tf.while_loop(lambda i, *_: i < num_steps, body, initial)[2]

    return loop


def interleaved_times(runs, repeats):
    """Seconds of each call of each zero-argument callable, timed in alternation: `[run, repeat]`.

    `tge.diagnostics.interleaved_times` with one call per run per round (each run is a
    whole compiled loop): each is called first (compilation), then the runs alternate
    `repeats` times so that slow drifts of the machine hit every run alike.
    """
    from tfp_gradest.diagnostics import interleaved_times as alternated

    return alternated(runs, repeats=repeats, calls_per_repeat=1, min_repeat_seconds=0)


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


def print_table(title, rows, header, name=None, output_dir=None):
    """Prints a Markdown table; with `name`, also records it as `<output_dir>/<name>.csv`.

    A recorded table (with its `.meta.json`: command, date, commit, machine, `title`)
    in `benchmarks/results` (the default `output_dir`) appears on the documentation's
    generated Results page.
    """
    print(f"\n{title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
    if name is not None:
        output_dir = output_dir or os.path.join(_REPOSITORY, "benchmarks", "results")
        path = os.path.join(output_dir, f"{name}.csv")
        write_results(path, [list(row) for row in rows], fieldnames=list(header), title=title)


def run_metadata(command=None):
    """Where and how a result was produced: command, UTC date, git commit and machine.

    `command` defaults to this process's command line. Library versions are read
    from the modules already imported, so writing metadata imports nothing heavy.
    """
    import datetime
    import platform
    import subprocess
    import sys

    if command is None:
        script = os.path.relpath(sys.argv[0], _REPOSITORY) if sys.argv[0] else "python"
        command = " ".join(["python", script, *sys.argv[1:]])
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=_REPOSITORY,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_REPOSITORY,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if dirty:
            commit += " (with uncommitted changes)"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    versions = {}
    for module in ("keras", "tensorflow", "tensorflow_probability", "jax", "numpy"):
        if module in sys.modules:
            versions[module] = getattr(sys.modules[module], "__version__", "unknown")
    if "keras" in sys.modules:
        versions["keras_backend"] = sys.modules["keras"].backend.backend()
    return {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "versions": versions,
    }


_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_results(path, rows, fieldnames=None, command=None, title=None):
    """Write `rows` to the CSV `path` and the run's metadata beside it (`<name>.meta.json`).

    `rows` are dicts (columns: `fieldnames`, default the keys in order of first
    appearance) or sequences (then `fieldnames` is the header). `title`, if given, is
    stored in the metadata and heads the table on the Results page. The documentation's
    Results page is generated from both files, so re-running a benchmark updates it.
    """
    import csv
    import json

    rows = list(rows)
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(k for row in rows for k in row))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        if rows and not isinstance(rows[0], dict):
            writer = csv.writer(f)
            writer.writerow(fieldnames)
        else:
            writer = csv.DictWriter(f, fieldnames)
            writer.writeheader()
        writer.writerows(rows)
    with open(os.path.splitext(path)[0] + ".meta.json", "w") as f:
        metadata = run_metadata(command)
        if title is not None:
            metadata["title"] = title
        json.dump(metadata, f, indent=2)
        f.write("\n")
