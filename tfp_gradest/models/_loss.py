"""The models' training loss: the estimator's per-example loss, reduced to the scalar `fit`
minimises."""

import functools
import operator

import keras
from keras import ops

from tfp_gradest.models import _tfp


def mean_training_loss(per_example, sample_weight, extra_losses):
    """`mean_b(w_b · loss_b) + Σ extra_losses`, as Keras reduces a weighted loss.

    Args:
      per_example: `[B]` losses (negative bounds on `log p(x_b)`).
      sample_weight: `None` or `[B]` weights from `fit`.
      extra_losses: the model's `self.losses` (e.g. layers' KL terms), added once.
    """
    if sample_weight is not None:
        per_example = per_example * ops.cast(sample_weight, per_example.dtype)
    loss = ops.mean(per_example)
    if extra_losses:
        loss += functools.reduce(operator.add, extra_losses)
    return loss


def step_seed(seed_generator):
    """The estimator's seed for one step: the `SeedGenerator`'s next state, as the backend's
    TFP substrate takes it (an int32 pair on TensorFlow; on JAX the state already is a raw
    `uint32[2]` PRNG key)."""
    seed = seed_generator.next()
    if keras.backend.backend() == "tensorflow":
        seed = ops.cast(seed, "int32")
    return seed


def estimator_training_loss(model, x, sample_weight, target_log_prob_fn=None, loss_scale=None):
    """`model.estimator.loss` on the model's target and surrogate for the batch `x`, reduced
    by `mean_training_loss`: the `compute_loss` of every amortised model here.

    `target_log_prob_fn` (default: `model.target_log_prob_fn(x)`) and `loss_scale` (a
    factor of the per-example loss; default: none) let a model train on another target
    built from the same batch, as `HierarchicalVAE`'s KL warm-up does.

    Reads the model's `estimator`, `target_log_prob_fn(x)`, `surrogate_posterior(x)`,
    `sample_size`, `importance_sample_size`, `seed_generator` (one seed per step) and
    `losses`. The surrogate must be of the Keras backend's TFP substrate (a `TypeError`
    says so otherwise). The per-example loss is in the log-weights' own dtype (float64 per
    step would be slow on GPUs and is not XLA's on TPUs).
    """
    x = ops.convert_to_tensor(x)
    surrogate_posterior = model.surrogate_posterior(x)
    _tfp.check_surrogate(surrogate_posterior, type(model).__name__)
    if target_log_prob_fn is None:
        target_log_prob_fn = model.target_log_prob_fn(x)
    per_example = model.estimator.loss(
        target_log_prob_fn,
        surrogate_posterior,
        model.sample_size,
        model.importance_sample_size,
        seed=step_seed(model.seed_generator),
    )
    if loss_scale is not None:
        per_example = loss_scale * per_example
    return mean_training_loss(per_example, sample_weight, model.losses)
