"""`GradientVarianceMonitor`'s streaming mode: running moments of the gradients the
optimizer is given during `fit`, read and reset at each recording."""

import keras
import numpy as np

from tfp_gradest import _backend
from tfp_gradest._util import keras_private
from tfp_gradest.diagnostics.statistics import moments_from_running

__all__ = ["GradientStream"]


class GradientStream:
    """Keeps running moments of the gradients `model`'s optimizer applies, until `close()`.

    Keras 3 shows a callback no training gradient, so the stream taps
    `Optimizer.apply`, which both Keras trainers call with them
    (`keras_private.OptimizerTap`), and rebuilds the model's train function so that the
    tap is traced into it (and again on `close()`, without it). The moments are kept
    where the backend's train step can keep state (`tfp_gradest._backend`'s
    `StreamingMoments`: TF variables on TensorFlow, the host on JAX, whose train step
    is pure).

    Under a `keras.optimizers.LossScaleOptimizer` (Keras wraps the optimizer in one
    under `mixed_float16`) the stream taps its `inner_optimizer`, which is given the
    unscaled gradients of the steps actually taken: the outer one sees loss-scaled
    gradients, including those of the steps it skips for overflowing, and JAX's train
    step bypasses its `apply`. Under a TensorFlow distribution strategy the gradients
    are summed across replicas first (one extra all-reduce), so the moments are of the
    global-batch gradient.
    """

    def __init__(self, model):
        variables = list(model.trainable_variables)
        if not variables:
            raise ValueError(
                'GradientVarianceMonitor(mode="streaming") needs the model\'s weights before '
                "training starts: build the model first, e.g. call it on one batch."
            )
        self.model = model
        self._accumulator = _backend.current().StreamingMoments(model)
        self._num_variables = len(variables)
        self._dtypes = [v.dtype for v in variables]
        self._index = {id(v): i for i, v in enumerate(variables)}
        self._tap = keras_private.OptimizerTap(_applying_optimizer(model.optimizer), self._add)
        model.make_train_function(force=True)

    def _add(self, grads, trainable_variables):
        if trainable_variables is None:
            # The optimizer's own list: for `fit`, the model's trainable variables (both
            # trainers build the optimizer on them).
            if len(grads) != self._num_variables:
                raise ValueError(
                    'GradientVarianceMonitor(mode="streaming") was given '
                    f"{len(grads)} gradients without their variables, but the model has "
                    f"{self._num_variables} trainable variables; pass `trainable_variables` "
                    "to `optimizer.apply`, or use probe mode."
                )
            indices = list(range(len(grads)))
        else:
            indices = [self._index.get(id(v)) for v in trainable_variables]
        self._accumulator.update(grads, indices)

    def moments(self):
        """Per-variable `tge.diagnostics.GradientMoments` since the last call (or the start);
        then starts again. `num_draws` is the number of optimizer steps taken."""
        count, mean, m2 = self._accumulator.read_and_reset()
        count = int(count)
        return [
            moments_from_running(mu, s, count, np.dtype(dtype).type)
            for mu, s, dtype in zip(mean, m2, self._dtypes)
        ]

    def close(self):
        """Gives the optimizer back its own `apply` and rebuilds the train function."""
        self._tap.remove()
        self.model.make_train_function(force=True)


def _applying_optimizer(optimizer):
    """The optimizer whose `apply` receives the gradients that update the weights, unscaled."""
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer
