"""Shared test set-up: quiet TensorFlow, and small statistical helpers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so that tf.distribute.MirroredStrategy runs two
# replicas here; this must happen before TensorFlow initialises its devices.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import tfp_gradest as tge  # noqa: E402

# |z| < 4 per element: under an unbiased estimator each z-score is ~N(0, 1), so a
# false alarm has probability ~6e-5 per element; seeds are fixed, so runs repeat.
Z_THRESHOLD = 4.0

DTYPES = [tf.float32, tf.float64]


def max_abs_z(draws, exact):
    """Largest |bias z-score| over all variables and elements."""
    return max(
        float(np.max(np.abs(tge.diagnostics.bias_z_scores(np.asarray(d), np.asarray(e)))))
        for d, e in zip(draws, exact)
    )


def exact_gradient(objective_fn, variables):
    """Gradient of the negative closed-form objective (the loss) w.r.t. `variables`."""
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
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(params=DTYPES, ids=lambda d: d.name)
def dtype(request):
    return request.param


@pytest.fixture(params=[True, False], ids=["xla", "graph"])
def jit_compile(request):
    return request.param
