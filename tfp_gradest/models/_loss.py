"""The models' training loss: the estimator's per-example loss, reduced to the scalar `fit`
minimises."""

import tensorflow as tf


def mean_training_loss(per_example, sample_weight, extra_losses):
    """`mean_b(w_b · loss_b) + Σ extra_losses`, as Keras reduces a weighted loss.

    Args:
      per_example: `[B]` losses (negative bounds on `log p(x_b)`).
      sample_weight: `None` or `[B]` weights from `fit`.
      extra_losses: the model's `self.losses` (e.g. layers' KL terms), added once.
    """
    if sample_weight is not None:
        per_example = per_example * tf.cast(sample_weight, per_example.dtype)
    loss = tf.reduce_mean(per_example)
    if extra_losses:
        loss += tf.add_n(extra_losses)
    return loss


def estimator_training_loss(model, x, sample_weight):
    """`model.estimator.loss` on the model's target and surrogate for the batch `x`, reduced
    by `mean_training_loss`: the `compute_loss` of every amortised model here.

    Reads the model's `estimator`, `target_log_prob_fn(x)`, `surrogate_posterior(x)`,
    `sample_size`, `importance_sample_size`, `seed_generator` (one seed per step) and
    `losses`. The per-example loss is in the log-weights' own dtype (float64 per step would
    be slow on GPUs and is not XLA's on TPUs).
    """
    x = tf.convert_to_tensor(x)
    seed = tf.cast(model.seed_generator.next(), tf.int32)
    per_example = model.estimator.loss(
        model.target_log_prob_fn(x),
        model.surrogate_posterior(x),
        model.sample_size,
        model.importance_sample_size,
        seed=seed,
    )
    return mean_training_loss(per_example, sample_weight, model.losses)
