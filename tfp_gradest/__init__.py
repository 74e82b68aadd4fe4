"""tfp_gradest: lower-variance gradient estimators for TensorFlow Probability.

import tfp_gradest as tge
tge.vi.fit_surrogate_posterior(..., gradient_estimator="stl")

The subpackages are imported on first use (PEP 562 module `__getattr__`), so
`import tfp_gradest` and the command line's `--help` do not pay TensorFlow's
import time; `tge.estimators`, `from tfp_gradest import layers`, etc. work as usual.

The Keras 3 parts (`layers`, `r2g2`) need only Keras and one of its backends
(TensorFlow or JAX). The TensorFlow Probability parts (`estimators`, `vi`, `models`,
`reuse`, `problems`, ...) need TensorFlow and TFP; on a machine without them, using
one raises an `ImportError` saying what to install.
"""

import importlib

# The single source of the version and of the package's home: setup.py and the notebooks'
# install cell (colabs/_build.py) read these lines without importing the package.
__version__ = "0.3.0"
__url__ = "https://github.com/tfp-gradest/tfp_gradest"

__all__ = [
    "callbacks",
    "datasets",
    "diagnostics",
    "estimators",
    "layers",
    "models",
    "problems",
    "r2g2",
    "reuse",
    "vi",
]

# Subpackages importable as attributes. `__version__` is not in `__all__`, like TFP's.
_SUBMODULES = frozenset(__all__)

# What a missing TensorFlow/TFP means for a subpackage that needs them (setup.py's versions).
_TENSORFLOW_MODULES = ("tensorflow", "tensorflow_probability")
_INSTALL_TENSORFLOW = "pip install 'tensorflow>=2.16' 'tensorflow-probability[tf]>=0.24'"


def _import_submodule(name):
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if missing not in _TENSORFLOW_MODULES:
            raise
        raise ImportError(
            f"tfp_gradest.{name} is built on TensorFlow Probability and needs TensorFlow and "
            f"TFP, but {missing!r} is not installed. Install them with: {_INSTALL_TENSORFLOW} "
            "(tfp_gradest.layers and tfp_gradest.r2g2 need only Keras 3 and a backend, e.g. "
            f"JAX). Received: ModuleNotFoundError({str(error)!r})",
            name=error.name,
        ) from error


# Keras finds saved Bayesian layers and models through its registry of custom objects,
# which is filled when `layers`/`models` are imported: now if Keras is imported, else as
# soon as it is (so `keras.saving.load_model` works whichever is imported first), while the
# Keras-free paths (the command line's `--help` and argument errors) stay light.
from tfp_gradest._util.keras_registration import register_when_keras_is_imported  # noqa: E402

register_when_keras_is_imported()


def __getattr__(name):
    if name in _SUBMODULES:
        module = _import_submodule(name)
        globals()[name] = module  # later lookups skip this function
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBMODULES)
