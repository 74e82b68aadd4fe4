"""`tge.estimators` against TFP-JAX's `tfp.vi.monte_carlo_variational_loss` (TFP 0.25's JAX
substrate) on the same call with the same PRNG key: the drop-in contract of
tests/test_tfp_vi_parity.py, on JAX (issue 24, items 1 and 5).

The same key draws the same samples, laid out as TFP-JAX lays them (one flat leading axis
of `S * K`, checked on the samples themselves, through `jax.debug.callback`), so the loss
values are equal wherever the two compute the same objective, and the gradients where they
compute the same estimator. The one documented difference: TFP's `DOUBLY_REPARAMETERIZED`
needs a hand-built stopped surrogate and gives parameters the target closes over (a
decoder's) `Σ w̃² ∇θ log p`; `iwae_dreg` gives them IWAE's `Σ w̃ ∇θ log p` and matches
TFP's φ-gradient. Each tge loss is computed inside `jax.jit`, in float32 and in float64
(under `jax.experimental.enable_x64()`, never the global flag).
"""

import functools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("tensorflow_probability.substrates.jax")

import jax.numpy as jnp  # noqa: E402
from tensorflow_probability.substrates import jax as tfp  # noqa: E402

import tfp_gradest as tge  # noqa: E402

from . import jax_estimator_utils as ju  # noqa: E402

tfd = tfp.distributions
GE = tfp.vi.GradientEstimators
DTYPES = ["float32", "float64"]
KEY = (3, 2)  # jax.random.PRNGKey(*) is built inside each dtype's context


@pytest.fixture(autouse=True)
def _global_jax_config_is_left_alone():
    before = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)
    yield
    assert (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision) == before


class _Normal:
    """test_tfp_vi_parity.py's problem: `q = N(0.3, softplus(raw))` with `softplus(raw) = 1.2`,
    and a target `N(θ, 0.5)` whose `θ = 1` stands for a model parameter."""

    def parameters(self, dtype):
        return {
            "loc": jnp.asarray(0.3, dtype),
            "raw_scale": jnp.asarray(np.log(np.expm1(1.2)), dtype),
            "theta": jnp.asarray(1.0, dtype),
        }

    def surrogate(self, params):
        return tfd.Normal(params["loc"], jax.nn.softplus(params["raw_scale"]))

    def target(self, params, record):
        def target_log_prob(z):  # no `seed` parameter: TFP passes one to a target that has it
            record(z)
            return tfd.Normal(params["theta"], jnp.asarray(0.5, z.dtype)).log_prob(z)

        return target_log_prob


class _JointNamed:
    """A joint surrogate with a dict sample, built from parameters: both call the target as
    `fn(**z)`. `q(s, x) = LogNormal(s; m, 0.3) N(x; loc, s² I_3)`, target
    `-(log s - θ)²/2 - |x|²`."""

    def parameters(self, dtype):
        return {
            "m": jnp.asarray(0.1, dtype),
            "loc": jnp.asarray([0.2, -0.1, 0.4], dtype),
            "theta": jnp.asarray(0.3, dtype),
        }

    def surrogate(self, params):
        return tfd.JointDistributionNamed(
            {
                "scale": tfd.LogNormal(params["m"], 0.3),
                "x": lambda scale: tfd.Independent(
                    tfd.Normal(params["loc"], scale[..., jnp.newaxis]), 1
                ),
            }
        )

    def target(self, params, record):
        def target_log_prob(scale, x):
            record({"scale": scale, "x": x})
            return -0.5 * (jnp.log(scale) - params["theta"]) ** 2 - jnp.sum(x**2, -1)

        return target_log_prob


def _recorder():
    """`(record, recorded)`: `record(sample)` appends the sample's values to `recorded`
    through `jax.debug.callback`, which also runs under `jax.jit`."""
    recorded = []

    def record(sample):
        # As raw bits: a float64 array reached the callback as float32 under
        # `enable_x64()` (jax 0.4.38); integers pass unchanged, and are viewed back here.
        dtypes = [np.dtype(t.dtype) for t in jax.tree_util.tree_leaves(sample)]
        bits = jax.tree_util.tree_map(lambda t: jax.lax.bitcast_convert_type(t, jnp.uint32), sample)

        def unpack(bits):
            leaves, treedef = jax.tree_util.tree_flatten(bits)
            values = []
            for leaf, dtype in zip(leaves, dtypes):
                value = np.ascontiguousarray(leaf).view(dtype)
                values.append(value[..., 0] if dtype.itemsize == 8 else value)
            recorded.append(jax.tree_util.tree_unflatten(treedef, values))

        jax.debug.callback(unpack, bits)

    return record, recorded


def _tge_loss(problem, name, sample_size, k, discrepancy_fn=None):
    estimator = tge.estimators.get(name)
    record, recorded = _recorder()

    def loss(params, key):
        return estimator.loss(
            problem.target(params, record), problem.surrogate(params), sample_size, k,
            seed=key, discrepancy_fn=discrepancy_fn,
        )  # fmt: skip

    return loss, recorded


def _tfp_loss(problem, gradient_estimator, sample_size, k, discrepancy_fn=None):
    record, recorded = _recorder()

    def loss(params, key):
        q = problem.surrogate(params)
        # TFP's DReG needs the surrogate with its parameters stopped, built by hand: from
        # stopped parameters (`tree_map(stop_gradient, q)` would miss the parameters a
        # joint distribution's lambdas close over).
        stopped = problem.surrogate(jax.tree_util.tree_map(jax.lax.stop_gradient, params))
        return tfp.vi.monte_carlo_variational_loss(
            problem.target(params, record), q, sample_size=sample_size,
            importance_sample_size=k, discrepancy_fn=discrepancy_fn or tfp.vi.kl_reverse,
            seed=key, gradient_estimator=gradient_estimator, stopped_surrogate_posterior=stopped,
        )  # fmt: skip

    return loss, recorded


def _value_and_grads(loss, params, key, jit=True):
    fn = jax.value_and_grad(loss)
    value, grads = (jax.jit(fn) if jit else fn)(params, key)
    jax.effects_barrier()  # the recording callbacks have run
    return value, jax.tree_util.tree_map(np.asarray, grads)


@functools.cache  # the θ test reads the cases' gradients again
def _compare(problem, name, gradient_estimator, sample_size, k, discrepancy_fn, agree, dtype):
    """Asserts the same samples (as TFP-JAX lays them), loss value and the gradients named in
    `agree`, on one key; returns both gradients."""
    with ju.precision(dtype):
        params, key = problem.parameters(dtype), jax.random.PRNGKey(32)
        ours, our_samples = _tge_loss(problem, name, sample_size, k, discrepancy_fn)
        theirs, their_samples = _tfp_loss(
            problem, gradient_estimator, sample_size, k, discrepancy_fn
        )
        value, grads = _value_and_grads(ours, params, key)
        # TFP-JAX 0.25's VIMCO does not trace under jax.jit (its leave-one-out log-mean-exp
        # reshapes with a traced shape), so it runs eagerly here.
        jit = gradient_estimator is not GE.VIMCO
        tfp_value, tfp_grads = _value_and_grads(theirs, params, key, jit=jit)
    assert isinstance(value, jax.Array) and value.dtype == dtype and value.shape == ()
    # The samples: one flat leading axis of S * K, the values TFP-JAX draws from this key.
    # TFP calls the target once; an estimator may call it again (e.g. a path derivative's
    # backward pass), but always on the same samples.
    assert our_samples and their_samples
    eps = np.finfo(dtype).eps
    expected = their_samples[0]
    if gradient_estimator is GE.VIMCO:  # TFP's VIMCO draws [K, S]: the same values at S = 1
        assert sample_size == 1
        expected = jax.tree_util.tree_map(lambda t: t.reshape((k,) + t.shape[2:]), expected)
    for sample in our_samples:
        assert all(leaf.dtype == dtype for leaf in jax.tree_util.tree_leaves(sample))
    if jit:
        for sample in our_samples:
            jax.tree_util.tree_map(np.testing.assert_array_equal, sample, expected)
    else:  # XLA's fused `loc + scale * ε` may round the last bit differently from eager ops
        for sample in our_samples:
            jax.tree_util.tree_map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=2 * eps, atol=2 * eps),
                sample,
                expected,
            )
    # The value: the same sums, possibly fused differently by XLA (a few ulps of O(1)).
    np.testing.assert_allclose(value, tfp_value, rtol=8 * eps, atol=8 * eps)
    for key_ in agree:
        np.testing.assert_allclose(grads[key_], tfp_grads[key_], rtol=1e3 * eps, atol=1e3 * eps)
    return grads, tfp_grads


# (tge estimator, TFP's gradient_estimator, S, K, discrepancy_fn, the gradients that agree).
# TFP's VIMCO draws [K, S] where the others draw [S * K] (as on TF): S = 1 there.
ALL, SURROGATE = ("loc", "raw_scale", "theta"), ("loc", "raw_scale")
CASES = {
    "reparameterization": ("reparameterization", GE.REPARAMETERIZATION, 3, 1, None, ALL),
    "reparameterization-kl_forward": (
        "reparameterization", GE.REPARAMETERIZATION, 3, 1, tfp.vi.kl_forward, ALL
    ),
    "iwae": ("iwae", GE.REPARAMETERIZATION, 3, 5, None, ALL),
    "iwae-kl_forward": ("iwae", GE.REPARAMETERIZATION, 3, 5, tfp.vi.kl_forward, ALL),
    # STL = DReG at K = 1: TFP's θ-gradient is then the same (w̃ = w̃² = 1).
    "stl": ("stl", GE.DOUBLY_REPARAMETERIZED, 3, 1, None, ALL),
    "iwae_dreg-K1": ("iwae_dreg", GE.DOUBLY_REPARAMETERIZED, 3, 1, None, ALL),
    # K > 1: the φ-gradients agree; θ's differ (the next test).
    "iwae_dreg": ("iwae_dreg", GE.DOUBLY_REPARAMETERIZED, 3, 5, None, SURROGATE),
    "vimco": ("vimco", GE.VIMCO, 1, 5, None, ALL),
    # Neither has a baseline by default, so the score-function gradients agree too.
    "score_function": ("score_function", GE.SCORE_FUNCTION, 3, 1, None, ALL),
    "score_function-kl_forward": (
        "score_function", GE.SCORE_FUNCTION, 3, 1, tfp.vi.kl_forward, ALL
    ),
}  # fmt: skip
# TFP-JAX's VIMCO runs eagerly, op by op (seconds a case): float32 in the joint test only.
FLOAT32_CASES = ["reparameterization", "iwae", "iwae_dreg", "score_function"]
NORMAL, JOINT = _Normal(), _JointNamed()


@pytest.mark.parametrize(
    "case,dtype",
    [(c, "float64") for c in CASES] + [(c, "float32") for c in FLOAT32_CASES],
)
def test_same_key_same_samples_loss_and_gradient_as_tfp_jax(case, dtype):
    _compare(NORMAL, *CASES[case], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_iwae_dreg_model_gradient_is_iwae_s_where_tfp_jax_weights_it_by_w_squared(dtype):
    # K = 5, the same key: IWAE-DReG's θ-gradient is IWAE's on the same samples; TFP's
    # DOUBLY_REPARAMETERIZED gives θ another (Σ w̃² ∇θ log p, biased: see
    # test_estimators_jax.py's quadrature power check).
    dreg, tfp_dreg = _compare(NORMAL, *CASES["iwae_dreg"], dtype)
    iwae, _ = _compare(NORMAL, *CASES["iwae"], dtype)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(dreg["theta"], iwae["theta"], rtol=1e3 * eps, atol=1e3 * eps)
    assert not np.allclose(tfp_dreg["theta"], iwae["theta"], rtol=1e-3)


JOINT_CASES = {
    "reparameterization": ("reparameterization", GE.REPARAMETERIZATION, 4, 1, None, ALL),
    "iwae": ("iwae", GE.REPARAMETERIZATION, 2, 3, None, ALL),
    "iwae_dreg": ("iwae_dreg", GE.DOUBLY_REPARAMETERIZED, 2, 3, None, ("m", "loc")),
    "vimco": ("vimco", GE.VIMCO, 1, 3, None, ALL),
    "score_function": ("score_function", GE.SCORE_FUNCTION, 4, 1, None, ALL),
}
JOINT_CASES = {
    name: case[:-1] + (("m", "loc", "theta") if case[-1] is ALL else case[-1],)
    for name, case in JOINT_CASES.items()
}


@pytest.mark.parametrize(
    "case,dtype", [(c, "float32") for c in JOINT_CASES] + [("iwae", "float64")]
)
def test_a_joint_surrogate_same_samples_loss_and_gradient_as_tfp_jax(case, dtype):
    _compare(JOINT, *JOINT_CASES[case], dtype)


def test_power_the_sample_check_sees_another_key_or_layout():
    # The comparison fails for TFP-JAX's samples of another key, and for its [S * K] samples
    # laid out as [K, S] (e.g. VIMCO's layout at S > 1).
    problem = NORMAL
    params = problem.parameters("float32")
    ours, our_samples = _tge_loss(problem, "iwae", 3, 4)
    theirs, their_samples = _tfp_loss(problem, GE.REPARAMETERIZATION, 3, 4)
    jax.jit(ours)(params, jax.random.PRNGKey(18))
    jax.jit(theirs)(params, jax.random.PRNGKey(17))
    jax.effects_barrier()
    assert not np.array_equal(our_samples[0], their_samples[0])
    transposed = their_samples[0].reshape(3, 4).T.reshape(12)
    assert not np.array_equal(transposed, their_samples[0])
