"""Trains the small scale-out BNN once and saves its weights and monitor history.

Run by tests/test_scale_out.py, never collected by pytest (no `test_` prefix):

    TF_CONFIG='{"cluster": {"worker": ["localhost:P0", "localhost:P1"]},
                "task": {"type": "worker", "index": I}}' python tests/multiworker_worker.py OUT.npz

trains under `tf.distribute.MultiWorkerMirroredStrategy` as worker I of two; without
`TF_CONFIG` (or imported, calling `train()`) it trains with Keras's default strategy, the
single-worker reference. Both runs use the same data, seeds and global batch.
"""

import contextlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

NUM_EXAMPLES, GLOBAL_BATCH, EPOCHS, FEATURES = 128, 32, 2, 8


def data():
    """A fixed noisy linear-regression problem."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_EXAMPLES, FEATURES)).astype("float32")
    y = x @ rng.normal(size=(FEATURES, 1)) + 0.1 * rng.normal(size=(NUM_EXAMPLES, 1))
    return x, y.astype("float32")


def build_model(hidden_estimator="r2g2"):
    """Two `tge.layers.DenseReparameterization` layers.

    On TensorFlow, R2-G2 and the reparameterisation trick draw one weight sample per
    call from the layer's SeedGenerator, whose state is mirrored: every replica draws the
    same weights as the single worker does for the whole batch, so the runs can agree to
    rounding. Per-example noise (LRT, Flipout) is drawn by each replica for its own rows
    from the same state, so it cannot equal the single worker's draw (README: Scaling out).
    On JAX the step is one program over the global batch, so any estimator matches.
    """
    import keras

    import tfp_gradest as tge

    def layer(units, estimator, seed, name, **kwargs):
        return tge.layers.DenseReparameterization(
            units, gradient_estimator=estimator, seed=seed, name=name,
            kl_weight=1.0 / NUM_EXAMPLES, **kwargs,
        )  # fmt: skip

    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            layer(16, hidden_estimator, 1, "hidden", activation="tanh"),
            layer(1, "reparameterization", 2, "out"),
        ],
        name="bnn",
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def train(strategy=None, global_batch=GLOBAL_BATCH, hidden_estimator="r2g2"):
    """Fits the BNN with both monitors; returns `{name: numpy array}`.

    `strategy`: a `tf.distribute.Strategy` (TensorFlow) or None. On JAX, set a
    `keras.distribution` before calling.
    """
    import keras

    import tfp_gradest as tge

    keras.utils.set_random_seed(0)
    x, y = data()
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model(hidden_estimator)
    monitors = [
        tge.callbacks.GradientVarianceMonitor((x[:32], y[:32]), num_draws=4, seed=3),
        tge.callbacks.GradientVarianceMonitor(mode="streaming"),
    ]
    fit = dict(epochs=EPOCHS, verbose=0, callbacks=monitors)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        options = tf.data.Options()
        # Split each global batch across the workers (not whole files: there are none).
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch)
        history = model.fit(dataset.with_options(options), **fit)
    else:
        history = model.fit(x, y, batch_size=global_batch, shuffle=False, **fit)
    result = {f"weight:{w.path}": np.asarray(w.numpy()) for w in model.weights}
    result.update({f"history:{k}": np.asarray(v, np.float64) for k, v in history.history.items()})
    return result


def reduce_nests(strategy):
    """Makes `strategy.reduce` accept what Keras 3.15's `fit` passes it; returns `strategy`.

    Under MultiWorkerMirroredStrategy with two workers `fit` fails twice without this
    (keras-team/keras#20585):
    - before the first step it calls `strategy.reduce("MEAN", batch)` on the whole
      `(x, y)` batch, only to learn its shapes, but `Strategy.reduce` takes one value
      (TensorFlow's own TODO: "support `value` being a nest"): "Attempt to convert a
      value (PerReplica...) to a Tensor";
    - after each step it averages the scalar logs with `axis=0`: "Invalid reduction
      dimension 0 for input with 0 dimensions".
    So: reduce a nest element by element, and a scalar across replicas only.
    """
    import tensorflow as tf

    reduce_one = strategy.reduce

    def reduce_value(reduce_op, value, axis):
        ranks = [v.shape.rank for v in strategy.experimental_local_results(value)]
        return reduce_one(reduce_op, value, None if ranks == [0] * len(ranks) else axis)

    def reduce(reduce_op, value, axis=None):
        return tf.nest.map_structure(lambda v: reduce_value(reduce_op, v, axis), value)

    strategy.reduce = reduce
    return strategy


def main(out_path):
    import tensorflow as tf

    strategy = None
    if "TF_CONFIG" in os.environ:
        strategy = reduce_nests(tf.distribute.MultiWorkerMirroredStrategy())
    np.savez(out_path, **train(strategy))


if __name__ == "__main__":
    main(sys.argv[1])
