"""Path gradients of normalising-flow surrogates without the inverse pass (issue 25, item 5).

`tfp_gradest._util.flow_path` computes STL's and the DReG family's `∇z log q(z)` for a
RealNVP/Shift/Scale/Permute `TransformedDistribution` alongside the forward pass. The
checks are exact (the estimators' unbiasedness is inherited): the same samples as
`q.sample`, the same loss and gradient as the inverse route (`q.log_prob` at a fresh `z`)
up to float32 rounding, on TensorFlow (eager and XLA) and on TFP's JAX substrate; STL's
surrogate gradient exactly zero when `q` is the target; and no bijector inverse called.
Autoregressive surrogates keep the inverse route (see the module's docstring).

Tolerances: float32 gradients of a few-layer flow agree to a few ulps of their largest
element; `RTOL = 1e-4` relative to each gradient's largest element leaves two orders of
magnitude of margin, and a deliberately wrong route (the conditioner's `∂y_B/∂x_A` term
dropped) is off by O(1) relative (`test_equality_has_power`).
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest._util import flow_path

tfd, tfb = tfp.distributions, tfp.bijectors

D, HIDDEN = 4, 8
RTOL = 1e-4
SEED = (3, 4)


def _conditioner(rng, num_in, num_out, name, lib=tf):
    """`shift_and_log_scale_fn` of a one-hidden-layer tanh network, and its weights."""
    w1 = rng.normal(size=(num_in, HIDDEN)).astype("float32") * 0.5
    w2 = rng.normal(size=(HIDDEN, 2 * num_out)).astype("float32") * 0.3
    if lib is tf:
        w1, w2 = tf.Variable(w1, name=name + "_w1"), tf.Variable(w2, name=name + "_w2")

    def fn(x, units):
        h = lib.tanh(x @ w1) @ w2
        return h[..., :units], h[..., units:]

    return fn, [w1, w2]


class _NoInverseRealNVP(tfb.RealNVP):
    """A RealNVP whose inverse raises: proof that a route never inverts it."""

    def _inverse(self, y, **kwargs):
        raise AssertionError("RealNVP inverse called")

    def _inverse_log_det_jacobian(self, y, **kwargs):
        raise AssertionError("RealNVP inverse log-det-Jacobian called")


def _real_nvp_surrogate(real_nvp=tfb.RealNVP, seed=0):
    """Shift ∘ RealNVP(reverse mask) ∘ Permute ∘ RealNVP ∘ Scale of a standard normal."""
    rng = np.random.default_rng(seed)
    f1, v1 = _conditioner(rng, 2, 2, "first")
    f2, v2 = _conditioner(rng, 1, 3, "second")
    loc = tf.Variable(rng.normal(size=D).astype("float32"), name="loc")
    log_scale = tf.Variable(0.1 * rng.normal(size=D).astype("float32"), name="log_scale")
    bijector = tfb.Chain(
        [
            tfb.Shift(loc),
            real_nvp(num_masked=-1, shift_and_log_scale_fn=f2),
            tfb.Permute([3, 1, 2, 0]),
            real_nvp(num_masked=2, shift_and_log_scale_fn=f1),
            tfb.Scale(log_scale=log_scale),
        ]
    )
    q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(D)), bijector)
    return q, [loc, log_scale] + v1 + v2


def _maf_surrogate(invert=False):
    made = tfb.AutoregressiveNetwork(params=2, hidden_units=[HIDDEN], activation="tanh")
    maf = tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made)
    bijector = tfb.Invert(maf) if invert else maf
    q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(D)), bijector)
    q.sample(1, seed=SEED)  # builds the network's weights
    return q, list(made.trainable_variables)


def _target(z):
    return tfd.MultivariateNormalDiag(tf.ones(D), 2.0 * tf.ones(D)).log_prob(z)


def _loss_and_grads(estimator, q, variables, k, inverse=False, jit=False):
    def run():
        with tf.GradientTape() as tape:
            loss = tge.estimators.get(estimator).loss(_target, q, 3, k, seed=SEED)
        return loss, tape.gradient(loss, variables)

    def routed():
        if inverse:
            with flow_path.inverse_route():
                return run()
        return run()

    fn = tf.function(routed, jit_compile=True, autograph=False) if jit else routed
    loss, grads = fn()
    return loss.numpy(), [g.numpy() for g in grads]


def _assert_close(grads, reference):
    for g, r in zip(grads, reference):
        np.testing.assert_allclose(g, r, rtol=0, atol=RTOL * np.max(np.abs(r)))


def test_route_draws_the_samples_of_q_sample_and_its_log_prob():
    q, _ = _real_nvp_surrogate()
    route = flow_path.flow_route(tge._substrate.get("tensorflow"), q, 5, SEED)
    assert route is not None
    np.testing.assert_array_equal(route.samples.numpy(), q.sample(5, seed=SEED).numpy())
    np.testing.assert_allclose(
        route.surrogate_posterior.log_prob(route.samples).numpy(),
        q.log_prob(tf.identity(route.samples)).numpy(),
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "estimator,k,jit",
    # XLA once (compiling costs seconds): STL is IWAE-DReG at K = 1 (test_multisample.py).
    [("stl", 1, False), ("iwae_dreg", 4, False), ("iwae_dreg", 4, True)],
    ids=["stl-eager", "iwae_dreg-eager", "iwae_dreg-xla"],
)
def test_real_nvp_gradient_equals_the_inverse_route(estimator, k, jit):
    q, variables = _real_nvp_surrogate()
    loss, grads = _loss_and_grads(estimator, q, variables, k, jit=jit)
    ref_loss, reference = _loss_and_grads(estimator, q, variables, k, inverse=True, jit=jit)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    assert all(np.max(np.abs(r)) > 0 for r in reference)
    _assert_close(grads, reference)


def test_equality_has_power(monkeypatch):
    """Dropping the conditioner's `(∂y_B/∂x_A)^T u_B` term changes the gradient by O(1)."""
    q, variables = _real_nvp_surrogate()
    _, reference = _loss_and_grads("stl", q, variables, 1, inverse=True)
    original = tge._substrate.get("tensorflow").vjp

    def no_coupling_term(fn, *primals):
        outputs, pullback = original(fn, *primals)
        return outputs, lambda cotangents: [tf.zeros_like(p) for p in primals]

    monkeypatch.setattr(tge._substrate.get("tensorflow"), "vjp", no_coupling_term)
    _, wrong = _loss_and_grads("stl", q, variables, 1)
    assert max(np.max(np.abs(w - r)) / np.max(np.abs(r)) for w, r in zip(wrong, reference)) > 0.01


@pytest.mark.parametrize("estimator,k", [("stl", 1), ("iwae_dreg", 4)])
def test_no_bijector_inverse_is_called(estimator, k):
    q, variables = _real_nvp_surrogate(real_nvp=_NoInverseRealNVP)
    _, grads = _loss_and_grads(estimator, q, variables, k)
    assert all(np.all(np.isfinite(g)) for g in grads)
    with pytest.raises(AssertionError, match="inverse"):  # today's route inverts the flow
        _loss_and_grads(estimator, q, variables, k, inverse=True)


def test_stl_gradient_is_zero_when_q_is_the_target():
    q, variables = _real_nvp_surrogate()
    target, _ = _real_nvp_surrogate()  # the same values in other variables

    with tf.GradientTape() as tape:
        loss = tge.estimators.STL().loss(target.log_prob, q, 8, seed=SEED)
    grads = tape.gradient(loss, variables)
    scale = np.max(np.abs(_loss_and_grads("stl", q, variables, 1)[1][0]))
    for g in grads:
        np.testing.assert_allclose(g.numpy(), 0.0, atol=RTOL * scale)


@pytest.mark.parametrize("invert", [False, True], ids=["maf", "iaf"])
def test_autoregressive_flows_keep_the_inverse_route(invert):
    q, variables = _maf_surrogate(invert)
    assert flow_path.flow_route(tge._substrate.get("tensorflow"), q, 3, SEED) is None
    _, grads = _loss_and_grads("stl", q, variables, 1)
    _, reference = _loss_and_grads("stl", q, variables, 1, inverse=True)
    for g, r in zip(grads, reference):
        np.testing.assert_array_equal(g, r)


def test_unsupported_surrogates_keep_the_inverse_route():
    ops = tge._substrate.get("tensorflow")
    normal = tfd.MultivariateNormalDiag(tf.zeros(D))
    assert flow_path.flow_route(ops, normal, 3, SEED) is None
    exp = tfd.TransformedDistribution(normal, tfb.Chain([tfb.Shift(1.0), tfb.Exp()]))
    assert flow_path.flow_route(ops, exp, 3, SEED) is None
    scalar = tfd.TransformedDistribution(tfd.Normal(0.0, 1.0), tfb.Shift(1.0))
    assert flow_path.flow_route(ops, scalar, 3, SEED) is None
    joint = tfd.TransformedDistribution(
        tfd.JointDistributionSequential([normal, normal]), tfb.JointMap([tfb.Shift(1.0)] * 2)
    )
    assert flow_path.flow_route(ops, joint, 3, SEED) is None
    # A coupling whose inner bijector is not Shift/Scale: found only when it is built.
    spline_like = tfb.RealNVP(num_masked=2, bijector_fn=lambda x0, units: tfb.Sigmoid())
    coupling = tfd.TransformedDistribution(normal, spline_like)
    assert flow_path.flow_route(ops, coupling, 3, SEED) is None
    # ...while Shift/Scale from a `bijector_fn` take the route, as does a fraction_masked split.
    affine = tfb.RealNVP(
        num_masked=2,
        bijector_fn=lambda x0, units: tfb.Chain([tfb.Shift(x0), tfb.Scale(tf.exp(x0))]),
    )
    reversed_fraction = tfb.RealNVP(
        fraction_masked=-0.25, shift_and_log_scale_fn=lambda x0, units: (x0**2, tf.sin(x0))
    )
    for bijector in (affine, reversed_fraction):
        route = flow_path.flow_route(ops, tfd.TransformedDistribution(normal, bijector), 3, SEED)
        z = tf.identity(route.samples)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(z)
            ours = route.surrogate_posterior.log_prob(z)
            theirs = tfd.TransformedDistribution(normal, bijector).log_prob(z)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5)
        np.testing.assert_allclose(
            tape.gradient(ours, z).numpy(), tape.gradient(theirs, z).numpy(), rtol=1e-4, atol=1e-5
        )


def test_jax_gradient_equals_the_inverse_route():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    tfpj = pytest.importorskip("tensorflow_probability.substrates.jax")
    rng = np.random.default_rng(0)
    f1, w1 = _conditioner(rng, 2, 2, "first", lib=jnp)
    f2, w2 = _conditioner(rng, 1, 3, "second", lib=jnp)
    params = {"w": [jnp.asarray(w) for w in w1 + w2], "loc": jnp.ones(D), "ls": 0.1 * jnp.ones(D)}

    def make_q(p):
        def conditioner(w_in, w_out):
            def fn(x, units):
                h = jnp.tanh(x @ w_in) @ w_out
                return h[..., :units], h[..., units:]

            return fn

        bijector = tfpj.bijectors.Chain(
            [
                tfpj.bijectors.Shift(p["loc"]),
                tfpj.bijectors.RealNVP(
                    num_masked=-1, shift_and_log_scale_fn=conditioner(*p["w"][2:])
                ),
                tfpj.bijectors.Permute([3, 1, 2, 0]),
                tfpj.bijectors.RealNVP(
                    num_masked=2, shift_and_log_scale_fn=conditioner(*p["w"][:2])
                ),
                tfpj.bijectors.Scale(log_scale=p["ls"]),
            ]
        )
        base = tfpj.distributions.MultivariateNormalDiag(jnp.zeros(D))
        return tfpj.distributions.TransformedDistribution(base, bijector)

    def target(z):
        return tfpj.distributions.MultivariateNormalDiag(jnp.ones(D), 2 * jnp.ones(D)).log_prob(z)

    key = jax.random.PRNGKey(3)

    def gradient(estimator, k):
        loss = tge.estimators.get(estimator).loss
        return jax.jit(jax.grad(lambda p: loss(target, make_q(p), 3, k, seed=key)))(params)

    # IWAE-DReG only (compiling costs seconds): STL is IWAE-DReG at K = 1.
    new = jax.tree_util.tree_leaves(gradient("iwae_dreg", 4))
    with flow_path.inverse_route():
        reference = jax.tree_util.tree_leaves(gradient("iwae_dreg", 4))
    _assert_close([np.asarray(g) for g in new], [np.asarray(r) for r in reference])
