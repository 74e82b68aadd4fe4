"""Shared arithmetic of importance-weighted objectives: log-mean-exp, weights, safe sums.

Each function runs on the substrate of its input (`tfp_gradest._substrate.of`): a
TensorFlow tensor or a JAX array.
"""

from tfp_gradest import _substrate

__all__ = [
    "leave_one_out_logsumexp",
    "leave_one_out_mean",
    "log_mean_exp",
    "normalized_weights",
    "weighted_sum",
]


_MINUS_INF = -float("inf")


def _all_zero_weight(ops, log_weights, axis):
    # NaN == -inf is False, so a NaN never counts as a zero weight.
    return ops.reduce_all(ops.equal(log_weights, _MINUS_INF), axis=axis, keepdims=True)


def log_mean_exp(log_weights, axis=1):
    """`log (1/K) Σ_k exp(log w_k)` over `axis`, stable for log-weights of any size.

    Where every `log w_k` is `-inf` the result is `-inf` with zero gradient
    (the plain log-sum-exp's gradient there is `0 / 0 = NaN`).
    """
    ops = _substrate.of(log_weights)
    k = ops.cast(ops.axis_size(log_weights, axis), log_weights.dtype)
    all_zero = _all_zero_weight(ops, log_weights, axis)
    safe = ops.where(all_zero, ops.zeros_like(log_weights), log_weights)
    value = ops.reduce_logsumexp(safe, axis=axis) - ops.log(k)
    return ops.where(
        ops.squeeze(all_zero, axis), ops.constant(_MINUS_INF, log_weights.dtype), value
    )


def normalized_weights(log_weights, axis=1):
    """`w̃ = stop(softmax(log w))`: self-normalised importance weights, gradient stopped.

    Where every `log w_k` is `-inf` (no sample has target density) the weights
    are 0, not softmax's `0 / 0 = NaN`: those samples contribute nothing.
    """
    ops = _substrate.of(log_weights)
    log_weights = ops.stop_gradient(log_weights)
    return ops.where(
        _all_zero_weight(ops, log_weights, axis),
        ops.zeros_like(log_weights),
        ops.softmax(log_weights, axis=axis),
    )


def weighted_sum(coefficients, terms, axis=1):
    """`Σ_k c_k t_k` over `axis`, where a zero coefficient contributes exactly 0.

    A sample with `log w = -inf` has weight 0 but may have `t = -inf`; plain
    multiplication would give `0 * inf = NaN` in the value and the gradient. A
    NaN coefficient (from a NaN target) is not zero and propagates.
    """
    ops = _substrate.of(terms)
    products = ops.where(coefficients != 0, coefficients * terms, ops.zeros_like(terms))
    return ops.reduce_sum(products, axis=axis)


def leave_one_out_logsumexp(log_weights, axis=1):
    """`log Σ_{j≠k} exp(x_j)` for every `k`: same shape as `log_weights`, memory linear in `K`.

    With `m = max_j x_j`, attained at `j*`, and `T = Σ_j exp(x_j - m)`:

    ```none
    k ≠ j*:  log Σ_{j≠k} e^{x_j} = m + log(T - e^{x_k - m})    (T - e^{x_k - m} ≥ 1: j* stays in)
    k = j*:  log Σ_{j≠j*} e^{x_j}  = reduce_logsumexp(x with x_{j*} = -inf)
    ```

    The subtraction loses at most a factor 2 in relative precision (for
    `k ≠ j*`, `e^{x_k} ≤ e^{x_{j*}}`, so at most half of `T` is removed); the one
    row where it could cancel catastrophically, `k = j*`, is a separate
    reduction. No `[K, K]` tensor is formed (VIMCO and JVI at `K = 10⁵` need
    `O(K)` memory). A `-inf` entry is left out exactly; where every other entry
    is `-inf` the result is `-inf`.
    """
    ops = _substrate.of(log_weights)
    # A row with no finite entry is -inf everywhere; computed on zeros so that its
    # (zero) cotangent does not meet log(0)'s infinite derivative (0 * inf = NaN).
    all_zero = _all_zero_weight(ops, log_weights, axis)
    x = ops.where(all_zero, ops.zeros_like(log_weights), log_weights)
    k = ops.axis_size(x, axis)
    is_max = ops.one_hot(ops.argmax(x, axis=axis), k, on_value=True, off_value=False, axis=axis)
    without_max = ops.reduce_logsumexp(
        ops.where(is_max, ops.constant(-float("inf"), x.dtype), x), axis=axis, keepdims=True
    )
    shift = ops.stop_gradient(ops.reduce_max(x, axis=axis, keepdims=True))
    shift = ops.where(ops.is_finite(shift), shift, ops.zeros_like(shift))
    scaled = ops.exp(x - shift)
    rest = ops.reduce_sum(scaled, axis=axis, keepdims=True) - scaled
    # At the arg max `rest` can be 0; it is not used there, but log(0) would turn
    # the zero cotangent `where` sends it into NaN, so feed log a 1 instead.
    rest = ops.where(is_max, ops.ones_like(rest), rest)
    result = ops.where(is_max, without_max, shift + ops.log(rest))
    return ops.where(all_zero, ops.fill(x, _MINUS_INF), result)


def leave_one_out_mean(log_weights, axis=1, skip_neg_inf=False):
    """`mean_{j≠k} x_j` for every `k` (`K ≥ 2`), memory linear in `K`.

    `(Σ_j x_j - x_k) / (K - 1)`, computed about the mean of the finite entries
    so that the subtraction loses no precision to a large common offset. A
    `-inf` entry makes every mean that includes it `-inf`, and the mean that
    leaves it out finite (plain `Σ - x_k` would give `-inf - -inf = NaN` there):
    the log of a geometric mean with a zero weight in it (VIMCO).

    With `skip_neg_inf=True`, `-inf` entries are left out of every mean
    instead: `mean_{j≠k, x_j > -inf} x_j`, the mean over the *other finite*
    entries (a score-function baseline, where a sample of zero density has
    weight zero and must not enter the others' baselines). A mean over no entry
    is `-inf`. NaN entries are never skipped: they propagate in both modes.
    """
    ops = _substrate.of(log_weights)
    x = log_weights
    is_neg_inf = ops.equal(x, ops.constant(-float("inf"), x.dtype))
    finite = ops.where(is_neg_inf, ops.zeros_like(x), x)
    count = ops.cast(ops.axis_size(x, axis), x.dtype)
    num_finite = ops.reduce_sum(ops.cast(~is_neg_inf, x.dtype), axis=axis, keepdims=True)
    center = ops.stop_gradient(
        ops.divide_no_nan(ops.reduce_sum(finite, axis=axis, keepdims=True), num_finite)
    )
    centered = ops.where(is_neg_inf, ops.zeros_like(x), x - center)
    others = ops.reduce_sum(centered, axis=axis, keepdims=True) - centered
    minus_inf = ops.constant(-float("inf"), x.dtype)
    if skip_neg_inf:
        num_others = num_finite - ops.cast(~is_neg_inf, x.dtype)
        # Divide by 1 where there is no other entry: that mean is replaced by -inf, and a
        # division by 0 would send NaN back through the `where`'s zero cotangent.
        safe = ops.where(num_others > 0, num_others, ops.ones_like(num_others))
        return ops.where(num_others > 0, center + others / safe, minus_inf)
    mean = center + others / (count - 1.0)
    others_neg_inf = ops.reduce_sum(ops.cast(is_neg_inf, "int32"), axis, keepdims=True) - ops.cast(
        is_neg_inf, "int32"
    )
    return ops.where(others_neg_inf > 0, minus_inf, mean)
