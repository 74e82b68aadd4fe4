"""Shared test set-up: quiet TensorFlow, the backend switch, and small statistical helpers.

`python -m pytest -n 2 -q` runs every test on TensorFlow (two pytest-xdist workers);
`KERAS_BACKEND=jax python -m pytest -n 2 -q` runs only the tests marked
`@pytest.mark.backends` (see tests/backend_utils.py), with two host devices for
`keras.distribution.DataParallel`.
"""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Decided from the environment, before Keras (and with it JAX) is imported: JAX fixes its
# host device count at import.
JAX_RUN = os.environ.get("KERAS_BACKEND") == "jax"
if JAX_RUN:
    _flag = "--xla_force_host_platform_device_count=2"
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import numpy as np  # noqa: E402
import pytest  # noqa: E402

DTYPES = ["float32", "float64"]  # the `dtype` fixture: tf.DType on TensorFlow, names on JAX


def pytest_configure(config):
    """Checks the backend and gives TensorFlow two logical CPUs, in each process that runs
    tests: not in pytest-xdist's controller (`-n 2`), which only hands tests out, so it
    need not import TensorFlow."""
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import keras

    if JAX_RUN != (keras.backend.backend() == "jax"):
        raise RuntimeError(
            "tests/conftest.py chooses the test subset from the KERAS_BACKEND environment "
            f"variable; Keras's backend is {keras.backend.backend()!r} (from "
            "~/.keras/keras.json?). Set KERAS_BACKEND explicitly."
        )
    if not JAX_RUN:
        import tensorflow as tf

        # Two logical CPU devices, so that tf.distribute.MirroredStrategy runs two
        # replicas here; this must happen before TensorFlow initialises its devices.
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
        )


# |z| < 4 per element: under an unbiased estimator each z-score is ~N(0, 1), so a
# false alarm has probability ~6e-5 per element; seeds are fixed, so runs repeat.
Z_THRESHOLD = 4.0


def pytest_ignore_collect(collection_path, config):
    """Under JAX, test modules that never mention the `backends` marker are not imported."""
    path = pathlib.Path(collection_path)
    if JAX_RUN and path.suffix == ".py" and path.name.startswith("test_"):
        if "backends" not in path.read_text(encoding="utf-8"):
            return True
    return None  # no opinion: pytest's own rules (--ignore, ...) still apply


def pytest_collection_modifyitems(config, items):
    """Under JAX, every test not marked `backends` is deselected."""
    if not JAX_RUN:
        return
    keep = [item for item in items if item.get_closest_marker("backends")]
    dropped = [item for item in items if not item.get_closest_marker("backends")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def max_abs_z(draws, exact):
    """Largest |bias z-score| over all variables and elements."""
    from tfp_gradest.diagnostics import bias_z_scores

    return max(
        float(np.max(np.abs(bias_z_scores(np.asarray(d), np.asarray(e)))))
        for d, e in zip(draws, exact)
    )


def exact_gradient(objective_fn, variables):
    """Gradient of the negative closed-form objective (the loss) w.r.t. `variables`."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = -objective_fn()
    return [g.numpy() for g in tape.gradient(loss, variables)]


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One `MirroredStrategy` over the two logical CPUs for the whole run.

    Several strategy objects in one process reuse collective-op instance keys and
    then fail with "Shape mismatch in the collective instance"; one shared
    object does not.
    """
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(params=DTYPES)
def dtype(request):
    if not JAX_RUN:
        import tensorflow as tf

        return tf.as_dtype(request.param)
    if request.param == "float64":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("float64 on JAX needs jax_enable_x64 (JAX computes it as float32)")
    return request.param


@pytest.fixture(params=[True, False], ids=["xla", "graph"])
def jit_compile(request):
    return request.param
