"""The one module that relies on Keras internals: what Keras 3 does but does not document.

Keras 3 has no public API for three things the callbacks need. Each is wrapped here,
and `tests/test_keras_private.py` checks every assumption against the installed Keras,
failing with the Keras version and this module's name when a release changes one. The
style test (`tests/test_style.py`) refuses Keras-private attributes anywhere else in the
package.

* `flatten_layers(model)`: every layer nested in a model. `Model.layers` lists only the
  direct children; Keras walks the tree with the private `Layer._flatten_layers`.
* `seed_state_variables(model)`: the state variables of a model's
  `keras.random.SeedGenerator`s. Layers keep their generators in a private list; the
  state variables are found in `model.non_trainable_variables` by the name Keras gives
  them, `SEED_STATE_NAME`.
* `OptimizerTap(optimizer, watch)`: the gradients of each training step. Callbacks are
  given only `logs`, and optimizers have no gradient hook; both Keras trainers hand the
  gradients to `Optimizer.apply(grads, trainable_variables=None)`
  (`apply_gradients` on TensorFlow, `stateless_apply` on JAX both call it), so the tap
  sets an instance attribute `optimizer.apply` that shows them to `watch` and calls the
  class's method, until `remove()`.
"""

import keras

__all__ = ["SEED_STATE_NAME", "OptimizerTap", "flatten_layers", "seed_state_variables"]

# The name Keras gives the state variable of every `keras.random.SeedGenerator`.
SEED_STATE_NAME = "seed_generator_state"


def unsupported(what):
    """A `RuntimeError` saying that the installed Keras no longer does `what`."""
    return RuntimeError(
        f"tfp_gradest relies on Keras doing {what}, which Keras {keras.__version__} does not. "
        "Please report this with your Keras version; tfp_gradest/_util/keras_private.py is "
        "the one place to update."
    )


def flatten_layers(model):
    """Every layer nested in `model` (not `model` itself), depth first, each once."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        raise unsupported("`Layer._flatten_layers(include_self, recursive)`")
    return list(flatten(include_self=False, recursive=True))


def seed_state_variables(model):
    """The state variables of `model`'s `keras.random.SeedGenerator`s, in
    `model.non_trainable_variables` order (Keras names each `"seed_generator_state"`)."""
    return [v for v in model.non_trainable_variables if v.name == SEED_STATE_NAME]


class OptimizerTap:
    """Shows `watch(grads, trainable_variables)` every gradient list given to
    `optimizer.apply`, before the optimizer applies it, until `remove()`.

    `grads` is a list; `trainable_variables` is `None` when the caller lets the
    optimizer use its own variables (Keras's JAX trainer does). The train function is
    traced with the tap in place, so `watch` runs at trace time and what it adds to the
    step is compiled into it: rebuild the model's train function after tapping and after
    `remove()` (`model.make_train_function(force=True)`).
    """

    def __init__(self, optimizer, watch):
        self.optimizer = optimizer
        self._watch = watch
        self._had_own_apply = "apply" in vars(optimizer)
        self._original_apply = original = optimizer.apply

        def apply(grads, trainable_variables=None):
            grads = list(grads)
            if self._watch is not None:  # None once removed (see `remove`)
                self._watch(grads, trainable_variables)
            return original(grads, trainable_variables)

        apply.tap = self
        self._apply = optimizer.apply = apply

    def remove(self):
        """Stops watching, and gives the optimizer back its own `apply`.

        Taps may be removed in any order (two monitors on one model): a tap another was
        installed over stops watching and stays in that one's chain until it is removed,
        which then skips every removed tap below it.
        """
        self._watch = None
        if vars(self.optimizer).get("apply") is not self._apply:
            return  # a later tap wraps this one and unwinds past it when removed
        tap = self
        while True:
            had_own_apply, below = tap._had_own_apply, tap._original_apply
            below_tap = getattr(below, "tap", None)
            if not (isinstance(below_tap, OptimizerTap) and below_tap._watch is None):
                break
            tap = below_tap  # removed already: skip it too
        if had_own_apply:
            self.optimizer.apply = below
        else:
            del self.optimizer.apply  # back to the class's method
