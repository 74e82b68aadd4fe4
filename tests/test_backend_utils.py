"""The backend-neutral gradient helpers (tests/backend_utils.py) on TensorFlow and JAX."""

import keras
import numpy as np
import pytest
from keras import ops

from . import backend_utils as bu

pytestmark = pytest.mark.backends


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "xla"])
def test_gradients_are_exact_and_draws_are_fresh(jit_compile):
    layer = bu.NoisyScale(seed=3)
    x = np.array([[1.0, 2.0, 3.0]], "float32")
    # loss = sum(x * (w + eps)) + sum(w**2): d/dw = x + 2w = x + 2 (noise-free).
    grads = bu.gradients(layer, ops.sum, x, jit_compile=jit_compile)
    np.testing.assert_allclose(grads[0], x[0] + 2.0, rtol=1e-6)
    # The squared output's gradient carries the noise: 2 x^2 (w + eps) + 2w.
    draws = bu.draw_gradients(
        4, layer, lambda y: ops.sum(y**2), x, jit_compile=jit_compile, add_layer_losses=False
    )[0]
    assert draws.shape == (4, 3)
    # Fresh noise per draw: no two draws equal (a replayed seed would make them equal).
    assert len({tuple(d) for d in draws.round(6)}) == 4


def test_closure_gradients_and_unlisted_state_is_refused_on_jax():
    w = keras.Variable(np.array([1.0, -2.0], "float32"))
    seeds = keras.random.SeedGenerator(1)

    def loss():
        return ops.sum(w * keras.random.normal((2,), seed=seeds)) + ops.sum(w**2)

    step = bu.gradient_fn(loss, [w], state_variables=[seeds.state], jit_compile=True)
    (_, (g1,)), (_, (g2,)) = step(), step()
    assert not np.allclose(g1, g2)  # fresh noise: the SeedGenerator's state advanced
    if bu.backend() == "jax":
        # Power check: without the state listed, JAX would replay the same noise.
        with pytest.raises(ValueError, match="state_variables"):
            bu.value_and_grad(loss, [w])
