"""`tge.layers.bayesian_mlp`: the one builder of the Bayesian MLP (problems, tests,
benchmarks, notebooks)."""

import keras
import numpy as np
import pytest

import tfp_gradest as tge

from . import backend_utils as bu

pytestmark = pytest.mark.backends


def _by_hand(estimator, seed):
    return keras.Sequential(
        [
            keras.Input((6,)),
            tge.layers.DenseReparameterization(
                5,
                activation="relu",
                gradient_estimator=estimator,
                kl_weight=0.1,
                seed=seed,
                kernel_loc_initializer=keras.initializers.GlorotUniform(seed),
            ),
            tge.layers.DenseReparameterization(
                3,
                gradient_estimator=estimator,
                kl_weight=0.1,
                seed=seed + 1,
                kernel_loc_initializer=keras.initializers.GlorotUniform(seed + 1),
            ),
        ]
    )


def test_the_builder_is_the_model_written_out_layer_by_layer():
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    built = tge.layers.bayesian_mlp(
        (6,), [5, 3], gradient_estimator="flipout", seed=3, kl_weight=0.1, names=["a", "b"]
    )
    by_hand = _by_hand("flipout", 3)
    assert [layer.name for layer in built.layers] == ["a", "b"]
    configs = [layer.get_config() for layer in built.layers]
    assert [c["units"] for c in configs] == [5, 3]
    assert [c["activation"] for c in configs] == ["relu", "linear"]
    for mine, theirs in zip(built.weights, by_hand.weights, strict=True):
        np.testing.assert_array_equal(bu.to_numpy(mine), bu.to_numpy(theirs))
    # The same noise too: the same seeds per layer.
    np.testing.assert_array_equal(
        bu.to_numpy(built(x, training=True)), bu.to_numpy(by_hand(x, training=True))
    )
    # Power check: another seed gives other weights.
    other = tge.layers.bayesian_mlp((6,), [5, 3], seed=4, kl_weight=0.1)
    assert not np.array_equal(bu.to_numpy(other.weights[0]), bu.to_numpy(built.weights[0]))


def test_no_estimator_means_each_layers_default():
    model = tge.layers.bayesian_mlp((6,), [5, 3])
    model(np.zeros((2, 6), "float32"))
    default = tge.layers.DenseReparameterization(5)
    default(np.zeros((2, 6), "float32"))
    assert {layer.resolved_gradient_estimator for layer in model.layers} == {
        default.resolved_gradient_estimator
    }


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"units": []}, ValueError, "units"),
        ({"units": [4, 2], "names": ["one"]}, ValueError, "names"),
        ({"units": [4, 2], "seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_arguments_are_refused_with_their_name(kwargs, error, match):
    with pytest.raises(error, match=f"{match}.*Received"):
        tge.layers.bayesian_mlp((6,), **kwargs)
