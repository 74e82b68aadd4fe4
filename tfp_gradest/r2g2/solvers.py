"""Solving R2-G2's `P × P` systems: direct (Gram + elimination) or conjugate gradients, chosen
by a measured cost model.

Per example and filter the conditioning needs `u` with `(A Aᵀ) u = r`, where
`A = P_b diag(σ_f)` is `R × k` (`R` conditioning rows: the `P` output
positions, or `B·P` for whole-batch conditioning; `k` weights) and `r = A ε`
lies in its range. Then `E[ε | h] = Aᵀ u` (derivation: docs/design/r2g2.md). For `S` systems
(`S = B·F` per example, `F` for the whole batch) the work is

```none
direct   Gram matrices (upper triangle) S·R(R+1)/2·k  +  elimination S·R²(R+1)
         as R sequential steps  +  Aᵀ u                 S·R·k
CG       per iteration two products A (Aᵀ v):            S·2·R·k  + a fixed loop overhead
```

The solve must be exact for the gradient to be unbiased, and CG is exact only
after up to `R` iterations, which correlated conv features need. So CG is costed
at `CG_ITERATIONS_PER_ROW · R` iterations; the direct solve is used when it is
predicted faster, has at most `MAX_DIRECT_ROWS` rows and its Gram matrices fit in
R2-G2's `direct_solve_memory_limit`; conjugate gradients
(`cg_conditional_noise`, with the `cg_iterations` budget) otherwise, and with an
unknown row count. The direct solve keeps the systems on the last axis, forms the
Gram matrices from the upper-triangle row pairs only, refines only when a residual
asks for it, and stays in float64. The cost model's constants are seconds per unit of
that work, fitted to time ratios of the two solvers measured in alternation
(`python benchmarks/solver_costs.py --fit`). The measurements behind each of these
choices: docs/design/r2g2.md ("The solves and their measured cost model").

A system whose relative residual stays above the tolerance is not trusted:
`conditional_noise` then uses `ε` itself for it (the reparameterisation
gradient), which keeps the estimator unbiased because the choice depends on
the noise only through the observed `h`.
"""

import math
from typing import NamedTuple

import numpy as np
from keras import ops

from tfp_gradest._util import arguments
from tfp_gradest.r2g2.conjugate_gradient import conjugate_gradient

__all__ = [
    "SolveCost",
    "cg_conditional_noise",
    "direct_conditional_noise",
    "direct_solve",
    "gram_matrices",
    "solve_cost",
    "use_direct_solve",
    "validate_solver_options",
]

SOLVE_DTYPE = "float64"
_SOLVE_ITEMSIZE = 8

# Tikhonov jitter of the elimination, relative to the mean diagonal:
# far below float64's resolution of any direction that carries gradient, and it
# keeps exactly singular (but consistent) systems, e.g. all-zero patches, finite.
RELATIVE_JITTER = 1e-13

# A direct solve is trusted up to this relative residual even when `cg_tolerance`
# asks for less (float64 rounding of a condition-1e6 system lands near 1e-10).
DIRECT_SOLVE_TOLERANCE = 1e-8


def validate_solver_options(cg_iterations, cg_tolerance):
    """`(int(cg_iterations), float(cg_tolerance))`, or a `TypeError`/`ValueError` naming the
    argument (`tfp_gradest._util.arguments`)."""
    cg_iterations = arguments.check_positive_integer(
        "cg_iterations",
        cg_iterations,
        reason="the static conjugate-gradient budget",
        hint="With no iteration the conditional expectation is never computed; pass e.g. 50.",
    )
    cg_tolerance = arguments.check_positive_finite(
        "cg_tolerance", cg_tolerance, reason="a relative residual", hint="Pass e.g. 1e-6."
    )
    return cg_iterations, cg_tolerance


# --- the cost model ----------------------------------------------------------------------

# Seconds per unit of work, fitted to measured XLA timings (module docstring):
# direct: (Gram multiply-adds, elimination multiply-adds, sequential elimination steps);
# CG: (multiply-adds per iteration, one while-loop iteration). The Gram's constant
# came out near zero (7e-18): its work is proportional to exact CG's products in every
# cell, so the measured ratios put that cost in CG's constant. Re-fit with
# `python benchmarks/solver_costs.py --fit`.
DIRECT_SECONDS = (0.0, 3.45e-9, 5.66e-4)
CG_SECONDS = (1.84e-10, 7.46e-4)

# Conjugate gradients in floating point need more than the `R` iterations of exact
# arithmetic: on the layers benchmark's conv features (3x3, same, B = 64, F = 16) they
# reached the 1e-6 tolerance after 19 iterations at R = 16 (k = 73 and 145), and not within
# 64 at R = 64 (residual 7e-4 to 0.17, so those systems fall back to the RT gradient).
CG_ITERATIONS_PER_ROW = 1.2


class SolveCost(NamedTuple):
    """Predicted seconds of the two solvers (exact CG: `R` iterations), and the direct
    solve's memory in bytes."""

    direct: float
    conjugate_gradient: float
    direct_bytes: float


def solve_cost(num_groups, num_filters, rows, weights, cg_iterations=None):
    """The cost model of the module docstring: `num_groups × num_filters` systems of `rows × rows`.

    CG is costed at `min(cg_iterations, ⌈1.2 rows⌉)` iterations (`⌈1.2 rows⌉`, the
    count measured to reach the tolerance, when `cg_iterations` is `None`;
    `CG_ITERATIONS_PER_ROW`). The direct solve's
    memory is its largest intermediates: the row pairs' products (`G R(R+1)/2 k`)
    and the Gram matrices with their right-hand sides (`S R (R+1)`).
    """
    systems = num_groups * num_filters
    pairs = rows * (rows + 1) / 2
    gram, elimination, steps = DIRECT_SECONDS
    direct = (
        gram * systems * (pairs * weights + rows * weights)
        + elimination * systems * rows**2 * (rows + 1)
        + steps * rows
    )
    iterations = math.ceil(CG_ITERATIONS_PER_ROW * rows)
    if cg_iterations is not None:
        iterations = min(cg_iterations, iterations)
    per_product, per_iteration = CG_SECONDS
    cg = iterations * (per_product * systems * 2 * rows * weights + per_iteration)
    direct_bytes = (num_groups * pairs * weights + systems * rows * (rows + 1)) * _SOLVE_ITEMSIZE
    return SolveCost(direct, cg, direct_bytes)


# Gauss-Jordan is unrolled over the rows: the compiled graph grows with R.
MAX_DIRECT_ROWS = 256


def use_direct_solve(num_groups, num_filters, rows, weights, memory_limit):
    """True when an exact direct solve is predicted faster than an exact CG solve and fits in
    `memory_limit` bytes (`None`: no limit; R2-G2's `direct_solve_memory_limit`).

    Unknown sizes (`None`) pick conjugate gradients, which need no static shape.
    """
    if num_groups is None or num_filters is None or rows is None:
        return False
    if rows > MAX_DIRECT_ROWS:
        return False
    cost = solve_cost(num_groups, num_filters, rows, weights)
    fits = memory_limit is None or cost.direct_bytes <= memory_limit
    return fits and cost.direct <= cost.conjugate_gradient


# --- the direct solve --------------------------------------------------------------------


def _pair_indices(rows):
    """Row indices of the upper-triangle pairs, and the `[R, R]` table of each entry's pair."""
    first, second = np.triu_indices(rows)
    table = np.zeros((rows, rows), "int32")
    table[first, second] = table[second, first] = np.arange(first.size)
    return first, second, table


def _gram_systems_last(patches, variance):
    """`A Aᵀ = P_g diag(σ_f²) P_gᵀ` for every group `g` and filter `f`, as `[R, R, G, F]`.

    As one matmul of the upper-triangle rows' products (`[G·R(R+1)/2, k]`) with
    `σ²` (`[k, F]`), mirrored by a gather: XLA runs that far faster on CPU than
    `G·F` small products, and symmetry halves the work.
    """
    first, second, table = _pair_indices(patches.shape[1])
    products = ops.take(patches, first, axis=1) * ops.take(patches, second, axis=1)
    upper = ops.einsum("gnk,kf->ngf", products, variance)  # [pairs, G, F]
    return ops.take(upper, table, axis=0)


def gram_matrices(patches, variance):
    """`A Aᵀ = P_g diag(σ_f²) P_gᵀ` for every group `g` and filter `f`: `[G, F, R, R]`."""
    return ops.transpose(_gram_systems_last(patches, variance), (2, 3, 0, 1))


def _eliminate(gram, rhs):
    """`u` with `gram u = rhs` by Gauss-Jordan elimination without pivoting (stable for
    positive definite matrices), unrolled over the `R` static rows.

    `gram`: `[R, R, S]`, `rhs`: `[R, S]`: the `S` systems on the last axis, so
    that each step is one update vectorised over all systems.
    """
    rows = gram.shape[0]
    augmented = ops.concatenate([gram, ops.expand_dims(rhs, 1)], axis=1)  # [R, R+1, S]
    unit = np.eye(rows, rows + 1, dtype=SOLVE_DTYPE)[..., np.newaxis]
    for i in range(rows):
        pivot_row = augmented[i] / augmented[i, i]  # row i scaled to a unit pivot
        # Subtract the pivot row from every other row; row i becomes the scaled pivot row.
        augmented = augmented - ops.expand_dims(augmented[:, i] - unit[:, i], 1) * pivot_row
    return augmented[:, rows]


def _solve_systems_last(gram, rhs, tolerance):
    """`(u, relative residual)` for `gram` `[R, R, *systems]` and `rhs` `[R, *systems]`.

    The Gram matrix gets `RELATIVE_JITTER` times its mean diagonal (plus a tiny
    constant, so that an all-zero system gives `u = 0`). One elimination is
    enough for well-conditioned systems; only when some residual is above
    `tolerance` does one step of iterative refinement follow (a second
    elimination on the residual), under a `cond` that runs it only then.
    """
    rows, systems = gram.shape[0], gram.shape[2:]
    gram, rhs = ops.reshape(gram, (rows, rows, -1)), ops.reshape(rhs, (rows, -1))
    eye = np.eye(rows, dtype=SOLVE_DTYPE)[..., np.newaxis]
    diagonal = ops.sum(gram * eye, axis=1)  # [R, S]
    jitter = RELATIVE_JITTER * ops.mean(diagonal, axis=0) + 1e-300
    jittered = gram + eye * jitter

    def residual_of(u):
        return rhs - ops.sum(gram * ops.expand_dims(u, 0), axis=1)

    rhs_norm = ops.sqrt(ops.sum(ops.square(rhs), axis=0))

    def relative(residual):
        return ops.divide_no_nan(ops.sqrt(ops.sum(ops.square(residual), axis=0)), rhs_norm)

    u = _eliminate(jittered, rhs)
    residual = residual_of(u)
    error = relative(residual)

    def refine():
        refined = u + _eliminate(jittered, residual)
        return refined, relative(residual_of(refined))

    # `not (error <= tolerance)` also refines non-finite residuals.
    needs_refinement = ops.logical_not(ops.all(error <= tolerance))
    u, error = ops.cond(needs_refinement, refine, lambda: (u, error))
    return ops.reshape(u, (rows, *systems)), ops.reshape(error, systems)


def direct_solve(gram, rhs, tolerance=DIRECT_SOLVE_TOLERANCE):
    """`u` with `gram u = rhs` for a batch of symmetric positive semi-definite `gram`
    (`[..., R, R]`, float64), and the relative residual `||gram u - rhs|| / ||rhs||`.

    Unrolled Gauss-Jordan elimination (XLA's Cholesky and LU on CPU are slow
    while loops: `tf.linalg.solve` took 12× the elimination's time for 1024
    systems of 16 × 16), with one step of iterative refinement where some
    residual is above `tolerance`.
    """
    batch_rank = len(gram.shape) - 2
    to_last = (batch_rank, batch_rank + 1, *range(batch_rank))
    u, error = _solve_systems_last(
        ops.transpose(gram, to_last),
        ops.transpose(rhs, (batch_rank, *range(batch_rank))),
        tolerance,
    )
    return ops.transpose(u, (*range(1, batch_rank + 1), 0)), error


def direct_conditional_noise(patches, scale, noise, tolerance=DIRECT_SOLVE_TOLERANCE):
    """`E[ε_f | h_gf] = A_gfᵀ (A_gf A_gfᵀ)⁻¹ A_gf ε_f`, `A_gf = P_g diag(σ_f)`, by the direct
    solve: `[G, k, F]`, and the relative residuals `[G, F]`.

    `patches` `[G, R, k]`, `scale` and `noise` `[k, F]`, all float64. The whole
    solve keeps the `G × F` systems on the last axes (module docstring).
    """
    gram = _gram_systems_last(patches, ops.square(scale))  # [R, R, G, F]
    rhs = ops.einsum("grk,kf->rgf", patches, scale * noise)  # r = A ε_f
    u, residual = _solve_systems_last(gram, rhs, tolerance)
    return scale * ops.einsum("grk,rgf->gkf", patches, u), residual  # Aᵀ u


def cg_conditional_noise(patches, scale, noise, iterations, tolerance):
    """`E[ε_f | h_gf] = A_gfᵀ u`, `(A_gf A_gfᵀ) u = A_gf ε_f`, `A_gf = P_g diag(σ_f)`, by
    conjugate gradients: `[G, k, F]`, and the relative residuals `[G, F]`.

    The matrix-free counterpart of `direct_conditional_noise` (same arguments and
    results): each iteration costs two products `A (Aᵀ v)`, and no `R × R` matrix is
    formed, so the row count `R` need not be static. `iterations` is the static budget
    (XLA needs static loops), `tolerance` the relative residual at which a system stops
    updating (`tfp_gradest.r2g2.conjugate_gradient`). Exact after `R` iterations in exact
    arithmetic; a system still above `tolerance` after the budget is for the caller to
    distrust (`conditional_noise` gives it `ε`).
    """
    variance = ops.square(scale)

    def matvec(v):
        return ops.einsum(
            "grk,gkf->grf", patches, variance * ops.einsum("grk,grf->gkf", patches, v)
        )

    rhs = ops.einsum("grk,kf->grf", patches, scale * noise)  # r = A ε_f
    result = conjugate_gradient(matvec, rhs, [1], iterations, tolerance)
    expected = scale * ops.einsum("grk,grf->gkf", patches, result.solution)  # Aᵀ u
    return expected, result.relative_residual[:, 0, :]
