"""`tge.diagnostics.model_gradient_*`: gradient draws of a Keras model, on TensorFlow and JAX."""

import numpy as np
import pytest
from keras import ops

import tfp_gradest as tge

from . import backend_utils as bu

pytestmark = pytest.mark.backends


def _layer_and_loss():
    layer = bu.NoisyScale(seed=3)
    x = ops.convert_to_tensor(np.array([[1.0, 2.0, 3.0]], "float32"))
    layer(x)
    return layer, lambda: ops.sum(layer(x, training=True) ** 2), x


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_draws_in_one_loop_are_fresh_and_exact(jit_compile):
    layer, loss, x = _layer_and_loss()
    state = layer.non_trainable_variables
    before = bu.to_numpy(layer.seed_generator.state)
    (draws,) = tge.diagnostics.model_gradient_draws(
        loss, [layer.w], 400, state_variables=state, jit_compile=jit_compile
    )
    assert draws.shape == (400, 3)
    # Fresh noise per draw (a replayed seed would repeat a draw), and the generator
    # ends advanced (the loop's state written back on JAX).
    assert len({tuple(d) for d in draws.round(6)}) == 400
    assert not np.array_equal(bu.to_numpy(layer.seed_generator.state), before)
    # d/dw sum((x (w + eps))^2) = 2 x^2 (w + eps), with w = 1: mean 2 x^2, variance 4 x^4.
    # Standard errors over 400 draws: of the mean 2 x^2 / 20, of the variance about
    # 4 x^4 sqrt(2 / 399) = 0.071 * 4 x^4; 4 of them.
    x2 = np.array([1.0, 4.0, 9.0])
    assert np.all(np.abs(draws.mean(0) - 2 * x2) < 4 * 2 * x2 / 20)
    np.testing.assert_allclose(draws.var(0, ddof=1), 4 * x2**2, rtol=4 * 0.071)
    # The next call continues from the advanced state: other draws, not the same ones.
    (again,) = tge.diagnostics.model_gradient_draws(
        loss, [layer.w], 400, state_variables=state, jit_compile=jit_compile
    )
    assert not np.allclose(again, draws)


def test_variance_is_that_of_the_draws_and_one_step_per_call():
    layer, loss, _ = _layer_and_loss()
    state = layer.non_trainable_variables
    variance = tge.diagnostics.model_gradient_variance(loss, layer.w, 300, state_variables=state)
    # The mean of the elements' variances 4 x^4; its relative standard error over 300 draws
    # is at most sqrt(2 / 299) = 0.082 (the x = 3 element dominates); 4 of them.
    assert variance == pytest.approx(4 * np.mean([1.0, 16.0, 81.0]), rel=4 * 0.082)
    step = tge.diagnostics.model_gradient_function(loss, [layer.w], state_variables=state)
    (_, (g1,)), (_, (g2,)) = step(), step()
    assert not np.allclose(bu.to_numpy(g1), bu.to_numpy(g2))


def test_bad_draw_counts_are_refused_with_their_name():
    layer, loss, _ = _layer_and_loss()
    with pytest.raises(ValueError, match="num_draws.*Received: num_draws=0"):
        tge.diagnostics.model_gradient_draws(loss, [layer.w], 0)
    with pytest.raises(ValueError, match=r"two draws\). Received: num_draws=1"):
        tge.diagnostics.model_gradient_variance(loss, layer.w, 1)


def test_an_unlisted_seed_state_is_refused_on_jax():
    layer, loss, _ = _layer_and_loss()
    if bu.backend() != "jax":
        # TensorFlow assigns the state as the loss runs: nothing to list.
        (draws,) = tge.diagnostics.model_gradient_draws(loss, [layer.w], 3)
        assert len({tuple(d) for d in draws.round(6)}) == 3
        return
    # Without the state listed, JAX would replay the same noise in every draw.
    with pytest.raises(ValueError, match="state_variables"):
        tge.diagnostics.model_gradient_draws(loss, [layer.w], 3)


def test_each_backend_module_defines_the_whole_contract():
    from tfp_gradest import _backend

    module = _backend.current()
    assert sorted(module.__all__) == sorted(_backend.BACKEND_MODULE_NAMES)
    assert all(hasattr(module, name) for name in _backend.BACKEND_MODULE_NAMES)
