"""tfp_gradest: lower-variance gradient estimators for TensorFlow Probability.

import tfp_gradest as tge
tge.vi.fit_surrogate_posterior(..., gradient_estimator="stl")

The subpackages are imported on first use (PEP 562 module `__getattr__`), so
`import tfp_gradest` and the command line's `--help` do not pay TensorFlow's
import time; `tge.estimators`, `from tfp_gradest import layers`, etc. work as usual.

The Keras 3 parts (`layers`, `r2g2`) need only Keras and one of its backends
(TensorFlow or JAX). The estimators and `tge.vi`'s loss run on TensorFlow Probability's
TensorFlow or JAX substrate, whichever the surrogate is built on;
`tge.vi.fit_surrogate_posterior_stateless` needs JAX (`pip install "tfp_gradest[jax]"`);
the other TFP parts (`tge.vi.fit_surrogate_posterior`, `models`, `reuse`, `problems`,
...) need TensorFlow (`pip install "tfp_gradest[tf]"`). On a machine without what a part
needs, using it raises an `ImportError` saying what to install.
"""

import importlib

# The single source of the version and of the package's home: setup.py and the notebooks'
# install cell (colabs/_build.py) read these lines without importing the package.
__version__ = "0.6.0"
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

# What a missing dependency means for a part that needs it: setup.py's extras.
_TENSORFLOW = "TensorFlow and TensorFlow Probability"
_INSTALL_TENSORFLOW = (
    'pip install "tfp_gradest[tf]" (or: pip install "tensorflow>=2.16" '
    '"tensorflow-probability[tf]>=0.24")'
)
_JAX = "JAX, optax and TensorFlow Probability's JAX substrate"
# The upper bound: TFP 0.25's JAX substrate does not import with jax 0.7 or later.
_INSTALL_JAX = 'pip install "tfp_gradest[jax]" (or: pip install "jax>=0.4.35,<0.7" optax)'
_DEPENDENCIES = {
    "tensorflow": (_TENSORFLOW, _INSTALL_TENSORFLOW),
    "tensorflow_probability": (_TENSORFLOW, _INSTALL_TENSORFLOW),
    "tf_keras": (_TENSORFLOW, _INSTALL_TENSORFLOW),
    "jax": (_JAX, _INSTALL_JAX),
    "jaxlib": (_JAX, _INSTALL_JAX),
    "optax": (_JAX, _INSTALL_JAX),
}


def _missing_dependency_error(what, error):
    """The `ImportError` to raise for `what` (e.g. "tfp_gradest.models") when importing it
    raised `error`, a `ModuleNotFoundError` of one of its optional dependencies; `error`
    itself for any other module (a bug, not a missing install)."""
    missing = (error.name or "").split(".")[0]
    if missing not in _DEPENDENCIES:
        return error
    needs, install = _DEPENDENCIES[missing]
    return ImportError(
        f"{what} needs {needs}, but {missing!r} is not installed. Install them with: "
        f"{install}. (tfp_gradest.layers and tfp_gradest.r2g2 need only Keras 3 and a "
        "backend; the estimators and tge.vi.monte_carlo_variational_loss run on TFP's "
        "TensorFlow or JAX substrate; tge.vi.fit_surrogate_posterior_stateless needs only "
        f"JAX.) Received: ModuleNotFoundError({str(error)!r})",
        name=error.name,
    )


def _import_submodule(name):
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        raise _missing_dependency_error(f"tfp_gradest.{name}", error) from error


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
