"""Registers the package's Keras classes, whichever is imported first: Keras or tfp_gradest.

Keras finds the classes of a `.keras` file in its registry of custom objects
(`keras.saving.register_keras_serializable`), which is filled when the module defining
a class is imported: `tfp_gradest.layers`, and `tfp_gradest.models` where it can run
(TensorFlow or JAX backend, TensorFlow Probability installed). `import tfp_gradest` does not
import Keras (the command line's `--help` would pay for TensorFlow), so

* if Keras is already imported, `register_when_keras_is_imported()` registers now;
* otherwise it puts a finder on `sys.meta_path` that registers as soon as Keras has
  been imported and no module of the package is half-way through its own import:
  when the import of `keras`, or of a tfp_gradest module, finishes. (Importing
  `tfp_gradest.layers` while another of the package's modules is being imported could
  meet that module half-initialised.) The finder then removes itself.

So `import tfp_gradest` followed by `import keras` and `keras.saving.load_model(path)`
loads `tge.layers` layers and `tge.models` models, as the opposite order does.
"""

import contextlib
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__all__ = ["register", "register_when_keras_is_imported"]

_PACKAGE = __name__.split(".")[0]


def register():
    """Imports the modules whose classes `.keras` files name (Keras must be imported).

    A module that fails to import (e.g. a TensorFlow Probability that does not match the
    installed TensorFlow) is reported by a `RuntimeWarning` naming it, not raised: the
    others stay registered, and neither `import tfp_gradest` nor `import keras` fails.
    """
    keras = sys.modules["keras"]
    modules = [f"{_PACKAGE}.layers"]
    if (
        keras.backend.backend() in ("tensorflow", "jax")
        and importlib.util.find_spec("tensorflow_probability") is not None
    ):
        modules.append(f"{_PACKAGE}.models")
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - reported: an import must not fail here
            warnings.warn(
                f"{_PACKAGE} could not register the Keras classes of {name}, so `.keras` "
                f"files with them will not load until `import {name}` succeeds. "
                f"Received: {error!r}",
                RuntimeWarning,
                stacklevel=2,
            )


def register_when_keras_is_imported():
    """`register()` now if Keras is imported, else as soon as it is (see above)."""
    if "keras" in sys.modules:
        register()
    elif not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def _importing_package_module():
    """Whether the top level of one of the package's submodules is running (being imported)."""
    import inspect  # only while waiting for Keras

    frame = inspect.currentframe()
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if frame.f_code.co_name == "<module>" and str(name).startswith(f"{_PACKAGE}."):
            return True
        frame = frame.f_back
    return False


def _after_import():
    finders = [finder for finder in sys.meta_path if isinstance(finder, _Finder)]
    if not finders or "keras" not in sys.modules or _importing_package_module():
        return
    for finder in finders:
        with contextlib.suppress(ValueError):  # another thread's import removed it first
            sys.meta_path.remove(finder)
    register()


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: gives `keras`'s and the package's modules, as found by the
    other finders, a loader that calls `_after_import()` once the module has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras" and not name.startswith(f"{_PACKAGE}."):
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # e.g. a namespace package: let the import system handle it
        spec.loader = _Loader(spec.loader)
        return spec


class _Loader:
    """The found loader, calling `_after_import()` once the module has run; everything else
    (`get_code` for `python -m`, `is_package`, resources, ...) is the found loader's."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # The module sees its own loader, as if this one were not there.
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _after_import()
