"""tfp_gradest: lower-variance gradient estimators for TensorFlow Probability.

import tfp_gradest as tge
tge.vi.fit_surrogate_posterior(..., gradient_estimator="stl")

The subpackages are imported on first use (PEP 562 module `__getattr__`), so
`import tfp_gradest` and the command line's `--help` do not pay TensorFlow's
import time; `tge.estimators`, `from tfp_gradest import layers`, etc. work as usual.
"""

import importlib
import sys

# The single source of the version and of the package's home: setup.py and the notebooks'
# install cell (colabs/_build.py) read these lines without importing the package.
__version__ = "0.1.0"
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


# Keras finds saved Bayesian layers and models through its registry of custom objects,
# which is filled when `layers`/`models` are imported. A process that already uses Keras
# gets them registered at `import tfp_gradest`, so `keras.models.load_model` works as
# before; only the Keras-free paths (the command line's `--help` and argument errors) stay light.
if "keras" in sys.modules:
    from tfp_gradest import layers, models  # noqa: E402, F401


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module  # later lookups skip this function
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBMODULES)
