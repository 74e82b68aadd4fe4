"""What the path-weighted estimators (STL, the DReG family) compute beside `tfp.vi`'s step.

benchmarks/vi_overhead.py measures the cost (its one-call-per-step row, with voluntary
context switches per call); these tests pin the structural causes found there, with no
timing assertion: the log-weights' value takes `log q` from the sampler, as `tfp.vi`'s
does, so the forward pass has no inverse bijector pass and the loss is `tfp.vi`'s bit
for bit; and the zero-weight mask, now computed from an `exp`, still zeroes exactly the
gradient of the samples of zero weight.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest._util.seeds import sanitize_seed

tfd, tfb = tfp.distributions, tfp.bijectors
GE = tfp.vi.GradientEstimators


def _problem(dim=7):
    # A bijector-based surrogate (MultivariateNormalDiag is a TransformedDistribution):
    # `log_prob(z)` goes through the inverse `(z - loc) / scale`, whose rounding differs
    # from the sampler's `log q` (computed from the noise).
    rng = np.random.default_rng(0)
    loc = tf.Variable(rng.normal(size=dim).astype(np.float32))
    scale = tfp.util.TransformedVariable(
        rng.uniform(0.3, 2.0, size=dim).astype(np.float32), tfb.Softplus()
    )
    q = tfd.MultivariateNormalDiag(loc, scale)
    target = tfd.MultivariateNormalDiag(tf.ones(dim), 0.7 * tf.ones(dim)).log_prob
    return q, target


def _losses(q, target, k):
    """`tfp.vi`'s DOUBLY_REPARAMETERIZED loss, `tge`'s pathwise loss, then the path-weighted
    estimators' losses, on the same samples."""
    stopped = tfd.MultivariateNormalDiag(
        tf.stop_gradient(tf.convert_to_tensor(q.loc)), tf.stop_gradient(q.stddev())
    )
    common = dict(sample_size=4, importance_sample_size=k, seed=(5, 6))
    losses = [
        tfp.vi.monte_carlo_variational_loss(
            target,
            q,
            gradient_estimator=GE.DOUBLY_REPARAMETERIZED,
            stopped_surrogate_posterior=stopped,
            **common,
        )
    ]
    names = ["reparameterization", "stl"] if k == 1 else ["iwae", "iwae_dreg", "rws_dreg"]
    for name in names:
        losses.append(
            tge.vi.monte_carlo_variational_loss(target, q, gradient_estimator=name, **common)
        )
    return losses


@pytest.mark.parametrize("k", [1, 4])
def test_path_weighted_loss_is_tfp_vi_loss_bit_for_bit(k):
    # Was: `log q` for the log-weights evaluated at the samples through the inverse
    # bijector, a second pass beside the sampler's (which XLA:CPU scheduled beside the
    # target's first matrix product: a thread hand-off per call); at K = 4 the loss
    # differed from `tfp.vi`'s in the last bit.
    q, target = _problem()
    losses = [loss.numpy() for loss in _losses(q, target, k)]
    assert len(set(losses)) == 1, losses


@pytest.mark.parametrize("name", ["stl", "iwae_dreg"])
def test_log_q_of_saturated_samples_is_the_samplers_as_with_tfp_vi(name):
    # A sigmoid surrogate drawing from its flat tails gives samples that round to exactly
    # 1 (or 0) in float32, where the inverse pass is infinite: `log q` through it was
    # NaN, and so was the loss, where `tfp.vi`'s (from the noise) is finite.
    loc, scale = tf.Variable(0.0), tf.Variable(30.0)
    q = tfd.TransformedDistribution(tfd.Normal(loc, scale), tfb.Sigmoid())

    def target(z):
        return tf.zeros_like(z)  # flat: log w = -log q

    stopped = tfd.TransformedDistribution(
        tfd.Normal(tf.stop_gradient(loc), tf.stop_gradient(scale)), tfb.Sigmoid()
    )
    common = dict(
        sample_size=8, importance_sample_size=4 if name == "iwae_dreg" else 1, seed=(3, 4)
    )
    theirs = tfp.vi.monte_carlo_variational_loss(
        target,
        q,
        gradient_estimator=GE.DOUBLY_REPARAMETERIZED,
        stopped_surrogate_posterior=stopped,
        **common,
    )
    ours = tge.vi.monte_carlo_variational_loss(target, q, gradient_estimator=name, **common)
    assert np.isfinite(theirs.numpy())
    assert ours.numpy() == theirs.numpy()


def test_path_weighted_loss_is_tfp_vi_loss_under_xla():
    q, target = _problem()
    losses = tf.function(lambda: _losses(q, target, 4), jit_compile=True, autograph=False)()
    losses = [loss.numpy() for loss in losses]
    assert len(set(losses)) == 1, losses


@pytest.mark.parametrize("seed", [7, (0, 3), tf.constant([0, 3])], ids=["int", "pair", "tensor"])
def test_fit_gives_minimize_a_static_seed_as_tfp_vi_does(monkeypatch, seed):
    # Was: an eager Tensor, which `tfp.math.minimize`'s compiled function captured as an
    # input: XLA kept the seed arithmetic that it folds for `tfp.vi`'s Python seed (on
    # benchmarks/vi_structured.py's one-step fits, a compiled program over twice the size).
    received = []
    minimize = tfp.math.minimize

    def spy(*args, **kwargs):
        received.append(kwargs["seed"])
        return minimize(*args, **kwargs)

    monkeypatch.setattr(tfp.math, "minimize", spy)
    q, target = _problem(dim=2)
    losses = tge.vi.fit_surrogate_posterior(
        target, q, optimizer=keras.optimizers.SGD(1e-2), num_steps=2, seed=seed
    )
    assert isinstance(received[0], np.ndarray), type(received[0])
    # The same stateless seed as before, so the same draws.
    np.testing.assert_array_equal(received[0], sanitize_seed(seed).numpy())
    assert np.all(np.isfinite(losses))
