"""Every assumption `tfp_gradest/_util/keras_private.py` makes about Keras internals, checked
against the installed Keras: when a Keras release changes one, these fail with the Keras
version and the module to update (on TensorFlow and, marked `backends`, on JAX)."""

import inspect

import keras
import numpy as np
import pytest

from tfp_gradest._util import keras_private

pytestmark = pytest.mark.backends


def _changed(what):
    return (
        f"Keras {keras.__version__} changed {what}: update tfp_gradest/_util/keras_private.py "
        "(the one module that relies on it)."
    )


class _Holder(keras.layers.Layer):
    """A plain layer holding a sublayer and two seed generators as attributes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(2, name="held")
        self.first = keras.random.SeedGenerator(1)
        self.second = keras.random.SeedGenerator(2)

    def call(self, x):
        noise = keras.random.normal(keras.ops.shape(x), seed=self.first)
        return self.inner(x + noise + keras.random.normal((), seed=self.second))


def _nested_model():
    inner = keras.Sequential([keras.Input((3,)), _Holder(name="holder")], name="inner")
    noise = keras.layers.GaussianNoise(0.1, seed=3, name="noise")
    model = keras.Sequential([keras.Input((3,)), inner, noise], name="outer")
    return model, inner, noise


def test_flatten_layers_finds_every_nested_layer_once():
    model, inner, noise = _nested_model()
    holder = inner.layers[0]
    found = keras_private.flatten_layers(model)
    names = sorted(layer.name for layer in found if not isinstance(layer, keras.layers.InputLayer))
    assert names == ["held", "holder", "inner", "noise"], _changed(
        f"`Layer._flatten_layers` (it returned {[layer.name for layer in found]})"
    )
    assert len({id(layer) for layer in found}) == len(found), _changed("_flatten_layers' dedup")
    assert holder.inner in found and model not in found, _changed("`Layer._flatten_layers`")


def test_flatten_layers_names_the_keras_version_when_keras_lacks_it():
    with pytest.raises(RuntimeError, match=f"Keras {keras.__version__} does not"):
        keras_private.flatten_layers(object())


def test_seed_state_variables_are_the_seed_generators_states():
    model, inner, noise = _nested_model()
    holder = inner.layers[0]
    assert keras.random.SeedGenerator(0).state.name == keras_private.SEED_STATE_NAME, _changed(
        "the name of `SeedGenerator.state`"
    )
    found = keras_private.seed_state_variables(model)
    expected = [holder.first.state, holder.second.state]  # and GaussianNoise's own generator
    assert len(found) == 3, _changed(f"seed generators' state variables: found {found}")
    assert all(any(v is f for f in found) for v in expected), _changed("SeedGenerator.state")
    # Nothing else is taken for a seed state (the Dense layer's weights are not).
    others = [v for v in model.variables if not any(v is f for f in found)]
    assert {v.name for v in others} == {"kernel", "bias"}, others


def test_optimizer_apply_is_what_both_trainers_give_the_gradients():
    parameters = list(inspect.signature(keras.optimizers.Optimizer.apply).parameters)
    assert parameters == ["self", "grads", "trainable_variables"], _changed(
        f"`Optimizer.apply`'s signature ({parameters})"
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
    seen = []

    def watch(grads, trainable_variables):
        seen.append(([tuple(g.shape) for g in grads], trainable_variables))

    tap = keras_private.OptimizerTap(model.optimizer, watch)
    model.make_train_function(force=True)
    x = np.ones((8, 3), "float32")
    before = keras.ops.convert_to_numpy(model.layers[0].kernel)
    model.fit(x, np.zeros((8, 2), "float32"), batch_size=4, epochs=1, verbose=0)
    tap.remove()
    # The watch runs when the train step is traced: at least once, with every gradient.
    assert seen, _changed("the trainers' use of `Optimizer.apply` (the tap saw no gradients)")
    shapes, variables = seen[-1]
    assert shapes == [(3, 2), (2,)], _changed(f"the gradients `apply` is given ({shapes})")
    assert variables is None or [v.path for v in variables] == [
        v.path for v in model.trainable_variables
    ], _changed("the variables `apply` is given")
    # The class's method still applied the step, and the optimizer is as it was.
    after = keras.ops.convert_to_numpy(model.layers[0].kernel)
    assert not np.allclose(before, after), "the tapped optimizer took no step"
    assert "apply" not in vars(model.optimizer)


def test_a_tap_over_an_own_apply_restores_it():
    optimizer = keras.optimizers.SGD(0.1)
    own = optimizer.apply
    optimizer.apply = own  # an instance attribute, e.g. another tap
    keras_private.OptimizerTap(optimizer, lambda grads, variables: None).remove()
    assert vars(optimizer)["apply"] is own


def test_taps_removed_in_any_order_leave_the_optimizer_as_it_was():
    # Two streaming monitors on one model close in the order they opened (Keras calls
    # callbacks in list order), which is not the reverse of the order they tapped.
    optimizer = keras.optimizers.SGD(0.1)
    seen = []
    first = keras_private.OptimizerTap(optimizer, lambda grads, variables: seen.append("first"))
    second = keras_private.OptimizerTap(optimizer, lambda grads, variables: seen.append("second"))
    variable = keras.Variable(np.ones(2, "float32"))
    optimizer.build([variable])
    first.remove()
    optimizer.apply([keras.ops.ones(2)], [variable])
    assert seen == ["second"]  # a removed tap no longer watches, though still wrapped
    second.remove()
    assert "apply" not in vars(optimizer)  # back to the class's method, no tap left
