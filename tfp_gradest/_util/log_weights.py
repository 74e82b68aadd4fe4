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
from tfp_gradest._util import flow_path, quasi_random, structure

__all__ = [
    "DATA_PATHS",
    "ConditionalPathTerms",
    "LogWeightTerms",
    "ObjectiveInputs",
    "PathwiseLogWeights",
    "conditional_path_terms",
    "log_weight_terms",
    "path_weighted_surrogate",
    "pathwise_log_weights",
]


# The values of an estimator's `data_path` flag: the functions below, one per need.
DATA_PATHS = (
    "pathwise_log_weights",
    "log_weight_terms",
    "path_weighted_surrogate",
    "conditional_path_terms",
)


class ObjectiveInputs(NamedTuple):
    """One validated estimator call: everything the data path reads.

    `sample_seed` and `target_seed` are the two halves of the call's stateless
    seed, split as `tfp.vi` splits it. `substrate` is the module of
    `tfp_gradest._substrate` the call runs on (`None`: the surrogate's); `ops`
    returns it. `noise` is how the samples' base noise is drawn: `"iid"` (TFP's own
    sampling) or `"rqmc"` (`tfp_gradest._util.quasi_random`).
    """

    target_log_prob_fn: Any
    surrogate_posterior: Any
    sample_size: int
    importance_sample_size: int
    discrepancy_fn: Any
    sample_seed: Any
    target_seed: Any
    substrate: Any = None
    noise: str = "iid"

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
    """`S * K` samples (flat leading axis); gradients flow through reparameterised parts.

    From `inputs.sample_seed`: TFP's own sampling for `noise="iid"` (the samples of
    `tfp.vi`), RQMC normals pushed through the surrogate for `noise="rqmc"`
    (`tfp_gradest._util.quasi_random.sample`: the `S` objectives are the points).
    """
    if inputs.noise == "rqmc":
        return quasi_random.sample(
            inputs.surrogate_posterior,
            inputs.sample_size,
            inputs.importance_sample_size,
            inputs.sample_seed,
        )
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
    built from bijectors never has to invert them. With `noise="rqmc"`, `log q` is
    the surrogate's `log_prob` at the quasi-random samples (TFP's bijector cache
    spares the inverse where the surrogate's own bijector drew them).

    Returns:
      A `PathwiseLogWeights`.
    """
    if inputs.noise == "rqmc":
        samples = _sample(inputs)
        surrogate_lp = inputs.surrogate_posterior.log_prob(value=samples)
    else:
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
        # By keyword: a `JointDistributionSequential` resolves positional values by its
        # parts' names, which clash when its functions share an argument name.
        surrogate_lp = inputs.surrogate_posterior.log_prob(value=z)
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
    surrogate, samples, sample_log_prob = inputs.surrogate_posterior, None, None
    num_samples = inputs.sample_size * inputs.importance_sample_size
    # With TFP's own (iid) sampling: a normalising flow's score at its samples, computed
    # alongside the forward pass instead of by the inverse pass `log_prob(z)` costs (see
    # `flow_path`); any other surrogate's `log q` for the log-weights' value as the
    # sampler computes it (as `tfp.vi` and `pathwise_log_weights` take it), so that the
    # value, like `tfp.vi`'s, never goes through the inverse pass (only `∇z log q` does).
    if inputs.noise == "iid":
        route = flow_path.flow_route(inputs.ops, surrogate, num_samples, inputs.sample_seed)
        if route is not None:
            samples, surrogate = route
        else:
            samples, sample_log_prob = surrogate.experimental_sample_and_log_prob(
                [num_samples], seed=inputs.sample_seed
            )
    return inputs.ops.path_weighted_vjp(
        surrogate,
        lambda z, surrogate_lp: _target_log_prob(inputs, z, surrogate_lp),
        _sample(inputs) if samples is None else samples,
        inputs.split,
        coefficients_fn,
        sample_log_prob=sample_log_prob,
    )


class ConditionalPathTerms(NamedTuple):
    """Log-weights at stopped samples `z̄` and the path terms of Generalized DReG.

    For a surrogate `q(z) = Π_l q_l(z_l | ψ_l)` whose conditionals' parameters
    `ψ_l = ψ_l(z_pa(l), φ)` may depend on earlier latents, and a target whose latent
    conditionals `p_a(z_a | z_pa(a))` (declared by `target_log_prob_fn.latent_distributions`)
    may carry model parameters `θ`. Every field has shape `[S, K] + batch_shape`; the
    four `*path*` fields have value exactly `0` and only a gradient, with `∂_z` the
    partial derivative of the density functions at `z̄` (no path through sampling):

    * `log_weights`: `log w = log p(x, z̄) - log q(z̄)`, gradient to parameters directly.
    * `direct_target_log_prob`: `log p(x, z̄) - Σ_a log p_a(z̄_a)`: gradient to `θ`
      where it enters the target outside the declared latent conditionals.
    * `path_log_weights`: gradient `(∂_z log p - Σ_l ∂_{z_l} log q_l(z_l; ψ_l fixed)) · dz/dφ`:
      the path derivative of `log w` with every conditional's parameters held fixed.
    * `score_path_log_weights`: gradient `Σ_l (∂_{z_l} log w) · u_l`, where `u_l` is
      `dz_l/dφ` plus, for each parent `m` of `l`, `(∂z_l/∂ψ_l)(∂ψ_l/∂z_m) u_m`: every
      path from `φ` to `z_l` counted once per latent it crosses.
    * `full_path_log_weights`: gradient `∂_z log w · dz/dφ` (the conditionals' parameters
      move with their parents: IWAE-DReG's path term).
    * `prior_path_rest`: gradient `Σ_a ∂_{z_a}(log p - log p_a) · v_a`, with
      `v_a = ∂z_a/∂θ` the reparameterisation of `p_a` at `z̄_a` (parents fixed).
    * `prior_path_log_weights`: gradient `Σ_a (∂_{z_a} log w) · v_a`.
    """

    log_weights: Any
    direct_target_log_prob: Any
    path_log_weights: Any
    score_path_log_weights: Any
    full_path_log_weights: Any
    prior_path_rest: Any
    prior_path_log_weights: Any


def conditional_path_terms(inputs, with_crossing_paths=True):
    """The `ConditionalPathTerms` of one call: ONE inner gradient at the stopped samples.

    The inner gradient is taken of `log p(z¹) + log q(z²) + Σ_l log q_l(z³_l; ψ̄_l) +
    Σ_a log p_a(z⁴_a; θ, z̄_pa)` at four stopped copies `z¹…z⁴` of the samples, so one
    backward pass gives the four partial derivatives separately (each term reads one
    copy). The conditionals `q_l` come from `surrogate_posterior.sample_distributions`
    (a `JointDistribution`; any other surrogate is one block with no parents), the
    reparameterisation paths from `implicit_path`. With `with_crossing_paths=False`,
    `score_path_log_weights` is zeros and the conditionals are not rebuilt for it.
    """
    ops = inputs.ops
    q = inputs.surrogate_posterior
    samples = _sample(inputs)
    flat_z = ops.flatten(samples)
    num_parts = len(flat_z)

    def copy():
        return ops.stop_gradient(samples)

    flat_bar = ops.flatten(copy())
    target_dists = _latent_distributions(inputs, copy(), num_parts)
    surrogate_dists = _surrogate_conditionals(inputs, copy(), num_parts)

    def log_weights_fn(copies):
        z_p, z_q, z_fixed, z_a = copies
        surrogate_lp = q.log_prob(value=z_q)  # by keyword: no name resolution (a JDS)
        target_lp = _target_log_prob(inputs, z_p, surrogate_lp)
        fixed, flat_a = ops.flatten(z_fixed), ops.flatten(z_a)
        # One scalar: each sample's terms depend on its own copies only, so the gradient of
        # the sum is every sample's partial derivatives.
        terms = [target_lp, surrogate_lp]
        terms += [d.log_prob(z) for d, z in zip(surrogate_dists, fixed) if d is not None]
        terms += [d.log_prob(flat_a[a]) for a, d in target_dists]
        return ops.add_n([ops.reduce_sum(t) for t in terms]), target_lp, surrogate_lp

    _, target_lp, surrogate_lp, grads = ops.path_derivative(
        log_weights_fn, (copy(), copy(), copy(), copy()), True
    )
    log_weights = target_lp - surrogate_lp
    zero_weight = ops.equal(ops.stop_gradient(log_weights), -float("inf"))
    grads = [ops.zero_where(zero_weight, ops.stop_gradient(g)) for g in grads]
    g_p, g_q, g_fixed, g_a = (grads[i * num_parts : (i + 1) * num_parts] for i in range(4))
    g_w = [p - q_ for p, q_ in zip(g_p, g_q)]
    # Parts without a conditional of their own (a plain surrogate) keep `∂ log q`.
    g_path = [
        p - (q_ if d is None else f) for p, q_, f, d in zip(g_p, g_q, g_fixed, surrogate_dists)
    ]
    rank = len(log_weights.shape)

    def dot(pairs):
        terms = [ops.reduce_event(g * (live - bar), rank) for g, live, bar in pairs]
        return ops.add_n(terms) if terms else ops.zeros_like(log_weights)

    if with_crossing_paths:
        flat_tilde = _crossing_paths(inputs, samples, flat_bar, surrogate_dists)
        score_path = dot(zip(g_w, flat_tilde, flat_bar))
    else:
        score_path = ops.zeros_like(log_weights)
    prior_paths = [(a, implicit_path(ops, d, flat_bar[a])) for a, d in target_dists]
    direct = target_lp
    for a, d in target_dists:
        factor = d.log_prob(flat_bar[a])
        if not _same_static_shape(factor.shape, target_lp.shape):
            raise ValueError(
                "`target_log_prob_fn.latent_distributions` must give, for each part, the "
                "factor of the target's log density: one value per sample, of the target's "
                f"shape {tuple(target_lp.shape)} (wrap a factorised distribution in "
                f"`tfd.Independent`). Received for part {a}: log_prob of shape "
                f"{tuple(factor.shape)} from {d!r}"
            )
        direct = direct - factor
    return ConditionalPathTerms(
        log_weights=inputs.split(log_weights),
        direct_target_log_prob=inputs.split(direct),
        path_log_weights=inputs.split(dot(zip(g_path, flat_z, flat_bar))),
        score_path_log_weights=inputs.split(score_path),
        full_path_log_weights=inputs.split(dot(zip(g_w, flat_z, flat_bar))),
        prior_path_rest=inputs.split(
            dot((g_p[a] - g_a[a], path, flat_bar[a]) for a, path in prior_paths)
        ),
        prior_path_log_weights=inputs.split(
            dot((g_w[a], path, flat_bar[a]) for a, path in prior_paths)
        ),
    )


def _same_static_shape(a, b):
    """False only where both shapes are known well enough to differ (ranks or a dimension)."""
    try:
        a, b = tuple(a), tuple(b)
    except (TypeError, ValueError):  # an unknown rank
        return True
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _latent_distributions(inputs, stopped, num_parts):
    """`[(flat part index, p_a)]` from `target_log_prob_fn.latent_distributions`, if defined.

    Built at stopped samples: `p_a`'s parameters keep their gradient to `θ` only.
    """
    fn = getattr(inputs.target_log_prob_fn, "latent_distributions", None)
    if fn is None:
        return []
    dists = structure.call_target(fn, stopped)
    if not isinstance(dists, dict) or not all(
        isinstance(a, int) and 0 <= a < num_parts and hasattr(d, "log_prob")
        for a, d in dists.items()
    ):
        raise TypeError(
            "`target_log_prob_fn.latent_distributions(*z)` must return a dict mapping the "
            f"flat index (0 to {num_parts - 1}) of a latent part to the distribution of that "
            "part in the target, `p(z_a | its parents)`, built from the given latents. "
            f"Received: {dists!r}"
        )
    return sorted(dists.items())


def _surrogate_conditionals(inputs, stopped, num_parts):
    """Each flat part's conditional `q_l(· | z̄_pa(l))` of a `JointDistribution` surrogate.

    `None` for every part of any other surrogate (one block: no parents).
    """
    q = inputs.surrogate_posterior
    joint = inputs.ops.tfp.distributions.JointDistribution
    if not isinstance(q, joint):
        return [None] * num_parts
    dists, _ = q.sample_distributions(value=stopped, seed=inputs.sample_seed)
    flat = _flat_distributions(dists)
    if len(flat) != num_parts or not all(hasattr(d, "log_prob") for d in flat):
        raise ValueError(
            "A `JointDistribution` surrogate must have one distribution per sample part "
            "(nested joint distributions are not supported): flatten it. "
            f"Received: surrogate_posterior={q!r}"
        )
    return flat


def _flat_distributions(dists):
    """A joint distribution's `sample_distributions` in the order of its flattened samples."""
    if isinstance(dists, dict):
        return [dists[k] for k in sorted(dists)]
    return list(dists)


def _crossing_paths(inputs, samples, flat_bar, surrogate_dists):
    """`z̃`: equal to the samples, with the gradient `u` of `ConditionalPathTerms`.

    In sampling order, `z̃_l = z_l + ẑ_l(ψ_l(z̃_pa)) - ẑ_l(ψ_l(z̄_pa))`, `ẑ_l` the implicit
    path of `q_l` at `z̄_l`: the difference is 0 in value and has gradient
    `(∂z_l/∂ψ_l)(∂ψ_l/∂z_pa) u_pa` (the parameters' direct part cancels).
    """
    ops = inputs.ops
    q = inputs.surrogate_posterior
    flat_z = ops.flatten(samples)
    flat_tilde = list(flat_z)
    for level in range(1, len(flat_z)):
        fixed = surrogate_dists[level]
        if fixed is None:
            continue
        value = ops.pack_sequence_as(samples, flat_tilde[:level] + flat_bar[level:])
        live = _flat_distributions(q.sample_distributions(value=value, seed=inputs.sample_seed)[0])
        flat_tilde[level] = (
            flat_z[level]
            + implicit_path(ops, live[level], flat_bar[level])
            - implicit_path(ops, fixed, flat_bar[level])
        )
    return flat_tilde


def implicit_path(ops, distribution, value):
    """`ẑ`: equal to `value`, with gradient `∂z/∂(parameters)` of `z = h(ε; parameters)` at
    the noise `ε` that gives `value` (the reparameterisation, read at a given sample).

    `Normal`: `loc + scale · stop((z - loc) / scale)`. `Independent` and `Sample` (of a
    scalar-batch distribution): the inner distribution's. `TransformedDistribution`:
    `f(ẑ_base)` at `stop(f⁻¹(z))`. Any other distribution with scalar events: the implicit
    reparameterisation gradient `-∂F(z)/p(z)` (Figurnov et al., 2018), from the CDF `F`
    below the median and the survival function above it.
    """
    tfd = ops.tfp.distributions
    if isinstance(distribution, tfd.Normal):
        loc, scale = distribution.loc, distribution.scale
        return loc + scale * ops.stop_gradient((value - loc) / scale)
    if isinstance(distribution, tfd.Independent):
        return implicit_path(ops, distribution.distribution, value)
    if isinstance(distribution, tfd.Sample) and distribution.distribution.batch_shape.rank == 0:
        return implicit_path(ops, distribution.distribution, value)
    if isinstance(distribution, tfd.TransformedDistribution):
        bijector = distribution.bijector
        base = ops.stop_gradient(bijector.inverse(value))
        return bijector.forward(implicit_path(ops, distribution.distribution, base))
    if distribution.event_shape.rank == 0 and hasattr(distribution, "log_cdf"):
        log_cdf = distribution.log_cdf(value)
        log_sf = distribution.log_survival_function(value)
        log_p = ops.stop_gradient(distribution.log_prob(value))
        lower = ops.stop_gradient(log_cdf) < ops.log(ops.constant(0.5, log_cdf.dtype))
        zero = ops.zeros_like(log_cdf)
        # -∂F/p = -(F/p) ∂log F below the median, (S/p) ∂log S above (no 1 - F cancelling).
        from_cdf = ops.where(lower, -ops.exp(ops.stop_gradient(log_cdf) - log_p), zero)
        from_sf = ops.where(lower, zero, ops.exp(ops.stop_gradient(log_sf) - log_p))
        return (
            value
            + from_cdf * (log_cdf - ops.stop_gradient(log_cdf))
            + from_sf * (log_sf - ops.stop_gradient(log_sf))
        )
    raise TypeError(
        "Generalized DReG needs the reparameterisation of every conditional at a given "
        "sample: a Normal, an Independent, Sample or TransformedDistribution of one, or a "
        f"distribution with scalar events and a CDF. Received: {distribution!r}"
    )
