"""`KLAnnealing`: a per-epoch factor on the Bayesian layers' KL weights (KL warm-up, beta
annealing)."""

import math
import numbers

import keras
import numpy as np

from tfp_gradest._util import keras_private

__all__ = ["KLAnnealing"]


class KLAnnealing(keras.callbacks.Callback):
    """Sets every Bayesian layer's `kl_weight` to `base · schedule(epoch)` at the start of each
    epoch.

    ```none
    loss_epoch = data loss + schedule(epoch) · Σ_layers kl_weight_layer · KL(q_layer || prior)
    ```

    Starting the KL term near zero and raising it lets the likelihood shape
    the posterior before the prior pulls the scales to it (KL warm-up; Bowman
    et al. 2016, Sønderby et al. 2016). `base` is each layer's `kl_weight`
    when the callback first sees the layer (at the start of the first `fit`),
    so calling `fit` again with the same callback continues the schedule
    instead of compounding it. The layers hold `kl_weight` in a variable read
    by the compiled train step, so the new value takes effect at the next step
    with no retracing, under `jit_compile=True` too. After training, the layers
    keep the last epoch's weight; `get_config()` and `.keras` files record it.

    The factor of the epoch is written to `logs["kl_factor"]`, so it appears
    in `History` like Keras's `learning_rate`.

    Args:
      schedule: callable `epoch -> factor` (0-based epoch index, as Keras
        counts), returning a finite non-negative number.
      layers: the layers to anneal. Default value: `None`, meaning every layer
        of the model (nested models included) that has a `kl_weight`
        (`tge.layers` layers).
      verbose: Python `int`; `1` prints the factor at each epoch. Default
        value: `0`.

    #### Examples

    ```python
    warm_up = tge.callbacks.KLAnnealing(lambda epoch: min(1.0, epoch / 10))
    model.fit(x, y, epochs=30, callbacks=[warm_up])
    ```

    Without the callback, `layer.kl_weight = value` between steps or epochs
    does the same for one layer.

    #### References

    [1] Bowman et al. Generating Sentences from a Continuous Space. 2016.
        https://arxiv.org/abs/1511.06349
    [2] Sønderby et al. Ladder Variational Autoencoders. 2016.
        https://arxiv.org/abs/1602.02282
    """

    def __init__(self, schedule, layers=None, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(
                "`schedule` must be a callable `epoch -> factor`, e.g. "
                f"`lambda epoch: min(1.0, epoch / 10)`. Received: schedule={schedule!r}"
            )
        self.schedule = schedule
        self._layers = None if layers is None else list(layers)
        for layer in self._layers or []:
            if not hasattr(layer, "kl_weight"):
                raise ValueError(
                    "Every layer in `layers` must have a `kl_weight` (a `tge.layers` layer). "
                    f"Received: {layer!r}"
                )
        self.verbose = verbose
        self._base = {}  # id(layer) -> (layer, kl_weight when first seen)
        self._factor = None

    def _annealed_layers(self):
        if self._layers is not None:
            return self._layers
        return [
            layer
            for layer in keras_private.flatten_layers(self.model)
            if hasattr(layer, "kl_weight") and hasattr(layer, "kl_divergence")
        ]

    def on_train_begin(self, logs=None):
        layers = self._annealed_layers()
        if not layers:
            raise ValueError(
                "KLAnnealing found no layer with a `kl_weight` in the model; pass `layers=` "
                "or use `tge.layers` layers."
            )
        for layer in layers:
            self._base.setdefault(id(layer), (layer, layer.kl_weight))

    def on_epoch_begin(self, epoch, logs=None):
        factor = self.schedule(epoch)
        if isinstance(factor, np.ndarray) and factor.shape == ():
            factor = factor.item()
        if not (
            isinstance(factor, numbers.Real)
            and not isinstance(factor, bool)
            and math.isfinite(factor)
            and factor >= 0
        ):
            raise ValueError(
                "KLAnnealing's `schedule` must return a finite non-negative number. "
                f"Received: schedule({epoch})={factor!r}"
            )
        self._factor = float(factor)
        for layer, base in self._base.values():
            layer.kl_weight = base * self._factor
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: KLAnnealing sets the KL factor to {self._factor:.4g}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._factor is not None:
            logs["kl_factor"] = self._factor
