"""The code stays `ruff check` clean, imports no Keras 2 (tf_keras) or private modules, and
touches no private attribute of Keras (or any other library's) objects outside the one
adapter module, `tfp_gradest/_util/keras_private.py`."""

import ast
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tfp_gradest"
# The one module allowed to rely on Keras internals (its assumptions are checked by
# tests/test_keras_private.py against the installed Keras).
ADAPTER = PACKAGE / "_util" / "keras_private.py"
# `collections.namedtuple`'s public methods, which start with `_` so as not to clash with
# field names (https://docs.python.org/3/library/collections.html#collections.namedtuple).
NAMEDTUPLE_API = frozenset({"_asdict", "_field_defaults", "_fields", "_make", "_replace"})


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is installed by the [test] extra")
def test_ruff_check_is_clean():
    result = subprocess.run(["ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_package_never_imports_tf_keras_or_private_modules():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for forbidden in ("import tf_keras", "keras.src", "tensorflow_probability.python.internal"):
            assert forbidden not in text, f"{path.relative_to(ROOT)} uses {forbidden}"


# --- Private attributes -----------------------------------------------------------------


def _is_private(name):
    return name.startswith("_") and not name.startswith("__")


def keras_private_names():
    """The `_`-prefixed (not dunder) attributes of Keras's public classes and of built
    instances of them (a compiled and trained model, its layers, optimizer, variables,
    seed generator): what "Keras-private" means here, read from the installed Keras."""
    import keras
    import numpy as np

    classes = [
        keras.layers.Layer, keras.layers.Dense, keras.layers.GaussianNoise, keras.Model,
        keras.Sequential, keras.optimizers.Optimizer, keras.optimizers.LossScaleOptimizer,
        keras.callbacks.Callback, keras.callbacks.History, keras.Variable,
        keras.random.SeedGenerator, keras.losses.Loss, keras.metrics.Metric,
        keras.StatelessScope, keras.DTypePolicy,
    ]  # fmt: skip
    names = {name for cls in classes for name in dir(cls) if _is_private(name)}
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2), keras.layers.GaussianNoise(0.1, seed=1)]
    )
    model.compile(keras.optimizers.Adam(), "mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    instances = [model, *model.layers, model.optimizer, model.layers[0].kernel]
    instances += [keras.random.SeedGenerator(1), keras.callbacks.History()]
    names |= {name for obj in instances for name in vars(obj) if _is_private(name)}
    return frozenset(names)


def defined_names(tree):
    """The `_`-prefixed names a module defines: attributes it assigns (`obj._x = ...`),
    its functions and classes, and the names assigned in its class bodies."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                for statement in node.body:
                    targets = getattr(statement, "targets", [getattr(statement, "target", None)])
                    names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return {name for name in names if _is_private(name)}


def private_accesses(source, keras_private, package_defined):
    """`"line N: ..."` for each private attribute access in `source` that is not the
    module's or the package's own:

    1. a Keras-private name (`keras_private`) the module does not define itself, as an
       attribute (`model._flatten_layers(...)`, `self._tracker` in a Layer subclass) or
       as a string (`getattr(layer, "_seed_generators")`, `vars(layer)["_layers"]`);
    2. `obj._x` on an object other than `self`/`cls`, for a name that no module of the
       package defines (so a private of some library's object: Keras, TensorFlow, TFP),
       except namedtuple's public `_replace`, `_asdict`, ....
    """
    tree = ast.parse(source)
    own = defined_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            name, text = node.attr, ast.unparse(node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            name, text = node.value, repr(node.value)
            if name not in keras_private:
                continue
        else:
            continue
        on_own_object = isinstance(node, ast.Attribute) and (
            isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        )
        # A name the module defines is its own only on its own objects: `self._layers`
        # may be the module's attribute, `self.model._layers` is still Keras's.
        if name in keras_private and not (name in own and on_own_object):
            found.append(f"line {node.lineno}: {text} (Keras-private)")
        elif (
            isinstance(node, ast.Attribute)
            and not on_own_object
            and name not in package_defined
            and name not in NAMEDTUPLE_API
        ):
            found.append(f"line {node.lineno}: {text} (another library's private)")
    return sorted(found, key=lambda entry: int(entry.split(":")[0][len("line ") :]))


@pytest.fixture(scope="module")
def private_names():
    package_defined = set()
    for path in PACKAGE.rglob("*.py"):
        package_defined |= defined_names(ast.parse(path.read_text(encoding="utf-8")))
    return keras_private_names(), frozenset(package_defined)


def test_no_private_keras_attribute_outside_the_adapter_module(private_names):
    assert "_flatten_layers" in private_names[0] and "_seed_generators" in private_names[0]
    offending = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == ADAPTER:
            continue
        found = private_accesses(path.read_text(encoding="utf-8"), *private_names)
        if found:
            offending[str(path.relative_to(ROOT))] = found
    assert not offending, (
        "Private attributes of Keras or other libraries' objects; use public API, or add "
        f"a function to {ADAPTER.relative_to(ROOT)} (with a check in "
        f"tests/test_keras_private.py): {offending}"
    )


# What the package did before issue 23: KLAnnealing walked the layers with a private Keras
# method, and an older monitor read the layers' generators and the optimizer's variables.
_OLD_KL_ANNEALING = """
class KLAnnealing(keras.callbacks.Callback):
    def __init__(self, schedule, layers=None):
        self._layers = layers

    def _annealed_layers(self):
        if self._layers is not None:
            return self._layers
        return [
            layer
            for layer in self.model._flatten_layers(include_self=False, recursive=True)
            if hasattr(layer, "kl_weight")
        ]
"""
_OLD_MONITOR = """
gens = [g for l in model.layers for g in getattr(l, "_seed_generators")]
v = optimizer._trainable_variables
p = distribution._parameters
"""


def test_the_private_attribute_check_has_power(private_names):
    found = private_accesses(_OLD_KL_ANNEALING, *private_names)
    assert found == ["line 11: self.model._flatten_layers (Keras-private)"], found
    found = private_accesses(_OLD_MONITOR, *private_names)
    assert [f.split(": ", 1)[1] for f in found] == [
        "'_seed_generators' (Keras-private)",
        "optimizer._trainable_variables (Keras-private)",
        "distribution._parameters (another library's private)",
    ], found
    # The module's own attributes, namedtuple's API and `self`'s own are not flagged.
    own = "class A:\n    def f(self, b):\n        self._layers = b._replace(x=1)._asdict()\n"
    assert private_accesses(own, *private_names) == []
    # ... but a Keras-private name the module also uses is flagged on a Keras object.
    shadowed = own + "        return self.model._layers\n"
    assert private_accesses(shadowed, *private_names) == [
        "line 4: self.model._layers (Keras-private)"
    ]
