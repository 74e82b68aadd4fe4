"""Re-using stored samples under new parameters: importance weights and the linearised objective.

A Gaussian surrogate `q(θ | λ)` is an affine map of standard noise,
`θ = g_λ(ε) = μ + C ε`. Given samples `θ_m` drawn under `λ₀` with their target
gradients `∇_θ log p(θ_m)`, the reparameterisation gradient at `λ` is estimated
by re-using them (Sakaya & Klami, 2017):

```none
∇_λ E_q(λ)[log p(θ)] ≈ Σ_m w_m ∇_θ log p(θ_m) · ∂g_λ(ε_m)/∂λ,   ε_m = g_λ⁻¹(θ_m),
w_m = (1/M) q(θ_m | λ) / q(θ_m | λ₀)                           ("importance": unbiased)
w_m = r_m / Σ_i r_i,  r_m = q(θ_m | λ) / q(θ_m | λ₀)            ("global": self-normalised)
w_mj = r_mj / Σ_i r_ij,  r_mj = q_j(θ_mj | λ) / q_j(θ_mj | λ₀)   ("per_element")
w_m = 1/M                                                       ("none": biased when λ ≠ λ₀)
```

"per_element" uses, for the gradient entries of coordinate `j` (`μ_j` and row
`j` of `C`), the ratio of `θ_j`'s marginal densities: far less degenerate than
the joint ratio in many dimensions, at the price of a bias that vanishes at
`λ = λ₀` (the poster's best variant). The self-normalised variants are
consistent, with an `O(1/M)` bias.

The gradient is that of the *linearised objective*
`Σ_m Σ_j w_mj · stop(∇_θ log p(θ_m))_j · g_λ(stop(ε_m))_j` with respect to
the surrogate's variables, so any parameterisation of `μ` and `C` (softplus
scales, `FillScaleTriL`, ...) is handled by autodiff.
"""

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = [
    "WEIGHTINGS",
    "check_gaussian",
    "linearized_objective",
    "marginal_log_prob",
    "reuse_weights",
]

WEIGHTINGS = ("none", "importance", "global", "per_element")


def check_gaussian(surrogate_posterior):
    """Raises unless `surrogate_posterior` is an affine Gaussian with one event axis
    and no batch."""
    if not isinstance(surrogate_posterior, tfd.MultivariateNormalLinearOperator):
        raise TypeError(
            "I-SAG re-uses samples through `ε = C⁻¹(θ - μ)`, so `surrogate_posterior` must be a "
            "Gaussian with an affine scale: tfd.MultivariateNormalDiag (mean-field) or "
            "tfd.MultivariateNormalTriL (full-rank). Received: "
            f"{type(surrogate_posterior).__name__}"
        )
    if surrogate_posterior.batch_shape.rank != 0 or surrogate_posterior.event_shape[0] is None:
        raise ValueError(
            "`surrogate_posterior` must have batch shape [] and a static event size. Received: "
            f"batch_shape={surrogate_posterior.batch_shape}, "
            f"event_shape={surrogate_posterior.event_shape}"
        )


def marginal_log_prob(surrogate, theta):
    """`log q_j(θ_mj | λ)`, `[M, D]`: each coordinate under its Normal marginal."""
    return tfd.Normal(surrogate.loc, surrogate.stddev()).log_prob(theta)


def reuse_weights(surrogate, theta, log_q0, marginal_log_q0, weighting):
    """Weights `[M, 1]` (or `[M, D]` for `"per_element"`), summing to 1 over `m` at `λ = λ₀`.

    Args:
      surrogate: the current `q(· | λ)`.
      theta: `[M, D]` stored samples.
      log_q0: `[M]`, `log q(θ_m | λ₀)`.
      marginal_log_q0: `[M, D]`, `log q_j(θ_mj | λ₀)` (used by `"per_element"`).
      weighting: one of `WEIGHTINGS`.
    """
    num = tf.cast(tf.shape(theta)[0], theta.dtype)
    if weighting == "none":
        return tf.fill([tf.shape(theta)[0], 1], 1.0 / num)
    if weighting == "per_element":
        log_ratio = marginal_log_prob(surrogate, theta) - marginal_log_q0
        return tf.math.softmax(log_ratio, axis=0)
    log_ratio = (surrogate.log_prob(theta) - log_q0)[:, tf.newaxis]
    if weighting == "global":
        return tf.math.softmax(log_ratio, axis=0)
    return tf.exp(log_ratio) / num  # "importance"


def linearized_objective(surrogate, theta, target_grads, weights):
    """`Σ_m Σ_j w_mj g_mj (μ + C ε_m)_j` with `ε_m = C⁻¹(θ_m - μ)` held fixed.

    Its gradient w.r.t. the surrogate's variables is the (re-used) estimate of
    `∇_λ E_q[log p(θ)]`; its value equals `Σ w g·θ`.
    """
    weights = tf.stop_gradient(weights)
    noise = tf.stop_gradient(surrogate.scale.solvevec(theta - surrogate.loc))
    resampled = surrogate.loc + surrogate.scale.matvec(noise)
    return tf.reduce_sum(weights * tf.stop_gradient(target_grads) * resampled)
