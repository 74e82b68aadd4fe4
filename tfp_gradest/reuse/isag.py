"""I-SAG: importance-sampled stochastic average gradients for minibatched VI (Sakaya &
Klami, 2017)."""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest._util import arguments
from tfp_gradest._util.seeds import sanitize_seed
from tfp_gradest.estimators.base import surrogate_objective
from tfp_gradest.reuse import importance

__all__ = ["ISAG"]


def _positive_int(value, name):
    """`value` (a Python/NumPy int, or a Tensor with a static one) as a Python int >= 1."""
    return arguments.check_static_integer(name, value, minimum=1)


class ISAG:
    """Gradient re-use for minibatched VI with a Gaussian surrogate.

    The data are split into `N` batches and the target into per-batch terms,
    `log p(x, θ) = Σ_b log p_b(θ)` (e.g. `log p(θ)/N + Σ_{n∈b} log p(x_n | θ)`).
    Step `t` visits batch `b = t mod N` and estimates that batch's gradient
    `G_b ≈ ∇_λ E_q[log p_b(θ)]`:

    * with probability `rho`, if the batch was visited before, by **re-using**
      the `M` samples `θ_m`, target gradients `∇_θ log p_b(θ_m)` and densities
      `log q(θ_m | λ₀)` stored at the last fresh visit, re-weighted to the
      current `λ` (`weighting`, see `tfp_gradest.reuse.importance`): no target
      evaluation at all;
    * otherwise with `M` fresh draws `θ_m = μ + C ε_m` (stored for next time).

    The step's ascent direction is the **SAG** average of the stored batch
    gradients, the others decayed by `alpha` at every step (Schmidt et al.):

    ```none
    a_b ← 1,  a_{b'} ← α a_{b'} (b' ≠ b)
    d = N Σ_b a_b G_b / Σ_b a_b  +  ∇_λ H[q(λ)]            (entropy: analytic)
    ```

    so `alpha=0, rho=0` is plain minibatch SGD (`d = N G_b + ∇H`, the unbiased
    minibatch estimate) and `alpha=1, rho=0` is SAG (before every batch has
    been seen, the average is over the batches seen so far). All state lives
    in `tf.Variable`s (`build`), and a step compiles with XLA.

    Args:
      rho: Python `float` in [0, 1], probability of re-using a batch's samples.
        Default value: `0.5`.
      alpha: Python `float` in [0, 1], SAG decay of the other batches' gradients.
        Default value: `1.0`.
      weighting: `"per_element"` (default), `"global"`, `"importance"` or `"none"`.
      max_log_ratio: Python `float` or `None`. Stored samples are re-used only
        while `max_m |log q(θ_m | λ) - log q(θ_m | λ₀)| ≤ max_log_ratio`;
        staler ones are redrawn. Early in a fit `q` moves by many of its own
        widths between visits, importance weights degenerate, and re-using
        such samples can make a full-rank scale diverge; this keeps the
        weights within `[e^-τ, e^τ]`. `None` never refuses. Default value: `2.0`.
      seed: seed used when the caller gives none (per step: folded with the step).
        Default value: `0`.

    #### Examples

    `tge.reuse.fit(batch_log_prob_fn, q, optimizer, num_steps, num_batches,
    gradient_reuse=tge.reuse.ISAG(...))` runs the whole fit (its docstring has a
    complete example). Driving the steps yourself:

    ```python
    isag = tge.reuse.ISAG(rho=0.5, alpha=0.9).build(q, num_batches, sample_size=4)
    optimizer = keras.optimizers.SGD(1e-3)
    for step in range(num_steps):
        with tf.GradientTape() as tape:
            loss = isag.loss(batch_log_prob_fn)  # visits batch `step mod num_batches`
        optimizer.apply_gradients(zip(tape.gradient(loss, isag.variables), isag.variables))
    print(int(isag.num_reused.numpy()), "steps re-used stored gradients")
    ```

    #### References

    [1] Sakaya & Klami. Importance Sampled Stochastic Optimization for
        Variational Inference. UAI 2017 (poster: "Re-using gradient
        computations in automatic variational inference").
    [2] Schmidt, Le Roux & Bach. Minimizing finite sums with the stochastic
        average gradient. 2013. https://arxiv.org/abs/1309.2388
    """

    def __init__(self, rho=0.5, alpha=1.0, weighting="per_element", max_log_ratio=2.0, seed=0):
        rho = arguments.check_real(
            "rho", rho, 0.0, 1.0, reason="the probability of re-using a batch's samples"
        )
        alpha = arguments.check_real("alpha", alpha, 0.0, 1.0)
        if weighting not in importance.WEIGHTINGS:
            raise ValueError(
                f"`weighting` must be one of {importance.WEIGHTINGS}. "
                f"Received: weighting={weighting!r}"
            )
        if max_log_ratio is not None:
            max_log_ratio = arguments.check_real(
                "max_log_ratio",
                max_log_ratio,
                low=0.0,
                low_inclusive=False,
                finite=False,
                hint="Pass a positive number, or None for no cap.",
            )
        self.rho, self.alpha, self.weighting = float(rho), float(alpha), weighting
        self.max_log_ratio = None if max_log_ratio is None else float(max_log_ratio)
        sanitize_seed(seed)  # a bad seed fails here, naming `seed`, not at the first step
        self.seed = seed
        self.built = False

    def __repr__(self):
        return (
            f"ISAG(rho={self.rho}, alpha={self.alpha}, weighting={self.weighting!r}, "
            f"max_log_ratio={self.max_log_ratio}, seed={self.seed!r})"
        )

    # --- state ---------------------------------------------------------------------------

    def build(self, surrogate_posterior, num_batches, sample_size):
        """Creates the memory (eagerly, outside any `tf.function`) for this surrogate."""
        importance.check_gaussian(surrogate_posterior)
        self.surrogate = surrogate_posterior
        self.num_batches = _positive_int(num_batches, "num_batches")
        self.sample_size = _positive_int(sample_size, "sample_size")
        self.variables = list(surrogate_posterior.trainable_variables)
        if not self.variables:
            raise ValueError("`surrogate_posterior` has no trainable variables to fit.")
        dtype = surrogate_posterior.dtype
        n, m, d = self.num_batches, self.sample_size, surrogate_posterior.event_shape[0]

        def state(shape, name, value=0, var_dtype=dtype):
            return tf.Variable(
                tf.fill(shape, tf.cast(value, var_dtype)), trainable=False, name=name
            )

        self.theta = state([n, m, d], "isag_theta")
        self.target_grads = state([n, m, d], "isag_target_grads")
        self.log_q0 = state([n, m], "isag_log_q0")
        self.marginal_log_q0 = state([n, m, d], "isag_marginal_log_q0")
        self.log_p = state([n, m], "isag_log_p")
        self.visited = state([n], "isag_visited", False, tf.bool)
        self.batch_grads = [
            state([n, *v.shape], "isag_batch_grads", 0, v.dtype) for v in self.variables
        ]
        self.batch_weights = state([n], "isag_batch_weights")
        self.step = state([], "isag_step", 0, tf.int64)
        self.num_reused = state([], "isag_num_reused", 0, tf.int64)
        self.built = True
        return self

    def reset(self):
        """Forgets every stored sample and gradient (e.g. before a fit from a new
        initialisation)."""
        state = [self.theta, self.target_grads, self.log_q0, self.marginal_log_q0, self.log_p]
        for var in (
            state
            + self.batch_grads
            + [self.batch_weights, self.visited, self.step, self.num_reused]
        ):
            var.assign(tf.zeros_like(var))

    # --- one step ------------------------------------------------------------------------

    def loss(self, target_log_prob_fn, seed=None):
        """The step's surrogate loss: value `-(N Σ_m w̄_m log p_b(θ_m) + H[q])`, gradient `-d`.

        `w̄_m` is `1/M` for fresh draws and, for re-used ones, the self-normalised
        ratio `softmax_m(log q(θ_m | λ) - log q(θ_m | λ₀))` whatever `weighting`
        the gradient uses, so the value is always a weighted mean of stored
        log densities (a consistent estimate of the batch's ELBO term).

        Advances the state (batch index, memories). Call it once per
        optimiser step, inside the step's `GradientTape`, e.g. as the
        `loss_fn` of `tfp.math.minimize`.

        Args:
          target_log_prob_fn: `(theta [M, D], batch_index) -> [M]`, the batch's
            term `log p_b(θ)`.
          seed: stateless seed for this step. Default value: `None` (from `seed`
            given at construction, folded with the step count).
        """
        if not self.built:
            raise ValueError("Call `build(surrogate_posterior, num_batches, sample_size)` first.")
        q, n = self.surrogate, self.num_batches
        step = self.step.read_value()
        batch = tf.cast(step % n, tf.int32)
        if seed is None:
            seed = tf.random.experimental.stateless_fold_in(
                sanitize_seed(self.seed), tf.cast(step, tf.int32)
            )
        coin_seed, noise_seed = tfp.random.split_seed(sanitize_seed(seed), 2)
        reuse = tf.logical_and(
            self.visited[batch],
            tf.random.stateless_uniform([], coin_seed, dtype=q.dtype) < self.rho,
        )
        if self.max_log_ratio is not None:
            # Cheap (no target evaluation): are the stored samples still typical under q(λ)?
            log_ratio = q.log_prob(self.theta[batch]) - self.log_q0[batch]
            reuse = tf.logical_and(
                reuse, tf.reduce_max(tf.abs(log_ratio)) <= tf.cast(self.max_log_ratio, q.dtype)
            )
        theta, target_grads, log_q0, marginal_log_q0, log_p = tf.cond(
            reuse,
            lambda: self._stored(batch),
            lambda: self._fresh(target_log_prob_fn, batch, noise_seed),
        )
        weights = tf.cond(  # [M, D]; fresh samples are plain Monte Carlo, 1/M each
            reuse,
            # `tf.identity`: TFP's bijectors cache `log_prob`'s inverse by input tensor, and a
            # value cached inside this branch cannot be read outside it (the reported value's
            # `q.log_prob(theta)` below would fail to trace with "out of scope").
            lambda: tf.broadcast_to(
                importance.reuse_weights(
                    q, tf.identity(theta), log_q0, marginal_log_q0, self.weighting
                ),
                tf.shape(theta),
            ),
            lambda: tf.fill(tf.shape(theta), 1.0 / tf.cast(self.sample_size, q.dtype)),
        )
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(self.variables)
            objective = importance.linearized_objective(q, theta, target_grads, weights)
        grads = tape.gradient(objective, self.variables)
        updates = self._remember(batch, theta, target_grads, log_q0, marginal_log_q0, log_p, grads)
        updates.append(self.num_reused.assign_add(tf.cast(reuse, tf.int64)))
        with tf.control_dependencies(updates):
            direction = self._sag_direction()
            # The reported value uses self-normalised weights whatever `weighting` the
            # gradient uses: a weighted mean of the stored log p_b(θ_m), consistent for
            # E_q(λ)[log p_b]. The unbiased "importance" weights do not sum to 1, and
            # their heavy tail made the trace swing far from the fresh -ELBO (see
            # test_reported_loss_does_not_depend_on_the_gradient_weighting).
            value_weights = tf.where(
                reuse,
                tf.nn.softmax(q.log_prob(theta) - log_q0),
                tf.fill(tf.shape(log_p), 1.0 / tf.cast(self.sample_size, q.dtype)),
            )
            data_value = tf.cast(n, q.dtype) * tf.reduce_sum(value_weights * log_p)
            linear = tf.add_n(
                [tf.reduce_sum(tf.stop_gradient(g) * v) for g, v in zip(direction, self.variables)]
            )
            # Value: the ELBO estimate; gradient: the SAG direction plus ∇H (analytic).
            entropy = q.entropy()
            value = surrogate_objective(data_value + entropy, linear + entropy)
            with tf.control_dependencies([value]):
                increment = self.step.assign_add(1)
            with tf.control_dependencies([increment]):
                return -tf.identity(value)

    def _fresh(self, target_log_prob_fn, batch, seed):
        q = self.surrogate
        noise = tf.random.stateless_normal(
            [self.sample_size, q.event_shape[0]], seed, dtype=q.dtype, alg="philox"
        )
        theta = tf.stop_gradient(q.loc + q.scale.matvec(noise))
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(theta)
            log_p = target_log_prob_fn(theta, batch)
        target_grads = tape.gradient(log_p, theta)
        return (
            theta,
            target_grads,
            tf.stop_gradient(q.log_prob(theta)),
            tf.stop_gradient(importance.marginal_log_prob(q, theta)),
            tf.stop_gradient(log_p),
        )

    def _stored(self, batch):
        return (
            self.theta[batch],
            self.target_grads[batch],
            self.log_q0[batch],
            self.marginal_log_q0[batch],
            self.log_p[batch],
        )

    def _remember(self, batch, theta, target_grads, log_q0, marginal_log_q0, log_p, grads):
        index = [[batch]]
        updates = [
            var.scatter_nd_update(index, value[tf.newaxis])
            for var, value in [
                (self.theta, theta),
                (self.target_grads, target_grads),
                (self.log_q0, log_q0),
                (self.marginal_log_q0, marginal_log_q0),
                (self.log_p, log_p),
                (self.visited, tf.constant(True)),
            ]
        ]
        updates += [
            m.scatter_nd_update(index, g[tf.newaxis]) for m, g in zip(self.batch_grads, grads)
        ]
        decayed = self.alpha * self.batch_weights
        updates.append(
            self.batch_weights.assign(
                tf.tensor_scatter_nd_update(decayed, index, tf.ones([1], decayed.dtype))
            )
        )
        return updates

    def _sag_direction(self):
        weights = self.batch_weights.read_value()
        scale = tf.cast(self.num_batches, weights.dtype) / tf.reduce_sum(weights)
        return [
            scale * tf.tensordot(tf.cast(weights, m.dtype), m.read_value(), axes=1)
            for m in self.batch_grads
        ]
