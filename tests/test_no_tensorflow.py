"""On JAX without TensorFlow: the estimators, `tge.vi`'s JAX entry points and the layers.

One fresh Python process (KERAS_BACKEND=jax) where importing `tensorflow` fails as on a
machine without it: a `sys.meta_path` finder raises `ModuleNotFoundError` for it, so
TensorFlow Probability's TensorFlow parts fail too, while its JAX substrate, which never
imports TensorFlow, still imports. There, a JAX user fits a surrogate end to end with
`tge.vi.fit_surrogate_posterior_stateless`, differentiates `tge.estimators` and
`tge.vi.monte_carlo_variational_loss` losses, and trains a Bayesian layer; the TensorFlow
entry points raise an `ImportError` saying what to install; TensorFlow was never imported.
"""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

_SCRIPT = r'''
import importlib.abc
import sys


class NoTensorFlow(importlib.abc.MetaPathFinder):
    """`import tensorflow` (and its submodules, tf_keras) fails, as when not installed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in ("tensorflow", "tf_keras"):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, NoTensorFlow())

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax
from tensorflow_probability.substrates import jax as tfp

import tfp_gradest as tge
from tfp_gradest import estimators, layers, vi  # noqa: F401

tfd = tfp.distributions
assert keras.backend.backend() == "jax"


def target(z):
    return tfd.Independent(tfd.Normal(jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0])), 1).log_prob(z)


def build(loc, raw_scale):
    return tfd.Independent(tfd.Normal(loc, jax.nn.softplus(raw_scale)), 1)


# The stateless fit, end to end, with an estimator tfp.vi does not have.
(loc, raw_scale), losses = tge.vi.fit_surrogate_posterior_stateless(
    target, build, (jnp.zeros(2), jnp.zeros(2)), optax.adam(0.05), 300,
    importance_sample_size=4, gradient_estimator="iwae_dreg", jit_compile=True, seed=0)
assert losses.shape == (300,) and losses[-1] < losses[0], losses
np.testing.assert_allclose(loc, [1.0, -2.0], atol=0.1)
np.testing.assert_allclose(jax.nn.softplus(raw_scale), [0.5, 2.0], atol=0.1)

# Every estimator's loss, and tge.vi's, under jax.grad.
params = (jnp.array([0.5, -1.0]), jnp.array([0.0, 0.5]))
key = jax.random.PRNGKey(1)
for name in ["stl", "iwae_dreg", "score_function"]:
    k = 3 if name == "iwae_dreg" else 1
    grads = jax.grad(lambda p: estimators.get(name).loss(
        target, build(*p), sample_size=2, importance_sample_size=k, seed=key))(params)
    assert all(np.all(np.isfinite(g)) for g in grads), name
grads = jax.grad(lambda p: vi.monte_carlo_variational_loss(
    target, build(*p), sample_size=2, gradient_estimator="stl", seed=key))(params)
assert all(np.all(np.isfinite(g)) for g in grads)

# A Bayesian layer trains on Keras's JAX backend.
model = keras.Sequential([keras.Input((3,)), layers.DenseReparameterization(2)])
model.compile("adam", "mse")
x = np.ones((8, 3), "float32")
history = model.fit(x, np.zeros((8, 2), "float32"), epochs=2, verbose=0)
assert np.all(np.isfinite(history.history["loss"]))

# The TensorFlow entry points say what to install.
for entry_point in ("vi.fit_surrogate_posterior", "reuse"):
    try:
        module, _, attribute = entry_point.partition(".")
        value = getattr(tge, module)
        if attribute:
            getattr(value, attribute)
    except ImportError as error:
        message = str(error)
        assert "tfp_gradest." + entry_point in message, message
        assert 'pip install "tfp_gradest[tf]"' in message, message
    else:
        raise AssertionError(f"tge.{entry_point} imported without TensorFlow")

assert not any(m.split(".")[0] == "tensorflow" for m in sys.modules), "TensorFlow was imported"
print("ok")
'''


def test_a_jax_user_needs_no_tensorflow():
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.endswith("ok\n"), (
        f"stdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-4000:]}"
    )
