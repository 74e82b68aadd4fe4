"""`E[ε | h]` for `β = μ + σ ⊙ ε` seen through a linear map, and the R2-G2 scale gradient.

For one filter `f` and the pre-activations `h = P β_f` it generates (the rows
`P` being one example's patches, or the whole batch's), Gaussian conditioning
of `ε ~ N(0, I)` on the linear observation `h - P μ_f = P diag(σ_f) ε` gives

```none
E[ε | h] = σ ⊙ Pᵀ u,     (P diag(σ²) Pᵀ) u = h - P μ
```

the minimum-norm least-squares solution of `P diag(σ) e = h - P μ` (DESIGN §4;
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

import warnings

import tensorflow as tf

from tfp_gradest.r2g2.conjugate_gradient import conjugate_gradient

__all__ = [
    "CONDITIONINGS",
    "DEFAULT_PER_EXAMPLE_MEMORY_LIMIT",
    "conditional_noise",
    "fit_to_memory",
    "scale_gradient",
    "solve_is_skipped",
]

CONDITIONINGS = ("per_example", "whole_batch")

# Per-example conditioning's largest intermediate, `B × k × F` numbers, above which
# we fall back to whole-batch conditioning (a few times this is live at once).
DEFAULT_PER_EXAMPLE_MEMORY_LIMIT = 2**28


def fit_to_memory(conditioning, patches_shape, num_filters, dtype, memory_limit):
    """The conditioning to use: `"whole_batch"` if per-example products would exceed `memory_limit` bytes.

    Decided from static shapes at trace time; with an unknown batch size, or
    `memory_limit=None`, the requested conditioning is kept. Both
    conditionings give unbiased gradients, so the fallback only trades some
    variance reduction for memory; it warns so that it is never silent.
    """
    batch, positions, weights = patches_shape
    if conditioning != "per_example" or positions == 1 or memory_limit is None or batch is None:
        return conditioning
    needed = batch * weights * num_filters * tf.as_dtype(dtype).size
    if needed <= memory_limit:
        return conditioning
    warnings.warn(
        f"R2-G2: per-example conditioning would hold {needed / 2**20:.0f} MiB "
        f"(batch {batch} × {weights} weights × {num_filters} filters), over "
        f"per_example_memory_limit={memory_limit}; using whole-batch conditioning "
        "(also unbiased, less variance reduction). Raise the limit or pass "
        'conditioning="whole_batch" to silence this.',
        stacklevel=2,
    )
    return "whole_batch"


def solve_is_skipped(conditioning, batch_size, num_positions, num_weights):
    """True when the projection is the identity (rows >= weights), so R2-G2 == RT."""
    rows = num_positions if conditioning == "per_example" else batch_size * num_positions
    return rows >= num_weights


def _residuals(patches, scale, noise):
    """`h - P μ = P (σ ⊙ ε)`: `[B, P, F]`."""
    return tf.einsum("bpk,kf->bpf", patches, scale * noise)


def conditional_noise(
    patches, scale, noise, conditioning="per_example", cg_iterations=50, cg_tolerance=1e-6
):
    """`E[ε | h]` and the solver's relative residual (for diagnostics and tests).

    Args:
      patches: `[B, P, k]`.
      scale, noise: `[k, F]`.
      conditioning: `"per_example"` or `"whole_batch"`.
      cg_iterations: Python `int`, static iteration budget.
      cg_tolerance: Python `float`, relative residual at which a system stops.

    Returns:
      expected_noise: `[B, k, F]` per example, or `[k, F]` for the whole batch.
      relative_residual: the largest `||r|| / ||h - Pμ||` over the systems solved
        (0 when the system is diagonal or the solve is skipped).
    """
    batch, positions, weights = patches.shape
    zero = tf.zeros([], scale.dtype)
    if solve_is_skipped(conditioning, batch or 0, positions, weights):
        return (
            noise
            if conditioning == "whole_batch"
            else tf.broadcast_to(noise, [tf.shape(patches)[0], *noise.shape])
        ), zero
    variance = tf.square(scale)
    rhs = _residuals(patches, scale, noise)
    if conditioning == "per_example":
        if positions == 1:
            # Scalar systems: u = (h - Pμ) / (P² σ²), element-wise.
            u = tf.math.divide_no_nan(rhs, tf.einsum("bpk,kf->bpf", tf.square(patches), variance))
            return scale * tf.einsum("bpk,bpf->bkf", patches, u), zero

        def matvec(v):
            return tf.einsum(
                "bpk,bkf->bpf", patches, variance * tf.einsum("bpk,bpf->bkf", patches, v)
            )

        result = conjugate_gradient(matvec, rhs, [1], cg_iterations, cg_tolerance)
        return scale * tf.einsum("bpk,bpf->bkf", patches, result.solution), tf.reduce_max(
            result.relative_residual
        )

    def matvec(v):
        return tf.einsum("bpk,kf->bpf", patches, variance * tf.einsum("bpk,bpf->kf", patches, v))

    result = conjugate_gradient(matvec, rhs, [0, 1], cg_iterations, cg_tolerance)
    return scale * tf.einsum("bpk,bpf->kf", patches, result.solution), tf.reduce_max(
        result.relative_residual
    )


def scale_gradient(
    patches, scale, noise, upstream, conditioning="per_example", cg_iterations=50, cg_tolerance=1e-6
):
    """R2-G2 gradient w.r.t. `σ`: `Σ_b (P_bᵀ g_b) ⊙ E[ε | h_b]` (per example) or `(Pᵀ G) ⊙ E[ε | h]`.

    `upstream` is `g = ∂f/∂h`, `[B, P, F]`. Returns `[k, F]`.
    """
    if conditioning == "per_example" and patches.shape[1] == 1:
        # Dense closed form, two matmuls like the ordinary backward.
        x = patches[:, 0, :]
        x2 = tf.square(x)
        ratio = tf.math.divide_no_nan(
            upstream[:, 0, :] * tf.matmul(x, scale * noise), tf.matmul(x2, tf.square(scale))
        )
        return scale * tf.matmul(x2, ratio, transpose_a=True)
    expected, _ = conditional_noise(
        patches, scale, noise, conditioning, cg_iterations, cg_tolerance
    )
    if conditioning == "per_example":
        return tf.reduce_sum(tf.einsum("bpk,bpf->bkf", patches, upstream) * expected, axis=0)
    return tf.einsum("bpk,bpf->kf", patches, upstream) * expected
