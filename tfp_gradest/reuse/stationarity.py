"""After a minibatched fit: are the surrogate's scales where the ELBO puts them?

A learning rate too large for the target's curvature does not always end in
NaN. With I-SAG's averaged directions, or a softplus scale that saturates, a fit
can settle with scales collapsed to ~0 and locations off by many posterior
widths while the loss trace looks flat: its Monte Carlo noise (hundreds of nats
on a large data set) hides a gap of tens. The loss cannot see this; the scales'
stationarity condition can. For `θ = μ + C ε`, the ELBO's derivative in a
diagonal entry of `C` vanishes when

```none
∂/∂C_jj [E_q log p(θ) + H(q)] = E[g_j ε_j] + 1/C_jj = 0,   g = ∇_θ log p(θ)
ρ_j := -C_jj E[g_j ε_j] = 1                      ("scale balance")
```

For a locally quadratic target, `ρ_j ≈ C_jj² h_j` (`h_j` the curvature), so a
scale collapsed by a factor `c` below its balance has `ρ_j ≈ 1/c²`, and an
over-wide one `ρ_j ≫ 1`. Measured on Bayesian linear regressions (32-4,000
points, 4-40 batches, SGD with several learning rates, with and without
re-use): converged fits gave `ρ` in 0.7-3.1 (constant-step jitter), the
collapsed one `ρ ≤ 2e-7` in three of five coordinates, diverged ones negative
or non-finite. `ρ_j` is estimated from fresh draws over all batches, once.
"""

import tensorflow as tf

__all__ = ["scale_balance"]


def scale_balance(surrogate, target_log_prob_fn, num_batches, num_draws, seed):
    """`ρ_j = -C_jj E_q[∂_j log p(θ) ε_j]` for each coordinate `j` (1 at a stationary point).

    Args:
      surrogate: the affine Gaussian `q` (as for `tge.reuse.ISAG`).
      target_log_prob_fn: `(theta [n, D], batch_index) -> [n]`, the batch terms.
      num_batches: Python `int` `N`.
      num_draws: Python `int`, fresh draws per batch.
      seed: stateless seed.

    Returns:
      A `[D]` Tensor.
    """
    dim = surrogate.event_shape[0]
    noise = tf.random.stateless_normal(
        [num_batches, num_draws, dim], seed, dtype=surrogate.dtype, alg="philox"
    )
    total = tf.zeros([dim], surrogate.dtype)
    for batch in range(num_batches):
        theta = tf.stop_gradient(surrogate.loc + surrogate.scale.matvec(noise[batch]))
        with tf.GradientTape() as tape:
            tape.watch(theta)
            log_p = target_log_prob_fn(theta, batch)
        total += tf.reduce_mean(tape.gradient(log_p, theta) * noise[batch], axis=0)
    return -surrogate.scale.diag_part() * total
