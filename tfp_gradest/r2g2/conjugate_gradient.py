"""Batched conjugate gradients with a static iteration budget (XLA needs static loops)."""

from typing import Any, NamedTuple

from keras import ops

__all__ = ["CGResult", "conjugate_gradient"]


class CGResult(NamedTuple):
    solution: Any  # a tensor of the Keras backend, like `rhs`
    relative_residual: Any  # ||r|| / ||b|| per system
    iterations: Any  # iterations in which any system was still active


def conjugate_gradient(matvec, rhs, reduce_axes, max_iterations, tolerance):
    """Solves many PSD systems `A x = rhs` at once, matrix-free.

    The systems are independent along every axis of `rhs` not in `reduce_axes`
    (their inner products reduce over `reduce_axes`). A system stops updating
    once `||r|| <= tolerance * ||rhs||` (early-exit masking), so the loop can
    run its full static length under XLA. Singular but consistent systems (a
    right-hand side in the range of `A`, as here) converge to the minimum-norm
    solution from a zero start.

    Args:
      matvec: callable, `v -> A v`, same shape as `rhs`.
      rhs: a floating tensor of the Keras backend.
      reduce_axes: list of axes summed in inner products.
      max_iterations: Python `int`.
      tolerance: Python `float`, relative residual.

    Returns:
      `CGResult`.
    """

    def dot(a, b):
        return ops.sum(a * b, axis=reduce_axes, keepdims=True)

    rhs_norm2 = dot(rhs, rhs)
    threshold2 = ops.cast(tolerance, rhs.dtype) ** 2 * rhs_norm2
    zero = ops.zeros_like(rhs_norm2)

    def body(i, x, r, p, rs, active_steps):
        active = rs > threshold2
        ap = matvec(p)
        alpha = ops.where(active, ops.divide_no_nan(rs, dot(p, ap)), zero)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = dot(r, r)
        beta = ops.where(active, ops.divide_no_nan(rs_new, rs), zero)
        p = ops.where(active, r + beta * p, p)
        active_steps = active_steps + ops.cast(ops.any(active), "int32")
        return i + 1, x, r, p, ops.where(active, rs_new, rs), active_steps

    def keep_going(i, x, r, p, rs, steps):
        # Stop when every system has converged (or the budget is spent).
        return ops.logical_and(i < max_iterations, ops.any(rs > threshold2))

    start = ops.convert_to_tensor(0, "int32")
    _, x, r, _, _, steps = ops.while_loop(
        keep_going,
        body,
        (start, ops.zeros_like(rhs), rhs, rhs, rhs_norm2, start),
        maximum_iterations=max_iterations,
    )
    residual = ops.sqrt(ops.divide_no_nan(dot(r, r), rhs_norm2))
    return CGResult(x, residual, steps)
