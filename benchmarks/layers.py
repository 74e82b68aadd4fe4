"""Bayesian layers: step time, gradient variance and work-normalised variance per estimator.

    python benchmarks/layers.py [--repeats 5] [--skip-tfp]

1. Dense BNN 784-400-400-10, synthetic data, batch 128, XLA: step time of each
   estimator / reparameterization (target: R2-G2 <= 1.3), top-layer scale-
   gradient variance, and work-normalised variance (variance x step time;
   target: RT / R2-G2 >= 5).
2. The same BNN built from `tfp.layers.DenseReparameterization` under tf_keras
   (an optional dependency; skipped if missing): step-time ratio ours / theirs
   (target <= 1.0), both with the reparameterisation estimator.
3. A small Bayesian CNN (16x16x1 -> conv 8 -> conv 16/2 -> conv 16/2 -> conv 16/2 -> dense 10):
   per-layer cost and scale-gradient variance gain of conv R2-G2, switched on one
   layer at a time.

Steps are SGD steps (loss, gradient, update) in one XLA-compiled loop, compiled
once and timed in alternation (`_common`).
"""

import argparse

import _common
import keras
import numpy as np
import tensorflow as tf

import tfp_gradest as tge

BATCH = 128


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
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        ) + tf.add_n(model.losses)

    return loss


def variables_of(model):
    return [v.value if hasattr(v, "value") else v for v in model.trainable_variables]


def scale_gradient_variance(model, x, y, layer_index, num_draws=300):
    target = model.layers[layer_index].kernel_scale_raw.value
    loss = loss_fn(model, x, y)

    @tf.function(jit_compile=True)
    def draws():
        def one(_):
            with tf.GradientTape() as tape:
                value = loss()
            return tape.gradient(value, target)

        return tf.map_fn(one, tf.range(num_draws), fn_output_signature=tf.TensorSpec(target.shape))

    return float(tf.reduce_mean(tf.math.reduce_variance(draws(), axis=0)))


def time_models(models, data, steps, repeats):
    loops = [
        _common.compiled_training_loop(loss_fn(m, *data), variables_of(m), steps) for m in models
    ]
    seed = tf.constant([0, 1], tf.int32)
    return _common.interleaved_seconds([lambda f=f: f(seed).numpy() for f in loops], repeats)


def tfp_layers_seconds(data, steps, repeats, ours_seconds):
    try:
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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip-tfp", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = (
        tf.constant(rng.random((BATCH, 784)), tf.float32),
        tf.constant(rng.integers(0, 10, BATCH)),
    )

    estimators = list(tge.layers.GRADIENT_ESTIMATORS)
    models = [dense_bnn(e) for e in estimators]
    seconds = time_models(models, data, args.steps, args.repeats)
    variances = [scale_gradient_variance(m, *data, layer_index=-1) for m in models]
    rt_s, rt_v = seconds[0], variances[0]
    rows = [
        (
            e,
            f"{1e3 * s / args.steps:.2f}",
            f"{s / rt_s:.2f}",
            f"{v:.3g}",
            f"{(rt_v * rt_s) / (v * s):.1f}",
        )
        for e, s, v in zip(estimators, seconds, variances)
    ]
    _common.print_table(
        f"Dense BNN 784-400-400-10, batch {BATCH}, XLA",
        rows,
        [
            "estimator",
            "ms/step",
            "time / RT (R2-G2 target <= 1.3)",
            "top-layer scale-grad variance",
            "work-normalised gain vs RT (target >= 5)",
        ],
    )

    if not args.skip_tfp:
        theirs = tfp_layers_seconds(data, args.steps, args.repeats, rt_s)
        if theirs is None:
            print("\n(tfp.layers comparison skipped: tf_keras not installed)")
        else:
            _common.print_table(
                "Same BNN, reparameterization: tge (Keras 3) vs tfp.layers (tf_keras)",
                [
                    (
                        "reparameterization",
                        f"{1e3 * rt_s / args.steps:.2f}",
                        f"{1e3 * theirs / args.steps:.2f}",
                        f"{rt_s / theirs:.2f}",
                    )
                ],
                ["estimator", "tge ms/step", "tfp.layers ms/step", "ratio (target <= 1.0)"],
            )

    x = tf.constant(rng.random((64, 16, 16, 1)), tf.float32)
    cnn_data = (x, tf.constant(rng.integers(0, 10, 64)))
    base = ["reparameterization"] * 4
    variants = [base] + [base[:i] + ["r2g2"] + base[i + 1 :] for i in range(4)]
    models = [cnn(v) for v in variants]
    seconds = time_models(models, cnn_data, args.steps, args.repeats)
    rows = []
    for i in range(4):
        layer = models[0].layers[i]
        positions = int(np.prod(layer.output.shape[1:-1]))
        weights = int(np.prod(layer.kernel_size)) * int(layer.kernel_loc.shape[-2]) + 1
        v_rt = scale_gradient_variance(models[0], *cnn_data, layer_index=i)
        v_r2 = scale_gradient_variance(models[i + 1], *cnn_data, layer_index=i)
        skipped = tge.r2g2.solve_is_skipped("per_example", 64, positions, weights)
        rows.append(
            (
                f"conv {i + 1}",
                positions,
                weights,
                "skip (= RT)" if skipped else "CG",
                f"{seconds[i + 1] / seconds[0]:.2f}",
                f"{v_rt / v_r2:.1f}",
            )
        )
    _common.print_table(
        "Bayesian CNN, batch 64, XLA: conv R2-G2 (per example) on one layer at a time",
        rows,
        [
            "layer",
            "positions P",
            "weights k",
            "solve",
            "step time / all-RT",
            "scale-grad variance RT / R2-G2",
        ],
    )


if __name__ == "__main__":
    main()
