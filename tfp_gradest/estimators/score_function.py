"""The score-function (REINFORCE) ELBO estimator, with baselines."""

import importlib.util

from tfp_gradest import _substrate
from tfp_gradest._util import arguments, structure
from tfp_gradest._util import log_weights as lw
from tfp_gradest.estimators.base import GradientEstimator, register
from tfp_gradest.estimators.importance_weights import leave_one_out_mean

__all__ = ["ScoreFunction"]

_BASELINES = (None, "moving_average", "leave_one_out")
_PART_MODES = ("score", "pathwise")


@register("score_function")
class ScoreFunction(GradientEstimator):
    """The score-function (REINFORCE / likelihood-ratio) gradient of the ELBO.

    With `f(z) = -D(log p_θ(x, z) - log q_φ(z))` (`f = log w` for the reverse KL)
    and a baseline `b` independent of the current sample:

    ```none
    surrogate = stop(f(z̄) - b) · log q_φ(z̄) + f(z̄)
    ∇ E_q[f] ≈ (1/S) Σ_s [(f(z_s) - b) ∇_φ log q_φ(z_s) + ∇ f(z_s)]
    ```

    Unbiased whenever `E_q[b ∇ log q] = 0`, i.e. `b` does not depend on `z_s`.
    Works for surrogates that cannot be reparameterised (Bernoulli,
    Categorical, ...). Baselines:

    * `None`: `b = 0`.
    * `"moving_average"`: an exponential moving average (bias-corrected, as in
      Adam) of the mean of `f` over earlier calls, with `decay`. It is state: a
      `tf.Variable` updated on every call of `loss`, so TensorFlow only: on JAX,
      whose loss must be a pure function, it is refused (a `ValueError` saying
      to use `baseline="leave_one_out"`, which needs no state, or `None`).
    * `"leave_one_out"`: `b_s = mean_{s' ≠ s} f(z_{s'})` over the `S` draws
      (needs `sample_size >= 2`; Kool et al. 2019, "Buy 4 REINFORCE samples").
      Draws of zero target density (`f = -inf`) are left out of the others'
      baselines, so the estimator on the other draws is the leave-one-out one
      over the draws that have density.

    Zero density: as with every estimator, a draw with `f = -inf` makes the
    loss `+inf` and contributes no gradient; so does any draw whose advantage
    `f - b` is infinite (there is no finite score term to give it).

    Mixed surrogates. With `reparameterized_parts="pathwise"`, a joint
    distribution mixing reparameterised (e.g. Normal) and non-reparameterised
    (e.g. Bernoulli) parts gets pathwise gradients through the former and the
    score function only for the latter:

    ```none
    surrogate = stop(f(z) - b) · Σ_{j not reparam.} log q_φ(z_j | parents) + f(z)
    ```

    with `z` live through the reparameterised parts. This is the gradient of
    `E[f]` written as an outer pathwise expectation over the continuous parts
    and an inner score-function expectation over the discrete ones. For a
    fully reparameterised surrogate that mode is the plain reparameterisation
    estimator; the default `"score"` treats every part by the score function.

    Args:
      baseline: `None`, `"moving_average"` or `"leave_one_out"`.
        Default value: `None`.
      reparameterized_parts: `"score"` or `"pathwise"`. Default value: `"score"`.
      decay: Python `float` in `[0, 1)`, the moving average's decay.
        Default value: `0.9`.

    #### References

    [1] Williams. Simple statistical gradient-following algorithms for
        connectionist reinforcement learning. Machine Learning, 1992.
    [2] Ranganath, Gerrish & Blei. Black Box Variational Inference. AISTATS 2014.
        https://arxiv.org/abs/1401.0118
    """

    requires_reparameterization = False
    supports_discrepancy_fn = True
    max_importance_sample_size = 1

    def __init__(self, baseline=None, reparameterized_parts="score", decay=0.9):
        if not (baseline is None or isinstance(baseline, str)) or baseline not in _BASELINES:
            raise ValueError(
                f"`baseline` must be one of {_BASELINES}. Received: baseline={baseline!r}"
            )
        if not isinstance(reparameterized_parts, str) or reparameterized_parts not in _PART_MODES:
            raise ValueError(
                f"`reparameterized_parts` must be one of {_PART_MODES}. "
                f"Received: reparameterized_parts={reparameterized_parts!r}"
            )
        self._decay = arguments.check_real("decay", decay, 0.0, 1.0, high_inclusive=False)
        self._baseline = baseline
        self._reparameterized_parts = reparameterized_parts
        # Flags decided by the arguments (see `GradientEstimator`).
        self.min_sample_size = 2 if baseline == "leave_one_out" else 1
        self.data_path = (
            "pathwise_log_weights" if reparameterized_parts == "pathwise" else "log_weight_terms"
        )
        if baseline == "moving_average" and importlib.util.find_spec("tensorflow") is not None:
            import tensorflow as tf

            # Kept in float64 whatever the model's dtype; cast on use.
            self._average = tf.Variable(
                0.0, dtype=tf.float64, trainable=False, name="baseline_average"
            )
            self._decay_power = tf.Variable(
                1.0, dtype=tf.float64, trainable=False, name="baseline_decay_power"
            )

    @property
    def baseline(self):
        """`None`, `"moving_average"` or `"leave_one_out"`."""
        return self._baseline

    @property
    def reparameterized_parts(self):
        """`"score"` or `"pathwise"`: how the reparameterised parts of the surrogate are
        differentiated."""
        return self._reparameterized_parts

    @property
    def decay(self):
        """Python `float` in `[0, 1)`, the moving-average baseline's decay."""
        return self._decay

    def _validate_substrate(self, substrate):
        if self._baseline == "moving_average" and substrate != "tensorflow":
            raise ValueError(
                "ScoreFunction(baseline='moving_average') keeps its average in a "
                "TensorFlow variable, updated by every call of `loss`; a loss on JAX must "
                "be a pure function, so it cannot keep that state. Use "
                "ScoreFunction(baseline='leave_one_out') with sample_size >= 2 (a baseline "
                "from the other draws of the same call, no state) or baseline=None. "
                f"Received: baseline='moving_average' with a {substrate} "
                "surrogate_posterior"
            )

    def _objective(self, inputs):
        ops = inputs.ops
        if self.data_path == "pathwise_log_weights":
            pathwise = lw.pathwise_log_weights(inputs)
            log_weights = pathwise.log_weights[:, 0]
            score_lp = self._score_log_prob(inputs.surrogate_posterior, pathwise.samples)
        else:
            terms = lw.log_weight_terms(inputs, with_path=False)
            log_weights, score_lp = terms.log_weights[:, 0], terms.surrogate_log_prob[:, 0]
        f = -inputs.discrepancy_fn(log_weights)
        advantage = ops.stop_gradient(f - self._baseline_value(f))
        # An infinite advantage (a sample, or a baseline, of zero target density)
        # has no finite score term: the objective is then -inf and the loss
        # +inf, and the term is dropped so the gradient stays finite. So is that of a
        # sample of zero density whose baseline is -inf too (-inf - -inf = NaN). A NaN
        # from the target passes.
        dropped = ops.is_inf(advantage) | ops.equal(ops.stop_gradient(f), -float("inf"))
        advantage = ops.where(dropped, ops.zeros_like(advantage), advantage)
        return f, advantage * score_lp + f

    def _score_log_prob(self, surrogate_posterior, samples):
        """`Σ_j log q(z_j | parents)` over the non-reparameterised parts only."""
        ops = _substrate.of(surrogate_posterior)
        if not ops.is_nested(surrogate_posterior.reparameterization_type):
            if structure.is_fully_reparameterized(surrogate_posterior):
                return ops.zeros_like(surrogate_posterior.log_prob(value=samples))
            return surrogate_posterior.log_prob(value=samples)
        parts = ops.flatten(surrogate_posterior.log_prob_parts(value=samples))
        types = ops.flatten(surrogate_posterior.reparameterization_type)
        fully = ops.tfp.distributions.FULLY_REPARAMETERIZED
        chosen = [lp for lp, t in zip(parts, types) if t != fully]
        return ops.add_n(chosen) if chosen else ops.zeros_like(parts[0])

    def _baseline_value(self, f):
        ops = _substrate.of(f)
        if self._baseline is None:
            return ops.zeros_like(f)
        if self._baseline == "leave_one_out":
            # The mean over the other samples *with density*: a sample of zero density
            # (f = -inf) has weight zero, so it enters no other sample's baseline (with it,
            # every other baseline would be -inf, every other advantage +inf, and every score
            # term dropped). A sample with no other such sample gets a -inf baseline, an
            # infinite advantage, and no score term (see `_objective`).
            return leave_one_out_mean(f, axis=0, skip_neg_inf=True)
        # Moving average (TensorFlow only, see `_validate_substrate`): the baseline uses
        # earlier calls only, then absorbs this one.
        import tensorflow as tf

        previous = tf.math.divide_no_nan(self._average, 1.0 - self._decay_power)
        mean_f = tf.cast(tf.reduce_mean(tf.stop_gradient(f)), tf.float64)
        # A non-finite mean (a zero-density sample) would poison every later call: skip it.
        finite = tf.math.is_finite(mean_f)
        decay = tf.where(finite, tf.constant(self._decay, tf.float64), 1.0)
        mean_f = tf.where(finite, mean_f, 0.0)
        with tf.control_dependencies([previous]):
            update = tf.group(
                self._average.assign(decay * self._average + (1.0 - decay) * mean_f),
                self._decay_power.assign(self._decay_power * decay),
            )
        with tf.control_dependencies([update]):
            return tf.cast(tf.identity(previous), f.dtype) * tf.ones_like(f)
