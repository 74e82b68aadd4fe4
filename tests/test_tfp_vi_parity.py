"""`tge.vi` against `tfp.vi` 0.25 on the same calls, and the cases of TFP's own vi tests.

The first half checks the drop-in contract: the same call (same seed, so the
same samples) gives `tfp.vi`'s loss value, and its gradient where the two
compute the same estimator. The second half restates, in this package's terms,
the cases of TFP's `vi/csiszar_divergence_test.py` and `vi/optimization_test.py`
that apply to it: Monte Carlo losses against analytic divergences, the
importance-weighted bound approaching `log Z`, fits of a conjugate model, the
convergence criterion, trace structure, `trainable_variables` and XLA.
"""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest.vi.losses import resolve_estimator

tfd, tfb = tfp.distributions, tfp.bijectors
GE = tfp.vi.GradientEstimators


def _problem():
    loc = tf.Variable(0.3)
    scale = tfp.util.TransformedVariable(1.2, tfb.Softplus())
    return tfd.Normal(loc, scale), lambda z: tfd.Normal(1.0, 0.5).log_prob(z)


def _loss_and_grads(module, q, target, **kwargs):
    with tf.GradientTape() as tape:
        loss = module.monte_carlo_variational_loss(target, q, seed=(3, 2), **kwargs)
    return loss.numpy(), [g.numpy() for g in tape.gradient(loss, q.trainable_variables)]


# --- the drop-in contract ---------------------------------------------------------------


def test_fit_surrogate_posterior_takes_tfp_vi_arguments_plus_gradient_estimator():
    # Was: also `gradient_reuse` and `num_batches`, which changed the target's signature
    # (now `tge.reuse.fit`; the old keywords still work, deprecated, through **kwargs).
    def spelled(function, skip=()):
        return [
            (p.name, p.kind, p.default if p.name != "trace_fn" else "the loss")
            for p in inspect.signature(function).parameters.values()
            if p.name not in skip
        ]

    ours = inspect.signature(tge.vi.fit_surrogate_posterior).parameters
    assert list(ours)[-3:] == ["gradient_estimator", "noise", "deprecated_kwargs"]
    assert ours["gradient_estimator"].kind is inspect.Parameter.KEYWORD_ONLY
    assert ours["noise"].kind is inspect.Parameter.KEYWORD_ONLY  # and "iid": tfp.vi's sampling
    assert ours["noise"].default == "iid"
    assert spelled(
        tge.vi.fit_surrogate_posterior, skip=("gradient_estimator", "noise", "deprecated_kwargs")
    ) == spelled(tfp.vi.fit_surrogate_posterior)


@pytest.mark.parametrize(
    "gradient_estimator,k,expected",
    [
        (GE.SCORE_FUNCTION, 1, tge.estimators.ScoreFunction),
        (GE.REPARAMETERIZATION, 1, tge.estimators.Reparameterization),
        (GE.REPARAMETERIZATION, 4, tge.estimators.IWAE),
        (GE.DOUBLY_REPARAMETERIZED, 1, tge.estimators.IWAEDReG),
        (GE.DOUBLY_REPARAMETERIZED, 4, tge.estimators.IWAEDReG),
        (GE.VIMCO, 4, tge.estimators.VIMCO),
    ],
)
def test_tfp_gradient_estimators_map_to_the_matching_estimator(gradient_estimator, k, expected):
    assert type(resolve_estimator(gradient_estimator, k)) is expected


@pytest.mark.parametrize(
    "gradient_estimator,k,discrepancy_fn",
    [
        (GE.REPARAMETERIZATION, 1, tfp.vi.kl_reverse),
        (GE.REPARAMETERIZATION, 5, tfp.vi.kl_reverse),
        (GE.REPARAMETERIZATION, 5, tfp.vi.kl_forward),
        (GE.DOUBLY_REPARAMETERIZED, 1, tfp.vi.kl_reverse),
        (GE.DOUBLY_REPARAMETERIZED, 5, tfp.vi.kl_reverse),
        (GE.VIMCO, 5, tfp.vi.kl_reverse),
        (GE.VIMCO, 5, tfp.vi.kl_forward),
        (GE.SCORE_FUNCTION, 1, tfp.vi.kl_reverse),
        (None, 5, tfp.vi.kl_forward),
    ],
)
def test_same_call_same_loss_and_gradient_as_tfp_vi(gradient_estimator, k, discrepancy_fn):
    # sample_size=1: tfp.vi's VIMCO draws [K, S] where the others draw [S * K], so
    # only at S = 1 are the samples the same.
    q, target = _problem()
    stopped = tfd.Normal(0.3, tf.math.softplus(tfp.math.softplus_inverse(1.2)))
    kwargs = dict(
        importance_sample_size=k,
        discrepancy_fn=discrepancy_fn,
        gradient_estimator=gradient_estimator,
        stopped_surrogate_posterior=stopped,
    )
    tfp_loss, tfp_grads = _loss_and_grads(tfp.vi, q, target, **kwargs)
    loss, grads = _loss_and_grads(tge.vi, q, target, **kwargs)
    assert loss == tfp_loss
    if gradient_estimator is not GE.SCORE_FUNCTION:  # tfp.vi's has no baseline; ours has one
        # The same sums in a different order: float32 rounding (~1e-7) of O(1) terms.
        np.testing.assert_allclose(grads, tfp_grads, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [np.int64(4), np.int32(4), tf.constant(4)], ids=str)
def test_numpy_and_constant_tensor_k_choose_iwae_as_tfp_vi(k):
    q, target = _problem()
    # A pair seed: tfp.vi draws an int seed statefully, so two int-seeded calls differ.
    expected = tfp.vi.monte_carlo_variational_loss(target, q, importance_sample_size=k, seed=(1, 2))
    got = tge.vi.monte_carlo_variational_loss(target, q, importance_sample_size=k, seed=(1, 2))
    assert float(got) == float(expected)
    losses = tge.vi.fit_surrogate_posterior(
        target, q, keras.optimizers.Adam(0.01), 2, importance_sample_size=k, seed=1
    )
    assert losses.shape == [2]


def test_a_k_with_no_static_value_is_refused_by_name():
    q, target = _problem()

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32)])
    def loss(k):
        return tge.vi.monte_carlo_variational_loss(target, q, importance_sample_size=k)

    with pytest.raises(TypeError, match="importance_sample_size"):
        loss(tf.constant(4))


@pytest.mark.parametrize(
    "name,because",
    [
        ("iwae_dreg", "drops a score term"),
        ("stl", "drops a score term"),
        ("rws", None),
        ("jvi", None),
    ],
)
def test_refusing_a_discrepancy_fn_gives_a_true_reason(name, because):
    q, target = _problem()
    k = 1 if name == "stl" else 4
    with pytest.raises(ValueError, match="discrepancy_fn") as error:
        tge.vi.monte_carlo_variational_loss(
            target, q, importance_sample_size=k, gradient_estimator=name,
            discrepancy_fn=tfp.vi.kl_forward,
        )  # fmt: skip
    message = str(error.value)
    assert "derived for the reverse KL" in message
    assert ("drops a score term" in message) == (because is not None)


def test_stopped_surrogate_posterior_must_be_a_distribution():
    q, target = _problem()
    with pytest.raises(TypeError, match="stopped_surrogate_posterior"):
        tge.vi.monte_carlo_variational_loss(target, q, stopped_surrogate_posterior=3.0)


# --- TFP's csiszar_divergence_test cases -------------------------------------------------


def _mc_mean_and_se(values):
    values = np.asarray(values, np.float64)
    return values.mean(), values.std(ddof=1) / np.sqrt(values.size)


@pytest.mark.parametrize("divergence", ["kl_reverse", "kl_forward"])
def test_monte_carlo_loss_estimates_the_analytic_kl(divergence):
    # q = N(0.5, 1.5), normalised p = N(0, 1): the loss is KL(q || p) (reverse) or
    # KL(p || q) (forward, E_q[w log w] with w = p/q). q wider than p keeps w bounded.
    p, q = tfd.Normal(0.0, 1.0), tfd.Normal(0.5, 1.5)
    fn = getattr(tfp.vi, divergence)
    exact = tfd.kl_divergence(q, p) if divergence == "kl_reverse" else tfd.kl_divergence(p, q)
    draws = tge.vi.monte_carlo_variational_loss(
        p.log_prob, q, sample_size=4000, discrepancy_fn=fn, seed=7
    )
    # The loss is a mean of 4000 iid terms f(log w); its standard error from the
    # spread of 4000 other such terms.
    samples = q.sample(4000, seed=(11, 0))
    terms = fn(p.log_prob(samples) - q.log_prob(samples)).numpy()
    _, se = _mc_mean_and_se(terms)
    assert abs(float(draws) - float(exact)) < 4 * se, (float(draws), float(exact), se)
    # Power: the same check against the other direction's KL fails.
    other = tfd.kl_divergence(p, q) if divergence == "kl_reverse" else tfd.kl_divergence(q, p)
    assert abs(float(draws) - float(other)) > 4 * se


def test_importance_weighted_bound_rises_towards_log_z():
    # Unnormalised target exp(c) N(1, 0.5): -loss is the IWAE bound on c = log Z, rising with K.
    c = 2.0
    q = tfd.Normal(0.0, 1.0)

    def target(z):
        return tfd.Normal(1.0, 0.5).log_prob(z) + c

    bounds, ses = [], []
    for k in [1, 8, 64]:
        values = -tge.vi.monte_carlo_variational_loss(
            target, tfd.BatchBroadcast(q, [400]), importance_sample_size=k, seed=k
        ).numpy()  # 400 independent bounds (a batch of identical surrogates)
        mean, se = _mc_mean_and_se(values)
        bounds.append(mean)
        ses.append(se)
    assert bounds[0] < bounds[1] - 2 * ses[1] and bounds[1] < bounds[2] - 2 * ses[2]
    assert bounds[2] < c + 4 * ses[2]
    assert bounds[2] > c - 0.2  # K=64 is within 0.2 nats here (exact gap: var(w)/(2K) ≈ 0.1)


# --- TFP's optimization_test cases -------------------------------------------------------


def _conjugate_normal():
    """z ~ N(0, 1), x_i | z ~ N(z, 0.5): the posterior is N(μ, σ²) in closed form."""
    x = np.array([0.8, 1.4, 0.6, 1.1], np.float32)
    precision = 1.0 + x.size / 0.25
    posterior = tfd.Normal(x.sum() / 0.25 / precision, precision**-0.5)

    def target(z):
        likelihood = tfd.Normal(z[..., tf.newaxis], 0.5).log_prob(x)
        return tfd.Normal(0.0, 1.0).log_prob(z) + tf.reduce_sum(likelihood, -1)

    loc = tf.Variable(0.0)
    scale = tfp.util.TransformedVariable(1.0, tfb.Softplus())
    return target, tfd.Normal(loc, scale), posterior


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_converges_to_the_conjugate_posterior(jit_compile):
    target, q, posterior = _conjugate_normal()
    losses = tge.vi.fit_surrogate_posterior(
        target, q, keras.optimizers.Adam(0.1), 300, sample_size=4,
        gradient_estimator="stl", jit_compile=jit_compile, seed=0,
    )  # fmt: skip
    assert losses.shape == [300]
    # STL's gradient vanishes at the exact posterior (a Normal here), so the
    # iterates settle there up to Adam's jitter; 0.02 is ~10% of σ = 0.24.
    np.testing.assert_allclose(q.mean(), posterior.mean(), atol=0.02)
    np.testing.assert_allclose(q.stddev(), posterior.stddev(), atol=0.02)


def test_convergence_criterion_stops_the_fit():
    target, q, _ = _conjugate_normal()
    criterion = tfp.optimizer.convergence_criteria.LossNotDecreasing(atol=0.01)
    losses, converged, parameters = tge.vi.fit_surrogate_posterior(
        target, q, keras.optimizers.Adam(0.1), 400, convergence_criterion=criterion,
        trace_fn=lambda t: (t.loss, t.has_converged, t.parameters),
        gradient_estimator="stl", sample_size=4, jit_compile=False, seed=0,
    )  # fmt: skip
    converged = converged.numpy()
    first = int(np.argmax(converged))
    print(f"converged at step {first}")
    assert converged[-1] and 0 < first < 399
    for trace in parameters:  # nothing moves after convergence
        np.testing.assert_array_equal(
            trace[first:], np.broadcast_to(trace[first], trace[first:].shape)
        )


def test_trace_fn_structure_and_trainable_variables():
    target, q, _ = _conjugate_normal()
    loc, scale_var = q.trainable_variables
    scale_before = scale_var.numpy()
    trace = tge.vi.fit_surrogate_posterior(
        target, q, keras.optimizers.Adam(0.1), 20,
        trace_fn=lambda t: {"loss": t.loss, "grads": t.gradients, "step": t.step},
        trainable_variables=[loc], seed=0,
    )  # fmt: skip
    assert set(trace) == {"loss", "grads", "step"}
    assert trace["loss"].shape == [20] and len(trace["grads"]) == 1
    np.testing.assert_array_equal(trace["step"], np.arange(20))
    assert scale_var.numpy() == scale_before and loc.numpy() != 0.0


# --- a scalar target output with one sample (issue 21) -----------------------------------

SEED = tf.constant([0, 3], tf.int32)  # stateless, so tfp.vi draws the same sample
ONE_SAMPLE = [
    name
    for name in tge.estimators.names()
    if tge.estimators.get(name).min_sample_size == 1
    and tge.estimators.get(name).min_importance_sample_size == 1
]


@pytest.mark.parametrize("name", ONE_SAMPLE)
def test_a_scalar_target_output_with_one_sample_is_accepted_as_tfp_vi(name):
    # With `sample_size * importance_sample_size == 1` and a scalar batch shape, a scalar
    # can only be the one sample's log density; tfp.vi accepts it (TFP's own
    # test_seeded_target_log_prob_fn returns `0.`), and so does every estimator here.
    q, per_sample = _problem()

    def scalar(z, seed=None):  # sums over the (single) sample axis
        del seed
        return tf.reduce_sum(per_sample(z))

    losses, grads = [], []
    for target in (scalar, per_sample):
        with tf.GradientTape() as tape:
            losses.append(
                tge.vi.monte_carlo_variational_loss(target, q, seed=SEED, gradient_estimator=name)
            )
        grads.append(tape.gradient(losses[-1], q.trainable_variables))
    reference = tfp.vi.monte_carlo_variational_loss(scalar, q, seed=SEED)
    assert losses[0].shape == () and losses[0] == losses[1] == reference
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)
    # A Python number, as in TFP's test: it takes the surrogate's dtype.
    loss = tge.vi.monte_carlo_variational_loss(
        lambda z, seed=None: 0.0, q, seed=SEED, gradient_estimator=name
    )
    assert loss == tfp.vi.monte_carlo_variational_loss(lambda z, seed=None: 0.0, q, seed=SEED)


def test_a_scalar_target_output_fits_as_with_tfp_vi():
    q, per_sample = _problem()
    trace = tge.vi.fit_surrogate_posterior(
        lambda z: tf.reduce_sum(per_sample(z)), q, keras.optimizers.Adam(0.1), 2, seed=1
    )
    assert trace.shape == (2,) and np.all(np.isfinite(trace))


@pytest.mark.parametrize(
    "sample_size,importance_sample_size,batch_shape",
    [(2, 1, []), (1, 2, []), (1, 1, [1]), (1, 1, [2])],
    ids=["two_samples", "two_importance_samples", "batch_1", "batch_2"],
)
def test_a_scalar_target_output_is_refused_where_it_is_ambiguous(
    sample_size, importance_sample_size, batch_shape
):
    # More than one sample, or a batch: which sample or member the scalar belongs to is
    # unknown (a sum over them, most likely), so it is refused, naming the shapes.
    q = tfd.Normal(tf.Variable(tf.zeros(batch_shape)), 1.0)
    n = sample_size * importance_sample_size
    expected = tuple([n] + batch_shape)
    with pytest.raises(ValueError, match=rf"target_log_prob_fn.*{expected}.*shape \(\)"):
        tge.vi.monte_carlo_variational_loss(
            lambda z: tf.reduce_sum(z), q, sample_size, importance_sample_size,
            gradient_estimator="iwae",
        )  # fmt: skip


def test_a_wrong_shape_with_one_sample_is_still_refused():
    q, per_sample = _problem()
    for bad in (lambda z: per_sample(z)[:, None], lambda z: tf.zeros([2])):
        with pytest.raises(ValueError, match=r"target_log_prob_fn.*\(1,\)"):
            tge.vi.monte_carlo_variational_loss(bad, q, seed=1)
