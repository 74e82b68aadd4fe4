"""The substrate layer (`tfp_gradest._substrate`): TensorFlow and JAX give the same numbers,
every estimator runs on JAX with the same call, and the errors name the argument.

The statistical evidence on JAX is in tests/test_estimators_jax.py and
tests/test_tfp_vi_parity_jax.py; here are exact checks and a cheap smoke test.
"""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest import _substrate
from tfp_gradest._util import log_weights as lw
from tfp_gradest.estimators import importance_weights as iw

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
tfp_jax = pytest.importorskip("tensorflow_probability.substrates.jax")
from jax.experimental import enable_x64  # noqa: E402

tfd = tfp.distributions
jtfd = tfp_jax.distributions

NEG_INF = -np.inf
# Rows of log-weights with the edge cases the helpers guard: a -inf entry, a row of
# -inf only, one finite entry, large offsets.
LOG_WEIGHTS = np.array(
    [
        [0.3, -1.2, 2.0, 0.1],
        [NEG_INF, 0.5, -0.7, 1.5],
        [NEG_INF, NEG_INF, NEG_INF, NEG_INF],
        [NEG_INF, 3.0, NEG_INF, NEG_INF],
        [1000.0, 999.5, 998.0, 1000.2],
    ]
)


def _both(fn, x):
    """`fn` on the same float64 numbers as a TensorFlow tensor and as a JAX array."""
    with enable_x64():
        from_jax = np.asarray(fn(jnp.asarray(x)))
    return np.asarray(fn(tf.constant(x))), from_jax


def test_substrate_is_chosen_from_the_type_and_by_name():
    assert _substrate.of(tfd.Normal(0.0, 1.0)) is _substrate.get("tensorflow")
    assert _substrate.of(jtfd.Normal(0.0, 1.0)) is _substrate.get("jax")
    assert _substrate.of(jnp.zeros(2)) is _substrate.get("jax")
    assert _substrate.of(tf.zeros(2)) is _substrate.get("tensorflow")
    assert _substrate.get("jax").tfp is tfp_jax
    with pytest.raises(ValueError, match="substrate"):
        _substrate.get("torch")


def test_both_substrate_modules_provide_the_same_functions():
    def public(module):
        return {n for n in vars(module) if not n.startswith("_") and n not in _IMPORTS}

    tensorflow, jax_module = _substrate.get("tensorflow"), _substrate.get("jax")
    assert public(tensorflow) == public(jax_module)
    assert {"path_weighted_vjp", "path_derivative", "sanitize_seed", "tfp"} <= public(jax_module)


# Modules each substrate module imports for itself (not part of the interface).
_IMPORTS = {"tf", "jax", "jnp", "np", "numbers", "contextlib", "keras"}


@pytest.mark.parametrize(
    "fn",
    [
        iw.log_mean_exp,
        iw.normalized_weights,
        iw.leave_one_out_logsumexp,
        iw.leave_one_out_mean,
        lambda x: iw.leave_one_out_mean(x, skip_neg_inf=True),
        lambda x: iw.weighted_sum(iw.normalized_weights(x), x),
        lambda x: iw.log_mean_exp(x, axis=0),
    ],
    ids=["log_mean_exp", "weights", "loo_lse", "loo_mean", "loo_mean_skip", "wsum", "axis0"],
)
def test_importance_weight_helpers_agree_between_tensorflow_and_jax(fn):
    from_tf, from_jax = _both(fn, LOG_WEIGHTS)
    np.testing.assert_allclose(from_jax, from_tf, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "name",
    ["reshape_leading", "reduce_event", "divide_no_nan", "one_hot", "surrogate_objective"],
)
def test_array_operations_agree_between_tensorflow_and_jax(name):
    x = np.arange(24.0).reshape(6, 4) - 5.0
    fns = {
        "reshape_leading": lambda s, t: s.reshape_leading(t, 2, 3),
        "reduce_event": lambda s, t: s.reduce_event(t, 1),
        "divide_no_nan": lambda s, t: s.divide_no_nan(t, t - 3.0),
        "one_hot": lambda s, t: s.one_hot(s.argmax(t, axis=1), 4, True, False, axis=1),
        "surrogate_objective": lambda s, t: s.surrogate_objective(
            t, s.where(t > 10.0, s.fill(t, NEG_INF), t)
        ),
    }
    results = []
    for substrate, array in [("tensorflow", tf.constant), ("jax", jnp.asarray)]:
        with enable_x64():
            results.append(np.asarray(fns[name](_substrate.get(substrate), array(x))))
    np.testing.assert_array_equal(results[1], results[0])


def test_surrogate_objective_has_the_value_and_the_surrogate_gradient_on_jax():
    fn = tge.estimators.surrogate_objective
    value, grad = jax.value_and_grad(lambda x: fn(jnp.asarray(5.0), 3.0 * x))(2.0)
    assert (float(value), float(grad)) == (5.0, 3.0)
    # An infinite entry keeps its value and gives no gradient; the others keep theirs.
    values, grad = jax.value_and_grad(
        lambda x: jnp.sum(
            fn(jnp.array([5.0, -jnp.inf]), jnp.stack([3.0 * x, jnp.where(True, -jnp.inf, x)]))
        )
    )(2.0)
    assert float(values) == -np.inf and float(grad) == 3.0


def _jax_problem(dtype):
    """A structured surrogate with a bijector part, and a target closing over `theta`."""
    tfb = tfp_jax.bijectors

    def build(params):
        return jtfd.JointDistributionNamed(
            dict(
                a=jtfd.Normal(params["a"], jnp.exp(params["s"])),
                b=jtfd.TransformedDistribution(jtfd.Normal(params["b"], 0.7), tfb.Exp()),
            )
        )

    def target(theta):
        return lambda a, b: (
            jtfd.Normal(theta, 1.0).log_prob(a) + jtfd.Gamma(theta + 2.0, 1.0).log_prob(b)
        )

    params = {k: jnp.asarray(v, dtype) for k, v in dict(a=0.1, b=-0.2, s=-0.3).items()}
    return build, target, params, jnp.asarray(0.4, dtype)


# float64: one estimator of each data path (and the score function), to keep compiles few.
@pytest.mark.parametrize(
    "dtype, names",
    [
        ("float32", None),
        ("float64", ["iwae_dreg", "jvi_dreg", "score_function"]),
    ],
)
def test_every_estimator_runs_on_jax_finite_under_jit(dtype, names):
    with enable_x64(dtype == "float64"):
        build, target, params, theta = _jax_problem(dtype)
        for name in names or tge.estimators.names():
            if name == "linear_response_cv":
                continue  # diagonal Gaussians only, not this joint (tests/test_control_variate.py)
            estimator = tge.estimators.get(name)
            k = 1 if estimator.max_importance_sample_size == 1 else 3

            def loss(params, theta, estimator=estimator, k=k):
                return estimator.loss(
                    target(theta), build(params), sample_size=2, importance_sample_size=k, seed=4
                )

            value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, theta)
            assert value.shape == () and value.dtype == dtype, name
            leaves = jax.tree_util.tree_leaves(grads)
            assert all(g.dtype == dtype and np.isfinite(g) for g in leaves), (name, grads)
            if name == "iwae_dreg":  # same key, same value, with or without jit
                np.testing.assert_allclose(loss(params, theta), value, rtol=1e-5)


def test_one_pass_surrogate_equals_the_two_pass_decomposition_on_jax():
    """The `jax.custom_vjp` of `path_weighted_surrogate` against `log_weight_terms`' inner
    gradient, for the surrogate's parameters and the target's `theta` (the JAX twin of
    test_log_weights' TensorFlow check)."""
    with enable_x64():
        build, target, params, theta = _jax_problem("float64")
        ops = _substrate.get("jax")
        for path_coefficient in [lambda w: w, jnp.square, lambda w: w - jnp.square(w)]:

            def inputs(params, theta):
                sample_seed, target_seed = ops.split_seed(ops.sanitize_seed(11), 2)
                return lw.ObjectiveInputs(
                    target(theta), build(params), 2, 4, None, sample_seed, target_seed, ops
                )

            def two_pass(params, theta, f=path_coefficient):
                terms = lw.log_weight_terms(inputs(params, theta))
                w = iw.normalized_weights(terms.log_weights)
                surrogate = iw.weighted_sum(w, terms.target_log_prob) + iw.weighted_sum(
                    f(w), terms.path_log_weights
                )
                return jnp.sum(surrogate)

            def fused(params, theta, f=path_coefficient):
                _, surrogate = lw.path_weighted_surrogate(
                    inputs(params, theta),
                    lambda log_w: (iw.normalized_weights(log_w), f(iw.normalized_weights(log_w))),
                )
                return jnp.sum(surrogate)

            expected = jax.grad(two_pass, argnums=(0, 1))(params, theta)
            received = jax.jit(jax.grad(fused, argnums=(0, 1)))(params, theta)
            for a, b in zip(
                jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(received)
            ):
                np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


def test_theta_gets_the_iwae_gradient_under_iwae_dreg_on_jax():
    # Σ w̃ ∇θ log p for every estimator of the IWAE bound (not TFP's w̃²): equal to IWAE's.
    with enable_x64():
        build, target, params, theta = _jax_problem("float64")

        def theta_grad(name):
            return jax.grad(
                lambda t: tge.estimators.get(name).loss(
                    target(t), build(params), sample_size=2, importance_sample_size=5, seed=9
                )
            )(theta)

        reference = theta_grad("iwae")
        for name in ["iwae_dreg", "rws_dreg", "iwae_stl", "rws", "vimco"]:
            np.testing.assert_allclose(theta_grad(name), reference, rtol=1e-10, err_msg=name)


def test_same_key_gives_tfp_jax_samples_and_loss():
    q = jtfd.MultivariateNormalDiag(jnp.array([0.2, -0.1]), jnp.array([1.1, 0.7]))

    def target(z):
        return jnp.sum(jtfd.Normal(1.0, 2.0).log_prob(z), -1)

    key = jax.random.PRNGKey(7)
    for name, k in [("reparameterization", 1), ("iwae", 4), ("stl", 1)]:
        ours = tge.estimators.get(name).loss(
            target, q, sample_size=3, importance_sample_size=k, seed=key
        )
        theirs = tfp_jax.vi.monte_carlo_variational_loss(
            target, q, sample_size=3, importance_sample_size=k, seed=key
        )
        assert float(ours) == float(theirs), name
    # An int seed is `jax.random.PRNGKey(seed)`.
    assert float(tge.estimators.get("iwae").loss(target, q, 3, 4, seed=7)) == float(
        tge.estimators.get("iwae").loss(target, q, 3, 4, seed=key)
    )
    # A pair of ints (as TFP-JAX's examples and TensorFlow's stateless seeds write it) is
    # that key, for the estimators as for `tge.vi`'s stateless fit.
    pair = jnp.asarray([3, 5], jnp.uint32)
    assert float(tge.estimators.get("iwae").loss(target, q, 3, 4, seed=(3, 5))) == float(
        tge.estimators.get("iwae").loss(target, q, 3, 4, seed=pair)
    )


def test_mismatched_substrates_raise_naming_the_argument():
    jax_q = jtfd.Normal(jnp.zeros([]), 1.0)
    tf_q = tfd.Normal(tf.zeros([]), 1.0)
    est = tge.estimators.get("reparameterization")
    with pytest.raises(TypeError, match="`seed` is a JAX PRNG key"):
        est.loss(lambda z: tfd.Normal(0.0, 1.0).log_prob(z), tf_q, seed=jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="`seed`.*TensorFlow tensor"):
        est.loss(lambda z: jtfd.Normal(0.0, 1.0).log_prob(z), jax_q, seed=tf.constant([1, 2]))
    with pytest.raises(TypeError, match="seed=None"):
        est.loss(lambda z: jtfd.Normal(0.0, 1.0).log_prob(z), jax_q, seed=None)
    with pytest.raises(TypeError, match="`target_log_prob_fn` returned a TensorFlow tensor"):
        est.loss(lambda z: tf.zeros([1]), jax_q, seed=0)
    with pytest.raises(TypeError, match="must return a TensorFlow tensor.*substrates.jax"):
        est.loss(lambda z: jnp.zeros([1]), tf_q, seed=0)
    with pytest.raises(ValueError, match="one log density per sample"):
        est.loss(lambda z: jnp.zeros([3]), jax_q, sample_size=2, seed=0)


def test_validate_reads_jax_distributions():
    bernoulli = jtfd.Bernoulli(probs=jnp.asarray(0.3), dtype=jnp.float32)
    with pytest.raises(ValueError, match="fully reparameterized"):
        tge.estimators.get("iwae").validate(bernoulli, importance_sample_size=2)
    tge.estimators.get("rws").validate(bernoulli, importance_sample_size=2)
    q = jtfd.Normal(0.0, 1.0)
    tge.estimators.get("stl").validate(q, discrepancy_fn=tfp_jax.vi.kl_reverse)
    with pytest.raises(ValueError, match="discrepancy_fn"):
        tge.estimators.get("stl").validate(q, discrepancy_fn=tfp_jax.vi.kl_forward)
    # A Csiszar function of the JAX substrate, for an estimator that takes any.
    value = tge.estimators.get("iwae").loss(
        lambda z: jtfd.Normal(0.0, 2.0).log_prob(z),
        q,
        sample_size=2,
        importance_sample_size=2,
        seed=1,
        discrepancy_fn=tfp_jax.vi.kl_forward,
    )
    assert np.isfinite(value)


def test_moving_average_baseline_is_refused_on_jax_with_what_to_use():
    estimator = tge.estimators.ScoreFunction(baseline="moving_average")
    with pytest.raises(ValueError, match="baseline='leave_one_out'"):
        estimator.loss(lambda z: -(z**2), jtfd.Normal(0.0, 1.0), sample_size=2, seed=0)
    # Leave-one-out needs no state, and runs.
    loss = tge.estimators.ScoreFunction(baseline="leave_one_out").loss(
        lambda z: -(z**2), jtfd.Normal(0.0, 1.0), sample_size=2, seed=0
    )
    assert np.isfinite(loss)


def test_importing_the_estimators_imports_neither_tensorflow_nor_jax():
    code = (
        "import sys\n"
        "import tfp_gradest.estimators as e\n"
        "e.get('iwae_dreg'); e.names(); e.serialize('dreg')\n"
        "bad = [m for m in ('tensorflow', 'jax', 'tensorflow_probability') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
