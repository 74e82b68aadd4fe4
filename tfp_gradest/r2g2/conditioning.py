"""`E[ε | h]` for `β = μ + σ ⊙ ε` seen through a linear map, and the R2-G2 scale gradient.

For one filter `f` and the pre-activations `h = P β_f` it generates (the rows
`P` being one example's patches, or the whole batch's), Gaussian conditioning
of `ε ~ N(0, I)` on the linear observation `h - P μ_f = P diag(σ_f) ε` gives

```none
E[ε | h] = σ ⊙ Pᵀ u,     (P diag(σ²) Pᵀ) u = h - P μ
```

the minimum-norm least-squares solution of `P diag(σ) e = h - P μ` (docs/design/r2g2.md;
Lam et al., 2024, Definition 4.1). The R2-G2 gradient of the scale replaces the
noise in the reparameterisation gradient `(Pᵀ g) ⊙ ε` by this expectation.

* Per-example conditioning (default): each example's gradient term is
  conditioned on its own pre-activations; systems are `P × P` per example and
  filter. For a dense layer (`P = 1`) the system is a scalar:
  `∂f/∂σ = σ ⊙ ((X⊙X)ᵀ (G ⊙ (H - Xμ) / ((X⊙X)(σ⊙σ))))` — the local
  reparameterisation trick's backward formula (the paper's Proposition 4.2).
* Whole-batch conditioning: one `BP × BP` system per filter.

When the rows outnumber the weights (`P ≥ k`, or `B·P ≥ k` for the whole batch)
and have full rank, `h` determines `ε` and `E[ε | h] = ε`: R2-G2 equals the
reparameterisation gradient. That case is detected statically and the solve
skipped; skipping is unbiased even when the rank is deficient (it is then
just the reparameterisation gradient).
"""

import re
import warnings

import keras
from keras import ops

from tfp_gradest._util import arguments
from tfp_gradest.r2g2 import solvers

__all__ = [
    "CONDITIONINGS",
    "DEFAULT_DIRECT_SOLVE_MEMORY_LIMIT",
    "DEFAULT_PER_EXAMPLE_MEMORY_LIMIT",
    "conditional_noise",
    "fit_to_memory",
    "scale_gradient",
    "solve_is_skipped",
    "validate_options",
]

CONDITIONINGS = ("per_example", "whole_batch")

# Per-example conditioning's largest intermediate, `B × k × F` numbers, above which
# we fall back to whole-batch conditioning (a few times this is live at once).
DEFAULT_PER_EXAMPLE_MEMORY_LIMIT = 2**28

# The direct solve's Gram matrices may take this many bytes; above, conjugate gradients.
DEFAULT_DIRECT_SOLVE_MEMORY_LIMIT = 2**28

_NOT_GIVEN = object()


def validate_options(
    conditioning="per_example",
    cg_iterations=50,
    cg_tolerance=1e-6,
    per_example_memory_limit=DEFAULT_PER_EXAMPLE_MEMORY_LIMIT,
    direct_solve_memory_limit=DEFAULT_DIRECT_SOLVE_MEMORY_LIMIT,
):
    """R2-G2's options checked (a `ValueError`/`TypeError` naming the argument), as a dict of
    keyword arguments of `gaussian_linear`."""
    if conditioning not in CONDITIONINGS:
        raise ValueError(
            f"`conditioning` must be one of {CONDITIONINGS}. "
            f"Received: conditioning={conditioning!r}"
        )
    cg_iterations, cg_tolerance = solvers.validate_solver_options(cg_iterations, cg_tolerance)
    return {
        "conditioning": conditioning,
        "cg_iterations": cg_iterations,
        "cg_tolerance": cg_tolerance,
        "per_example_memory_limit": _check_memory_limit(
            "per_example_memory_limit", per_example_memory_limit
        ),
        "direct_solve_memory_limit": _check_memory_limit(
            "direct_solve_memory_limit", direct_solve_memory_limit
        ),
    }


def _check_memory_limit(name, value):
    if value is None:
        return None
    return arguments.check_positive_integer(
        name, value, hint="Pass a number of bytes (e.g. 2**28), or None for no limit."
    )


def _direct_solve_memory_limit(direct_solve_memory_limit, memory_limit, function):
    """The direct solve's memory limit, from 0.2's `memory_limit=` with a warning."""
    if memory_limit is _NOT_GIVEN:
        return direct_solve_memory_limit
    warnings.warn(
        f"{function}(memory_limit=...) is deprecated: write "
        f"{function}(direct_solve_memory_limit=...) (the same bytes: the direct solve's "
        "budget, over which conjugate gradients are used).",
        DeprecationWarning,
        stacklevel=3,
    )
    return memory_limit


def fit_to_memory(conditioning, patches_shape, num_filters, dtype, memory_limit):
    """The conditioning to use: `"whole_batch"` if per-example products would exceed
    `memory_limit` bytes (R2-G2's `per_example_memory_limit`; this is its only job).

    Decided from static shapes at trace time; with an unknown batch size, or
    `memory_limit=None`, the requested conditioning is kept. Both
    conditionings give unbiased gradients, so the fallback only trades some
    variance reduction for memory; it warns so that it is never silent.
    """
    batch, positions, weights = patches_shape
    if conditioning != "per_example" or positions == 1 or memory_limit is None or batch is None:
        return conditioning
    needed = batch * weights * num_filters * _itemsize(dtype)
    if needed <= memory_limit:
        return conditioning
    warnings.warn(
        f"R2-G2: per-example conditioning would hold {needed / 2**20:.0f} MiB "
        f"(batch {batch} × {weights} weights × {num_filters} filters), over "
        f"per_example_memory_limit={memory_limit}; using whole-batch conditioning "
        "(also unbiased, less variance reduction). Raise the limit "
        "(tge.layers.estimators.R2G2(per_example_memory_limit=...); None for none) or use "
        'R2G2(conditioning="whole_batch") to silence this.',
        stacklevel=2,
    )
    return "whole_batch"


def _itemsize(dtype):
    """Bytes per element of a floating dtype (any backend's dtype object, or its name)."""
    return int(re.search(r"\d+$", keras.backend.standardize_dtype(dtype)).group()) // 8


def solve_is_skipped(conditioning, batch_size, num_positions, num_weights):
    """True when the projection is the identity (rows >= weights), so R2-G2 == RT.

    `batch_size` and `num_positions` are static sizes, `None` when unknown (then the solve
    is skipped only if the known rows already reach `num_weights`).
    """
    if num_positions is None:
        return False
    if conditioning == "per_example":
        return num_positions >= num_weights
    return batch_size is not None and batch_size * num_positions >= num_weights


def conditional_noise(
    patches,
    scale,
    noise,
    conditioning="per_example",
    cg_iterations=50,
    cg_tolerance=1e-6,
    direct_solve_memory_limit=DEFAULT_DIRECT_SOLVE_MEMORY_LIMIT,
    *,
    memory_limit=_NOT_GIVEN,
):
    """`E[ε | h]` and the solver's relative residual (for diagnostics and tests).

    Each system is solved directly or by conjugate gradients, whichever the
    cost model of `tfp_gradest.r2g2.solvers` predicts cheaper, in float64. A
    system whose relative residual stays above `cg_tolerance` (direct solves:
    above `max(cg_tolerance, 1e-8)`) gets `ε` itself
    (its reparameterisation gradient) instead: unbiased, because whether a
    system is trusted depends on the noise only through the observed `h`.

    Args:
      patches: `[B, P, k]`.
      scale, noise: `[k, F]`.
      conditioning: `"per_example"` or `"whole_batch"`.
      cg_iterations: Python `int >= 1`, static iteration budget of conjugate gradients.
      cg_tolerance: Python `float > 0`, relative residual above which a system
        is not trusted (and below which conjugate gradients stop).
      direct_solve_memory_limit: bytes the direct solve's Gram matrices may take; over
        it, conjugate gradients. `None`: no limit. Default value: 256 MiB.
      memory_limit: deprecated spelling of `direct_solve_memory_limit`.

    Returns:
      expected_noise: `[B, k, F]` per example, or `[k, F]` for the whole batch.
      relative_residual: the largest `||A Aᵀ u - r|| / ||r||` over the systems
        solved (0 when the system is diagonal or the solve is skipped); systems
        above `cg_tolerance` have fallen back to `ε`.
    """
    direct_solve_memory_limit = _direct_solve_memory_limit(
        direct_solve_memory_limit, memory_limit, "conditional_noise"
    )
    cg_iterations, cg_tolerance = solvers.validate_solver_options(cg_iterations, cg_tolerance)
    batch, positions, weights = patches.shape
    zero = ops.zeros([], scale.dtype)
    if solve_is_skipped(conditioning, batch, positions, weights):
        return (
            noise
            if conditioning == "whole_batch"
            else ops.broadcast_to(noise, (ops.shape(patches)[0], *noise.shape))
        ), zero
    if conditioning == "per_example" and positions == 1:
        # Scalar systems: u = (h - Pμ) / (P² σ²), element-wise.
        rhs = ops.einsum("bpk,kf->bpf", patches, scale * noise)
        u = ops.divide_no_nan(
            rhs, ops.einsum("bpk,kf->bpf", ops.square(patches), ops.square(scale))
        )
        return scale * ops.einsum("bpk,bpf->bkf", patches, u), zero
    if conditioning == "whole_batch":
        # One system per filter over all B·P rows: the per-example solve with one "example".
        rows = None if batch is None or positions is None else batch * positions
        patches = ops.reshape(patches, [1, rows if rows is not None else -1, weights])
    expected, residual = _solve_groups(
        patches, scale, noise, cg_iterations, cg_tolerance, direct_solve_memory_limit
    )
    if conditioning == "whole_batch":
        expected = expected[0]
    return expected, ops.cast(ops.max(residual), scale.dtype)


def _solve_groups(patches, scale, noise, cg_iterations, cg_tolerance, direct_solve_memory_limit):
    """`E[ε_f | h_gf]` for every group `g` of rows and filter `f`: `[G, k, F]`, and residuals
    `[G, F]`."""
    groups, rows, weights = patches.shape
    num_filters = scale.shape[-1]
    dtype = scale.dtype
    patches, scale, noise = (ops.cast(t, solvers.SOLVE_DTYPE) for t in (patches, scale, noise))
    if keras.backend.standardize_dtype(patches.dtype) != solvers.SOLVE_DTYPE:
        warnings.warn(
            f"R2-G2 solves its systems in {solvers.SOLVE_DTYPE}, which this backend computes "
            f"as {keras.backend.standardize_dtype(patches.dtype)} (JAX without "
            "jax_enable_x64). Systems that miss `cg_tolerance` in that precision fall back "
            "to the reparameterisation gradient: still unbiased, less variance reduction. "
            'For exact solves call jax.config.update("jax_enable_x64", True) at start-up.',
            stacklevel=2,
        )
    if solvers.use_direct_solve(groups, num_filters, rows, weights, direct_solve_memory_limit):
        # Aᵀ (A Aᵀ)⁻¹ A ε_f with A = P diag(σ_f): Gram matrices, elimination, refinement if needed.
        tolerance = max(cg_tolerance, solvers.DIRECT_SOLVE_TOLERANCE)
        expected, residual = solvers.direct_conditional_noise(patches, scale, noise, tolerance)
    else:
        tolerance = cg_tolerance
        expected, residual = solvers.cg_conditional_noise(
            patches, scale, noise, cg_iterations, tolerance
        )
    # Untrusted systems (residual above tolerance, or not finite) keep ε: the RT gradient.
    trusted = residual <= tolerance
    expected = ops.where(ops.expand_dims(trusted, 1), expected, noise)
    return ops.cast(expected, dtype), residual


def scale_gradient(
    patches,
    scale,
    noise,
    upstream,
    conditioning="per_example",
    cg_iterations=50,
    cg_tolerance=1e-6,
    direct_solve_memory_limit=DEFAULT_DIRECT_SOLVE_MEMORY_LIMIT,
    *,
    memory_limit=_NOT_GIVEN,
):
    """R2-G2 gradient w.r.t. `σ`: `Σ_b (P_bᵀ g_b) ⊙ E[ε | h_b]` (per example) or
    `(Pᵀ G) ⊙ E[ε | h]`.

    `upstream` is `g = ∂f/∂h`, `[B, P, F]`. Returns `[k, F]`. The other arguments are
    `conditional_noise`'s (`memory_limit`: deprecated spelling of
    `direct_solve_memory_limit`).
    """
    direct_solve_memory_limit = _direct_solve_memory_limit(
        direct_solve_memory_limit, memory_limit, "scale_gradient"
    )
    if conditioning == "per_example" and patches.shape[1] == 1:
        # Dense closed form, two matmuls like the ordinary backward.
        x = patches[:, 0, :]
        x2 = ops.square(x)
        ratio = ops.divide_no_nan(
            upstream[:, 0, :] * ops.matmul(x, scale * noise), ops.matmul(x2, ops.square(scale))
        )
        return scale * ops.matmul(ops.transpose(x2), ratio)
    expected, _ = conditional_noise(
        patches, scale, noise, conditioning, cg_iterations, cg_tolerance, direct_solve_memory_limit
    )
    if conditioning == "per_example":
        return ops.sum(ops.einsum("bpk,bpf->bkf", patches, upstream) * expected, axis=0)
    return ops.einsum("bpk,bpf->kf", patches, upstream) * expected
