"""`tge.vi` on JAX: `fit_surrogate_posterior_stateless` and `monte_carlo_variational_loss`
with a TFP-JAX surrogate.

Exact checks first: the signature is TFP-JAX's plus the estimator choice; with the
default estimator the fit is TFP-JAX's own fit, step for step, for the same seed. Then
convergence: STL and IWAE-DReG land on a Gaussian target that the surrogate family
contains (their gradients vanish there), where the reparameterisation gradient keeps its
noise and a deliberately biased estimator lands elsewhere (the power checks). Then the
argument errors, and mixing the TensorFlow and JAX substrates.

These run in the TensorFlow test run (TFP's JAX substrate needs no Keras backend).
"""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
from tensorflow_probability.substrates import jax as tfpj  # noqa: E402

jnp = jax.numpy
tfdj = tfpj.distributions

# The target N([1, -2], diag([0.5, 2])²): the surrogate family below contains it.
MEAN = np.array([1.0, -2.0], np.float32)
SCALE = np.array([0.5, 2.0], np.float32)
INITIAL = (jnp.zeros(2), jnp.zeros(2))  # loc, raw scale (softplus(0) = 0.69)


def target_log_prob(z):
    return tfdj.Independent(tfdj.Normal(MEAN, SCALE), 1).log_prob(z)


def build(loc, raw_scale):
    return tfdj.Independent(tfdj.Normal(loc, jax.nn.softplus(raw_scale)), 1)


def _trace(t):
    return t.loss, t.parameters


def _fit(module, num_steps=20, seed=None, **kwargs):
    return module.fit_surrogate_posterior_stateless(
        target_log_prob,
        build,
        INITIAL,
        optax.adam(0.1),
        num_steps,
        trace_fn=_trace,
        seed=jax.random.PRNGKey(7) if seed is None else seed,
        **kwargs,
    )


# --- the drop-in contract ----------------------------------------------------------------


def test_signature_is_tfp_jax_plus_the_estimator_choice():
    def spelled(function):
        return [
            (p.name, p.kind, p.default if p.name not in ("trace_fn", "gradient_estimator") else 0)
            for p in inspect.signature(function).parameters.values()
            if p.name != "noise"  # ours only: keyword-only, "iid" (TFP's sampling) by default
        ]

    ours = tge.vi.fit_surrogate_posterior_stateless
    assert spelled(ours) == spelled(tfpj.vi.fit_surrogate_posterior_stateless)
    noise = inspect.signature(ours).parameters["noise"]
    assert (noise.kind, noise.default) == (inspect.Parameter.KEYWORD_ONLY, "iid")
    assert inspect.signature(ours).parameters["gradient_estimator"].default is None
    assert "fit_surrogate_posterior_stateless" in tge.vi.__all__


@pytest.mark.parametrize(
    "gradient_estimator,importance_sample_size,jit_compile",
    [
        (None, 1, True),
        (None, 1, False),
        ("reparameterization", 1, True),
        (tfpj.vi.GradientEstimators.REPARAMETERIZATION, 1, True),
        (None, 3, True),  # TFP's default at K > 1 is the IWAE gradient: ours is "iwae"
        ("iwae", 3, False),
    ],
)
def test_the_default_fit_is_tfp_jax_fit_step_for_step(
    gradient_estimator, importance_sample_size, jit_compile
):
    common = dict(importance_sample_size=importance_sample_size, jit_compile=jit_compile)
    ours = _fit(tge.vi, gradient_estimator=gradient_estimator, sample_size=2, **common)
    theirs = _fit(tfpj.vi, sample_size=2, **common)
    # Same samples, same loss values, same gradients up to float32 rounding of a different
    # (value + surrogate - stop(surrogate)) graph: 20 Adam steps keep that at ~1e-6.
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ours[1][0][0], theirs[1][0][0])  # the first loss: exact


def test_seeds_a_pair_of_ints_and_an_int():
    # A pair of ints (TFP-JAX's docstring writes seed=(42, 42), which its jitted loop
    # refuses) is that raw key; an int (which TFP-JAX refuses) the same key every time.
    ours = _fit(tge.vi, num_steps=3, seed=(42, 42), jit_compile=True)
    theirs = _fit(tfpj.vi, num_steps=3, seed=jnp.asarray([42, 42], jnp.uint32), jit_compile=True)
    np.testing.assert_allclose(ours[1][0], theirs[1][0], rtol=1e-6)
    first, second = (_fit(tge.vi, num_steps=3, seed=5, jit_compile=True) for _ in range(2))
    np.testing.assert_array_equal(first[1][0], second[1][0])


def test_iwae_dreg_fits_as_tfp_jax_doubly_reparameterized():
    # For the surrogate's parameters the two gradients are the same (no model parameters).
    ours = _fit(tge.vi, gradient_estimator="iwae_dreg", importance_sample_size=4, jit_compile=True)
    theirs = _fit(
        tfpj.vi,
        gradient_estimator=tfpj.vi.GradientEstimators.DOUBLY_REPARAMETERIZED,
        importance_sample_size=4,
        jit_compile=True,
    )
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# --- convergence -------------------------------------------------------------------------


class _HalfTarget(tge.estimators.STL):
    """Deliberately wrong: STL of `p(z)^(1/2)`, whose optimum has scale √2 × SCALE."""

    def loss(self, target_log_prob_fn, *args, **kwargs):
        return super().loss(lambda z: 0.5 * target_log_prob_fn(z), *args, **kwargs)


def _landing_error(gradient_estimator, importance_sample_size=1):
    """Largest |error| of the fitted loc and scale after 600 Adam steps, in target scales."""
    (loc, raw_scale), losses = tge.vi.fit_surrogate_posterior_stateless(
        target_log_prob,
        build,
        INITIAL,
        optax.adam(0.05),
        600,
        importance_sample_size=importance_sample_size,
        gradient_estimator=gradient_estimator,
        jit_compile=True,
        seed=3,
    )
    assert losses.shape == (600,) and np.all(np.isfinite(losses))
    errors = np.concatenate([loc - MEAN, jax.nn.softplus(raw_scale) - SCALE]) / np.tile(SCALE, 2)
    return float(np.max(np.abs(errors)))


# STL's and DReG's gradients are exactly zero at q = p, so Adam settles there; a gradient
# with noise at the optimum keeps Adam's steps at about its learning rate (0.05, i.e. 0.025
# to 0.1 target scales here). 0.01 target scales separates the two.
TIGHT = 0.01


@pytest.mark.parametrize("gradient_estimator,k", [("stl", 1), ("iwae_dreg", 4)])
def test_stl_and_dreg_land_on_the_target(gradient_estimator, k):
    assert _landing_error(gradient_estimator, k) < TIGHT


def test_power_noisy_and_biased_estimators_do_not_land():
    assert _landing_error("reparameterization") > TIGHT  # unbiased, but noisy at q = p
    assert _landing_error(_HalfTarget()) > 0.2  # biased: lands at scale √2 × SCALE


# --- argument errors, before anything is traced ------------------------------------------


def _call(**overrides):
    kwargs = dict(
        target_log_prob_fn=target_log_prob,
        build_surrogate_posterior_fn=build,
        initial_parameters=INITIAL,
        optimizer=optax.adam(0.1),
        num_steps=2,
    )
    kwargs.update(overrides)
    return tge.vi.fit_surrogate_posterior_stateless(**kwargs)


@pytest.mark.parametrize(
    "overrides,error,words",
    [
        ({"target_log_prob_fn": 3.0}, TypeError, "target_log_prob_fn"),
        ({"build_surrogate_posterior_fn": None}, TypeError, "build_surrogate_posterior_fn"),
        ({"initial_parameters": {"loc": 0.0}}, TypeError, "initial_parameters"),
        ({"optimizer": "adam"}, TypeError, "optimizer"),
        ({"optimizer": keras.optimizers.Adam(0.1)}, TypeError, "fit_surrogate_posterior"),
        ({"num_steps": 0}, ValueError, "num_steps"),
        ({"num_steps": 2.0}, TypeError, "num_steps"),
        ({"trace_fn": "loss"}, TypeError, "trace_fn"),
        ({"jit_compile": "yes"}, TypeError, "jit_compile"),
        ({"seed": "seven"}, TypeError, "seed"),
        ({"seed": None}, TypeError, "seed"),  # JAX has no global random state
        ({"sample_size": 0}, ValueError, "sample_size"),
        ({"importance_sample_size": 2.5}, TypeError, "importance_sample_size"),
        ({"gradient_estimator": "nope"}, ValueError, "stl"),  # lists the valid names
        (
            {"gradient_estimator": "stl", "discrepancy_fn": tfpj.vi.kl_forward},
            ValueError,
            "discrepancy_fn",
        ),
        ({"gradient_estimator": "vimco"}, ValueError, "importance_sample_size"),
    ],
)
def test_bad_arguments_are_named(overrides, error, words):
    with pytest.raises(error, match=words):
        _call(**overrides)


# --- TensorFlow and JAX: one loss, each substrate's own things ---------------------------


def test_tensorflow_things_are_refused_by_the_stateless_fit():
    tfd = tfp.distributions
    with pytest.raises(TypeError, match="substrate.*fit_surrogate_posterior"):
        _call(build_surrogate_posterior_fn=lambda loc, raw: tfd.Normal(loc, tf.nn.softplus(raw)))
    with pytest.raises(TypeError, match="initial_parameters.*TensorFlow"):
        _call(initial_parameters=(tf.Variable([0.0, 0.0]), jnp.zeros(2)))
    with pytest.raises(TypeError, match="discrepancy_fn.*'tensorflow'"):
        _call(discrepancy_fn=tfp.vi.kl_forward)


def test_loss_on_a_jax_surrogate_is_tfp_jax_loss_and_jax_grad_is_the_estimator():
    params = (jnp.array([0.3, -1.0]), jnp.array([0.2, 0.4]))
    key = jax.random.PRNGKey(2)

    def ours(params, **kwargs):
        return tge.vi.monte_carlo_variational_loss(
            target_log_prob, build(*params), sample_size=4, seed=key, **kwargs
        )

    def theirs(params, **kwargs):
        return tfpj.vi.monte_carlo_variational_loss(
            target_log_prob, build(*params), sample_size=4, seed=key, **kwargs
        )

    value, grads = jax.value_and_grad(ours)(params)
    assert value.shape == () and isinstance(value, jax.Array)
    np.testing.assert_allclose(value, theirs(params), rtol=1e-6)
    for a, b in zip(grads, jax.grad(theirs)(params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # TFP-JAX's own enum maps by name; STL's value is the same, its gradient is not.
    dreg = jax.grad(
        lambda p: ours(p, gradient_estimator=tfpj.vi.GradientEstimators.DOUBLY_REPARAMETERIZED)
    )(params)
    stl = jax.grad(lambda p: ours(p, gradient_estimator="stl"))(params)
    for a, b, c in zip(dreg, stl, grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # DReG at K = 1 is STL
        assert not np.allclose(a, c)


def test_loss_refuses_a_discrepancy_of_the_other_substrate():
    jax_q = build(jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(TypeError, match="discrepancy_fn.*'tensorflow'.*'jax'"):
        tge.vi.monte_carlo_variational_loss(
            target_log_prob, jax_q, discrepancy_fn=tfp.vi.kl_reverse, seed=1
        )
    tf_q = tfp.distributions.Normal(tf.Variable(0.0), 1.0)
    with pytest.raises(TypeError, match="discrepancy_fn.*'jax'.*'tensorflow'"):
        tge.vi.monte_carlo_variational_loss(
            tf_q.log_prob, tf_q, discrepancy_fn=tfpj.vi.kl_reverse, seed=1
        )


def test_tensorflow_entry_points_point_jax_keras_objects_to_the_stateless_fit(monkeypatch):
    # As under KERAS_BACKEND=jax (test_vi.py runs that for real, in a subprocess): a Keras
    # variable or optimizer there is JAX's, which the TensorFlow fit cannot use.
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    q = tfp.distributions.Normal(keras.Variable(0.0), 1.0)
    with pytest.raises(RuntimeError, match="fit_surrogate_posterior_stateless") as caught:
        tge.vi.fit_surrogate_posterior(q.log_prob, q, keras.optimizers.Adam(0.1), 2)
    assert "KERAS_BACKEND=tensorflow" in str(caught.value) and "optax" in str(caught.value)
