"""The one reduction every model here uses: per-example losses -> the scalar `fit` minimises."""

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
