"""`tge.vi`: fitting recovers exact posteriors with every estimator; misuse raises clear errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest.problems import BayesianLinearRegression, CorrelatedGaussian

tfd = tfp.distributions

# (estimator, sample_size, bound on KL(q || exact posterior) after 1000 Adam(0.05) steps).
# The bounds: with a constant step size, pathwise and score-function iterates keep
# jittering around the optimum, which leaves a KL of ~0.1 (measured 0.06-0.12 for
# these seeds); 0.25 is that floor with margin, and an unfitted q (KL ~ 25 here)
# is far above it. STL's gradient vanishes at the exact posterior, so its
# iterates stop there: KL ~ 1e-7 in float32, so 1e-3 is a real check.
FITS = [
    ("reparameterization", 4, 0.25),
    ("stl", 4, 1e-3),
    (tge.estimators.ScoreFunction("leave_one_out"), 16, 0.25),
]


@pytest.mark.parametrize(
    "estimator,sample_size,bound", FITS, ids=["reparameterization", "stl", "score_function"]
)
def test_fit_recovers_the_linear_regression_posterior(estimator, sample_size, bound, dtype):
    problem = BayesianLinearRegression(dtype=dtype)
    initial_kl = float(problem.kl_to_posterior())
    losses = tge.vi.fit_surrogate_posterior(
        problem.target_log_prob,
        problem.surrogate,
        optimizer=keras.optimizers.Adam(0.05),
        num_steps=1000,
        sample_size=sample_size,
        gradient_estimator=estimator,
        jit_compile=True,
        seed=3,
    )
    assert losses.shape == (1000,) and losses.dtype == dtype
    kl = float(problem.kl_to_posterior())
    assert initial_kl > 10 * bound
    assert kl < bound, f"KL(q || posterior) = {kl:.3g} after fitting"


def test_fit_without_xla_and_with_a_seed_is_reproducible():
    results = []
    for _ in range(2):
        problem = BayesianLinearRegression()
        tge.vi.fit_surrogate_posterior(
            problem.target_log_prob,
            problem.surrogate,
            keras.optimizers.Adam(0.05),
            20,
            gradient_estimator="stl",
            seed=9,
        )
        results.append(problem.loc.numpy())
    np.testing.assert_array_equal(results[0], results[1])


def test_structured_surrogate_with_named_parts():
    loc_a, loc_b = tf.Variable(0.0), tf.Variable(0.0)
    q = tfd.JointDistributionNamed({"a": tfd.Normal(loc_a, 1.0), "b": tfd.Normal(loc_b, 1.0)})

    def target(a, b):  # unpacked by name, as in tfp.vi
        return tfd.Normal(1.0, 1.0).log_prob(a) + tfd.Normal(-2.0, 1.0).log_prob(b)

    tge.vi.fit_surrogate_posterior(
        target,
        q,
        keras.optimizers.Adam(0.1),
        300,
        gradient_estimator="stl",
        sample_size=4,
        jit_compile=True,
        seed=1,
    )
    np.testing.assert_allclose([loc_a.numpy(), loc_b.numpy()], [1.0, -2.0], atol=0.1)


def test_monte_carlo_variational_loss_matches_the_estimator():
    problem = CorrelatedGaussian()
    a = tge.vi.monte_carlo_variational_loss(
        problem.target_log_prob, problem.surrogate, sample_size=3, seed=2, gradient_estimator="stl"
    )
    b = tge.estimators.STL().loss(problem.target_log_prob, problem.surrogate, 3, seed=2)
    assert float(a) == float(b)


def test_reparameterization_accepts_other_discrepancies():
    problem = CorrelatedGaussian()
    loss = tge.vi.monte_carlo_variational_loss(
        problem.target_log_prob,
        problem.surrogate,
        sample_size=3,
        seed=2,
        discrepancy_fn=tfp.vi.kl_forward,
    )
    assert np.isfinite(loss)


# --- misuse -----------------------------------------------------------------------


def _gaussian():
    return CorrelatedGaussian()


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"sample_size": 0}, ValueError, "sample_size"),
        ({"sample_size": 2.5}, TypeError, "sample_size"),
        ({"importance_sample_size": 0}, ValueError, "importance_sample_size"),
        ({"importance_sample_size": 4, "gradient_estimator": "stl"}, ValueError, "iwae"),
        ({"gradient_estimator": "nope"}, ValueError, "Valid names"),
        (
            {"gradient_estimator": "stl", "discrepancy_fn": tfp.vi.kl_forward},
            ValueError,
            "discrepancy_fn",
        ),
        (
            {"gradient_estimator": "stl", "discrepancy_fn": tfp.vi.chi_square},
            ValueError,
            "discrepancy_fn",
        ),
        (
            {"gradient_estimator": tge.estimators.ScoreFunction("leave_one_out"), "sample_size": 1},
            ValueError,
            "sample_size",
        ),
    ],
)
def test_misuse_raises_before_tracing(kwargs, error, match):
    problem = _gaussian()
    with pytest.raises(error, match=match):
        tge.vi.fit_surrogate_posterior(
            problem.target_log_prob, problem.surrogate, keras.optimizers.Adam(0.1), 5, **kwargs
        )


@pytest.mark.parametrize("name", ["reparameterization", "stl"])
def test_pathwise_estimators_reject_discrete_surrogates(name):
    q = tfd.Bernoulli(logits=tf.Variable(0.0), dtype=tf.float32)
    with pytest.raises(ValueError, match="score_function"):
        tge.estimators.get(name).loss(lambda z: -z, q, sample_size=2)


def test_pathwise_estimators_name_the_discrete_part_of_a_joint():
    q = tfd.JointDistributionNamed({"c": tfd.Normal(0.0, 1.0), "d": tfd.Bernoulli(0.0)})
    with pytest.raises(ValueError, match=r"\['d'\]"):
        tge.estimators.STL().loss(lambda c, d: c, q)


@pytest.mark.parametrize("seed", ["abc", 1.5, True, [1, 2, 3], tf.constant([1.0, 2.0])])
def test_a_bad_seed_is_a_type_error_naming_seed(seed):
    problem = _gaussian()
    with pytest.raises(TypeError, match="`seed` must be"):
        tge.vi.monte_carlo_variational_loss(problem.target_log_prob, problem.surrogate, seed=seed)
    with pytest.raises(TypeError, match="`seed` must be"):
        tge.vi.fit_surrogate_posterior(
            problem.target_log_prob, problem.surrogate, keras.optimizers.Adam(0.1), 2, seed=seed
        )


@pytest.mark.parametrize("seed", [7, np.int64(7), (1, 2), np.array([1, 2]), tf.constant([1, 2])])
def test_integer_seeds_of_every_spelling_are_accepted(seed):
    problem = _gaussian()
    loss = tge.vi.monte_carlo_variational_loss(
        problem.target_log_prob, problem.surrogate, seed=seed
    )
    assert np.isfinite(loss)


def test_optimizer_none_is_named():
    problem = _gaussian()
    with pytest.raises(TypeError, match="`optimizer`"):
        tge.vi.fit_surrogate_posterior(problem.target_log_prob, problem.surrogate, None, 5)


def test_target_must_be_callable():
    with pytest.raises(TypeError, match="target_log_prob_fn"):
        tge.estimators.STL().loss(3.0, _gaussian().surrogate)


# --- under KERAS_BACKEND=jax: a clear error at the call (issue 21) ----------------------

_JAX_SCRIPT = r"""
import keras, numpy as np, tensorflow as tf, tensorflow_probability as tfp
import tfp_gradest as tge

tfd = tfp.distributions
assert keras.backend.backend() == "jax"
target = lambda z: tfd.Normal(1.0, 0.5).log_prob(z)


def refused(call, error, *words):
    try:
        call()
    except error as e:
        assert all(w in str(e) for w in words), str(e)
        print("refused:", str(e).split(".")[0])
    else:
        raise AssertionError("not refused: " + " ".join(words))


q = tfd.Normal(tf.Variable(0.3), 1.2)
# A Keras optimizer is JAX's here: refused before anything is traced.
refused(
    lambda: tge.vi.fit_surrogate_posterior(target, q, keras.optimizers.Adam(0.1), 2),
    RuntimeError, "fit_surrogate_posterior", "Adam", "'jax'", "KERAS_BACKEND=tensorflow",
)
# So is a surrogate holding keras.Variables (JAX arrays), by either entry point.
kq = tfd.Normal(keras.Variable(0.3), 1.2)
refused(
    lambda: tge.vi.monte_carlo_variational_loss(target, kq, seed=1),
    RuntimeError, "monte_carlo_variational_loss", "Variable", "'jax'", "KERAS_BACKEND=tensorflow",
)
refused(
    lambda: tge.vi.fit_surrogate_posterior(target, kq, tf.keras.optimizers.SGD(0.1), 2),
    RuntimeError, "fit_surrogate_posterior", "'jax'",
)
# A target written with keras.ops returns a JAX array: its gradient would be lost.
refused(
    lambda: tge.vi.monte_carlo_variational_loss(lambda z: -keras.ops.square(z), q, seed=1),
    TypeError, "target_log_prob_fn", "'jax'", "Received: output of type",
)
# TensorFlow objects still work whatever the Keras backend: the loss and its gradient.
with tf.GradientTape() as tape:
    loss = tge.vi.monte_carlo_variational_loss(target, q, seed=1)
grad = tape.gradient(loss, q.trainable_variables)
assert np.isfinite(loss) and all(g is not None for g in grad)
print("ok")
"""


def test_tfp_entry_points_name_the_jax_backend_at_the_call():
    import os
    import subprocess
    import sys

    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.endswith("ok\n"), result.stderr[-3000:]
