"""`noise="rqmc"`: randomised quasi-Monte Carlo base normals (tfp_gradest/_util/quasi_random.py).

Exact checks first: the Sobol points are the same from SciPy and TensorFlow; `noise="iid"`
is today's sampling bit for bit; the quasi-random samples are the surrogate's
reparameterisation of the quasi-random normals, structured as TFP's samples, for every
supported surrogate; TensorFlow and JAX draw the same samples. Then unbiasedness against
exact gradients (the ELBO in closed form; the K = 2 IWAE bound by Gauss-Hermite quadrature),
each with a power check that fails for a deliberately wrong variant: the Sobol points
without the random shift, and `S * K` points of dimension `d` (instead of `S` points of
dimension `K * d`), whose K samples of one objective are not independent.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest._util import quasi_random

from .conftest import Z_THRESHOLD, exact_gradient, max_abs_z

tfd, tfb = tfp.distributions, tfp.bijectors


def _unshifted_normals(num_points, num_dims, dtype=np.float32):
    """The normals of `randomize=False`: the bare Sobol points through Φ⁻¹ (float32 path)."""
    from scipy.special import ndtri

    bits = quasi_random.sobol_integers(num_points, num_dims)
    if dtype == np.float64:
        return ndtri((bits.astype(np.float64) + 0.5) * 2.0**-32)
    return ndtri(((bits >> 9).astype(np.float64) + 0.5) * 2.0**-23).astype(np.float32)


def test_sobol_points_are_the_same_from_scipy_and_tensorflow():
    ours = quasi_random.sobol_integers(16, 7)
    np.testing.assert_array_equal(ours, quasi_random._tensorflow_sobol(16, 7) * 2.0**32)
    np.testing.assert_array_equal(ours[0], 0)  # the origin: the first 2^m points are a net
    # Each dimension of the first 16 points is a permutation of the 16 cells of [0, 1).
    np.testing.assert_array_equal(np.sort(ours >> 28, axis=0), np.arange(16)[:, None] + 0 * ours)


def test_noise_iid_is_todays_sampling_bit_for_bit():
    q = tfd.MultivariateNormalTriL([0.5, -1.0], [[1.0, 0.0], [0.3, 0.7]])
    target = tfd.MultivariateNormalDiag([1.0, 2.0], [0.5, 2.0]).log_prob
    for name in ("reparameterization", "stl", "iwae_dreg"):
        estimator = tge.estimators.get(name)
        before = estimator.loss(target, q, 4, 2 if name == "iwae_dreg" else 1, seed=3)
        after = estimator.loss(target, q, 4, 2 if name == "iwae_dreg" else 1, seed=3, noise="iid")
        assert before.numpy().tobytes() == after.numpy().tobytes()


def _dependent_joint():
    return tfd.JointDistributionSequential(
        [tfd.Normal(0.5, 2.0), lambda a: tfd.Sample(tfd.Normal(a, 0.1), 3)]
    )


def test_samples_are_the_reparameterisation_of_the_quasi_random_normals():
    """Without the shift, each sample is `g(Φ⁻¹(x_s))` of the bare Sobol point, exactly."""
    seed = tf.constant([1, 2])
    loc, tril = np.array([0.5, -1.0], np.float32), np.array([[1.0, 0.0], [0.3, 0.7]], np.float32)
    z = quasi_random.sample(tfd.MultivariateNormalTriL(loc, tril), 8, 1, seed, randomize=False)
    eps = _unshifted_normals(8, 2)
    np.testing.assert_allclose(z, loc + eps @ tril.T, rtol=1e-6, atol=1e-6)
    # K = 2: each of the S points is split into K samples of d normals.
    z = quasi_random.sample(tfd.Normal([0.0, 0.0, 0.0], 1.0), 4, 2, seed, randomize=False)
    np.testing.assert_allclose(z, _unshifted_normals(4, 6).reshape(8, 3), rtol=1e-6)
    # `Sample` moves its axes after the batch, as TFP does.
    z = quasi_random.sample(tfd.Sample(tfd.Normal([0.0, 10.0], 1.0), 3), 4, 1, seed, False)
    eps = _unshifted_normals(4, 6).reshape(4, 3, 2)
    np.testing.assert_allclose(z, np.transpose(eps, [0, 2, 1]) + [[[0.0], [10.0]]], rtol=1e-6)
    # A joint distribution's later part is built from the earlier part's quasi-random value.
    a, b = quasi_random.sample(_dependent_joint(), 4, 1, seed, randomize=False)
    eps = _unshifted_normals(4, 4)
    np.testing.assert_allclose(a, 0.5 + 2.0 * eps[:, 0], rtol=1e-6)
    np.testing.assert_allclose(b, a[:, None] + 0.1 * eps[:, 1:], rtol=1e-5, atol=1e-6)


def _surrogates():
    @tfd.JointDistributionCoroutine
    def coroutine():
        a = yield tfd.JointDistributionCoroutine.Root(tfd.Normal(0.0, 1.0, name="a"))
        yield tfd.Normal(a, 0.1, name="b")

    return {
        "normal": tfd.Normal([0.0, 1.0], 2.0),
        "mvn_diag": tfd.MultivariateNormalDiag([0.0, 1.0], [1.0, 3.0]),
        "bijector_batch": tfd.TransformedDistribution(tfd.Normal(0.0, 1.0), tfb.Shift([1.0, 2.0])),
        "log_normal": tfd.LogNormal(0.0, 1.0),
        "independent": tfd.Independent(tfd.Normal(tf.zeros([2, 3]), 1.0), 1),
        "joint_named": tfd.JointDistributionNamed(
            dict(a=tfd.Normal(0.0, 1.0), b=lambda a: tfd.Normal(a, 0.1))
        ),
        "coroutine": coroutine,
        "factored": tfp.experimental.vi.build_factored_surrogate_posterior(
            event_shape=[[2], [3, 2]], bijector=[None, tfb.Exp()]
        ),
        "affine": tfp.experimental.vi.build_affine_surrogate_posterior(
            event_shape={"a": [2], "b": [3]}, operators="tril"
        ),
    }


@pytest.mark.parametrize("name", sorted(_surrogates()))
def test_samples_are_structured_as_tfp_samples_with_their_own_normals(name):
    q = _surrogates()[name]
    z = quasi_random.sample(q, 8, 1, tf.constant([3, 4]))
    reference = q.sample(8, seed=(3, 4))
    tf.nest.assert_same_structure(z, reference)
    for part, ref in zip(tf.nest.flatten(z), tf.nest.flatten(reference)):
        assert part.shape == ref.shape and part.dtype == ref.dtype
        # Every batch member has normals of its own (a bijector's batch broadcasts the base).
        flat = tf.reshape(part, [8, -1]).numpy()
        assert len(np.unique(np.round(flat, 5))) == flat.size
    assert np.all(np.isfinite(q.log_prob(z)))


def test_refusals_name_noise():
    target = tfd.Normal(0.0, 1.0).log_prob
    q = tfd.Normal(tf.Variable(0.0), 1.0)
    with pytest.raises(ValueError, match=r"noise.*Received: noise='sobol'"):
        tge.estimators.get("stl").loss(target, q, 4, seed=0, noise="sobol")
    for name, k in (("score_function", 1), ("vimco", 2)):
        with pytest.raises(ValueError, match=r"score-function term.*noise='iid'"):
            tge.vi.monte_carlo_variational_loss(
                target, q, 4, k, seed=0, gradient_estimator=name, noise="rqmc"
            )
    uniform = tfd.TransformedDistribution(tfd.Uniform(0.0, 1.0), tfb.Shift(1.0))
    with pytest.raises(ValueError, match=r"noise='rqmc'.*is a Uniform. Use noise='iid'"):
        tge.estimators.get("stl").loss(target, uniform, 4, seed=0, noise="rqmc")
    joint = tfd.JointDistributionSequential([tfd.Normal(0.0, 1.0), tfd.Laplace(0.0, 1.0)])
    with pytest.raises(ValueError, match=r"part 1 of `surrogate_posterior` is a Laplace"):
        tge.vi.fit_surrogate_posterior(
            lambda a, b: a + b, joint, tf.keras.optimizers.Adam(0.1), 1, noise="rqmc"
        )


# The ELBO's gradient in closed form: a diagonal Gaussian target, a diagonal Gaussian q.
_MU, _SIGMA = np.array([1.0, -2.0]), np.array([0.7, 1.5])


def _elbo_problem(dtype):
    loc = tf.Variable(np.array([0.2, -1.0]), dtype=dtype)
    raw = tf.Variable(np.array([0.3, -0.4]), dtype=dtype)

    def surrogate():
        return tfd.MultivariateNormalDiag(loc, tf.nn.softplus(raw))

    target = tfd.MultivariateNormalDiag(tf.constant(_MU, dtype), tf.constant(_SIGMA, dtype))

    def exact_elbo():
        q = surrogate()
        return -q.kl_divergence(target)

    return loc, raw, surrogate, target.log_prob, exact_elbo


@pytest.mark.parametrize("name", ["reparameterization", "stl"])
def test_elbo_gradient_is_unbiased(name):
    """Mean of 300 RQMC draws (S = 8) against the exact gradient: |z| < 4 per element."""
    loc, raw, surrogate, target, exact_elbo = _elbo_problem(tf.float64)
    estimator = tge.estimators.get(name)
    draws = tge.diagnostics.gradient_draws(
        lambda seed: estimator.loss(target, surrogate(), 8, seed=seed, noise="rqmc"),
        [loc, raw],
        300,
        seed=7,
    )
    exact = exact_gradient(exact_elbo, [loc, raw])
    assert max_abs_z(draws, exact) < Z_THRESHOLD
    # Power: without the random shift the points are the same every call (a fixed
    # quadrature rule): its error is far outside the randomised estimator's spread.
    fixed = quasi_random.sample

    def unshifted(*args):
        return fixed(*args, randomize=False)

    quasi_random.sample = unshifted
    try:
        wrong = tge.diagnostics.gradient_draws(
            lambda seed: estimator.loss(target, surrogate(), 8, seed=seed, noise="rqmc"),
            [loc, raw],
            4,
            seed=7,
        )
    finally:
        quasi_random.sample = fixed
    standard_errors = [np.std(d, axis=0, ddof=1) / np.sqrt(300) for d in draws]
    off = max(
        float(np.max(np.abs(np.mean(w, axis=0) - e) / s))
        for w, e, s in zip(wrong, exact, standard_errors)
    )
    assert off > Z_THRESHOLD


# The K = 2 IWAE bound of a 1-D Gaussian pair, by Gauss-Hermite quadrature in 2-D.
def _iwae2_exact_gradient(loc, raw, target):
    nodes, weights = np.polynomial.hermite.hermgauss(60)
    eps = np.sqrt(2.0) * nodes
    w = weights / np.sqrt(np.pi)
    e1, e2 = np.meshgrid(eps, eps, indexing="ij")
    ww = np.outer(w, w)
    with tf.GradientTape() as tape:
        q = tfd.Normal(loc, tf.nn.softplus(raw))
        z1, z2 = loc + q.scale * e1, loc + q.scale * e2
        lw1, lw2 = target(z1) - q.log_prob(z1), target(z2) - q.log_prob(z2)
        bound = tf.reduce_sum(ww * (tf.reduce_logsumexp(tf.stack([lw1, lw2]), 0) - np.log(2)))
        loss = -bound
    return [g.numpy() for g in tape.gradient(loss, [loc, raw])]


def test_iwae_gradient_is_unbiased_and_one_point_per_objective_matters():
    loc = tf.Variable(0.0, dtype=tf.float64)
    raw = tf.Variable(0.8, dtype=tf.float64)
    target = tfd.Normal(tf.constant(1.0, tf.float64), 0.7).log_prob
    exact = _iwae2_exact_gradient(loc, raw, target)

    def draws(sample_fn):
        def loss(seed):
            q = tfd.Normal(loc, tf.nn.softplus(raw))
            z = sample_fn(q, seed)
            log_w = tf.reshape(target(z) - q.log_prob(z), [4, 2])
            return -tf.reduce_mean(tf.reduce_logsumexp(log_w, 1) - np.log(2.0))

        return tge.diagnostics.gradient_draws(loss, [loc, raw], 1000, seed=11)

    right = draws(lambda q, seed: quasi_random.sample(q, 4, 2, seed))
    assert max_abs_z(right, exact) < Z_THRESHOLD
    # The library's loss is this construction.
    estimator = tge.estimators.get("iwae")
    library = tge.diagnostics.gradient_draws(
        lambda seed: estimator.loss(
            target, tfd.Normal(loc, tf.nn.softplus(raw)), 4, 2, seed=seed, noise="rqmc"
        ),
        [loc, raw],
        1000,
        seed=11,
    )
    assert max_abs_z(library, exact) < Z_THRESHOLD
    # Power: 8 points of dimension 1, two per objective, are antithetic pairs (x and
    # x ⊕ 1/2): each sample is a draw of q, but not independent of its partner.
    wrong = draws(lambda q, seed: quasi_random.sample(q, 8, 1, seed))
    assert max_abs_z(wrong, exact) > Z_THRESHOLD


def test_loss_traces_under_xla_and_fit_runs():
    loc, raw, surrogate, target, _ = _elbo_problem(tf.float32)

    @tf.function(jit_compile=True)
    def loss(seed):
        return tge.estimators.get("iwae_dreg").loss(
            target, surrogate(), 4, 2, seed=seed, noise="rqmc"
        )

    assert np.isfinite(loss(tf.constant([1, 2])))
    q = tfd.MultivariateNormalDiag(loc, tfp.util.TransformedVariable([1.0, 1.0], tfb.Softplus()))
    losses = tge.vi.fit_surrogate_posterior(
        target,
        q,
        tf.keras.optimizers.Adam(0.2),
        30,
        sample_size=8,
        gradient_estimator="stl",
        seed=0,
        noise="rqmc",
    )
    assert np.all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


# --- TFP's JAX substrate -----------------------------------------------------------------


@pytest.fixture
def jax():
    return pytest.importorskip("jax")


def test_jax_draws_the_same_samples(jax):
    from tensorflow_probability.substrates import jax as tfp_jax

    jd = tfp_jax.distributions
    q = jd.JointDistributionSequential(
        [jd.Normal(0.5, 2.0), lambda a: jd.Sample(jd.Normal(a, 0.1), 3)]
    )
    z_jax = quasi_random.sample(q, 4, 1, jax.random.PRNGKey(0), randomize=False)
    z_tf = quasi_random.sample(_dependent_joint(), 4, 1, tf.constant([0, 0]), randomize=False)
    for a, b in zip(z_jax, z_tf):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-5, atol=1e-6)


def test_jax_elbo_gradient_is_unbiased_and_the_fit_runs(jax):
    import optax
    from tensorflow_probability.substrates import jax as tfp_jax

    jnp, jd = jax.numpy, tfp_jax.distributions
    target = jd.MultivariateNormalDiag(jnp.asarray(_MU, jnp.float32), _SIGMA.astype(np.float32))

    def build(loc, raw):
        return jd.MultivariateNormalDiag(loc, jax.nn.softplus(raw))

    params = (jnp.array([0.2, -1.0]), jnp.array([0.3, -0.4]))

    def loss(params, key):
        return tge.vi.monte_carlo_variational_loss(
            target.log_prob, build(*params), 8, seed=key, gradient_estimator="stl", noise="rqmc"
        )

    keys = jax.random.split(jax.random.PRNGKey(5), 300)
    draws = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, keys)
    exact = jax.grad(lambda p: build(*p).kl_divergence(target))(params)
    assert max_abs_z([np.asarray(d) for d in draws], [np.asarray(e) for e in exact]) < Z_THRESHOLD
    fitted, losses = tge.vi.fit_surrogate_posterior_stateless(
        target.log_prob,
        build,
        params,
        optax.adam(0.1),
        100,
        sample_size=8,
        gradient_estimator="iwae_dreg",
        importance_sample_size=2,
        jit_compile=True,
        seed=jax.random.PRNGKey(0),
        noise="rqmc",
    )
    assert np.all(np.isfinite(losses))
    np.testing.assert_allclose(np.asarray(fitted[0]), _MU, atol=0.25)
    with pytest.raises(ValueError, match="score-function term"):
        loss_fn = tge.estimators.get("vimco").loss
        loss_fn(target.log_prob, build(*params), 4, 2, seed=0, noise="rqmc")


def test_comparison_command_takes_noise(capsys):
    from tfp_gradest.cli import _arguments, _files, _running

    args = _arguments.build_parser().parse_args(["compare", "--noise", "rqmc", "-S", "8"])
    args.backend = "tensorflow"
    (case,) = _arguments.cases(args)
    assert (case.problem, case.noise) == (_arguments.DEFAULT_PROBLEM, "rqmc")
    assert _files.run_name(args).endswith("-rqmc") and "noise" in _files.COLUMNS
    case, _ = _running.prepare(case)
    assert "score_function" not in case.estimators and "stl" in case.estimators
    assert "score_function left out" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Received: noise='rqmc'"):
        _running.prepare(_arguments.Case("bnn_layers", None, noise="rqmc"))
    iid = _arguments.build_parser().parse_args(["compare"])
    assert _files.run_name(iid) == "showcase"
