"""GradientVarianceMonitor: its numbers against a direct computation, History, TensorBoard, plots,
strategies; on TensorFlow, and (tests marked `backends`) on JAX too."""

import ast
import glob
import math
import os
import pathlib

import keras
import numpy as np
import pytest

import tfp_gradest as tge
from tfp_gradest.callbacks import gradient_variance_monitor as monitor_lib

from . import backend_utils as bu

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf


def _data(n=96, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32")


def _bnn(estimator="r2g2", jit_compile=True, optimizer="adam"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            tge.layers.DenseReparameterization(8, activation="tanh", gradient_estimator=estimator,
                                               kl_weight=1 / 96, seed=1, name="hidden"),
            tge.layers.DenseReparameterization(2, gradient_estimator=estimator,
                                               kl_weight=1 / 96, seed=2, name="top"),
        ],
        name="bnn",
    )  # fmt: skip
    model.compile(
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def _direct_probe(model, x, y, seed, epoch, num_draws, jit_compile):
    """One stateful draw per call, numpy moments: what the monitor documents it computes.

    The model's SeedGenerator states are assigned the monitor's documented starting
    states and advance by themselves from draw to draw (the monitor instead carries
    them through a stateless loop); each draw is compiled like the model (XLA's
    normal sampler maps Philox bits to normals differently from TensorFlow's kernels,
    so the noise depends on it).
    """

    @tf.function(jit_compile=jit_compile)
    def one_draw():
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
        return tape.gradient(loss, model.trainable_weights)

    generators = monitor_lib.seed_state_variables(model)
    saved = [g.numpy() for g in generators]
    for i, g in enumerate(generators):
        g.assign(monitor_lib.probe_seed_state(seed, epoch, i, g.dtype))
    draws = []
    for _ in range(num_draws):
        draws.append([g.numpy() for g in one_draw()])
    for g, state in zip(generators, saved):
        g.assign(state)
    return [tge.diagnostics.gradient_moments(np.stack(d)) for d in zip(*draws)]


@pytest.mark.parametrize("jit_compile", [True, False], ids=["xla", "graph"])
def test_probe_numbers_equal_a_direct_computation_on_the_same_seeds(jit_compile):
    x, y = _data()
    model = _bnn(jit_compile=jit_compile)
    monitor = tge.callbacks.GradientVarianceMonitor((x[:32], y[:32]), num_draws=8, seed=3)
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[monitor])
    # After the last epoch the weights are the ones the monitor saw at epoch 1.
    moments = _direct_probe(
        model, x[:32], y[:32], seed=3, epoch=1, num_draws=8, jit_compile=jit_compile
    )
    groups = monitor.groups()
    assert list(groups) == ["hidden", "top"]
    for group, indices in groups.items():
        var = np.concatenate([moments[i].variance.ravel() for i in indices])
        np.testing.assert_allclose(
            history.history[f"grad_log10_variance/{group}"][-1], math.log10(var.mean()), atol=1e-4
        )
        # The package's one SNR definition, on the same draws.
        snr = tge.diagnostics.signal_to_noise_ratio([moments[i] for i in indices])
        np.testing.assert_allclose(history.history[f"grad_snr/{group}"][-1], snr, rtol=1e-3)


def test_monitoring_does_not_change_the_training_run():
    x, y = _data()
    plain = _bnn().fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    monitor = tge.callbacks.GradientVarianceMonitor((x[:32], y[:32]), num_draws=4)
    monitored = _bnn().fit(
        x, y, epochs=2, batch_size=32, verbose=0, shuffle=False, callbacks=[monitor]
    )
    np.testing.assert_allclose(monitored.history["loss"], plain.history["loss"], rtol=1e-6)


def test_history_has_one_entry_per_epoch_and_nan_between_recordings(tmp_path):
    x, y = _data()
    monitor = tge.callbacks.GradientVarianceMonitor(
        (x[:32], y[:32]), num_draws=4, every_n_epochs=2, group_by="variable", log_dir=str(tmp_path)
    )
    history = _bnn().fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[monitor])
    key = "grad_log10_variance/top/kernel_scale_raw"
    assert set(monitor.keys()) <= set(history.history)
    assert len(monitor.keys()) == 2 * 8  # 2 layers x 4 variables x (variance, SNR)
    values = history.history[key]
    assert len(values) == 4 and np.isnan(values[0]) and np.isnan(values[2])
    assert np.isfinite(values[1]) and np.isfinite(values[3])
    assert [epoch for epoch, _ in monitor.history[key]] == [1, 3]
    assert glob.glob(str(tmp_path / "events.out.tfevents.*")), "no TensorBoard event file"


def test_every_n_steps_records_per_step():
    x, y = _data()
    monitor = tge.callbacks.GradientVarianceMonitor((x[:32], y[:32]), num_draws=4, every_n_steps=2)
    history = _bnn().fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[monitor])
    steps = [s for s, _ in monitor.history["grad_log10_variance/hidden"]]
    assert steps == [2, 4, 6]
    assert np.all(np.isfinite(history.history["grad_snr/hidden"]))


def test_r2g2_monitor_sees_lower_top_layer_variance_than_rt():
    x, y = _data()
    logs = {}
    for estimator in ("reparameterization", "r2g2"):
        monitor = tge.callbacks.GradientVarianceMonitor(
            (x[:64], y[:64]), num_draws=32, group_by="variable"
        )
        history = _bnn(estimator).fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[monitor])
        logs[estimator] = history.history
    key = "grad_log10_variance/{}/kernel_scale_raw"
    for layer in ("hidden", "top"):
        assert logs["r2g2"][key.format(layer)][0] < logs["reparameterization"][key.format(layer)][0]


def test_plot_writes_a_png(tmp_path):
    x, y = _data()
    monitors = {}
    for estimator in ("reparameterization", "r2g2"):
        monitors[estimator] = tge.callbacks.GradientVarianceMonitor((x[:32], y[:32]), num_draws=4)
        _bnn(estimator).fit(
            x, y, epochs=1, batch_size=32, verbose=0, callbacks=[monitors[estimator]]
        )
    path = tmp_path / "variance.png"
    ax = tge.callbacks.plot_gradient_variance(monitors, path=str(path))
    assert path.stat().st_size > 1000 and len(ax.lines) == 4
    single = tmp_path / "one.png"
    monitors["r2g2"].plot(str(single), groups=["top"])
    assert single.stat().st_size > 1000


def _plain_model(optimizer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(4, activation="tanh", name="first"),
            keras.layers.Dense(2, name="second"),
        ],
        name="plain",
    )
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_streaming_moments_are_those_of_the_training_gradients():
    # A deterministic model with a zero learning rate: the training gradients are
    # the per-minibatch gradients at fixed weights, which we can compute directly.
    x, y = _data()
    model = _plain_model(keras.optimizers.SGD(0.0))
    monitor = tge.callbacks.GradientVarianceMonitor(mode="streaming")
    history = model.fit(
        x, y, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[monitor]
    )
    draws = []
    for start in range(0, 96, 16):
        xb, yb = x[start : start + 16], y[start : start + 16]
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=xb, y=yb, y_pred=model(xb))
        draws.append(
            np.concatenate(
                [g.numpy().ravel() for g in tape.gradient(loss, model.trainable_weights[:2])]
            )
        )
    expected = math.log10(np.stack(draws).var(0, ddof=1).mean())
    np.testing.assert_allclose(
        history.history["grad_streaming_log10_variance/first"][0], expected, atol=1e-4
    )
    # fit() leaves the optimizer as it found it.
    assert "apply" not in vars(model.optimizer)


def test_streaming_under_mirrored_strategy_sums_the_replicas(mirrored_strategy):
    x, y = _data()
    plain = _plain_model(keras.optimizers.SGD(0.0))
    expected = plain.fit(
        x, y, epochs=1, batch_size=16, shuffle=False, verbose=0,
        callbacks=[tge.callbacks.GradientVarianceMonitor(mode="streaming")],
    ).history  # fmt: skip
    with mirrored_strategy.scope():
        model = _plain_model(keras.optimizers.SGD(0.0))
    probe = tge.callbacks.GradientVarianceMonitor((x[:32], y[:32]), num_draws=2)
    streaming = tge.callbacks.GradientVarianceMonitor(mode="streaming")
    history = model.fit(
        x, y, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[probe, streaming]
    ).history
    key = "grad_streaming_log10_variance/second"
    np.testing.assert_allclose(history[key], expected[key], atol=1e-4)
    # A deterministic model has no estimator noise at all.
    assert history["grad_log10_variance/first"][0] == -np.inf


def test_bnn_under_mirrored_strategy(mirrored_strategy):
    x, y = _data()
    with mirrored_strategy.scope():
        model = _bnn(jit_compile=False)
    monitor = tge.callbacks.GradientVarianceMonitor((x[:32], y[:32]), num_draws=4)
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[monitor])
    assert np.all(np.isfinite(history.history["grad_log10_variance/top"]))


class CustomStepModel(keras.Model):
    """A model whose train_step computes its own loss: the monitor needs `loss_fn`."""

    def __init__(self):
        super().__init__()
        self.layer = tge.layers.DenseReparameterization(2, kl_weight=1 / 96, seed=4)

    def call(self, x, training=False):
        return self.layer(x, training=training)

    def own_loss(self, x, y):
        logits = self(x, training=True)
        nll = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        return tf.reduce_mean(nll) + tf.add_n(self.losses)

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = self.own_loss(x, y)
        self.optimizer.apply_gradients(
            zip(tape.gradient(loss, self.trainable_weights), self.trainable_weights)
        )
        return {"loss": loss}


def test_custom_train_step_model_with_loss_fn():
    x, y = _data()
    model = CustomStepModel()
    model(x[:1])  # streaming mode needs the weights before fit
    model.compile("adam")
    probe = tge.callbacks.GradientVarianceMonitor(
        (x[:32], y[:32]), num_draws=4, loss_fn=lambda m, x, y, w: m.own_loss(x, y)
    )
    streaming = tge.callbacks.GradientVarianceMonitor(mode="streaming")
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[probe, streaming])
    for key in probe.keys() + streaming.keys():
        assert np.all(np.isfinite(history.history[key])), key


def test_vae_with_its_own_compute_loss(tmp_path):
    from sklearn.datasets import load_digits

    data = (load_digits().data[:200] / 16.0 > 0.5).astype("float32")
    keras.utils.set_random_seed(0)
    model = tge.models.VariationalAutoencoder(
        keras.Sequential([keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(8)]),
        keras.Sequential([keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(64)]),
        latent_dim=4, gradient_estimator="iwae_dreg", importance_sample_size=4, seed=0,
    )  # fmt: skip
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
    monitor = tge.callbacks.GradientVarianceMonitor(data[:50], num_draws=4)
    history = model.fit(data, epochs=1, batch_size=50, verbose=0, callbacks=[monitor])
    assert monitor.keys() and set(monitor.keys()) <= set(history.history)
    assert all(np.isfinite(history.history[key][0]) for key in monitor.keys())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(), "probe_data"),
        (dict(probe_data=(1, 2), num_draws=1), "num_draws"),
        (dict(probe_data=(1, 2), mode="fast"), "mode"),
        (dict(probe_data=(1, 2), group_by="module"), "group_by"),
        (dict(probe_data=(1, 2), every_n_epochs=0), "every_n_epochs"),
        (dict(mode="streaming", every_n_steps=3), "every_n_steps"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tge.callbacks.GradientVarianceMonitor(**kwargs)


# --- KLAnnealing -----------------------------------------------------------------------


def _kl_only_model(kl_weights):
    """Zero data loss and a zero learning rate: each epoch's loss is exactly Σ kl_weight · KL."""
    keras.utils.set_random_seed(0)
    layers = [
        tge.layers.DenseReparameterization(4, kl_weight=w, seed=i, initial_posterior_scale=0.3)
        for i, w in enumerate(kl_weights)
    ]
    inner = keras.Sequential([keras.Input((3,)), layers[0]])  # nested: found recursively
    model = keras.Sequential([keras.Input((3,)), inner, *layers[1:]])
    model.compile(
        keras.optimizers.SGD(0.0), loss=lambda y, p: 0.0 * keras.ops.mean(p), jit_compile=True
    )
    kl = [float(layer.kl_divergence()) for layer in layers]
    return model, layers, kl


@pytest.mark.backends
def test_kl_annealing_changes_the_loss_of_the_compiled_train_step():
    model, layers, kl = _kl_only_model([0.5, 2.0])
    factors = [0.0, 1.0, 0.25]
    callback = tge.callbacks.KLAnnealing(lambda epoch: factors[epoch])
    x, y = np.ones([8, 3], "float32"), np.zeros([8, 4], "float32")
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[callback])
    full = 0.5 * kl[0] + 2.0 * kl[1]
    np.testing.assert_allclose(history.history["loss"], [f * full for f in factors], rtol=1e-5)
    assert history.history["kl_factor"] == factors
    assert layers[1].kl_weight == 2.0 * 0.25 and layers[1].get_config()["kl_weight"] == 0.5
    # A second fit continues from the bases seen first (no compounding).
    history = model.fit(
        x, y, epochs=2, initial_epoch=1, batch_size=8, verbose=0, callbacks=[callback]
    )
    np.testing.assert_allclose(history.history["loss"], [full], rtol=1e-5)


@pytest.mark.backends
@pytest.mark.parametrize(
    "schedule,error",
    [("linear", TypeError), (lambda e: float("nan"), ValueError), (lambda e: -1, ValueError)],
)
def test_kl_annealing_refuses_bad_schedules(schedule, error):
    model, _, _ = _kl_only_model([1.0])
    x, y = np.ones([8, 3], "float32"), np.zeros([8, 4], "float32")
    with pytest.raises(error, match="schedule"):
        callback = tge.callbacks.KLAnnealing(schedule)
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])


# --- On every backend (marked `backends`): public Keras APIs, the JAX backend ---------------
# Plain Keras layers with keras.random noise (GaussianNoise's SeedGenerator), so these tests
# need nothing but Keras; `test_bnn_monitor_on_jax` adds tge layers.


def _noisy_net(optimizer="adam"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh", name="hidden"),
            keras.layers.GaussianNoise(0.5, seed=3),
            keras.layers.Dense(2, name="top"),
        ],
        name="noisy",
    )
    model.compile(
        optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True
    )
    return model


def _direct_draws(model, x, y, seed, index, num_draws):
    """`num_draws` gradients drawn one per call (tests/backend_utils: a GradientTape on
    TensorFlow, jax.value_and_grad on JAX), from the monitor's documented seed states;
    one array [num_draws, ...] per trainable variable."""
    generators = monitor_lib.seed_state_variables(model)
    saved = [keras.ops.convert_to_numpy(g) for g in generators]
    for i, g in enumerate(generators):
        g.assign(monitor_lib.probe_seed_state(seed, index, i, g.dtype))
    step = bu.gradient_fn(
        lambda: model.compute_loss(x=x, y=y, y_pred=model(x, training=True)),
        model.trainable_variables,
        state_variables=model.non_trainable_variables,
        jit_compile=True,
    )
    draws = [step()[1] for _ in range(num_draws)]
    for g, state in zip(generators, saved):
        g.assign(state)
    return [np.stack(d) for d in zip(*draws)]


@pytest.mark.backends
def test_probe_moments_and_snr_are_diagnostics_of_the_same_draws():
    x, y = _data()
    model = _noisy_net()
    monitor = tge.callbacks.GradientVarianceMonitor((x[:32], y[:32]), num_draws=6, seed=5)
    history = model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[monitor])
    draws = _direct_draws(model, x[:32], y[:32], seed=5, index=0, num_draws=6)
    moments = [tge.diagnostics.gradient_moments(d) for d in draws]
    # The monitor's running (Welford, float32) moments are those of the draws themselves.
    for mine, direct in zip(monitor.probe_moments(0), moments):
        np.testing.assert_allclose(mine.mean, direct.mean, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(mine.variance, direct.variance, rtol=1e-3, atol=1e-9)
        assert mine.num_draws == 6
    groups = monitor.groups()
    assert list(groups) == ["hidden", "top"]
    for group, indices in groups.items():
        variance = np.concatenate([moments[i].variance.ravel() for i in indices]).mean()
        np.testing.assert_allclose(
            history.history[f"grad_log10_variance/{group}"][0], math.log10(variance), atol=1e-4
        )
        # The one SNR definition (debiased), not the naive mean of |mean| / sd.
        snr = tge.diagnostics.signal_to_noise_ratio([moments[i] for i in indices])
        np.testing.assert_allclose(history.history[f"grad_snr/{group}"][0], snr, rtol=1e-4)
        naive = np.mean(
            np.concatenate([np.abs(moments[i].mean / np.sqrt(moments[i].variance)).ravel()
                            for i in indices])
        )  # fmt: skip
        assert abs(naive - snr) > 1e-3 * snr, "the check could not tell the two SNRs apart"


@pytest.mark.backends
def test_monitoring_never_changes_training_and_the_same_seed_repeats_on_every_backend():
    x, y = _data()
    plain = _noisy_net()
    expected = plain.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False).history
    model = _noisy_net()
    # A probe after every step: any state it changed would change the steps after it.
    probe = tge.callbacks.GradientVarianceMonitor(
        (x[:32], y[:32]), num_draws=3, every_n_steps=1, seed=7
    )
    streaming = tge.callbacks.GradientVarianceMonitor(mode="streaming")
    history = model.fit(
        x, y, epochs=1, batch_size=32, verbose=0, shuffle=False, callbacks=[probe, streaming]
    ).history
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-6)
    for mine, theirs in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6)
    assert "apply" not in vars(model.optimizer)  # fit() leaves the optimizer as it was
    assert [step for step, _ in probe.history["grad_snr/top"]] == [1, 2, 3]
    # Same seed and recording, same numbers; another seed, other numbers.
    again = probe.probe_moments(3)
    np.testing.assert_array_equal(again[0].mean, probe.probe_moments(3)[0].mean)
    other = tge.callbacks.GradientVarianceMonitor((x[:32], y[:32]), num_draws=3, seed=8)
    other.set_model(model)
    assert not np.array_equal(again[0].mean, other.probe_moments(3)[0].mean)


@pytest.mark.backends
def test_streaming_moments_are_those_of_the_training_gradients_on_every_backend():
    # A deterministic model with a zero learning rate: the training gradients are the
    # per-minibatch gradients at fixed weights, computed here one by one.
    x, y = _data()
    model = _plain_model(keras.optimizers.SGD(0.0))
    monitor = tge.callbacks.GradientVarianceMonitor(mode="streaming", group_by="variable")
    history = model.fit(
        x, y, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[monitor]
    ).history
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 96, 16)]
    draws = [
        bu.gradient_fn(
            lambda xb=xb, yb=yb: model.compute_loss(x=xb, y=yb, y_pred=model(xb)),
            model.trainable_variables,
        )()[1]
        for xb, yb in batches
    ]
    for variable, d in zip(model.trainable_variables, zip(*draws)):
        moments = tge.diagnostics.gradient_moments(np.stack(d))
        name = variable.path[len("plain/") :]
        np.testing.assert_allclose(
            history[f"grad_streaming_log10_variance/{name}"][0],
            math.log10(moments.variance.mean()),
            atol=1e-4,
        )
        np.testing.assert_allclose(
            history[f"grad_streaming_snr/{name}"][0],
            tge.diagnostics.signal_to_noise_ratio(moments),
            rtol=1e-4,
        )


@pytest.mark.backends
def test_bnn_monitor_on_jax():
    # tge layers: their KL terms (add_loss) reach the probe's loss in the stateless scope.
    # (On TensorFlow the tests above run tge layers through both modes already.)
    bu.skip_unless("jax", "this JAX run of tge layers")
    x, y = _data()
    model = _bnn("reparameterization")
    monitors = [
        tge.callbacks.GradientVarianceMonitor((x[:32], y[:32]), num_draws=4),
        tge.callbacks.GradientVarianceMonitor(mode="streaming"),
    ]
    history = model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=monitors).history
    for key in monitors[0].keys() + monitors[1].keys():
        assert np.isfinite(history[key][0]), key


@pytest.mark.backends
def test_gradient_moments_snr_is_the_elementwise_one_snr():
    # One SNR definition: GradientMoments.snr's terms average to signal_to_noise_ratio
    # (over elements with a positive variance), not the naive |mean| / sd.
    draws = np.random.default_rng(0).normal([0.3, 0.0, 2.0, 0.0], [1.0, 1.0, 0.5, 0.0], (20, 4))
    moments = tge.diagnostics.gradient_moments(draws)
    terms = moments.snr
    assert np.isnan(terms[3])  # zero variance and zero mean
    np.testing.assert_allclose(
        np.mean(terms[:3]), tge.diagnostics.signal_to_noise_ratio(moments), rtol=1e-12
    )
    naive = np.abs(moments.mean[:3]) / np.sqrt(moments.variance[:3])
    assert not np.allclose(terms[:3], naive, rtol=1e-3)


_WITHOUT_TENSORFLOW = """
import sys, warnings
import numpy as np
sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError
import keras
import tfp_gradest.callbacks, tfp_gradest.diagnostics
x = np.ones((8, 3), "float32")
model = keras.Sequential([keras.Input((3,)), keras.layers.GaussianNoise(1.0, seed=1),
                          keras.layers.Dense(1)])
model.compile("sgd", "mse")
probe = tfp_gradest.callbacks.GradientVarianceMonitor((x, x[:, :1]), num_draws=2,
                                                      log_dir=sys.argv[1])
streaming = tfp_gradest.callbacks.GradientVarianceMonitor(mode="streaming")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    history = model.fit(x, x[:, :1], epochs=1, verbose=0, callbacks=[probe, streaming])
assert any("TensorBoard scalars need TensorFlow" in str(w.message) for w in caught)
assert np.isfinite(history.history["grad_log10_variance/dense"][0])
print("ok")
"""


def test_callbacks_run_on_jax_without_tensorflow(tmp_path):
    import subprocess
    import sys

    environment = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, str(tmp_path)],
        env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_an_unsupported_backend_is_refused_at_construction():
    import subprocess
    import sys

    code = "import tfp_gradest.callbacks as c; c.GradientVarianceMonitor(mode='streaming')"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, KERAS_BACKEND="numpy"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "RuntimeError" in result.stderr and "'numpy'" in result.stderr, result.stderr[-2000:]


# The Keras-private names the monitor used before (and any other `obj._name` on an object
# that is not the module's own `self`): they change across Keras releases and backends.
# Every module of the callbacks package, and the backend code they use; what Keras offers
# no public API for is in `_util/keras_private.py` (tests/test_keras_private.py).
_OWN_MODULES = [
    *sorted(p.name for p in pathlib.Path(monitor_lib.__file__).parent.glob("*.py")),
    "../_backend/__init__.py",
    "../_backend/tensorflow.py",
    "../_backend/jax.py",
]


def _private_attribute_uses(source):
    """`obj._name` accesses in `source` whose `obj` is not `self` (nor dunders)."""
    uses = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        ):
            uses.append(f"line {node.lineno}: .{node.attr}")
    return uses


def test_the_monitor_uses_no_private_keras_attribute():
    package = pathlib.Path(monitor_lib.__file__).parent
    for name in _OWN_MODULES:
        source = (package / name).read_text(encoding="utf-8")
        assert not _private_attribute_uses(source), (name, _private_attribute_uses(source))
        assert "keras.src" not in source, name
    # Power check: the accesses the monitor used to make are caught.
    old = (
        "gens = [l._seed_generators for l in model._flatten_layers()]\n"
        "v = optimizer._trainable_variables\n"
    )
    assert len(_private_attribute_uses(old)) == 3


# --- Non-finite gradients and the progress line (issue 21 item 2, issue 22 item 7) ----------


class _SqrtGain(keras.layers.Layer):
    """`x (1 + √gain)` with `gain = 0`: finite outputs, but `∂√g/∂g = ∞` at 0 makes the
    gradient w.r.t. `gain` non-finite."""

    def build(self, input_shape):
        self.gain = self.add_weight(name="gain", shape=(), initializer="zeros")

    def call(self, x):
        return x * (1.0 + keras.ops.sqrt(self.gain))


class _NoStep(keras.optimizers.Optimizer):
    """Leaves every variable as it is (`SGD(0.0)` would write 0 · NaN = NaN into `gain`)."""

    def __init__(self):
        super().__init__(learning_rate=0.0, name="no_step")

    def update_step(self, gradient, variable, learning_rate):
        del gradient, variable, learning_rate


def _broken_net():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(2, name="healthy"), _SqrtGain(name="broken")],
        name="broken_net",
    )
    model.compile(_NoStep(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class _RecordingWriter:
    """Stands in for the TensorBoard writer: keeps what the monitor would write."""

    written = []

    def __init__(self, log_dir):
        del log_dir

    def write(self, values, step):
        self.written.append((step, dict(values)))

    def flush(self):
        pass


@pytest.mark.backends
@pytest.mark.parametrize("mode", ["probe", "streaming"])
def test_a_non_finite_gradient_is_recorded_as_nan_with_one_warning(mode, monkeypatch):
    monkeypatch.setattr(monitor_lib, "ScalarWriter", _RecordingWriter)
    monkeypatch.setattr(_RecordingWriter, "written", [])
    x, y = _data()
    model = _broken_net()
    options = {"probe_data": (x[:32], y[:32]), "num_draws": 3} if mode == "probe" else {}
    monitor = tge.callbacks.GradientVarianceMonitor(mode=mode, log_dir="unused", **options)
    with pytest.warns(RuntimeWarning, match="not finite") as caught:
        history = model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[monitor])
    messages = [str(w.message) for w in caught if "GradientVarianceMonitor" in str(w.message)]
    assert len(messages) == 1, messages  # once for the variable, not once per epoch
    assert "'gain'" in messages[0] and "'broken_net/broken'" in messages[0], messages[0]
    prefix = {"probe": "grad_", "streaming": "grad_streaming_"}[mode]
    for key in [f"{prefix}log10_variance/broken", f"{prefix}snr/broken"]:
        assert np.all(np.isnan(history.history[key])), (key, history.history[key])
        assert [np.isnan(value) for _, value in monitor.history[key]] == [True, True]
        assert [np.isnan(values[key]) for _, values in _RecordingWriter.written] == [True, True]
    healthy = history.history[f"{prefix}log10_variance/healthy"]
    if mode == "probe":  # a deterministic layer: exactly equal draws, no noise at all
        assert healthy == [-np.inf, -np.inf]
    else:  # minibatch noise
        assert np.all(np.isfinite(healthy)), healthy


@pytest.mark.backends
@pytest.mark.parametrize(
    "group_by, show, printed",
    [("layer", None, True), ("variable", None, False), ("variable", True, True),
     ("layer", False, False)],
)  # fmt: skip
def test_show_in_progress_bar_keeps_the_values_in_history_either_way(
    group_by, show, printed, capsys
):
    x, y = _data()
    model = _noisy_net()
    monitor = tge.callbacks.GradientVarianceMonitor(
        (x[:32], y[:32]), num_draws=2, group_by=group_by, show_in_progress_bar=show
    )
    history = model.fit(x, y, epochs=2, batch_size=96, verbose=2, callbacks=[monitor]).history
    lines = [line for line in capsys.readouterr().out.splitlines() if "loss" in line]
    assert len(lines) == 2, lines
    assert all(("grad_log10_variance/" in line) == printed for line in lines), lines
    assert ("grad_log10_variance/top" in history) == (group_by == "layer")
    for key in monitor.keys():
        assert len(history[key]) == 2 and np.all(np.isfinite(history[key])), key


def test_show_in_progress_bar_must_be_a_bool():
    with pytest.raises(TypeError, match="Received: show_in_progress_bar='no'"):
        tge.callbacks.GradientVarianceMonitor(mode="streaming", show_in_progress_bar="no")


def test_a_non_finite_gradient_is_nan_in_the_tensorboard_file(tmp_path):
    x, y = _data()
    monitor = tge.callbacks.GradientVarianceMonitor(
        (x[:32], y[:32]), num_draws=2, log_dir=str(tmp_path)
    )
    with pytest.warns(RuntimeWarning, match="not finite"):
        _broken_net().fit(x, y, epochs=1, batch_size=96, verbose=0, callbacks=[monitor])
    values = {}
    for path in glob.glob(str(tmp_path / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values[value.tag] = float(tf.make_ndarray(value.tensor))
    assert np.isnan(values["grad_log10_variance/broken"]), values
    assert values["grad_log10_variance/healthy"] == -np.inf, values


@pytest.mark.backends
def test_streaming_under_a_loss_scale_optimizer_sees_the_unscaled_gradients():
    # Keras wraps the optimizer in a LossScaleOptimizer under mixed_float16; its own `apply`
    # sees gradients times the loss scale (2**15: +9 in log10 variance), and JAX's train step
    # does not call it at all (nothing recorded: -inf). A zero learning rate keeps the
    # weights, so both policies see the same minibatch gradients, up to float16 rounding
    # (relative 1e-3 in the gradients, 1e-2 in log10 variance).
    x, y = _data()
    recorded = {}
    for policy in ["float32", "mixed_float16"]:
        with bu.global_dtype_policy(policy):
            model = _plain_model(keras.optimizers.SGD(0.0))  # deterministic
            monitor = tge.callbacks.GradientVarianceMonitor(mode="streaming")
            history = model.fit(
                x, y, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[monitor]
            ).history
        recorded[policy] = [history[key][0] for key in monitor.keys()]
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert "apply" not in vars(model.optimizer.inner_optimizer)  # restored after fit
    np.testing.assert_allclose(recorded["mixed_float16"], recorded["float32"], atol=1e-2)


@pytest.mark.backends
def test_streaming_with_one_step_per_window_records_nan_not_noiseless():
    # One optimizer step per epoch: no variance can be estimated. Recording 0 (log10: -inf)
    # would claim a noiseless gradient.
    x, y = _data()
    model = _plain_model(keras.optimizers.SGD(0.0))
    monitor = tge.callbacks.GradientVarianceMonitor(mode="streaming")
    with pytest.warns(RuntimeWarning, match="took 1 step") as caught:
        history = model.fit(x, y, epochs=2, batch_size=96, verbose=0, callbacks=[monitor]).history
    assert len([w for w in caught if "took 1 step" in str(w.message)]) == 1
    for key in monitor.keys():
        assert np.all(np.isnan(history[key])), (key, history[key])


class _Interrupt(keras.callbacks.Callback):
    """Raises after the first step, as a KeyboardInterrupt or a failing callback would."""

    def on_train_batch_end(self, batch, logs=None):
        raise RuntimeError("interrupted")


@pytest.mark.backends
def test_streaming_after_an_interrupted_fit_leaves_the_optimizer_as_it_was():
    # Keras calls no `on_train_end` when `fit` raises, so the tap stays on the optimizer
    # until the monitor's next `fit`, which must replace it, not wrap it.
    x, y = _data()
    expected = _plain_model(keras.optimizers.SGD(0.0)).fit(
        x, y, epochs=1, batch_size=16, shuffle=False, verbose=0,
        callbacks=[tge.callbacks.GradientVarianceMonitor(mode="streaming")],
    ).history  # fmt: skip
    model = _plain_model(keras.optimizers.SGD(0.0))
    monitor = tge.callbacks.GradientVarianceMonitor(mode="streaming")
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[monitor, _Interrupt()])
    assert "apply" in vars(model.optimizer)  # the tap is still there
    history = model.fit(
        x, y, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[monitor]
    ).history
    assert "apply" not in vars(model.optimizer)
    for key in monitor.keys():
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-6, err_msg=key)
