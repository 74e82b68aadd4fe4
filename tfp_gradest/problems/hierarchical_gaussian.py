"""A two-level Gaussian model with a learnable prior conditional: where GDReG differs from DReG."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest import _substrate
from tfp_gradest.problems.base import Problem, register, tfp_module

tfd = tfp.distributions

__all__ = ["HierarchicalGaussian"]

# The starting point (every entry): the surrogate's φ, then the model's θ.
_PHI = {"m2": 0.2, "r2": np.log(0.8), "w": 0.5, "m1": 0.4, "r1": np.log(0.7)}
_THETA = {"a": 0.8, "b": 0.0, "log_s": 0.0, "c": 1.2}


@register("hierarchical_gaussian")
class HierarchicalGaussian(Problem):
    """`z2 → z1 → x`, every entry independent, with a learnable prior conditional `p_θ(z1 | z2)`.

    ```none
    model θ = (a, b, log s, c):
        z2 ~ N(0, I),         z1 | z2 ~ N(a ⊙ z2 + b, s² I),         x | z1 ~ N(c ⊙ z1, I)
    surrogate φ = (m2, r2, w, m1, r1):
        q(z2) = N(m2, e^{2 r2}),   q(z1 | z2) = N(w ⊙ z2 + m1, e^{2 r1})
    ```

    The surrogate is a `JointDistributionSequential` over `[z2, z1]` whose second part
    depends on the first, and the target declares its prior conditional
    `p_θ(z1 | z2)` through `target_log_prob.latent_distributions` (see
    `tge.estimators.GDReG`): the two places where Generalized DReG differs from
    IWAE-DReG (on a target with no declared factor and a surrogate with no conditional
    part, as `toy_gaussian`, the two are equal). `c` enters the likelihood only, so every
    multi-sample estimator gives it IWAE's gradient.

    Everything is Gaussian and linear, so the ELBO (`exact_objective`, K = 1) is closed
    form, and the exact posterior `p(z | x)` is in the surrogate family (`posterior_parameters`);
    with `dim=1`, `iwae_bound_by_quadrature` gives the K = 2 IWAE bound to about 1e-9
    (Gauss-Hermite quadrature), the exact reference of GDReG's tests. For K > 1 in `compare`
    the reference is IWAE-DReG's mean (the problems' convention).

    The surrogate starts near the posterior (`start="posterior"`, as the DReG papers' toy
    Gaussian starts near its optimum), where IWAE-DReG's φ-gradient and GDReG's θ-gradient
    have little variance; `start="fixed"` is one point away from it, the same in every entry.

    `variables` are φ then θ (9 vectors of `dim` entries); `surrogate_variables` and
    `model_variables` each half. On JAX (`--backend jax`) the gradients are φ's only
    (`parameters()`, as every problem's): θ is then a constant of the target.

    Args:
      dim: Python `int`, entries of each latent. Default value: `4`.
      observation: `x`, a Python `float` (every entry) or a sequence of `dim` floats.
        Default value: `1.3`.
      start: `"posterior"` (φ at the exact posterior of the initial θ, plus normal noise of
        standard deviation `perturbation`) or `"fixed"` (`m2, r2, w, m1, r1 = 0.2, log 0.8,
        0.5, 0.4, log 0.7`). θ starts at `a, b, c = 0.8, 0, 1.2` either way.
        Default value: `"posterior"`.
      prior_scale: the initial `s` of `p_θ(z1 | z2)`: how informative the prior conditional is
        against the likelihood (GDReG's θ-gradient gains where it is narrow). Default value:
        `0.5`.
      perturbation: the noise added to the posterior's φ (`start="posterior"` only).
        Default value: `0.05`.
      declare_latent_distributions: Python `bool`: whether the target declares
        `p_θ(z1 | z2)` (with `False`, GDReG gives θ IWAE-DReG's gradient). Default value:
        `True`.
      dtype: float dtype, a `tf.DType` or its name. Default value: `"float32"`.
      seed: numpy seed of the perturbation. Default value: `0`.
    """

    default_estimators = ("iwae", "iwae_dreg", "gdreg", "gdreg(conditional_scores=transform)")
    default_importance_sample_size = 16
    fit_estimator = "iwae_dreg"
    substrates = ("tensorflow", "jax")

    def __init__(
        self,
        dim=4,
        observation=1.3,
        start="posterior",
        perturbation=0.05,
        prior_scale=0.5,
        declare_latent_distributions=True,
        dtype="float32",
        seed=0,
    ):
        if start not in ("posterior", "fixed"):
            raise ValueError(f"`start` must be 'posterior' or 'fixed'. Received: start={start!r}")
        self.dtype, self.dim = tf.as_dtype(dtype), dim
        self.declare_latent_distributions = bool(declare_latent_distributions)
        self._np_dtype = self.dtype.as_numpy_dtype
        x = np.broadcast_to(np.asarray(observation, self._np_dtype), [dim])
        self.x = np.array(x)
        theta = {name: np.full([dim], value) for name, value in _THETA.items()}
        theta["log_s"] = np.full([dim], np.log(prior_scale))
        if start == "posterior":
            rng = np.random.default_rng(seed)
            phi = {
                name: value + perturbation * rng.normal(size=dim)
                for name, value in self.posterior_parameters(theta).items()
            }
        else:
            phi = {name: np.full([dim], value) for name, value in _PHI.items()}
        self._variables = {
            name: tf.Variable(value.astype(self._np_dtype), name=name)
            for name, value in {**phi, **theta}.items()
        }
        v = self._variables
        self.surrogate = self._surrogate(
            tfp, v["m2"], _exp(v["r2"]), v["w"], v["m1"], _exp(v["r1"])
        )
        # An instance attribute, not a method: GDReG reads `latent_distributions` off it.
        self.target_log_prob = self._target(tfp, v["a"], v["b"], _exp(v["log_s"]), v["c"])

    def posterior_parameters(self, theta=None):
        """φ of the exact posterior `p(z | x)` under θ (default: the current θ), numpy.

        ```none
        p(z2 | x) = N(m2, 1/P2):        P2 = 1 + (c a)² / (c² s² + 1)
                                        m2 = c a (x - c b) / ((c² s² + 1) P2)
        p(z1 | z2, x) = N(w z2 + m1, 1/P1):   P1 = 1/s² + c²,  w = a / (s² P1)
                                              m1 = (b/s² + c x) / P1
        ```
        """
        t = self.model_parameters() if theta is None else theta
        a, b, s2, c, x = t["a"], t["b"], np.exp(2 * t["log_s"]), t["c"], self.x
        noise = c**2 * s2 + 1
        p2, p1 = 1 + (c * a) ** 2 / noise, 1 / s2 + c**2
        return {
            "m2": c * a * (x - c * b) / (noise * p2),
            "r2": -0.5 * np.log(p2),
            "w": a / (s2 * p1),
            "m1": (b / s2 + c * x) / p1,
            "r1": -0.5 * np.log(p1),
        }

    def _surrogate(self, tfp, m2, scale2, w, m1, scale1):
        tfd = tfp.distributions
        return tfd.JointDistributionSequential(
            [
                tfd.Independent(tfd.Normal(m2, scale2), 1),
                lambda z2: tfd.Independent(tfd.Normal(w * z2 + m1, scale1), 1),
            ]
        )

    def _target(self, tfp, a, b, scale, c):
        tfd, zeros = tfp.distributions, np.zeros([self.dim], self._np_dtype)

        def prior_conditional(z2):
            return tfd.Independent(tfd.Normal(a * z2 + b, scale), 1)

        def target_log_prob(z2, z1):
            """`log p(z2) + log p_θ(z1 | z2) + log p(x | z1)`."""
            return (
                tfd.Independent(tfd.Normal(zeros, 1.0), 1).log_prob(z2)
                + prior_conditional(z2).log_prob(z1)
                + tfd.Independent(tfd.Normal(c * z1, 1.0), 1).log_prob(self.x)
            )

        if self.declare_latent_distributions:
            target_log_prob.latent_distributions = lambda z2, z1: {1: prior_conditional(z2)}
        return target_log_prob

    def _elbo(self, tfp, substrate, m2, r2, w, m1, r1, a, b, log_s, c):
        """The closed-form ELBO: each factor's expected log density is minus the cross
        entropy of the Gaussian its residual has under `q`, plus `q`'s entropy."""
        ops, tfd = _substrate.get(substrate), tfp.distributions

        def normal(loc, variance):
            return tfd.Independent(tfd.Normal(loc, ops.exp(0.5 * ops.log(variance))), 1)

        s2, s1, s = ops.exp(2.0 * r2), ops.exp(2.0 * r1), ops.exp(log_s)
        prior_residual = normal((w - a) * m2 + m1 - b, (w - a) ** 2 * s2 + s1)
        likelihood_residual = normal(self.x - c * (w * m2 + m1), c**2 * (w**2 * s2 + s1))
        standard = tfd.Independent(tfd.Normal(np.zeros([self.dim], self._np_dtype), 1.0), 1)
        prior_factor = tfd.Independent(tfd.Normal(np.zeros([self.dim], self._np_dtype), s), 1)
        return (
            -normal(m2, s2).cross_entropy(standard)
            - prior_residual.cross_entropy(prior_factor)
            - likelihood_residual.cross_entropy(standard)
            + normal(m2, s2).entropy()
            + normal(m1, s1).entropy()
        )

    # --- the Problem contract -----------------------------------------------------------

    @property
    def variables(self):
        return list(self._variables.values())

    @property
    def surrogate_variables(self):
        """φ: `m2, r2, w, m1, r1` (`r` the log standard deviations)."""
        return [self._variables[n] for n in _PHI]

    @property
    def model_variables(self):
        """θ: `a, b, log_s` (the declared prior conditional) and `c` (the likelihood)."""
        return [self._variables[n] for n in _THETA]

    def exact_objective(self):
        """The exact ELBO (the IWAE bound for K > 1 has no closed form)."""
        return self._elbo(tfp, "tensorflow", *self.variables)

    def iwae_bound_by_quadrature(self, num_nodes=20):
        """The K = 2 IWAE bound `E[log((w¹ + w²)/2)]` by Gauss-Hermite quadrature (`dim=1`).

        With `z2 = m2 + e^r2 ε2` and `z1 = w z2 + m1 + e^r1 ε1`, `log w` is a quadratic in
        `ε`, so the bound is a smooth 4-d Gaussian integral; `num_nodes` nodes per axis
        are exact for polynomials of degree `2 num_nodes - 1` (16 and 20 nodes agree to
        about 1e-9 in float64). Differentiable in every variable, so its gradient is the
        exact K = 2 IWAE gradient. Use `dtype="float64"`.
        """
        if self.dim != 1:
            raise ValueError(
                "The quadrature is 4-d for one entry per latent; build the problem with "
                f"dim=1. Received: dim={self.dim}"
            )
        nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
        weights = weights / weights.sum()
        e2, e1 = (tf.constant(g.reshape(-1, 1), self.dtype) for g in np.meshgrid(nodes, nodes))
        pair = tf.constant(np.outer(weights, weights).ravel(), self.dtype)
        v = self._variables
        z2 = v["m2"] + tf.exp(v["r2"]) * e2
        z1 = v["w"] * z2 + v["m1"] + tf.exp(v["r1"]) * e1
        log_w = self.target_log_prob(z2, z1) - self.surrogate.log_prob([z2, z1])
        pairs = tf.reduce_logsumexp(tf.stack(tf.meshgrid(log_w, log_w)), axis=0) - np.log(2.0)
        return tf.reduce_sum(pair[:, None] * pair[None, :] * pairs)

    def parameter_variables(self):
        return {name: self._variables[name] for name in _PHI}

    def build_surrogate(self, parameters, tfp):
        p = parameters
        return self._surrogate(tfp, p["m2"], _exp(p["r2"]), p["w"], p["m1"], _exp(p["r1"]))

    def model_parameters(self):
        """θ's current values, `{name: numpy array}`."""
        return {name: self._variables[name].numpy() for name in _THETA}

    def build_target(self, parameters, tfp):
        """The target (with its declared factor) on `tfp`'s substrate, θ from `parameters`."""
        p = parameters
        return self._target(tfp, p["a"], p["b"], _exp(p["log_s"]), p["c"])

    def _jax_target_log_prob_fn(self):
        return self.build_target(self.model_parameters(), tfp_module("jax"))

    def exact_objective_fn(self, substrate="tensorflow"):
        self.check_substrate(substrate)
        theta = self.model_parameters()
        return lambda p: self._elbo(
            tfp_module(substrate), substrate, *(p[n] for n in _PHI), *theta.values()
        )

    def distance_to_optimum(self):
        # Not a conjugate fit (θ is learnt too), so there is no optimum to measure against.
        return f"ELBO = {float(self.exact_objective()):.4g} (closed form)"


def _exp(log_value):
    """`exp(log_value)`: deferred for a `tf.Variable` (read where the gradient is taken)."""
    if isinstance(log_value, tf.Variable):
        return tfp.util.DeferredTensor(log_value, tf.exp)
    return np.exp(log_value) if isinstance(log_value, np.ndarray) else _jnp_exp(log_value)


def _jnp_exp(x):
    import jax.numpy as jnp

    return jnp.exp(x)
