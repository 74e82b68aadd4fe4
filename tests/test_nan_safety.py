"""Degenerate variances: a zero input row, scales that underflow in float16 or float32.

Local reparameterisation samples `h = m + √v ⊙ ζ`; autodiff's `∂√v/∂v = ∞` at `v = 0`
used to turn every scale's gradient into NaN (issue 21, item 1). Every dense estimator is
checked in the same three cases, on both backends, and the fix is checked to leave the
gradient exactly unchanged where `v > 0`.
"""

import keras
import numpy as np
import pytest
from keras import ops

import tfp_gradest as tge
from tests import backend_utils as bu
from tfp_gradest.layers.estimators import local_reparameterization as lrt

pytestmark = pytest.mark.backends

# Every registered dense estimator (`auto` is one of them on these `[B, D]` inputs).
DENSE_ESTIMATORS = [name for name in tge.layers.estimators.names("dense") if name != "auto"]


@pytest.fixture
def policy(request):
    with bu.global_dtype_policy(request.param) as name:
        yield name


def _model(estimator, use_bias=True, initial_posterior_scale=1e-2, kernel_loc="glorot_uniform"):
    layer = tge.layers.DenseReparameterization(
        3,
        use_bias=use_bias,
        gradient_estimator=estimator,
        initial_posterior_scale=initial_posterior_scale,
        kernel_loc_initializer=kernel_loc,
        kl_weight=0.0,  # the likelihood's gradient alone (the KL's is finite anyway)
        seed=1,
    )
    # 4 inputs (+ bias) > 1 position: R2-G2 runs its dense closed form, not the skip.
    model = keras.Sequential([keras.Input((4,)), layer])
    # Graph mode (TF) keeps these cheap; `test_..._give_finite_gradients` runs under XLA.
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=False)
    return model, layer


def _data(zero_row=False):
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    if zero_row:
        x[3] = 0.0  # a blank example (padding, a dead ReLU row)
    return x, np.ones((8, 3), "float32")


def _all_finite(variables):
    return all(np.all(np.isfinite(bu.to_numpy(v))) for v in variables)


@pytest.mark.parametrize("estimator", DENSE_ESTIMATORS)
def test_zero_input_row_without_bias_keeps_every_scale_finite(estimator):
    model, layer = _model(estimator, use_bias=False)
    x, y = _data(zero_row=True)
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert _all_finite(layer.trainable_variables), [
        (v.path, bu.to_numpy(v)) for v in layer.trainable_variables
    ]


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
@pytest.mark.parametrize("estimator", DENSE_ESTIMATORS)
def test_float16_scales_whose_square_underflows_still_train(estimator, policy):
    # σ = 1e-4: σ² = 1e-8 is below float16's smallest subnormal (6e-8) and rounds to 0.
    # Keras wraps the optimizer in a LossScaleOptimizer, which skips every step whose
    # gradient is not finite: training that silently does nothing.
    model, layer = _model(estimator, initial_posterior_scale=1e-4)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y = _data()
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert int(bu.to_numpy(model.optimizer.iterations)) > 0
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] != losses[0], losses
    assert _all_finite(layer.trainable_variables)


@pytest.mark.parametrize("estimator", DENSE_ESTIMATORS)
def test_float32_scales_whose_square_underflows_give_finite_gradients(estimator):
    # σ = 1e-20: σ² = 1e-40 is subnormal in float32, flushed to 0 on CPU (and by XLA).
    _, layer = _model(estimator, initial_posterior_scale=1e-20)
    x, _ = _data()
    grads = bu.gradients(layer, lambda h: ops.sum(ops.sin(h)), x, jit_compile=True)
    assert all(np.all(np.isfinite(g)) for g in grads)


class _OldLocalReparameterization(lrt.LocalReparameterization):
    """The formula before the fix: plain `ops.sqrt`, variance in the compute dtype."""

    def sample(self, inputs, linear_map, posterior, noise):
        mean = linear_map.apply(inputs, posterior.kernel_loc)
        variance = linear_map.apply(ops.square(inputs), ops.square(posterior.kernel_scale))
        if posterior.use_bias:
            mean = mean + posterior.bias_loc
            variance = variance + ops.square(posterior.bias_scale)
        zeta = noise.normal(ops.shape(mean), inputs.dtype, per_example=True)
        return mean + ops.sqrt(variance) * zeta


@pytest.mark.parametrize("jit_compile", [True, False], ids=["xla", "eager"])
def test_lrt_gradient_unchanged_where_the_variance_is_positive(jit_compile):
    x, _ = _data()
    grads, weights = [], None
    for estimator in ["local_reparameterization", _OldLocalReparameterization()]:
        _, layer = _model(estimator)
        layer(x[:1])  # built, and one draw; the same seed, so the same noise from here on
        if weights is None:
            weights = [bu.to_numpy(v) for v in layer.trainable_variables]
        for variable, value in zip(layer.trainable_variables, weights):
            variable.assign(value)
        grads.append(bu.gradients(layer, lambda h: ops.sum(ops.sin(h)), x, jit_compile=jit_compile))
    for new, old in zip(*grads):
        np.testing.assert_array_equal(new, old)


def test_sqrt_with_zero_gradient_at_zero():
    x = keras.Variable(np.array([0.0, 1e-30, 4.0], "float32"))
    value, (grad,) = bu.value_and_grad(lambda: ops.sum(lrt.sqrt_with_zero_gradient_at_zero(x)), [x])
    np.testing.assert_allclose(value, 2.0 + np.sqrt(np.float32(1e-30)), rtol=1e-6)
    np.testing.assert_array_equal(grad[0], 0.0)
    np.testing.assert_allclose(grad[1:], 0.5 / np.sqrt(np.float32([1e-30, 4.0])), rtol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
def test_lrt_output_noise_under_mixed_precision_has_the_float32_variance(policy):
    # Zero means, so the outputs are the noise √v ⊙ ζ alone (float16 cannot resolve 1e-4
    # around a mean of order 1). Every row is the same input: n = 4096 independent draws of
    # each unit. The sample sd's relative standard error is 1/√(2n) = 1.1%; the tolerance
    # is 5 of them (6%). Computed in float16, v = Σ x²σ² + σ_b² rounds to 0 (sd 0).
    scale, n = 1e-4, 4096
    _, layer = _model("local_reparameterization", initial_posterior_scale=scale, kernel_loc="zeros")
    row = np.array([1.0, -2.0, 0.5, 3.0], "float32")
    outputs = bu.to_numpy(layer(np.tile(row, (n, 1)), training=True)).astype("float64")
    expected = scale * np.sqrt(np.sum(row**2) + 1.0)
    np.testing.assert_allclose(outputs.std(axis=0) / expected, 1.0, atol=5 / np.sqrt(2 * n))
