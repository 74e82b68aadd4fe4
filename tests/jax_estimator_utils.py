"""The estimator tests' problems on TFP's JAX substrate, their exact answers, and gradient draws.

Shared by tests/test_estimators_jax.py and tests/test_tfp_vi_parity_jax.py. The problems
are the TensorFlow suite's (`tfp_gradest.problems.CorrelatedGaussian`, `ToyGaussian`, and
test_score_function.py's Bernoulli problem), with the same numbers, written as a parameter
pytree and functions of it: the surrogate is built from the parameters inside the
differentiated function, as a JAX user writes it, and the target closes over the model's
parameters. A test module imports this after `pytest.importorskip("jax")`.

float64 runs under `jax.experimental.enable_x64()` (`precision`), a context manager: the
global flag is never flipped, so the float32 JAX tests in the same process are unaffected.
"""

import contextlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp

tfd = tfp.distributions

__all__ = [
    "BernoulliProblem",
    "CorrelatedGaussian",
    "ToyGaussian",
    "estimator_loss",
    "gradient_draws",
    "keys",
    "max_abs_z",
    "precision",
]


@contextlib.contextmanager
def precision(dtype):
    """Computes in `dtype` ("float32" or "float64") inside the block: float64 enables JAX's x64
    mode for the block only (and float32 disables it, whatever the caller's setting)."""
    dtype = np.dtype(dtype)
    with jax.experimental.enable_x64(dtype == np.float64):
        yield dtype


def keys(seed, num):
    """`num` JAX PRNG keys (raw `uint32[2]`, as TFP-JAX takes them) from an int seed."""
    return jax.random.split(jax.random.PRNGKey(seed), num)


def gradient_draws(loss_fn, params, num_draws, seed, batch_size=None, compile_fast=True):
    """`num_draws` gradients of `loss_fn(params, key)` w.r.t. `params`, one per key.

    One jitted `jax.vmap` over the keys (in `jax.lax.map` chunks of `batch_size` keys when
    given, to bound memory), never a Python loop. Returns the gradient pytree as numpy
    arrays with a leading draws axis.
    """
    grad = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))
    draw_keys = keys(seed, num_draws)
    if batch_size is None:
        fn = grad
    else:
        draw_keys = draw_keys.reshape((num_draws // batch_size, batch_size, -1))

        def fn(p, k):
            return jax.lax.map(lambda chunk: grad(p, chunk), k)

    # LLVM's optimisation level 0 for the XLA program: it halves the compile time, which
    # dominates these small programs (the run time of most draw sets is ~10 ms). XLA's own
    # graph passes still run; `compile_fast=False` for the few whose run time matters.
    options = {} if not compile_fast else {"xla_backend_optimization_level": 0}
    draws = (
        jax.jit(fn).lower(params, draw_keys).compile(compiler_options=options)(params, draw_keys)
    )
    if batch_size is not None:
        draws = jax.tree_util.tree_map(lambda d: d.reshape((num_draws,) + d.shape[2:]), draws)
    return jax.tree_util.tree_map(np.asarray, draws)


def max_abs_z(draws, exact, exact_standard_error=None):
    """Largest |bias z-score| (`tge.diagnostics.bias_z_scores`) over the keys of `exact`.

    `draws` and `exact` are dicts of the same keys (`exact` may hold a subset); a Monte
    Carlo reference's own standard error enters in quadrature.
    """
    from tfp_gradest.diagnostics import bias_z_scores

    exact_standard_error = exact_standard_error or {}
    return max(
        float(np.max(np.abs(bias_z_scores(draws[k], exact[k], exact_standard_error.get(k, 0.0)))))
        for k in exact
    )


def estimator_loss(estimator, problem, sample_size=1, importance_sample_size=1):
    """`(params, key) -> loss` of `estimator` (anything with the estimators' `loss` signature)
    on `problem`, the surrogate built from `params` inside the function."""

    def loss(params, key):
        return estimator.loss(
            problem.target(params),
            problem.surrogate(params),
            sample_size,
            importance_sample_size,
            seed=key,
        )

    return loss


def _as_arrays(values, dtype):
    return {k: jnp.asarray(v, dtype) for k, v in values.items()}


class CorrelatedGaussian:
    """`tfp_gradest.problems.CorrelatedGaussian` (same defaults and numbers) on JAX.

    Target `N(m, Σ)`, surrogate `N(loc, diag(exp(log_scale))²)`; `log_scale` is the TF
    problem's Exp-transformed variable, so the gradients are the same numbers.
    """

    def __init__(self, dim=3, seed=0, offset=0.5):
        rng = np.random.default_rng(seed)
        self.mean = rng.normal(size=dim)
        a = rng.normal(size=(dim, dim))
        self.covariance = a @ a.T / dim + 0.5 * np.eye(dim)
        std = np.sqrt(np.diag(self.covariance))
        self.initial = {"loc": self.mean + offset * std, "log_scale": np.log(std) - offset}

    def parameters(self, dtype):
        return _as_arrays(self.initial, dtype)

    def surrogate(self, params):
        return tfd.MultivariateNormalDiag(params["loc"], jnp.exp(params["log_scale"]))

    def target(self, params):
        del params  # no model parameters

        def target_log_prob(z):
            chol = np.linalg.cholesky(self.covariance).astype(z.dtype)
            return tfd.MultivariateNormalTriL(self.mean.astype(z.dtype), chol).log_prob(z)

        return target_log_prob

    def exact_loss(self, params):
        """`KL(q || p) = -ELBO`, in closed form (the target is normalised)::

        ½ [tr(Σ⁻¹ diag σ²) + (μ - m)ᵀ Σ⁻¹ (μ - m) - D + log|Σ| - Σ_i log σ_i²]
        """
        dtype = params["loc"].dtype
        precision_matrix = jnp.asarray(np.linalg.inv(self.covariance), dtype)
        _, log_det = np.linalg.slogdet(self.covariance)
        diff = params["loc"] - jnp.asarray(self.mean, dtype)
        variance = jnp.exp(2.0 * params["log_scale"])
        return 0.5 * (
            jnp.sum(jnp.diag(precision_matrix) * variance)
            + diff @ precision_matrix @ diff
            - diff.size
            + log_det
            - jnp.sum(2.0 * params["log_scale"])
        )

    def exact_gradient(self, params):
        return jax.tree_util.tree_map(np.asarray, jax.jit(jax.grad(self.exact_loss))(params))


class ToyGaussian:
    """`tfp_gradest.problems.ToyGaussian` (Rainforth et al. 2018; Tucker et al. 2019, §6.1) on
    JAX, same defaults and numbers.

    `z ~ N(μ, I)`, `x | z ~ N(z, I)`, `q(z | x) = N(a ⊙ x + b, σ_q² I)`. Parameters `a`, `b`
    (the surrogate's) and `mu` (the model's, which the target closes over).
    """

    surrogate_keys = ("a", "b")

    def __init__(self, dim=20, perturbation=0.01, q_scale=None, seed=0):
        self.q_scale = np.sqrt(2.0 / 3.0) if q_scale is None else q_scale
        rng = np.random.default_rng(seed)
        mu = rng.normal(size=dim)
        self.x = mu + np.sqrt(2.0) * rng.normal(size=dim)
        self.initial = {
            "a": 0.5 + perturbation * rng.normal(size=dim),
            "b": mu / 2 + perturbation * rng.normal(size=dim),
            "mu": mu,
        }

    def parameters(self, dtype):
        return _as_arrays(self.initial, dtype)

    def surrogate(self, params):
        loc = params["a"] * self.x.astype(params["a"].dtype) + params["b"]
        return tfd.MultivariateNormalDiag(loc, jnp.full(loc.shape, self.q_scale, loc.dtype))

    def target(self, params):
        def target_log_prob(z):
            x = self.x.astype(z.dtype)
            prior = tfd.Normal(params["mu"], jnp.ones([], z.dtype)).log_prob(z)
            likelihood = tfd.Normal(z, jnp.ones([], z.dtype)).log_prob(x)
            return jnp.sum(prior + likelihood, axis=-1)

        return target_log_prob

    def quadrature_losses(self, params, num_nodes=48):
        """Exact `-E[L_2]` (IWAE bound, K = 2) and `-E[L_JVI]` (K = 2) for `dim = 1`.

        With `z = loc + σ ε`, both are expectations over `ε₁, ε₂ ~ N(0, 1)`:
        tensor-product Gauss-Hermite quadrature with `num_nodes²` points, exact for
        polynomials of degree `2 num_nodes - 1` per axis, is exact here to far below
        Monte Carlo error. For K = 2, `L_JVI = 2 L_2 - (log w₁ + log w₂)/2`, whose
        expectation is `2 E[L_2] - ELBO` (as tests/test_multisample.py computes it).
        """
        nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
        dtype = params["a"].dtype
        weights = jnp.asarray(weights / weights.sum(), dtype)
        q = self.surrogate(params)
        z = q.mean() + q.stddev() * jnp.asarray(nodes[:, None], dtype)  # [nodes, 1]
        log_w = self.target(params)(z) - q.log_prob(z)
        pairs = jnp.logaddexp(log_w[:, None], log_w[None, :]) - np.log(2.0)
        iwae = jnp.sum(weights[:, None] * weights[None, :] * pairs)
        elbo = jnp.sum(weights * log_w)
        return {"iwae": -iwae, "jvi": -(2.0 * iwae - elbo)}

    def quadrature_gradients(self, params):
        """`{objective: gradient pytree}` of `quadrature_losses` (exact loss gradients)."""
        grads = jax.jit(jax.jacrev(self.quadrature_losses))(params)
        return jax.tree_util.tree_map(np.asarray, grads)


class BernoulliProblem:
    """test_score_function.py's `BernoulliProblem` on JAX: `q(z) = Π Bernoulli(z_i; σ(φ_i))`,
    3 bits, a target with a pairwise term and a constant of -8; exact ELBO by enumeration."""

    def parameters(self, dtype):
        return _as_arrays({"logits": [0.3, -0.5, 1.0]}, dtype)

    def surrogate(self, params):
        logits = params["logits"]
        return tfd.Independent(tfd.Bernoulli(logits=logits, dtype=logits.dtype), 1)

    def target(self, params):
        del params

        def target_log_prob(z):
            a = jnp.asarray([1.0, -2.0, 0.5], z.dtype)
            return jnp.sum(z * a, -1) + 1.5 * z[..., 0] * z[..., 1] - 8.0

        return target_log_prob

    def exact_loss(self, params):
        q = self.surrogate(params)
        states = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=3)), params["logits"].dtype)
        log_w = self.target(params)(states) - q.log_prob(states)
        return -jnp.sum(q.prob(states) * log_w)

    def exact_gradient(self, params):
        return jax.tree_util.tree_map(np.asarray, jax.jit(jax.grad(self.exact_loss))(params))
