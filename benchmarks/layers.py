"""Bayesian layers: step time, gradient variance and work-normalised variance per estimator.

    python benchmarks/layers.py [--backend tensorflow|jax] [--quick] [--repeats 7] [--skip-tfp]

`--backend` sets `KERAS_BACKEND` before Keras is imported (default: the environment's
`KERAS_BACKEND`, else tensorflow); every table is printed on both backends except
table 2, which needs TensorFlow (skipped with a note on JAX).

1. Dense BNN 784-400-400-10, synthetic data, batch 128, XLA: step time of each
   estimator / reparameterization, top-layer scale-gradient variance, and the
   gain in work-normalised variance (variance x step time) over RT
   (targets: `auto`'s step time <= RT's).
2. The same BNN built from `tfp.layers.DenseReparameterization` under tf_keras
   (an optional dependency; skipped if missing): step-time ratio ours / theirs.
3. A small Bayesian CNN (16x16x1 -> conv 8 -> conv 16/2 -> conv 16/2 -> conv 16/2
   -> dense 10), batch 64: each conv estimator switched on one layer at a time
   (the others RT), step time / all-RT, that layer's scale-gradient variance,
   work-normalised variance; `auto`'s choice against the best fixed choice
   (targets: R2-G2 step <= 1.3x all-RT where auto picks it; auto's
   work-normalised variance within 1.25x of the best).
4. A grid over one conv layer's (P, k, F, B): R2-G2 / RT and Flipout / RT time
   and variance ratios, against R2-G2's predicted gain k / P, and the exact solver
   (direct or CG) R2-G2's measured cost model picks there
   (`benchmarks/solver_costs.py` times the two solvers alone).

Steps are SGD steps (loss, gradient, update) in one XLA-compiled loop, compiled
once and timed in alternation; each time ratio is the median over repeats of
the per-repeat ratio, with its range [min, max] (the machine may be loaded).
"""

import argparse
import math
import os


def _backend_argument():
    """`--backend`, read before Keras is imported (Keras fixes its backend at import)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--backend", choices=["tensorflow", "jax"], default=None)
    return parser.parse_known_args()[0].backend


if _backend_argument() is not None:
    os.environ["KERAS_BACKEND"] = _backend_argument()

import _common  # noqa: E402
import _keras_steps  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from _keras_steps import to_tensor  # noqa: E402
from keras import ops  # noqa: E402

import tfp_gradest as tge  # noqa: E402
from tfp_gradest.layers.estimators import auto  # noqa: E402
from tfp_gradest.r2g2 import solvers  # noqa: E402
from tfp_gradest.r2g2.conditioning import DEFAULT_PER_EXAMPLE_MEMORY_LIMIT  # noqa: E402

BATCH = 128
CONV_ESTIMATORS = ["reparameterization", "flipout", "r2g2"]


def dense_bnn(estimator, seed=0):
    keras.utils.set_random_seed(seed)
    kw = {"gradient_estimator": estimator, "kl_weight": 1e-4}
    return keras.Sequential(
        [
            keras.Input((784,)),
            tge.layers.DenseReparameterization(400, activation="relu", seed=1, **kw),
            tge.layers.DenseReparameterization(400, activation="relu", seed=2, **kw),
            tge.layers.DenseReparameterization(10, seed=3, **kw),
        ]
    )


def cnn(estimators, seed=0):
    keras.utils.set_random_seed(seed)
    convs = [(8, 1), (16, 2), (16, 2), (16, 2)]
    layers = [keras.Input((16, 16, 1))]
    for i, ((filters, stride), est) in enumerate(zip(convs, estimators)):
        layers.append(
            tge.layers.Conv2DReparameterization(
                filters,
                3,
                strides=stride,
                padding="same",
                activation="relu",
                gradient_estimator=est,
                kl_weight=1e-4,
                seed=i + 1,
            )
        )
    layers += [
        keras.layers.Flatten(),
        tge.layers.DenseReparameterization(
            10, gradient_estimator="reparameterization", kl_weight=1e-4, seed=9
        ),
    ]
    return keras.Sequential(layers)


def loss_fn(model, x, y):
    def loss(seed=None):
        logits = model(x, training=True)
        return ops.mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        ) + ops.sum(ops.stack(model.losses))

    return loss


def variables_of(model):
    """`(trainable variables, other state)`: what a compiled step reads and updates."""
    return list(model.trainable_variables), list(model.non_trainable_variables)


def scale_variance(model, x, y, layer_index, num_draws):
    return tge.diagnostics.model_gradient_variance(
        loss_fn(model, x, y),
        model.layers[layer_index].kernel_scale_raw,
        num_draws,
        model.non_trainable_variables,
    )


def time_ratios(loss_fns, variable_lists, steps, repeats):
    """Per-run `(median seconds, median ratio to run 0, min ratio, max ratio)`, timed in
    alternation. `variable_lists[i]`: `(trainable variables, other state)` of run i."""
    runs = [_keras_steps.training_loop(f, *v, steps) for f, v in zip(loss_fns, variable_lists)]
    times = _common.interleaved_times(runs, repeats)  # [run, repeat]
    ratios = times / times[:1]
    return [
        (float(np.median(t)), *np.percentile(ratio, [50, 0, 100]))
        for t, ratio in zip(times, ratios)
    ]


def fmt_ratio(median, low, high):
    return f"{median:.2f} [{low:.2f}, {high:.2f}]"


def dense_table(args, rng):
    data = (to_tensor(rng.random((BATCH, 784)), "float32"), to_tensor(rng.integers(0, 10, BATCH)))
    estimators = ["reparameterization", "local_reparameterization", "flipout", "r2g2"]
    estimators += ["auto"]
    models = [dense_bnn(e) for e in estimators]
    timing = time_ratios(
        [loss_fn(m, *data) for m in models], [variables_of(m) for m in models], args.steps,
        args.repeats,
    )  # fmt: skip
    variances = [scale_variance(m, *data, -1, args.draws) for m in models]
    rt_s, rt_v = timing[0][0], variances[0]
    rows = [
        (
            e if e != "auto" else f"auto (= {models[-1].layers[0].resolved_gradient_estimator})",
            f"{1e3 * t[0] / args.steps:.2f}",
            fmt_ratio(*t[1:]),
            f"{v:.3g}",
            f"{(rt_v * rt_s) / (v * t[0]):.1f}",
        )
        for e, t, v in zip(estimators, timing, variances)
    ]
    _common.print_table(
        f"Dense BNN 784-400-400-10, batch {BATCH}, XLA, {keras.backend.backend()}",
        rows,
        [
            "estimator",
            "ms/step",
            "time / RT, median [range] (auto target <= 1)",
            "top-layer scale-grad variance",
            "work-normalised gain vs RT",
        ],
        name=f"layers_dense_{keras.backend.backend()}",
    )
    return data, rt_s


def tfp_layers_seconds(data, steps, repeats):
    try:
        import tensorflow as tf
        import tensorflow_probability as tfp
        import tf_keras
    except ImportError:
        return None
    x, y = data
    model = tf_keras.Sequential(
        [
            tfp.layers.DenseReparameterization(400, activation="relu"),
            tfp.layers.DenseReparameterization(400, activation="relu"),
            tfp.layers.DenseReparameterization(10),
        ]
    )
    model.build((None, 784))

    def loss(seed=None):
        logits = model(x, training=True)
        return tf.reduce_mean(
            tf_keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        ) + 1e-4 * tf.add_n(model.losses)

    loop = _common.compiled_training_loop(loss, model.trainable_variables, steps)
    seed = tf.constant([0, 1], tf.int32)
    return _common.interleaved_seconds([lambda: loop(seed).numpy()], repeats)[0]


def cnn_table(args, rng):
    x = to_tensor(rng.random((64, 16, 16, 1)), "float32")
    data = (x, to_tensor(rng.integers(0, 10, 64)))
    base = ["reparameterization"] * 4
    auto_model = cnn(["auto"] * 4)
    auto_model(x)
    resolved = [auto_model.layers[i].resolved_gradient_estimator for i in range(4)]
    rows, summary = [], []
    for i in range(4):
        variants = [base] + [base[:i] + [e] + base[i + 1 :] for e in CONV_ESTIMATORS[1:]]
        models = [cnn(v) for v in variants]
        timing = time_ratios(
            [loss_fn(m, *data) for m in models], [variables_of(m) for m in models], args.steps,
            args.repeats,
        )  # fmt: skip
        variances = [scale_variance(m, *data, i, args.draws) for m in models]
        layer = models[0].layers[i]
        positions = math.prod(layer.output.shape[1:-1])
        weights = math.prod(layer.kernel_size) * int(layer.kernel_loc.shape[-2]) + 1
        work = [v * t[1] for v, t in zip(variances, timing)]
        best = int(np.argmin(work))
        for e, t, v, w in zip(CONV_ESTIMATORS, timing, variances, work):
            rows.append(
                (
                    f"conv {i + 1}",
                    positions,
                    weights,
                    e + (" (auto)" if e == resolved[i] else ""),
                    fmt_ratio(*t[1:]),
                    f"{variances[0] / v:.2f}",
                    f"{w / work[0]:.3f}" + (" best" if e == CONV_ESTIMATORS[best] else ""),
                )
            )
        chosen = CONV_ESTIMATORS.index(resolved[i])
        summary.append(
            (
                f"conv {i + 1}",
                positions,
                weights,
                resolved[i],
                CONV_ESTIMATORS[best],
                f"{work[chosen] / work[best]:.2f}",
                f"{timing[chosen][1]:.2f}",
            )
        )
    _common.print_table(
        "Bayesian CNN, batch 64, XLA: one conv layer's estimator switched at a time (others RT)",
        rows,
        [
            "layer",
            "P",
            "k",
            "estimator",
            "step time / all-RT, median [range]",
            "scale-grad variance RT / this",
            "work-normalised variance / RT's",
        ],
        name=f"layers_cnn_{keras.backend.backend()}",
    )
    _common.print_table(
        "auto per layer (targets: work-normalised variance <= 1.25x best; "
        "step time <= 1.3x all-RT where R2-G2 is picked)",
        summary,
        ["layer", "P", "k", "auto picks", "best fixed", "auto / best (WNV)", "auto step / all-RT"],
        name=f"layers_cnn_auto_{keras.backend.backend()}",
    )


def one_conv(filters, estimator):
    keras.utils.set_random_seed(0)
    return tge.layers.Conv2DReparameterization(
        filters, 3, padding="same", gradient_estimator=estimator, seed=1, kl_weight=1e-4
    )


def grid_table(args, rng):
    cells = [(p, c, 16, 64) for p in (4, 16, 64) for c in (8, 16)]
    if not args.quick:
        cells += [(16, 16, 32, 64), (16, 16, 16, 32), (4, 32, 16, 64), (16, 32, 16, 64)]
    rows = []
    for positions, channels, filters, batch in cells:
        size = math.isqrt(positions)
        x = to_tensor(rng.normal(size=(batch, size, size, channels)), "float32")
        readout = to_tensor(rng.normal(size=(size, size, filters)), "float32")
        layers = {e: one_conv(filters, e) for e in CONV_ESTIMATORS}

        def loss(layer, x=x, readout=readout):
            def f(seed=None):
                h = layer(x, training=True)
                return ops.mean(ops.sum(ops.sin(h) * readout, axis=[1, 2, 3]))

            return f

        for layer in layers.values():
            layer(x)
        timing = time_ratios(
            [loss(layers[e]) for e in CONV_ESTIMATORS],
            [variables_of(layers[e]) for e in CONV_ESTIMATORS],
            args.steps,
            args.repeats,
        )
        var = {
            e: tge.diagnostics.model_gradient_variance(
                loss(layers[e]),
                layers[e].kernel_scale_raw,
                args.draws,
                layers[e].non_trainable_variables,
            )
            for e in CONV_ESTIMATORS
        }
        weights = 9 * channels + 1
        rows.append(
            (
                positions,
                weights,
                filters,
                batch,
                f"{weights / positions:.1f}",
                f"{var['reparameterization'] / var['r2g2']:.2f}",
                f"{1 + positions / 3:.1f}",
                f"{timing[2][1]:.2f}",
                f"{var['reparameterization'] / var['flipout']:.2f}",
                f"{timing[1][1]:.2f}",
                auto.choose("conv", positions),
                # The first, per-layer rule (work-normalised variance), kept for comparison;
                # `auto` now picks RT for convolutions (see its docstring).
                "R2-G2" if weights / positions > 1 + positions / 3 else "RT",
                # The exact solver R2-G2's cost model picks for this layer (r2g2/solvers.py).
                "direct"
                if solvers.use_direct_solve(
                    batch, filters, positions, weights, DEFAULT_PER_EXAMPLE_MEMORY_LIMIT
                )
                else "CG",
            )
        )
    _common.print_table(
        "One conv layer (3x3, same, P = H*W positions, k = 9 C_in + 1), XLA: "
        "R2-G2 against its prediction",
        rows,
        [
            "P",
            "k",
            "F",
            "B",
            "predicted gain k/P",
            "var RT / R2-G2",
            "predicted time 1+P/3",
            "time R2-G2 / RT",
            "var RT / Flipout",
            "time Flipout / RT",
            "auto picks",
            "per-layer rule k/P > 1+P/3",
            "R2-G2 solver",
        ],
        name=f"layers_grid_{keras.backend.backend()}",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--backend", choices=["tensorflow", "jax"], default=None,
        help="Keras backend (set before Keras is imported); default: $KERAS_BACKEND",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, draws and cells")
    parser.add_argument("--skip-tfp", action="store_true")
    parser.add_argument("--only", choices=["dense", "cnn", "grid"], default=None)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps, args.draws = 3, 10, 100
    rng = np.random.default_rng(0)
    if args.only in (None, "dense"):
        data, rt_s = dense_table(args, rng)
        if not args.skip_tfp and keras.backend.backend() != "tensorflow":
            print("\n(tfp.layers comparison skipped: it needs the TensorFlow backend)")
        elif not args.skip_tfp:
            theirs = tfp_layers_seconds(data, args.steps, args.repeats)
            if theirs is None:
                print("\n(tfp.layers comparison skipped: tf_keras not installed)")
            else:
                _common.print_table(
                    "Same BNN, reparameterization: tge (Keras 3) vs tfp.layers (tf_keras)",
                    [("reparameterization", f"{1e3 * rt_s / args.steps:.2f}",
                      f"{1e3 * theirs / args.steps:.2f}", f"{rt_s / theirs:.2f}")],
                    ["estimator", "tge ms/step", "tfp.layers ms/step", "ratio (target <= 1.0)"],
                )  # fmt: skip
    if args.only in (None, "cnn"):
        cnn_table(args, rng)
    if args.only in (None, "grid"):
        grid_table(args, rng)


if __name__ == "__main__":
    main()
