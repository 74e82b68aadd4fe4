"""Bayesian Keras 3 layers: contract for every layer x estimator, variance on digits, training,
saving, distribution.

Tests marked `backends` also run under `KERAS_BACKEND=jax` (tests/backend_utils.py): they use
`keras.ops`, numpy and `backend_utils` only; the others may use TensorFlow.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import tfp_gradest as tge

from . import backend_utils as bu
from .conftest import Z_THRESHOLD

if bu.backend() == "tensorflow":
    import tensorflow as tf
    import tensorflow_probability as tfp

LAYERS = {
    "dense": (lambda **kw: tge.layers.DenseReparameterization(3, **kw), (4, 6)),
    "conv1d": (lambda **kw: tge.layers.Conv1DReparameterization(3, 3, **kw), (2, 5, 4)),
    "conv2d": (lambda **kw: tge.layers.Conv2DReparameterization(3, 3, **kw), (2, 4, 4, 4)),
    "conv3d": (lambda **kw: tge.layers.Conv3DReparameterization(2, 2, **kw), (2, 3, 3, 3, 2)),
}
# Every registered estimator that applies to the layer (`tge.layers.estimators.names`), so a
# newly registered one is in the contract tests too.
CASES = [
    (layer, est)
    for layer in LAYERS
    for est in tge.layers.estimators.names("dense" if layer == "dense" else "conv")
]
# The XLA contract on JAX too (kept cheap): the dense layer with every estimator, and a 2-d
# convolution with R2-G2 (the conv RT and Flipout paths run on JAX in
# tests/test_layer_estimators.py).
JAX_CASES = [
    pytest.param(*case, marks=pytest.mark.backends)
    if case[0] == "dense" or case == ("conv2d", "r2g2")
    else case
    for case in CASES
]


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's bundled digits (no download), standardised, stratified 80/20 split."""
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data.astype("float32"),
        data.target,
        test_size=0.2,
        random_state=0,
        stratify=data.target,
    )
    mean, std = x_train.mean(0), x_train.std(0) + 0.1
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


@pytest.mark.parametrize("layer_name,estimator", JAX_CASES)
def test_every_layer_and_estimator_traces_under_xla_with_finite_gradients(layer_name, estimator):
    make, shape = LAYERS[layer_name]
    layer = make(gradient_estimator=estimator, seed=1, kl_weight=0.1)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    outputs = []

    def loss(y):
        outputs.append(y)  # the traced output: its static shape is the compiled one
        return ops.sum(ops.sin(y))

    grads = bu.gradients(layer, loss, x, jit_compile=True)  # + the KL from `layer.losses`
    assert tuple(outputs[-1].shape) == layer.compute_output_shape(shape)
    assert len(grads) == 4 and all(g is not None and np.all(np.isfinite(g)) for g in grads)


@pytest.mark.backends
def test_local_reparameterization_is_refused_for_convolutions():
    with pytest.raises(ValueError, match="dense layers only"):
        tge.layers.Conv2DReparameterization(4, 3, gradient_estimator="local_reparameterization")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"gradient_estimator": "dreg"}, "gradient_estimator"),
        ({"gradient_estimator": "r2g2", "conditioning": "batch"}, "conditioning"),
        ({"inference_mode": "median"}, "inference_mode"),
        ({"prior_scale": 0.0}, "prior_scale"),
        ({"kl_weight": -1.0}, "kl_weight"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tge.layers.DenseReparameterization(4, **kwargs)
    with pytest.raises(ValueError, match="units"):
        tge.layers.DenseReparameterization(0)


@pytest.mark.backends
def test_kl_is_analytic_and_scaled_by_kl_weight():
    layer = tge.layers.DenseReparameterization(
        2, kl_weight=0.25, prior_scale=2.0, initial_posterior_scale=0.5
    )
    layer(np.zeros([1, 3], "float32"))
    mu, sigma = np.concatenate([bu.to_numpy(layer.kernel_loc).ravel(), np.zeros(2)]), 0.5
    exact = np.sum(np.log(2.0 / sigma) + (sigma**2 + mu**2) / (2 * 4.0) - 0.5)
    np.testing.assert_allclose(float(layer.losses[0]), 0.25 * exact, rtol=1e-5)


@pytest.mark.backends
def test_same_seed_same_samples_and_initializers_not_shared():
    x = np.ones([2, 5], "float32")
    init = keras.initializers.GlorotUniform(seed=3)
    a = tge.layers.DenseReparameterization(4, seed=7, kernel_loc_initializer=init)
    b = tge.layers.DenseReparameterization(4, seed=7, kernel_loc_initializer=init)
    np.testing.assert_array_equal(a(x, training=True), b(x, training=True))
    assert a.kernel_loc_initializer is not b.kernel_loc_initializer


@pytest.mark.backends
def test_inference_mode_mean_is_deterministic_and_sampling_is_not():
    layer = tge.layers.DenseReparameterization(4, seed=1, initial_posterior_scale=0.5)
    x = np.ones([2, 5], "float32")
    assert not np.allclose(layer(x), layer(x))
    layer.inference_mode = "mean"
    np.testing.assert_array_equal(layer(x), layer(x))


def _bnn(estimator, kl_weight, hidden=100, inference_mode="sample", functional=False):
    keras.utils.set_random_seed(0)
    model = tge.layers.bayesian_mlp(
        (64,),
        [hidden, 10],
        gradient_estimator=estimator,
        seed=1,
        kl_weight=kl_weight,
        inference_mode=inference_mode,
    )
    if functional:  # the same layers as a functional model
        return keras.Model(model.inputs, model.outputs)
    return model


def _scale_gradient_variance(model, x, y, num_draws=500):
    def loss():
        logits = model(x, training=True)
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        )

    return tge.diagnostics.model_gradient_variance(
        loss, model.layers[-1].kernel_scale_raw, num_draws, model.non_trainable_variables
    )


def test_top_layer_scale_gradient_variance_rt_over_r2g2_at_least_10(digits):
    x, y = tf.constant(digits[0][:32]), tf.constant(digits[1][:32])
    variance = {
        est: _scale_gradient_variance(_bnn(est, 0.0), x, y)
        for est in ["reparameterization", "r2g2"]
    }
    ratio = variance["reparameterization"] / variance["r2g2"]
    print(f"top-layer scale-gradient variance RT / R2-G2 on digits: {ratio:.1f}")
    # 500 draws: the relative standard error of each mean variance is a few %.
    assert ratio >= 10.0


def test_bnn_reaches_90_percent_on_digits_with_xla(digits):
    x_train, y_train, x_test, y_test = digits
    model = _bnn("r2g2", kl_weight=1.0 / len(x_train), inference_mode="mean")
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    model.fit(x_train, y_train, epochs=30, batch_size=64, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    print(f"BNN (R2-G2) held-out accuracy on digits, posterior means: {accuracy:.3f}")
    assert accuracy >= 0.90


@pytest.mark.parametrize("functional", [False, True], ids=["sequential", "functional"])
def test_save_and_load_keep_posterior_mean_predictions(digits, tmp_path, functional):
    model = _bnn("r2g2", kl_weight=1e-3, inference_mode="mean", functional=functional)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits[0][:256], digits[1][:256], epochs=1, verbose=0)
    path = str(tmp_path / "bnn.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.layers[-1].get_config() == model.layers[-1].get_config()
    np.testing.assert_array_equal(
        model.predict(digits[2][:20], verbose=0), restored.predict(digits[2][:20], verbose=0)
    )


@pytest.mark.backends
def test_conv_layer_round_trips_through_get_config():
    estimator = tge.layers.estimators.R2G2(conditioning="whole_batch")
    layer = tge.layers.Conv2DReparameterization(
        4, (3, 2), strides=2, padding="same", gradient_estimator=estimator, seed=3
    )
    clone = tge.layers.Conv2DReparameterization.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_trains_under_mirrored_strategy_on_two_devices(digits, mirrored_strategy):
    strategy = mirrored_strategy
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = _bnn("r2g2", kl_weight=1.0 / len(digits[0]), hidden=32)
        model.compile(
            keras.optimizers.Adam(1e-2),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    history = model.fit(digits[0], digits[1], epochs=3, batch_size=64, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.parametrize("estimator", ["local_reparameterization", "flipout", "reparameterization"])
def test_two_replicas_train_exactly_as_one_device_with_the_global_batch(
    digits, mirrored_strategy, estimator
):
    # Every replica reads the same mirrored seed state. Per-example noise (LRT's, Flipout's
    # signs) must still be the global batch's rows, not one half-batch draw repeated on
    # each replica: then two replicas equal one device up to float32 summation order
    # (measured: weights within ~1e-7; rtol 1e-4 leaves room). Before the fix, LRT and
    # Flipout missed by >1e-2 (the gradient of a half-batch noise draw, twice);
    # RT (one weight sample, the same everywhere) is the control that always matched.
    x, y = digits[0][:128], digits[1][:128]

    def trained(strategy):
        with strategy.scope():
            model = _bnn(estimator, kl_weight=1.0 / 128, hidden=16)
            model.compile(
                keras.optimizers.SGD(0.5),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
        return [v.numpy() for v in model.trainable_variables]

    one_device = trained(tf.distribute.get_strategy())
    two_replicas = trained(mirrored_strategy)
    for a, b in zip(one_device, two_replicas, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_conv_r2g2_traces_with_an_unknown_batch_size():
    # Keras relaxes the batch dimension to None for a partial last batch.
    layer = tge.layers.Conv2DReparameterization(4, 3, strides=2, gradient_estimator="r2g2", seed=0)
    layer.build((None, 8, 8, 1))

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x, training=True)))
        return tape.gradient(loss, layer.trainable_weights)

    values = grads(tf.ones([5, 8, 8, 1]))
    assert all(np.all(np.isfinite(g.numpy())) for g in values)


# --- live settings: kl_weight and inference_mode under compiled functions -------------


def _small_bnn(kl_weight=1.0, inference_mode="sample"):
    keras.utils.set_random_seed(0)
    first = tge.layers.DenseReparameterization(
        8, activation="tanh", kl_weight=kl_weight, initial_posterior_scale=0.3, seed=1
    )
    second = tge.layers.DenseReparameterization(
        3, kl_weight=kl_weight, inference_mode=inference_mode, seed=2
    )
    model = keras.Sequential([keras.Input((5,)), first, second])
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True
    )
    x = np.random.default_rng(0).normal(size=(16, 5)).astype("float32")
    return model, (first, second), x, np.arange(16) % 3


@pytest.mark.backends
def test_inference_mode_set_after_compiling_takes_effect_in_predict():
    model, layers, x, y = _small_bnn()
    assert not np.allclose(model.predict(x, verbose=0), model.predict(x, verbose=0))
    for layer in layers:
        layer.inference_mode = "Mean"  # any case, stored lower-case
        assert layer.inference_mode == "mean"
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    layers[0].inference_mode = "sample"
    assert not np.allclose(model.predict(x, verbose=0), model.predict(x, verbose=0))


def _kl_weight_variable(value):
    """A caller's KL-weight variable: on TensorFlow a trainable `tf.Variable` (read, never
    trained); on JAX, where compiled steps see only state passed in, a non-trainable
    `keras.Variable`."""
    if bu.backend() == "tensorflow":
        return tf.Variable(value, trainable=True)
    return keras.Variable(value, trainable=False)


@pytest.mark.backends
def test_kl_weight_set_after_compiling_takes_effect_in_evaluate():
    variable = _kl_weight_variable(1.0)
    model, layers, x, y = _small_bnn(kl_weight=variable, inference_mode="mean")
    layers[0].inference_mode = "mean"
    kl = [float(layer.kl_divergence()) for layer in layers]
    loss = model.evaluate(x, y, verbose=0)
    layers[1].kl_weight = 0.0  # assigns the caller's variable (both layers read it)
    assert float(bu.to_numpy(variable)) == 0.0
    np.testing.assert_allclose(loss - model.evaluate(x, y, verbose=0), sum(kl), rtol=1e-4)
    variable.assign(0.5)
    np.testing.assert_allclose(loss - model.evaluate(x, y, verbose=0), 0.5 * sum(kl), rtol=1e-4)
    # Deterministic under inference_mode="mean": the evaluate above is the one compiled function.
    assert model.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    assert len(model.trainable_weights) == 8 and len(model.non_trainable_weights) == 0
    config = layers[0].get_config()
    assert type(config["kl_weight"]) is float and config["kl_weight"] == 0.5
    with pytest.raises(ValueError, match="Assign a number"):
        layers[0].kl_weight = _kl_weight_variable(2.0)


@pytest.mark.backends
def test_a_trainable_kl_weight_variable_is_refused_where_compiled_steps_would_freeze_it():
    variable = keras.Variable(0.5, trainable=True)
    if bu.backend() == "jax":
        with pytest.raises(ValueError, match="non-trainable keras.Variable"):
            tge.layers.DenseReparameterization(2, kl_weight=variable)
    else:  # TensorFlow reads any variable live; the layer never trains it
        layer = tge.layers.DenseReparameterization(2, kl_weight=variable)
        layer.build((None, 3))
        assert all(v is not variable for v in layer.trainable_variables)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"kl_weight": float("nan")}, ValueError, "kl_weight"),
        ({"kl_weight": "0.1"}, TypeError, "kl_weight"),
        ({"kl_weight": keras.Variable([1.0, 2.0], trainable=False)}, ValueError, "scalar"),
        ({"prior_scale": float("inf")}, ValueError, "prior_scale"),
        ({"initial_posterior_scale": "0.1"}, TypeError, "initial_posterior_scale"),
        ({"inference_mode": "median"}, ValueError, "inference_mode"),
        ({"inference_mode": None}, TypeError, "inference_mode"),
    ],
)
@pytest.mark.backends
def test_bad_settings_are_refused_with_their_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        tge.layers.DenseReparameterization(4, **kwargs)
    layer = tge.layers.DenseReparameterization(4)
    name, value = next(iter(kwargs.items()))
    if name in ("kl_weight", "inference_mode"):  # also checked when set as attributes
        with pytest.raises(error, match=match):
            setattr(layer, name, value)


@pytest.mark.backends
def test_save_and_load_keep_live_settings_as_plain_values(tmp_path):
    model, layers, x, _ = _small_bnn(kl_weight=_kl_weight_variable(0.25), inference_mode="mean")
    layers[0].inference_mode = "mean"
    layers[0].kl_weight = 0.125
    path = str(tmp_path / "bnn.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    for layer, clone in zip(layers, restored.layers):
        assert clone.get_config() == layer.get_config()
        assert clone.kl_weight == 0.125 and clone.inference_mode == "mean"
    np.testing.assert_array_equal(model(x), restored(x))  # eager: no XLA compile needed here


_TENSORFLOW_MODULES = ("tensorflow", "tensorflow_probability")


def _run_python(code, backend, block_tensorflow=False):
    """Runs `code` in a fresh Python with `KERAS_BACKEND=backend`; returns its stdout.

    `block_tensorflow` makes `import tensorflow` (and TFP) fail there, as on a machine
    without them.
    """
    prelude = "import sys\n"
    if block_tensorflow:
        prelude += "".join(f"sys.modules[{m!r}] = None\n" for m in _TENSORFLOW_MODULES)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_keras_files_saved_on_tensorflow_load_train_and_save_on_jax_without_tensorflow(tmp_path):
    # One JAX subprocess with TensorFlow and TFP unimportable (this suite runs on TensorFlow):
    # `import tfp_gradest` and the layers work there, the TFP parts say what to install;
    # it loads the TensorFlow file, differentiates the loaded model, changes the posterior
    # means and a KL weight, and saves a file that is loaded back here.
    model, layers, x, _ = _small_bnn(kl_weight=0.125, inference_mode="mean")
    layers[0].inference_mode = "mean"  # deterministic outputs to compare
    model.save(tmp_path / "tf.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "tf.npy", bu.to_numpy(model(x)))
    stdout = _run_python(
        f"""
        import jax, keras, numpy as np
        import tfp_gradest as tge  # registers the layers with Keras

        assert keras.backend.backend() == "jax"
        model = keras.models.load_model({str(tmp_path / "tf.keras")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        expected = np.load({str(tmp_path / "tf.npy")!r})
        assert [layer.kl_weight for layer in model.layers] == [0.125, 0.125]
        outputs = keras.ops.convert_to_numpy(model(x))
        np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)

        def loss(trainable, state):
            y, state = model.stateless_call(trainable, state, x, training=True)
            return keras.ops.sum(y**2), state

        (value, _), grads = jax.value_and_grad(loss, has_aux=True)(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        )
        assert np.isfinite(float(value)) and all(np.all(np.isfinite(g)) for g in grads)

        for layer in model.layers:
            layer.kernel_loc.assign(2.0 * layer.kernel_loc)
        model.layers[1].kl_weight = 0.25
        model.save({str(tmp_path / "jax.keras")!r})
        np.save({str(tmp_path / "jax.npy")!r}, keras.ops.convert_to_numpy(model(x)))
        try:
            tge.reuse  # written with TensorFlow (the estimators, since 0.4, are not)
        except ImportError as error:
            print(error)
        assert not any(sys.modules.get(m) for m in ("tensorflow", "tensorflow_probability"))
        """,
        "jax",
        block_tensorflow=True,
    )
    assert "tfp_gradest.reuse" in stdout and "pip install" in stdout and "tensorflow" in stdout
    restored = keras.models.load_model(tmp_path / "jax.keras")
    assert [layer.kl_weight for layer in restored.layers] == [0.125, 0.25]
    assert [layer.inference_mode for layer in restored.layers] == ["mean", "mean"]
    expected = np.load(tmp_path / "jax.npy")
    np.testing.assert_allclose(bu.to_numpy(restored(x)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.backends
def test_backend_noise_is_standard_normal_and_fair_signs_keyed_by_the_seed():
    from tfp_gradest import _backend

    n = 20_000
    generator = keras.random.SeedGenerator(4)
    seed = generator.next()
    normal = bu.to_numpy(_backend.normal((n,), seed, "float32")).astype(np.float64)
    np.testing.assert_array_equal(normal, bu.to_numpy(_backend.normal((n,), seed, "float32")))
    signs = bu.to_numpy(_backend.random_signs((n,), generator.next(), "bfloat16"))
    signs = signs.astype(np.float64)
    assert set(np.unique(signs)) == {-1.0, 1.0}
    # z-scores of the mean (sd 1), the variance (sd √2) and the signs' mean (sd 1), each
    # from n draws: |z| < Z_THRESHOLD; a N(0, 1.1²) (z ≈ 21) or a coin with p = 0.53 (z ≈ 8)
    # would fail.
    z = [normal.mean() * np.sqrt(n), (normal.var() - 1) * np.sqrt(n / 2), signs.mean() * np.sqrt(n)]
    assert max(abs(v) for v in z) < Z_THRESHOLD


@pytest.mark.backends
def test_unsupported_keras_backends_are_refused_at_construction(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(RuntimeError, match=r"DenseReparameterization.*'torch'.*KERAS_BACKEND=jax"):
        tge.layers.DenseReparameterization(2)


# --- shapes, dtypes and Keras's conv arguments -----------------------------------------


@pytest.mark.parametrize("layer_name,estimator", CASES)
def test_every_layer_and_estimator_differentiates_eagerly(layer_name, estimator):
    # Conv3D's eager gradient needs `data_format` passed to tf.nn.convolution.
    make, shape = LAYERS[layer_name]
    layer = make(gradient_estimator=estimator, seed=1)
    x = tf.constant(np.random.default_rng(0).normal(size=shape), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.sin(layer(x, training=True))) + tf.add_n(layer.losses)
    grads = tape.gradient(loss, layer.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)


CONV_ESTIMATORS = tge.layers.estimators.names("conv")


@pytest.mark.parametrize("estimator", CONV_ESTIMATORS)
def test_dense_on_sequences_is_a_width_one_convolution(estimator):
    """`[B, T, D]` inputs: same outputs and gradients as Conv1D with kernel_size 1 and the same
    noise.

    For R2-G2 this pins per-example conditioning on all T rows of an example
    (T = 3 < D + 1 = 6, so the solve runs), the conv path's tested semantics.
    """
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 3, 5)), tf.float32)
    kw = dict(gradient_estimator=estimator, seed=3, initial_posterior_scale=0.5)
    dense = tge.layers.DenseReparameterization(2, **kw)
    conv = tge.layers.Conv1DReparameterization(2, 1, **kw)
    dense.build(x.shape), conv.build(x.shape)
    for a, b in zip(conv.weights, dense.weights):
        a.assign(tf.reshape(b, a.shape))
    results = []
    for layer in (dense, conv):
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.sin(3.0 * tf.reduce_sum(y, axis=1)) ** 2)  # mixes the rows
        grads = tape.gradient(loss, layer.trainable_weights)
        results.append([y] + [tf.reshape(g, v.shape) for g, v in zip(grads, dense.weights)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert dense.compute_output_shape((None, 3, 5)) == (None, 3, 2)


def test_dense_refuses_local_reparameterization_on_sequences():
    layer = tge.layers.DenseReparameterization(2, gradient_estimator="local_reparameterization")
    with pytest.raises(ValueError, match="its own weights"):
        layer(tf.ones([2, 3, 4]))


@pytest.mark.backends
@pytest.mark.parametrize("dtype", ["float64", "int32", "int64"])
def test_dense_casts_inputs_to_its_compute_dtype_like_keras(dtype):
    x = np.arange(8).reshape(2, 4).astype(dtype)
    for call in (lambda layer, x: layer(x), lambda layer, x: layer.call(ops.convert_to_tensor(x))):
        layer = tge.layers.DenseReparameterization(3)
        layer.build((None, 4))
        dtypes = [call(layer, x).dtype, keras.layers.Dense(3)(x).dtype]
        assert [keras.backend.standardize_dtype(d) for d in dtypes] == ["float32", "float32"]


@pytest.mark.backends
def test_numpy_integers_are_accepted_like_keras():
    layer = tge.layers.DenseReparameterization(np.int64(4))
    assert layer.get_config()["units"] == 4 and type(layer.units) is int
    conv = tge.layers.Conv2DReparameterization(
        np.int64(4), np.int32(3), strides=(np.int64(1), 1), seed=np.int64(7)
    )
    assert type(conv.get_config()["seed"]) is int
    assert conv.get_config()["filters"] == 4 and conv.kernel_size == (3, 3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(strides=2, dilation_rate=2), "dilation_rate"),
        (dict(padding="full"), "padding"),
        (dict(padding="causal"), "causal"),  # 1-d only, as in Keras
        (dict(groups=3), "groups"),  # 4 filters
        (dict(groups=0), "groups"),
    ],
)
def test_bad_conv_arguments_are_refused_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tge.layers.Conv2DReparameterization(4, 3, **kwargs)


def test_input_smaller_than_the_kernel_is_a_clear_error_at_build():
    layer = tge.layers.Conv2DReparameterization(4, 5)
    with pytest.raises(ValueError, match=r"input_shape=\(None, 4, 8, 1\).*kernel_size=\(5, 5\)"):
        layer.build((None, 4, 8, 1))
    with pytest.raises(ValueError, match="groups=2"):
        tge.layers.Conv2DReparameterization(4, 3, groups=2).build((None, 8, 8, 3))


def _posterior_means_conv(keras_layer, layer, x):
    """The Keras layer with the Bayesian layer's posterior means as its weights."""
    keras_layer.build(x.shape)
    keras_layer.set_weights([bu.to_numpy(layer.kernel_loc), bu.to_numpy(layer.bias_loc)])
    return bu.to_numpy(keras_layer(x))


@pytest.mark.parametrize(
    "estimator",
    [
        pytest.param(e, marks=pytest.mark.backends) if e == "reparameterization" else e
        for e in CONV_ESTIMATORS
    ],
)
@pytest.mark.parametrize(
    "make,keras_layer,shape",
    [
        (
            lambda **kw: tge.layers.Conv1DReparameterization(
                4, 3, padding="causal", dilation_rate=2, **kw
            ),
            lambda: keras.layers.Conv1D(4, 3, padding="causal", dilation_rate=2),
            (2, 7, 3),
        ),
        (
            # 4 output positions < 19 weights per filter: R2-G2 solves.
            lambda **kw: tge.layers.Conv2DReparameterization(
                6, 3, strides=2, groups=2, padding="SAME", **kw
            ),
            lambda: keras.layers.Conv2D(6, 3, strides=2, groups=2, padding="same"),
            (2, 4, 4, 4),
        ),
    ],
    ids=["causal", "groups"],
)  # fmt: skip
def test_causal_padding_and_groups_match_keras(make, keras_layer, shape, estimator):
    """Posterior means equal Keras's layer; samples with a negligible scale too (every
    estimator)."""
    if bu.backend() == "jax" and len(shape) == 3:
        pytest.skip("on JAX only the grouped case runs (suite time); causal is plain padding")
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    mean_layer = make(gradient_estimator=estimator, inference_mode="mean", seed=1)
    mean_layer.build(x.shape)
    expected = _posterior_means_conv(keras_layer(), mean_layer, x)
    np.testing.assert_allclose(bu.to_numpy(mean_layer(x)), expected, rtol=1e-5, atol=1e-5)
    # With σ = 1e-6 a sample is the mean up to ~1e-5: catches misplaced groups or padding.
    sampling = make(gradient_estimator=estimator, initial_posterior_scale=1e-6, seed=1)
    sampling.build(x.shape)
    for a, b in zip(sampling.weights, mean_layer.weights):
        a.assign(b) if "loc" in a.name else None

    y = bu.to_numpy(sampling(x, training=True))
    np.testing.assert_allclose(y, expected, atol=1e-4)
    assert sampling.compute_output_shape(shape) == tuple(y.shape)
    grads = bu.gradients(  # XLA for R2-G2 only on TensorFlow (compile time); always on JAX
        sampling,
        lambda y: ops.sum(ops.sin(y)),
        x,
        jit_compile=estimator == "r2g2" or bu.backend() == "jax",
    )
    assert all(np.all(np.isfinite(g)) for g in grads)


# --- TFP's variational layer tests (layers/dense_variational_v2_test.py,
# conv_variational_test.py), restated for these layers ----------------------------------

KERAS_TWINS = {
    "dense": lambda: keras.layers.Dense(3),
    "conv1d": lambda: keras.layers.Conv1D(3, 3),
    "conv2d": lambda: keras.layers.Conv2D(3, 3),
    "conv3d": lambda: keras.layers.Conv3D(2, 2),
}


def _input(shape):
    return tf.constant(np.random.default_rng(0).normal(size=shape), tf.float32)


def _keras_twin(layer_name, x, kernel, bias):
    twin = KERAS_TWINS[layer_name]()
    twin.build(x.shape)
    twin.set_weights([np.asarray(kernel), np.asarray(bias)])
    return twin(x)


@pytest.mark.parametrize("layer_name", LAYERS)
def test_tfp_port_kl_is_one_scalar_loss_per_call(layer_name):
    make, shape = LAYERS[layer_name]
    layer = make(kl_weight=0.5, prior_scale=2.0, seed=0)
    assert layer.losses == []
    layer(_input(shape))
    layer(_input(shape))  # losses are those of the latest call, not accumulated
    assert len(layer.losses) == 1 and layer.losses[0].shape == ()
    scale_kernel, scale_bias = layer.posterior_scales()
    prior = tfp.distributions.Normal(0.0, 2.0)
    kl = sum(
        float(tf.reduce_sum(tfp.distributions.kl_divergence(tfp.distributions.Normal(m, s), prior)))
        for m, s in [(layer.kernel_loc, scale_kernel), (layer.bias_loc, scale_bias)]
    )
    np.testing.assert_allclose(float(layer.losses[0]), 0.5 * kl, rtol=1e-5)


@pytest.mark.parametrize("layer_name,estimator", CASES)
def test_tfp_port_samples_differ_between_calls_and_means_match_keras(layer_name, estimator):
    make, shape = LAYERS[layer_name]
    x = _input(shape)
    layer = make(gradient_estimator=estimator, initial_posterior_scale=0.1, seed=0)
    first, second = layer(x, training=True), layer(x, training=True)
    assert first.shape == second.shape == layer.compute_output_shape(shape)
    assert np.min(np.abs(first - second)) > 0
    layer.inference_mode = "mean"
    np.testing.assert_array_equal(layer(x), layer(x, training=False))
    expected = _keras_twin(layer_name, x, layer.kernel_loc, layer.bias_loc)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer_name", LAYERS)
def test_tfp_port_reparameterization_output_is_the_keras_layer_at_the_sampled_weights(layer_name):
    """Replays the layer's noise: output = Keras layer with `W = μ + σ ε`, `b = μ_b + σ_b ε_b`."""
    make, shape = LAYERS[layer_name]
    x = _input(shape)
    layer = make(gradient_estimator="reparameterization", initial_posterior_scale=0.3, seed=5)
    layer.build(x.shape)
    state = layer.seed_generator.state.numpy()
    outputs = layer(x, training=True)
    layer.seed_generator.state.assign(state)
    noise = tge.layers.estimators.NoiseSource(layer.seed_generator)  # the layer's draws again
    scale_kernel, scale_bias = layer.posterior_scales()
    kernel = layer.kernel_loc + scale_kernel * noise.normal(layer.kernel_loc.shape, tf.float32)
    bias = layer.bias_loc + scale_bias * noise.normal(layer.bias_loc.shape, tf.float32)
    expected = _keras_twin(layer_name, x, kernel, bias)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer_name", LAYERS)
def test_tfp_port_from_config_rebuilds_the_same_layer(layer_name):
    make, shape = LAYERS[layer_name]
    x = _input(shape)
    layer = make(kl_weight=0.25, inference_mode="mean", seed=3, name="original")
    layer(x)
    clone = type(layer).from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(clone(x), layer(x))
    np.testing.assert_array_equal(clone.losses[0], layer.losses[0])


# --- mixed precision (TensorFlow and JAX backends) ---------------------------------------


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def mixed_policy(request):
    with bu.global_dtype_policy(request.param) as name:
        yield name


@pytest.mark.backends
def test_fit_under_mixed_precision_keeps_float32_variables_and_kl(mixed_policy):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            # 25 positions >= 9 weights per filter: R2-G2's solve is skipped (keeps XLA
            # compilation cheap; the solve's own dtype handling is the R2-G2 tests' job).
            tge.layers.Conv2DReparameterization(4, 2, activation="relu", seed=0),
            keras.layers.Flatten(),
            tge.layers.DenseReparameterization(3, kl_weight=0.01, seed=1),
        ]
    )
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True
    )
    x = np.random.default_rng(0).normal(size=(8, 6, 6, 2)).astype("float32")
    history = model.fit(x, np.arange(8) % 3, epochs=1, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(w.dtype == "float32" for w in model.weights)
    compute = mixed_policy.split("_")[1]
    assert keras.backend.standardize_dtype(model(x).dtype) == compute
    assert all(keras.backend.standardize_dtype(loss.dtype) == "float32" for loss in model.losses)
    if mixed_policy == "mixed_float16":  # Keras scales the loss (float16's range)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    # The KL from float32 parameters, not from their float16/bfloat16 images (those
    # change it by ~1e-3 relative; float32 arithmetic on 100 terms by ~1e-6).
    top = model.layers[-1]
    expected = 0.0
    for loc, raw in [(top.kernel_loc, top.kernel_scale_raw), (top.bias_loc, top.bias_scale_raw)]:
        mu, sigma = np.float64(bu.to_numpy(loc)), np.log1p(np.exp(np.float64(bu.to_numpy(raw))))
        expected += np.sum(-np.log(sigma) + (sigma**2 + mu**2) / 2 - 0.5)
    kl = top.kl_divergence()
    assert keras.backend.standardize_dtype(kl.dtype) == "float32"
    np.testing.assert_allclose(float(kl), expected, rtol=1e-5)


def test_kl_weight_read_inside_a_tf_function_is_not_frozen_at_tracing():
    layer = tge.layers.DenseReparameterization(2, kl_weight=1.0)
    layer.build((None, 3))

    @tf.function
    def weighted_kl():
        return layer.kl_weight * layer.kl_divergence()

    first = float(weighted_kl())
    layer.kl_weight = 0.5
    np.testing.assert_allclose(float(weighted_kl()), 0.5 * first, rtol=1e-6)
