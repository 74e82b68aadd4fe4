"""The one argument-checking module (`tfp_gradest._util.arguments`) and its users that run on
every Keras backend: the layers, the gradient-variance monitor, R2-G2's solver options.

The models are checked in test_vae.py / test_hvae.py / test_models_jax.py, ISAG in
test_reuse.py.
"""

import numpy as np
import pytest

import tfp_gradest as tge
from tfp_gradest._util import arguments
from tfp_gradest.r2g2 import solvers

pytestmark = pytest.mark.backends


# --- the module itself ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3), np.array(3)])
def test_integers_of_any_kind_come_back_as_python_ints(value):
    result = arguments.check_positive_integer("n", value)
    assert result == 3 and type(result) is int


@pytest.mark.parametrize(
    "value,error,match",
    [
        (2.5, TypeError, r"`n` must be a positive integer\. Received: n=2\.5 \(float\)\. .*int"),
        (2.0, TypeError, r"n=2\.0 \(float\).*not rounded"),
        (np.float32(2.0), TypeError, r"\(float32\)"),
        ("8", TypeError, r"n='8' \(str\)\. Pass a number, not a string"),
        (True, TypeError, r"n=True \(bool\)\. Pass an int, not a bool"),
        (None, TypeError, r"n=None \(NoneType\)"),
        (np.array([3]), TypeError, r"n=array"),
        (0, ValueError, r"`n` must be a positive integer\. Received: n=0 \(int\)"),
        (-2, ValueError, r"n=-2"),
    ],
)
def test_non_integers_are_type_errors_and_out_of_range_value_errors(value, error, match):
    with pytest.raises(error, match=match):
        arguments.check_positive_integer("n", value)


def test_integer_bounds_reason_and_hint_are_in_the_message():
    assert arguments.check_integer("k", 0, minimum=0, maximum=2) == 0
    with pytest.raises(ValueError, match=r"an integer in \[0, 2\].*k=3"):
        arguments.check_integer("k", 3, minimum=0, maximum=2)
    with pytest.raises(
        ValueError, match=r"at least 2 \(two is the least\)\. Received: k=1 \(int\)\. Use 2\."
    ):
        arguments.check_integer("k", 1, minimum=2, reason="two is the least", hint="Use 2.")


@pytest.mark.parametrize("value", [0.5, 0, 1, np.float32(0.25), np.int64(1), np.array(0.5)])
def test_reals_accept_integers_and_numpy_scalars(value):
    result = arguments.check_real("p", value, 0.0, 1.0)
    assert result == float(value) and type(result) is float


@pytest.mark.parametrize(
    "value,error",
    [
        ("0.5", TypeError),
        (False, TypeError),
        (None, TypeError),
        (1j, TypeError),
        (1.5, ValueError),
        (-0.1, ValueError),
        (float("nan"), ValueError),
    ],
)
def test_reals_refuse_strings_bools_and_out_of_range(value, error):
    with pytest.raises(error, match=r"`p` must be a real number in \[0\.0, 1\.0\]\. Received: p="):
        arguments.check_real("p", value, 0.0, 1.0)


def test_positive_finite_and_open_intervals():
    assert arguments.check_positive_finite("s", 2) == 2.0
    for value in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="`s` must be a finite positive number"):
            arguments.check_positive_finite("s", value)
    assert arguments.check_real("r", float("inf"), low=0, low_inclusive=False, finite=False) > 0


def test_seeds():
    assert arguments.check_seed("seed", None) is None
    assert type(arguments.check_seed("seed", np.int64(3))) is int
    for value in (2.5, "3", True):
        with pytest.raises(TypeError, match="`seed` must be an int or None"):
            arguments.check_seed("seed", value)
    with pytest.raises(TypeError, match="`seed` must be an int\\."):
        arguments.check_seed("seed", None, allow_none=False)


@pytest.mark.parametrize(
    "value,error,match",
    [
        ("32", TypeError, r"`dims` must be a list or tuple of ints\. Received: dims='32' \(str\)"),
        ((4.5,), TypeError, r"Each item of `dims` must be a positive integer.*item 0 is 4\.5"),
        ((4, "2"), TypeError, r"item 1 is '2' \(str\)"),
        ((), ValueError, r"non-empty"),
        ((4, 0), ValueError, r"item 1 is 0"),
        (5, TypeError, r"list or tuple of ints\. Received: dims=5 \(int\)"),
    ],
)
def test_integer_sequences(value, error, match):
    with pytest.raises(error, match=match):
        arguments.check_integer_sequence("dims", value)


def test_integer_sequences_convert_and_may_accept_one_integer():
    assert arguments.check_integer_sequence("dims", [np.int64(4), 2]) == (4, 2)
    assert arguments.check_integer_sequence("dims", np.int64(5), allow_scalar=True) == (5,)
    # A 1-d integer array is a sequence (it was accepted before the module); a 2-d one is not,
    # and a float array is refused item by item.
    assert arguments.check_integer_sequence("dims", np.array([2, 3])) == (2, 3)
    with pytest.raises(TypeError, match="dims"):
        arguments.check_integer_sequence("dims", np.array([[2, 3]]))
    with pytest.raises(TypeError, match="dims"):
        arguments.check_integer_sequence("dims", np.array([2.5, 3.0]))
    with pytest.raises(ValueError, match="dims=0"):
        arguments.check_integer_sequence("dims", 0, allow_scalar=True)


# --- the users that run on every backend ---------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"per_example_memory_limit": -1}, ValueError, r"per_example_memory_limit=-1 \(int\)"),
        ({"per_example_memory_limit": 0}, ValueError, r"per_example_memory_limit=0"),
        ({"per_example_memory_limit": 2.5}, TypeError, r"per_example_memory_limit=2\.5"),
        ({"per_example_memory_limit": "1000"}, TypeError, r"per_example_memory_limit='1000'"),
        ({"units": 2.5}, TypeError, r"`units` must be a positive integer.*units=2\.5"),
        ({"cg_iterations": 0}, ValueError, r"`cg_iterations` must be a positive integer"),
        ({"cg_iterations": 50.0}, TypeError, r"cg_iterations=50\.0 \(float\)"),
        ({"cg_tolerance": "1e-6"}, TypeError, r"cg_tolerance='1e-6' \(str\)"),
        ({"seed": 2.5}, TypeError, r"`seed` must be an int or None"),
        ({"initial_posterior_scale": True}, TypeError, r"initial_posterior_scale=True \(bool\)"),
    ],
)
def test_layer_arguments_are_checked_by_the_module(kwargs, error, match):
    # R2-G2's options (0.2's layer arguments) are checked by `tge.layers.estimators.R2G2`.
    kwargs = {"units": 4, "gradient_estimator": "r2g2", **kwargs}
    with pytest.raises(error, match=match):
        tge.layers.DenseReparameterization(**kwargs)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (
            {"kernel_size": 2.5},
            TypeError,
            r"`kernel_size` must be a positive int or a tuple.*2\.5 \(float\)",
        ),
        ({"kernel_size": "3"}, TypeError, r"kernel_size='3' \(str\)"),
        ({"strides": (1, 1.5)}, TypeError, r"strides=\(1, 1\.5\), whose item 1 is 1\.5"),
        ({"strides": (1, 0)}, ValueError, r"whose item 1 is 0"),
        ({"dilation_rate": (1,)}, ValueError, r"tuple of 2.*\(length 1\)"),
        ({"kernel_size": 0}, ValueError, r"kernel_size=0"),
    ],
)
def test_conv_sizes_are_checked_by_the_module(kwargs, error, match):
    kwargs = {"filters": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(error, match=match):
        tge.layers.Conv2DReparameterization(**kwargs)


def test_layer_accepts_numpy_integers_and_none_memory_limit():
    r2g2 = tge.layers.estimators.R2G2(per_example_memory_limit=np.int64(1000))
    layer = tge.layers.DenseReparameterization(
        np.int64(4), gradient_estimator=r2g2, seed=np.int64(3)
    )
    assert type(layer.gradient_estimator.per_example_memory_limit) is int
    assert type(layer.seed) is int
    r2g2 = tge.layers.estimators.R2G2(per_example_memory_limit=None)
    assert r2g2.get_config()["per_example_memory_limit"] is None


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"num_draws": 2.5}, TypeError, r"`num_draws` must be an integer of at least 2"),
        ({"num_draws": "8"}, TypeError, r"num_draws='8' \(str\)"),
        ({"num_draws": 1}, ValueError, r"a variance needs two draws.*num_draws=1"),
        ({"every_n_epochs": 1.5}, TypeError, r"every_n_epochs=1\.5 \(float\)"),
        ({"every_n_epochs": 0}, ValueError, r"every_n_epochs=0"),
        ({"every_n_steps": 2.0}, TypeError, r"every_n_steps=2\.0"),
        ({"seed": 0.5}, TypeError, r"`seed` must be an int"),
    ],
)
def test_monitor_arguments_are_checked_by_the_module(kwargs, error, match):
    with pytest.raises(error, match=match):
        tge.callbacks.GradientVarianceMonitor(probe_data=(np.zeros((2, 3)), None), **kwargs)


def test_monitor_accepts_numpy_integers():
    monitor = tge.callbacks.GradientVarianceMonitor(
        probe_data=(np.zeros((2, 3)), None), num_draws=np.int64(4), every_n_epochs=np.int32(2)
    )
    assert (monitor.num_draws, monitor.every_n_epochs) == (4, 2)
    assert type(monitor.num_draws) is int


def test_solver_options():
    assert solvers.validate_solver_options(np.int64(5), 1) == (5, 1.0)
    with pytest.raises(TypeError, match=r"cg_iterations=5\.5 \(float\)"):
        solvers.validate_solver_options(5.5, 1e-6)
    with pytest.raises(ValueError, match=r"cg_tolerance=0\.0"):
        solvers.validate_solver_options(5, 0.0)
