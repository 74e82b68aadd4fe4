"""Batched conjugate gradients with a static iteration budget (XLA needs static loops)."""

from typing import NamedTuple

import tensorflow as tf

__all__ = ["CGResult", "conjugate_gradient"]


class CGResult(NamedTuple):
    solution: tf.Tensor
    relative_residual: tf.Tensor  # ||r|| / ||b|| per system
    iterations: tf.Tensor  # iterations in which any system was still active


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
      rhs: Tensor.
      reduce_axes: list of axes summed in inner products.
      max_iterations: Python `int`.
      tolerance: Python `float`, relative residual.

    Returns:
      `CGResult`.
    """

    def dot(a, b):
        return tf.reduce_sum(a * b, axis=reduce_axes, keepdims=True)

    rhs_norm2 = dot(rhs, rhs)
    threshold2 = tf.cast(tolerance, rhs.dtype) ** 2 * rhs_norm2

    def body(i, x, r, p, rs, active_steps):
        active = rs > threshold2
        ap = matvec(p)
        alpha = tf.where(active, tf.math.divide_no_nan(rs, dot(p, ap)), tf.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = dot(r, r)
        beta = tf.where(active, tf.math.divide_no_nan(rs_new, rs), tf.zeros_like(rs))
        p = tf.where(active, r + beta * p, p)
        active_steps = active_steps + tf.cast(tf.reduce_any(active), tf.int32)
        return i + 1, x, r, p, tf.where(active, rs_new, rs), active_steps

    x0 = tf.zeros_like(rhs)
    _, x, r, _, _, steps = tf.while_loop(
        # Stop when every system has converged (or the budget is spent).
        lambda i, x, r, p, rs, steps: tf.logical_and(
            i < max_iterations, tf.reduce_any(rs > threshold2)
        ),
        body,
        (tf.constant(0), x0, rhs, rhs, rhs_norm2, tf.constant(0)),
        maximum_iterations=max_iterations,
    )
    residual = tf.sqrt(tf.math.divide_no_nan(dot(r, r), rhs_norm2))
    return CGResult(x, residual, steps)
