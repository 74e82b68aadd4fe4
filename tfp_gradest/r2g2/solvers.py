"""Solving R2-G2's `P × P` systems: direct (Gram + elimination) or conjugate gradients, by a
cost model.

Per example and filter the conditioning needs `u` with `(A Aᵀ) u = r`, where
`A = P_b diag(σ_f)` is `R × k` (`R` conditioning rows: the `P` output
positions, or `B·P` for whole-batch conditioning; `k` weights) and `r = A ε`
lies in its range. Then `E[ε | h] = Aᵀ u` (DESIGN §4). Cost in multiply-adds
for `S` systems (`S = B·F` per example, `F` for the whole batch):

```none
direct   Gram matrices A Aᵀ, two eliminations, Aᵀ u:  S · (R² k + 2 R³ + 2 R k)
CG       per iteration two products A (Aᵀ v):          S · 2 R k  + a fixed loop overhead
```

The solve must be exact for the gradient to be unbiased, and CG is exact only
after up to `R` iterations; on correlated conv features it needs them (measured:
smooth 16-channel inputs, `R = 144`, `k = 145`: relative residual 4e-3 to 6e-3
after 50 and after 1000 iterations, condition numbers 1e11-5e12). At `R`
iterations CG costs `2 S R² k`, more than the direct solve whenever
`R < k / 2`. So the direct solve is used when it is predicted cheaper than an
exact CG solve, has at most `MAX_DIRECT_ROWS` rows and its intermediates fit in
the memory limit; conjugate gradients, with the `cg_iterations` budget,
otherwise (and with an unknown batch size under whole-batch conditioning).

Both run in float64 whatever the layer's dtype: the conditional expectation must
be exact, and condition numbers of 1e8-1e12 (above) are beyond float32.

A system whose relative residual stays above the tolerance is not trusted:
`conditional_noise` then uses `ε` itself for it (the reparameterisation
gradient), which keeps the estimator unbiased because the choice depends on
the noise only through the observed `h`.
"""

import math
import numbers
from typing import NamedTuple

import tensorflow as tf

__all__ = [
    "SolveCost",
    "direct_solve",
    "solve_cost",
    "use_direct_solve",
    "validate_solver_options",
]

SOLVE_DTYPE = tf.float64

# A while-loop iteration of XLA on CPU costs about as much as this many
# multiply-adds besides its arithmetic (measured: ~20 µs per iteration at
# ~5e9 float64 multiply-adds per second on one core).
CG_ITERATION_OVERHEAD = 1e5

# Tikhonov jitter of the elimination, relative to the mean diagonal:
# far below float64's resolution of any direction that carries gradient, and it
# keeps exactly singular (but consistent) systems, e.g. all-zero patches, finite.
RELATIVE_JITTER = 1e-13

# A direct solve is trusted up to this relative residual even when `cg_tolerance`
# asks for less (float64 rounding of a condition-1e6 system lands near 1e-10).
DIRECT_SOLVE_TOLERANCE = 1e-8


def validate_solver_options(cg_iterations, cg_tolerance):
    """`(int(cg_iterations), float(cg_tolerance))`, or a `TypeError`/`ValueError` naming the
    argument."""
    if isinstance(cg_iterations, bool) or not isinstance(cg_iterations, numbers.Integral):
        raise TypeError(
            "`cg_iterations` must be a positive Python int (the static conjugate-gradient "
            f"budget). Received: cg_iterations={cg_iterations!r}"
        )
    if cg_iterations < 1:
        raise ValueError(
            "`cg_iterations` must be a positive int: with no iteration the conditional "
            f"expectation is never computed. Received: cg_iterations={cg_iterations!r}"
        )
    if isinstance(cg_tolerance, bool) or not isinstance(cg_tolerance, numbers.Real):
        raise TypeError(
            "`cg_tolerance` must be a positive finite float (a relative residual, e.g. 1e-6). "
            f"Received: cg_tolerance={cg_tolerance!r}"
        )
    if not (math.isfinite(cg_tolerance) and cg_tolerance > 0):
        raise ValueError(
            "`cg_tolerance` must be a positive finite float (a relative residual, e.g. 1e-6). "
            f"Received: cg_tolerance={cg_tolerance!r}"
        )
    return int(cg_iterations), float(cg_tolerance)


class SolveCost(NamedTuple):
    """Predicted multiply-adds of the two solvers, and the direct solve's memory in bytes."""

    direct: float
    conjugate_gradient: float
    direct_bytes: float


def solve_cost(num_groups, num_filters, rows, weights, cg_iterations=None):
    """The cost model of the module docstring: `num_groups × num_filters` systems of `rows × rows`.

    CG is costed at `min(cg_iterations, rows)` iterations (`rows`, the count an
    exact answer may need, when `cg_iterations` is `None`). The direct solve's
    memory is the rows' outer products (`G R² k`) and the Gram matrices (`S R²`).
    """
    systems = num_groups * num_filters
    direct = systems * (rows**2 * weights + 2 * rows**3 + 2 * rows * weights)
    iterations = rows if cg_iterations is None else min(cg_iterations, rows)
    cg = iterations * (systems * 2 * rows * weights + CG_ITERATION_OVERHEAD)
    direct_bytes = (num_groups * rows**2 * weights + systems * rows**2) * SOLVE_DTYPE.size
    return SolveCost(direct, cg, direct_bytes)


# Gauss-Jordan is unrolled over the rows: the compiled graph grows with R.
MAX_DIRECT_ROWS = 256


def use_direct_solve(num_groups, num_filters, rows, weights, memory_limit):
    """True when an exact direct solve is predicted cheaper than an exact CG solve and fits in
    `memory_limit` bytes.

    Unknown sizes (`None`) pick conjugate gradients, which need no static shape.
    """
    if num_groups is None or num_filters is None or rows is None:
        return False
    if rows < 0 or rows > MAX_DIRECT_ROWS:
        return False
    cost = solve_cost(num_groups, num_filters, rows, weights)
    fits = memory_limit is None or cost.direct_bytes <= memory_limit
    return fits and cost.direct <= cost.conjugate_gradient


def gram_matrices(patches, variance):
    """`A Aᵀ = P_g diag(σ_f²) P_gᵀ` for every group `g` and filter `f`: `[G, F, R, R]`.

    As one large matmul of the rows' outer products (`[G·R·R, k]`) with `σ²`
    (`[k, F]`): XLA runs that far faster on CPU than `G·F` small products.
    """
    outer = patches[:, :, tf.newaxis, :] * patches[:, tf.newaxis, :, :]
    return tf.transpose(tf.tensordot(outer, variance, [[3], [0]]), [0, 3, 1, 2])


def direct_solve(gram, rhs):
    """`u` with `gram u = rhs` for a batch of symmetric positive semi-definite `gram`
    (`[..., R, R]`), and the relative residual.

    Gauss-Jordan elimination without pivoting (stable for positive definite
    matrices), unrolled over the `R` static rows: XLA's Cholesky on CPU is a
    slow while loop (measured: 106 ms for 1024 systems of 16 x 16 in float64,
    against a few ms for this). The Gram matrix gets `RELATIVE_JITTER` times its
    mean diagonal (plus a tiny constant, so that an all-zero system gives
    `u = 0`), and one step of iterative refinement follows.
    """
    rows = gram.shape[-1]
    diagonal = tf.linalg.diag_part(gram)
    jitter = RELATIVE_JITTER * tf.reduce_mean(diagonal, axis=-1, keepdims=True)
    jittered = tf.linalg.set_diag(gram, diagonal + jitter + tf.constant(1e-300, gram.dtype))
    eye = tf.eye(rows, dtype=gram.dtype)

    def eliminate(matrix, b):
        augmented = tf.concat([matrix, b[..., tf.newaxis]], axis=-1)
        for i in range(rows):
            pivot_row = augmented[..., i : i + 1, :]
            factors = augmented[..., :, i : i + 1] / pivot_row[..., i : i + 1]
            augmented = augmented - (factors * (1.0 - eye[:, i : i + 1])) * pivot_row
        return augmented[..., rows] / tf.linalg.diag_part(augmented[..., :rows])

    u = eliminate(jittered, rhs)
    # One step of iterative refinement removes most of the jitter's (and rounding's) error.
    u = u + eliminate(jittered, rhs - tf.linalg.matvec(gram, u))
    residual = tf.linalg.matvec(gram, u) - rhs
    relative = tf.math.divide_no_nan(tf.norm(residual, axis=-1), tf.norm(rhs, axis=-1))
    return u, relative
