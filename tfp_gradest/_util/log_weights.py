"""Log importance weights `log w = log p(x, z) - log q(z)`, and their gradient paths.

The data path of one estimator step is: seed -> samples -> target and surrogate
log-densities -> log-weights -> the estimator's surrogate. This module owns the
middle arrows. Each estimator enters it at exactly one point, named by its
`data_path` flag (see `GradientEstimator`), and each point serves one need:

| `data_path`                | gives                                   | used by                   |
|----------------------------|-----------------------------------------|---------------------------|
| `pathwise_log_weights`     | `log w(z)`, every gradient live         | reparameterisation, IWAE, |
|                            |                                         | JVI, score function       |
|                            |                                         | (pathwise parts)          |
| `log_weight_terms`         | `log p̃`, `log q̃`, `log ŵ` kept apart    | RWS, VIMCO, JVI-DReG,     |
|                            | (direct, score and path gradients)      | score function            |
| `path_weighted_surrogate`  | `Σ c ∇log p̃ + a ∇log ŵ` in ONE backward | STL, IWAE-DReG, RWS-DReG, |
|                            | pass through the target                 | DReG(α), IWAE-STL         |

Samples are drawn as `tfp.vi` draws them: one flat leading axis of size `S * K`
(so targets written for `tfp.vi` work unchanged), from the first half of the
call's split seed; a target that takes a `seed` argument gets the second half.
With the same stateless seed the samples are therefore those of
`tfp.vi.monte_carlo_variational_loss`. Log-weights are returned with the
leading axis split into `[S, K]`.

Zero and NaN densities. A sample where the target's density is zero has
`log w = -inf` and normalised weight exactly 0, so it contributes nothing to
the gradient; the gradients masked here are exactly those (where `0 * inf`
would otherwise put NaN into the sums). A NaN from the target is never masked:
it reaches the loss and the gradient, so training fails loudly.
"""

from typing import Any, NamedTuple

from tfp_gradest import _substrate
from tfp_gradest._util import flow_path, structure

__all__ = [
    "DATA_PATHS",
    "LogWeightTerms",
    "ObjectiveInputs",
    "PathwiseLogWeights",
    "log_weight_terms",
    "path_weighted_surrogate",
    "pathwise_log_weights",
]


# The values of an estimator's `data_path` flag: the functions below, one per need.
DATA_PATHS = ("pathwise_log_weights", "log_weight_terms", "path_weighted_surrogate")


class ObjectiveInputs(NamedTuple):
    """One validated estimator call: everything the data path reads.

    `sample_seed` and `target_seed` are the two halves of the call's stateless
    seed, split as `tfp.vi` splits it. `substrate` is the module of
    `tfp_gradest._substrate` the call runs on (`None`: the surrogate's); `ops`
    returns it.
    """

    target_log_prob_fn: Any
    surrogate_posterior: Any
    sample_size: int
    importance_sample_size: int
    discrepancy_fn: Any
    sample_seed: Any
    target_seed: Any
    substrate: Any = None

    @property
    def ops(self):
        """The substrate module (`tfp_gradest._substrate`): `substrate`, else the surrogate's."""
        return self.substrate or _substrate.of(self.surrogate_posterior)

    def split(self, tensor):
        """`[S * K] + rest` -> `[S, K] + rest`."""
        return self.ops.reshape_leading(tensor, self.sample_size, self.importance_sample_size)


class PathwiseLogWeights(NamedTuple):
    """`log w(z)` with every gradient live, and what it was computed from.

    * `samples`: the flat `[S * K]` samples `z = g_φ(ε)`.
    * `log_weights`: `log p_θ(x, z) - log q_φ(z)`, `[S, K] + batch_shape`.
    * `target_log_prob`: `log p_θ(x, z)`, `[S, K] + batch_shape`.
    """

    samples: Any
    log_weights: Any
    target_log_prob: Any


class LogWeightTerms(NamedTuple):
    """Log-weights at stopped samples `z̄`, split by where their gradient flows.

    In the stop-gradient notation of Tucker et al. (2019, appendix 8.3), with
    `z = g_φ(ε)`, every field has shape `[S, K] + batch_shape`:

    * `log_weights`: `log w = log p_θ(x, z̄) - log q_φ(z̄)`; gradient reaches `θ`
      and `φ` where they appear directly, never through `z`.
    * `target_log_prob`: `log p̃ = log p_θ(x, z̄)`; gradient to `θ` only.
    * `surrogate_log_prob`: `log q̃ = log q_φ(z̄)`; gradient to `φ` directly only.
    * `path_log_weights`: `log ŵ`, whose value is exactly `0` and whose gradient
      is the path derivative `(∂ log w / ∂z)|_z̄ · ∂z/∂φ` only.

    The full reparameterisation gradient of `log w(z)` is the gradient of
    `log p̃ - log q̃ + log ŵ` (direct plus path terms), which the tests check.
    """

    log_weights: Any
    target_log_prob: Any
    surrogate_log_prob: Any
    path_log_weights: Any


def _sample(inputs):
    """`S * K` samples (flat leading axis); gradients flow through reparameterised parts."""
    return inputs.surrogate_posterior.sample(
        [inputs.sample_size * inputs.importance_sample_size], seed=inputs.sample_seed
    )


def _target_log_prob(inputs, samples, surrogate_log_prob):
    """Calls the target as `tfp.vi` does, and checks its output against `log q`'s."""
    target_lp = structure.call_target(inputs.target_log_prob_fn, samples, seed=inputs.target_seed)
    return check_target_log_prob(target_lp, surrogate_log_prob, inputs)


def check_target_log_prob(target_lp, surrogate_lp, inputs):
    """Raises naming `target_log_prob_fn` unless its output matches `log q(z)` in dtype and shape.

    The target must return one log density per sample: shape `[S * K] +
    batch_shape`, exactly the shape of `surrogate_posterior.log_prob(z)`. A
    target that sums over the sample axis returns too few values; one that
    forgets to sum over the event axes returns too many. Both would otherwise
    broadcast into a wrong loss or fail inside TensorFlow with a message naming
    neither. Checked statically (always possible under XLA and on JAX), else at
    run time. An array of the other substrate (a TensorFlow tensor from a JAX
    call, or the reverse) is a `TypeError`.

    The one shape accepted besides: a scalar when there is one sample
    (`sample_size * importance_sample_size == 1`) and the batch shape is scalar,
    as `tfp.vi` accepts it. It is unambiguous there, and is reshaped to `[1]`.
    """
    return inputs.ops.check_target_log_prob(
        target_lp, surrogate_lp, inputs.sample_size * inputs.importance_sample_size
    )


def pathwise_log_weights(inputs):
    """`log w(z)` with every gradient live (parameters directly and through `z`).

    Uses `experimental_sample_and_log_prob`, as `tfp.vi` does, so a surrogate
    built from bijectors never has to invert them.

    Returns:
      A `PathwiseLogWeights`.
    """
    samples, surrogate_lp = inputs.surrogate_posterior.experimental_sample_and_log_prob(
        [inputs.sample_size * inputs.importance_sample_size], seed=inputs.sample_seed
    )
    target_lp = _target_log_prob(inputs, samples, surrogate_lp)
    return PathwiseLogWeights(
        samples=samples,
        log_weights=inputs.split(target_lp - surrogate_lp),
        target_log_prob=inputs.split(target_lp),
    )


def log_weight_terms(inputs, with_path=True):
    """Splits `log w` into direct, score and path parts (see `LogWeightTerms`).

    The path derivative is computed with an inner gradient at the stopped samples
    (the substrate's `path_derivative`: a `tf.GradientTape`, or `jax.vjp`) and
    re-attached as `stop(∂ log w/∂z) · (z - z̄)`. Unlike stopping the
    surrogate's parameters, this also works when the target has trainable
    variables (a decoder): those receive gradient only through `log p̃`. It
    costs a second backward pass through the target; estimators with no score
    term use `path_weighted_surrogate` instead.

    The inner gradient is of `Σ_k log w_k`; it equals the per-sample gradients
    because each `log w_k` depends on its own `z_k` only: the target must treat
    the leading sample axis as independent draws, as `tfp.vi` also assumes.

    With `with_path=False` no inner gradient is taken and `path_log_weights` is
    zeros: for estimators that need no path term (RWS, VIMCO, the score
    function), which also work on discrete samples.
    """
    ops = inputs.ops
    samples = _sample(inputs)
    stopped = ops.stop_gradient(samples)

    def log_weights_fn(z):
        surrogate_lp = inputs.surrogate_posterior.log_prob(z)
        target_lp = _target_log_prob(inputs, z, surrogate_lp)
        return target_lp - surrogate_lp, target_lp, surrogate_lp

    log_weights, target_lp, surrogate_lp, grads = ops.path_derivative(
        log_weights_fn, stopped, with_path
    )
    if with_path:
        zero_weight = ops.equal(ops.stop_gradient(log_weights), -float("inf"))
        sample_rank = len(log_weights.shape)
        path = ops.add_n(
            [
                ops.reduce_event(
                    ops.zero_where(zero_weight, ops.stop_gradient(g)) * (z - z_bar), sample_rank
                )
                for g, z, z_bar in zip(grads, ops.flatten(samples), ops.flatten(stopped))
            ]
        )
    else:
        path = ops.zeros_like(log_weights)
    return LogWeightTerms(
        log_weights=inputs.split(log_weights),
        target_log_prob=inputs.split(target_lp),
        surrogate_log_prob=inputs.split(surrogate_lp),
        path_log_weights=inputs.split(path),
    )


def path_weighted_surrogate(inputs, coefficients_fn):
    """A surrogate of value 0 and gradient `Σ_k c_k ∇log p̃_k + a_k ∇log ŵ_k`, in ONE backward pass.

    `coefficients_fn(log_w) -> (c, a)` maps stopped log-weights `[S, K] + batch`
    to stopped coefficients of the same shape, with `c = a = 0` for a sample of
    zero weight. Estimators of the form `Σ w̃ log p̃ + a(w̃) log ŵ` (IWAE-DReG,
    RWS-DReG, DReG(α), IWAE-STL, and STL: the `K = 1` case) use `c = w̃`.

    Why one pass suffices: a single vector-Jacobian product of `log p(x, z)` with
    cotangent `c` gives `Σ c_k ∇θ log p_k` for the model's variables and
    `c_k ∇z log p_k` for each sample; the path term needs `a_k ∇z log p_k`, which
    is that times `a_k / c_k`. The surrogate's `∇z log q` is a second, cheap
    product through `log q` only. `q`'s parameters get no direct gradient (these
    estimators drop that score term) and reach the gradient through
    `z = g_φ(ε)`, outside this function. Compared with `log_weight_terms`, this
    saves one backward pass through a decoder. The substrate's
    `path_weighted_vjp` implements it: `tf.custom_gradient` on TensorFlow, a
    `jax.custom_vjp` over the closure-converted target on JAX (so parameters the
    target closes over get `Σ c ∇θ log p` from `jax.grad`).

    The surrogate's value is exactly 0 (only its gradient matters); the caller
    reports its objective's value through `surrogate_objective`.

    Returns:
      log_weights: `[S, K] + batch`, no gradient.
      surrogate: `[S] + batch`, all zeros.
    """
    surrogate, samples = inputs.surrogate_posterior, None
    # A normalising flow's score at its samples, computed alongside the forward pass
    # instead of by the inverse pass `log_prob(z)` costs (see `flow_path`): with
    # TFP's own (iid) sampling only.
    if getattr(inputs, "noise", "iid") == "iid":
        route = flow_path.flow_route(
            inputs.ops,
            surrogate,
            inputs.sample_size * inputs.importance_sample_size,
            inputs.sample_seed,
        )
        if route is not None:
            samples, surrogate = route
    return inputs.ops.path_weighted_vjp(
        surrogate,
        lambda z, surrogate_lp: _target_log_prob(inputs, z, surrogate_lp),
        _sample(inputs) if samples is None else samples,
        inputs.split,
        coefficients_fn,
    )
