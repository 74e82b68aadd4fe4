"""A few binary latents with a mean-field Bernoulli surrogate: the ELBO by enumeration."""

import itertools

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest import _substrate
from tfp_gradest.problems.base import Problem, register, tfp_module

__all__ = ["LatentBits"]


@register("latent_bits")
class LatentBits(Problem):
    """Binary latents, a linear-Gaussian likelihood and a mean-field Bernoulli surrogate.

    ```none
    z_i ~ Bernoulli(π) (i = 1..n),   x | z ~ N(W z, σ² I_d),   q_φ(z) = Π_i Bernoulli(z_i; σ(φ_i))
    ```

    ```none
    ELBO(φ) = Σ_{z ∈ {0,1}^n} q_φ(z) [log p(x, z) - log q_φ(z)]          (2^n terms)
    ```

    A small sparse-coding model: `W` (`d × n`) and the observation `x`, drawn from the
    model at a `z` of the prior, are fixed by `seed`; the posterior couples the latents
    (explaining away), which the mean-field surrogate cannot represent. The surrogate
    cannot be reparameterised, so only score-function estimators apply (`ScoreFunction`
    with or without its leave-one-out baseline, `VarGrad`, and `VIMCO` for K > 1); the
    pathwise ones refuse it. `exact_objective()` sums the ELBO over all `2^n` states, so
    its autodiff gradient is the exact ELBO gradient the bias z-scores use. For K > 1
    (VIMCO, `-S 1 -K 8`) the reference is the mean of many VIMCO draws (the problems'
    convention). Runs on both TFP substrates (`--backend jax`).

    Args:
      num_latents: Python `int`, `n` (the enumeration has `2^n` terms). Default value: `6`.
      dim: Python `int`, `d`, the observation's size. Default value: `8`.
      prior_probability: `π`. Default value: `0.3`.
      noise_scale: `σ`. Default value: `0.5`.
      initial_scale: standard deviation of the surrogate's initial logits (around 0).
        Default value: `0.5`.
      dtype: float dtype of the samples and densities. Default value: `"float32"`.
      seed: numpy seed of `W`, `x` and the initial logits. Default value: `0`.
    """

    default_estimators = ("score_function", "vargrad", "score_function(baseline=leave_one_out)")
    default_sample_size = 8
    reference_estimator = None  # K = 1: the exact gradient; none needed
    fit_estimator = "vargrad"
    fit_learning_rate = 0.05
    substrates = ("tensorflow", "jax")

    def __init__(
        self,
        num_latents=6,
        dim=8,
        prior_probability=0.3,
        noise_scale=0.5,
        initial_scale=0.5,
        dtype="float32",
        seed=0,
    ):
        if not 1 <= num_latents <= 16:
            raise ValueError(
                "`num_latents` must be between 1 and 16 (the exact ELBO sums 2^num_latents "
                f"terms). Received: num_latents={num_latents}"
            )
        rng = np.random.default_rng(seed)
        self.dtype = tf.as_dtype(dtype)
        np_dtype = self.dtype.as_numpy_dtype
        self.num_latents, self.dim = num_latents, dim
        self.prior_probability, self.noise_scale = prior_probability, noise_scale
        self.weights = rng.normal(size=(dim, num_latents)).astype(np_dtype)
        z = (rng.uniform(size=num_latents) < prior_probability).astype(np_dtype)
        self.x = (self.weights @ z + noise_scale * rng.normal(size=dim)).astype(np_dtype)
        self.states = np.array(list(itertools.product([0, 1], repeat=num_latents)), np_dtype)
        self.logits = tf.Variable(
            (initial_scale * rng.normal(size=num_latents)).astype(np_dtype), name="logits"
        )
        self.surrogate = self.build_surrogate({"logits": self.logits}, tfp)

    def _log_joint(self, tfp, substrate, z):
        ops, tfd = _substrate.get(substrate), tfp.distributions
        pi = self.prior_probability
        prior = z * float(np.log(pi)) + (1.0 - z) * float(np.log1p(-pi))  # in z's dtype
        mean = ops.reduce_sum(z[..., None, :] * self.weights, axis=-1)  # W z, [..., d]
        likelihood = tfd.Normal(mean, self.noise_scale).log_prob(self.x)
        return ops.reduce_sum(prior, axis=-1) + ops.reduce_sum(likelihood, axis=-1)

    def target_log_prob(self, z):
        """`log p(z) + log N(x; W z, σ² I)` for `z` of shape `[..., n]` (0/1 floats)."""
        return self._log_joint(tfp, "tensorflow", z)

    def _jax_target_log_prob_fn(self):
        tfp_jax = tfp_module("jax")
        return lambda z: self._log_joint(tfp_jax, "jax", z)

    def parameter_variables(self):
        return {"logits": self.logits}

    def build_surrogate(self, parameters, tfp):
        tfd = tfp.distributions
        return tfd.Independent(
            tfd.Bernoulli(logits=parameters["logits"], dtype=self.dtype.as_numpy_dtype), 1
        )

    def _elbo(self, tfp, substrate, surrogate):
        """`Σ_z q(z) (log p(x, z) - log q(z))` over the `2^n` states."""
        ops = _substrate.get(substrate)
        log_q = surrogate.log_prob(self.states)
        log_p = self._log_joint(tfp, substrate, self.states)
        return ops.reduce_sum(ops.exp(log_q) * (log_p - log_q))

    def exact_objective(self):
        """The exact ELBO, summed over the `2^n` states."""
        return self._elbo(tfp, "tensorflow", self.surrogate)

    def exact_objective_fn(self, substrate="tensorflow"):
        self.check_substrate(substrate)
        tfp = tfp_module(substrate)
        return lambda p: self._elbo(tfp, substrate, self.build_surrogate(p, tfp))

    def log_marginal(self):
        """`log p(x)`, summed over the `2^n` states (numpy)."""
        log_p = self._log_joint(tfp, "tensorflow", tf.constant(self.states)).numpy()
        return float(np.logaddexp.reduce(log_p.astype(np.float64)))

    def reference_estimator_for(self, importance_sample_size):
        # The IWAE bound's gradient (K > 1) by VIMCO's mean: no pathwise estimator applies.
        return "vimco" if importance_sample_size > 1 else None

    def distance_to_optimum(self):
        # log p(x) - ELBO = KL(q || p(z | x)): the mean-field optimum keeps a gap.
        gap = self.log_marginal() - float(self.exact_objective())
        return f"KL(q || p(z | x)) = {gap:.4g}"
