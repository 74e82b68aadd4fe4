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
over-wide one `ρ_j ≫ 1`. `ρ_j` is estimated from fresh draws over all batches,
once. The range `warn_unless_stationary` accepts, and the fits it was chosen
from, are in the gradient re-use guide (docs/guides/reuse.md, "The learning rate").
"""

import warnings

import numpy as np
import tensorflow as tf

__all__ = ["scale_balance", "warn_unless_stationary"]

# Accepted scale balance: a scale within about 3x of its stationary value (ρ ≈ 1/c² for a
# scale c times too small). Chosen from measured fits: see docs/guides/reuse.md.
_BALANCE_RANGE = (0.1, 10.0)


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


def warn_unless_stationary(surrogate, target_log_prob_fn, num_batches, optimizer):
    """Warns if a fitted surrogate diverged or its scales are far from stationary.

    A `RuntimeWarning` naming the optimizer's learning rate when the surrogate's
    variables are not finite or a scale collapsed (`ρ_j < 0.1`), and one
    suggesting more steps or a larger rate when a scale is still far too wide
    (`ρ_j > 10`); nothing otherwise. `ρ` is `scale_balance` from 16 fresh draws
    per batch (seed `[0, 1]`).

    Args:
      surrogate: the fitted affine Gaussian `q`.
      target_log_prob_fn: `(theta [n, D], batch_index) -> [n]`, the batch terms.
      num_batches: Python `int` `N`.
      optimizer: the optimizer of the fit (only its `learning_rate` is read, for
        the message).
    """
    learning_rate = getattr(optimizer, "learning_rate", None)
    try:
        learning_rate = f"{float(learning_rate):.3g}"
    except (TypeError, ValueError):
        learning_rate = repr(learning_rate)  # a schedule: name it as it is
    variables = surrogate.trainable_variables
    if not all(np.all(np.isfinite(v.numpy())) for v in variables):
        warnings.warn(
            "tge.reuse.fit diverged: the surrogate's parameters are not finite. "
            f"Reduce the optimizer's learning rate (learning_rate={learning_rate}).",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    balance = scale_balance(
        surrogate, target_log_prob_fn, int(num_batches), 16, tf.constant([0, 1])
    ).numpy()
    low, high = _BALANCE_RANGE
    if np.all((balance >= low) & (balance <= high)):
        return
    collapsed = not np.all(balance >= low)
    what = (
        "scales collapsed (far narrower than the target's curvature warrants): the fit "
        "diverged and was caught by the scale transform. Reduce the optimizer's learning rate"
        if collapsed
        else "scales are still far wider than the target's curvature warrants: the fit has not "
        "converged. Increase num_steps or the learning rate"
    )
    warnings.warn(
        f"tge.reuse.fit: the surrogate is not at a stationary point of the ELBO; its "
        f"{what} (learning_rate={learning_rate}). Scale balance -C_jj E[d_j log p * eps_j] "
        f"(1 at a stationary point) per coordinate: {np.array2string(balance, precision=3)}.",
        RuntimeWarning,
        stacklevel=3,
    )
