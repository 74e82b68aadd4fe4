"""A linear-response control variate for the path gradient of diagonal Gaussian surrogates."""

from tfp_gradest import _substrate
from tfp_gradest._util import log_weights as lw
from tfp_gradest.estimators.base import GradientEstimator, register
from tfp_gradest.estimators.importance_weights import leave_one_out_mean, normalized_weights

__all__ = ["LinearResponseCV"]


@register("linear_response_cv")
class LinearResponseCV(GradientEstimator):
    """STL's path gradient with a linear-response control variate, fitted leave-one-out per step.

    For a diagonal Gaussian surrogate `z = μ + σ ⊙ ε`, `ε ~ N(0, I)`, the path
    gradient of the ELBO (STL's; `y(z) = ∂/∂z [log p(x, z) - log q_φ̄(z)]`) is, per
    draw, `∇_μ = y` and `∇_σ = y ⊙ ε`. Per coordinate, approximate `y` by a line in
    `ε`, `y ≈ a + b ε` (a quadratic approximation of `log w` with a diagonal
    Hessian, `b = H σ`): Miller et al.'s linear response, Geffner & Domke's quadratic
    approximation with a diagonal matrix. Its own path gradient has a closed-form
    expectation, `E[(a + bε, (a + bε) ε)] = (a, b)`, so subtracting it minus that
    expectation leaves the estimator unbiased:

    ```none
    ∇_μ ≈ (1/S) Σ_s [y_s - b_s ε_s]
    ∇_σ ≈ (1/S) Σ_s [y_s ε_s - a_s ε_s - b_s (ε_s² - 1)]
    a_s = mean_{j≠s} y_j,   b_s = mean_{j≠s} ε_j y_j - (mean_{j≠s} ε_j)(mean_{j≠s} y_j)
    ```

    The fit. Instead of a Hessian-vector product per draw (Miller et al.) or
    parameters trained online by a second optimiser (Geffner & Domke; state that a
    JAX loss cannot keep), `(a_s, b_s)` are fitted per step from the *other* draws of
    the same call: `a` as their mean gradient and `b` by Stein's identity
    `E[ε y(μ + σε)] = E[∂y/∂ε] = E[H] σ` (their covariance of `ε` and `y`; the
    variance of `ε` is known to be 1, so nothing random is divided by). Leaving draw
    `s` out is what keeps it unbiased: `(a_s, b_s)` are then independent of `ε_s`,
    and `E[ε_s] = E[ε_s² - 1] = 0`. (Fitted on all draws, `b` would include draw `s`
    and bias the estimator by O(1/S).) No second pass through the target and no
    state: the `y_s` are the cotangents the backward pass already carries to the
    samples, and the control variate is applied there (the substrate's
    `custom_backward`); so it runs on JAX as on TensorFlow.

    What it removes: the part of the gradient noise that is linear in each
    coordinate's own noise, i.e. the diagonal of the target's curvature. For a
    Gaussian target with a diagonal precision that is all of it up to the fit's
    own noise (which shrinks like 1/S); couplings between coordinates (off-diagonal
    curvature) and non-quadratic terms are left. Near the optimum STL's variance
    is already small, and there is less to remove.

    Model parameters `θ` inside the target get STL's (the ELBO's) gradient
    `(1/S) Σ_s ∇_θ log p_θ(x, z_s)`, untouched. The value is the ELBO estimate, as for
    every estimator. Reverse KL and `importance_sample_size = 1` only; needs
    `sample_size >= 2` (the more draws, the better the fit: with `S = 2` each fit
    is one draw). Surrogates: `tfd.Normal`, `tfd.MultivariateNormalDiag`, or
    `tfd.Independent` of a `Normal`; any other is refused (use `"stl"`), and so is
    `noise="rqmc"` (its points are not independent draws). A draw of
    zero target density keeps no term of its own (its cotangent is zero) and enters
    the others' fits as a zero gradient.

    #### Examples

    ```python
    q = tfd.MultivariateNormalDiag(loc, scale_diag)  # trainable
    loss = tge.estimators.get("linear_response_cv").loss(target, q, sample_size=8, seed=0)
    ```

    #### References

    [1] Miller, Foti, D'Amour & Adams. Reducing Reparameterization Gradient
        Variance. NIPS 2017. https://arxiv.org/abs/1705.07880
    [2] Geffner & Domke. Approximation Based Variance Reduction for
        Reparameterization Gradients. NeurIPS 2020. https://arxiv.org/abs/2007.14634
    [3] Roeder, Wu & Duvenaud. Sticking the Landing. NeurIPS 2017.
        https://arxiv.org/abs/1703.09194
    """

    data_path = "path_weighted_surrogate"
    min_sample_size = 2
    max_importance_sample_size = 1
    reverse_kl_only_because = " (it is STL's path gradient, valid only there)"

    def _objective(self, inputs):
        if inputs.noise != "iid":
            # Quasi-random points are not independent: the fit on the others would depend
            # on draw s itself, and the control variate would no longer have mean zero.
            raise ValueError(
                "LinearResponseCV fits its control variate on the other draws, which must be "
                "independent of each draw; quasi-random points are not. Use noise='iid'. "
                f"Received: noise={inputs.noise!r}"
            )
        surrogate = _ControlledSampling(inputs.surrogate_posterior, inputs.ops)
        log_weights, objective = lw.path_weighted_surrogate(
            inputs._replace(surrogate_posterior=surrogate),
            lambda log_w: (normalized_weights(log_w),) * 2,  # STL: c = a = w̃ (1, or 0)
        )
        return log_weights[:, 0], objective


def _location_scale(surrogate_posterior, ops):
    """`(μ, σ)` of a diagonal Gaussian (live), or a `ValueError` naming the argument."""
    tfd = ops.tfp.distributions
    q = surrogate_posterior
    if isinstance(q, tfd.Independent) and type(q.distribution) is tfd.Normal:
        q = q.distribution
    if type(q) is tfd.Normal:
        return q.loc, q.scale
    if type(q) is tfd.MultivariateNormalDiag:
        return q.mean(), q.scale.diag_part()
    raise ValueError(
        "LinearResponseCV fits its control variate to a diagonal Gaussian `z = μ + σ ε`, so "
        "`surrogate_posterior` must be a `tfd.Normal`, `tfd.MultivariateNormalDiag` or "
        "`tfd.Independent` of a `Normal`; for other surrogates use gradient_estimator='stl'. "
        f"Received: surrogate_posterior={surrogate_posterior!r}"
    )


class _ControlledSampling:
    """The surrogate as the data path sees it: its own samples and `log_prob`, but samples
    whose backward pass applies the control variate to the cotangents they receive."""

    def __init__(self, surrogate_posterior, ops):
        self._q = surrogate_posterior
        self._ops = ops
        self._loc_scale = _location_scale(surrogate_posterior, ops)

    def __getattr__(self, name):  # dtype, batch_shape, event_shape, ...
        return getattr(self._q, name)

    def log_prob(self, value):
        return self._q.log_prob(value=value)

    def sample(self, sample_shape, seed):
        return self._controlled(self._q.sample(sample_shape, seed=seed))

    def experimental_sample_and_log_prob(self, sample_shape, seed):
        # The data path draws through this (the log-weights' value takes `log q` from the
        # sampler): the draws must be the controlled ones here too.
        z, log_prob = self._q.experimental_sample_and_log_prob(sample_shape, seed=seed)
        return self._controlled(z), log_prob

    def _controlled(self, z):
        ops = self._ops
        z = ops.stop_gradient(z)
        like = ops.zeros_like(z[0])  # batch + event shape: μ and σ broadcast to it
        loc, scale = (t + like for t in self._loc_scale)
        noise = ops.stop_gradient((z - loc) / scale)
        # Forward: the surrogate's own draws, bit for bit. Backward: the cotangents `y_s`
        # the target's (STL) backward pass sends to the draws, controlled, to μ and σ.
        return ops.custom_backward(z, (loc, scale), (noise,), _controlled_cotangents)


def _controlled_cotangents(residuals, y):
    """`(Σ_s [y_s - b_s ε_s], Σ_s [y_s ε_s - a_s ε_s - b_s (ε_s² - 1)])` (see the class)."""
    (eps,) = residuals
    ops = _substrate.of(y)
    a = leave_one_out_mean(y, axis=0)
    b = leave_one_out_mean(eps * y, axis=0) - leave_one_out_mean(eps, axis=0) * a
    # A draw of zero density has a zero cotangent: it keeps no control-variate term either.
    keep = ops.cast(~ops.equal(y, 0.0), y.dtype)
    loc_cotangent = y - keep * b * eps
    scale_cotangent = y * eps - keep * (a * eps + b * (eps * eps - 1.0))
    return ops.reduce_sum(loc_cotangent, axis=0), ops.reduce_sum(scale_cotangent, axis=0)
