"""Dense BNN step time on the JAX backend against the TensorFlow backend (CPU or GPU).

    python benchmarks/backends.py [--pairs 4] [--steps 20] [--repeats 5]

A Keras backend is fixed per process, so the two cannot be timed in one process. This
script alternates child processes, TensorFlow then JAX, `--pairs` times; each child
builds the dense BNN of `benchmarks/layers.py` (784-400-400-10, batch 128) once per
estimator, compiles its SGD loop (`_keras_steps.training_loop`, XLA on both backends)
and reports the median seconds per step over `--repeats` alternated rounds, and the
step-time ratios to the reparameterisation trick measured in that process. Printed:
per estimator, JAX / TensorFlow step time as the median over pairs of the per-pair
ratio [min, max], and each backend's ratios to RT (median [min, max] over its children).
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ESTIMATORS = ["reparameterization", "local_reparameterization", "flipout", "r2g2"]
HERE = os.path.dirname(os.path.abspath(__file__))


def child(backend, steps, repeats):
    """Runs in the child process: `{estimator: seconds per step}` as JSON on stdout."""
    os.environ["KERAS_BACKEND"] = backend
    sys.argv = sys.argv[:1]  # layers.py reads --backend at import; the environment decides
    import _common
    import _keras_steps
    import layers

    rng = np.random.default_rng(0)
    x = _keras_steps.to_tensor(rng.random((layers.BATCH, 784)), "float32")
    y = _keras_steps.to_tensor(rng.integers(0, 10, layers.BATCH))
    runs = []
    for estimator in ESTIMATORS:
        model = layers.dense_bnn(estimator)
        runs.append(
            _keras_steps.training_loop(
                layers.loss_fn(model, x, y), *layers.variables_of(model), steps
            )
        )
    times = _common.interleaved_times(runs, repeats) / steps  # [estimator, repeat]
    print(json.dumps({e: t.tolist() for e, t in zip(ESTIMATORS, times)}))


def run_child(backend, args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, os.path.join(HERE, "backends.py"), "--child", backend]
    command += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return {e: np.asarray(t) for e, t in json.loads(out.strip().splitlines()[-1]).items()}


def spread(values):
    values = np.asarray(values)
    return f"{np.median(values):.2f} [{values.min():.2f}, {values.max():.2f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", choices=["tensorflow", "jax"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.steps, args.repeats)
    results = {"tensorflow": [], "jax": []}
    for _ in range(args.pairs):
        for backend in results:
            results[backend].append(run_child(backend, args))
    import _common

    rows = []
    for e in ESTIMATORS:
        tf_ms = [1e3 * np.median(r[e]) for r in results["tensorflow"]]
        jax_ms = [1e3 * np.median(r[e]) for r in results["jax"]]
        to_rt = {
            b: [np.median(r[e] / r["reparameterization"]) for r in results[b]] for b in results
        }
        rows.append(
            (
                e,
                f"{np.median(tf_ms):.1f}",
                f"{np.median(jax_ms):.1f}",
                spread(np.asarray(jax_ms) / np.asarray(tf_ms)),
                spread(to_rt["tensorflow"]),
                spread(to_rt["jax"]),
            )
        )
    _common.print_table(
        f"Dense BNN 784-400-400-10, batch 128, XLA: JAX against TensorFlow "
        f"({args.pairs} alternated pairs of processes)",
        rows,
        [
            "estimator",
            "TF ms/step",
            "JAX ms/step",
            "JAX / TF, median [range] (target <= 1.2)",
            "/ RT on TF",
            "/ RT on JAX",
        ],
    )


if __name__ == "__main__":
    main()
