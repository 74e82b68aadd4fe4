"""Layer gradient estimators against their mathematics: pre-activation mean and covariance.

For fixed inputs the pre-activations `h[b, p, f]` (example, position, filter) of
every estimator have a known mean and covariance under the weight posterior
`N(μ, σ²)`, bias `N(μ_b, σ_b²)` (P: the im2col patches; a dense layer has one
position):

    mean      E h[b,p,f] = Σ_k P[b,p,k] μ[k,f] + μ_b[f]
    RT, R2-G2 Cov(h[b,p,f], h[b',p',f']) = δ_ff' (Σ_k P[b,p,k] P[b',p',k] σ²[k,f] + σ_b²[f])
    Flipout   the same with the kernel part times δ_bb' (sign flips decorrelate examples;
              the bias draw stays shared)
    LRT       δ_ff' δ_bb' δ_pp' (Σ_k P[b,p,k]² σ²[k,f] + σ_b²[f])   (dense only)

Each statistic is a mean over draws of a per-draw quantity (`h`, or the product
of two centred outputs, centred at the exact mean), so its standard error is the
draws' standard deviation / √N, and every element must have |z| < Z_THRESHOLD.
Power: the same test rejects a Flipout without sign flips, one whose signs are
shared by the batch or drawn per position, and an LRT that samples with the
variance in place of the standard deviation.

The moment test runs over the registry (`tge.layers.estimators.names(kind)`): a newly
registered estimator is tested too, and fails until `MOMENTS` says which covariance it
has. The rest of the file is the estimators' object contract: `get` and `serialize`,
options on the estimator, the layers' configs and 0.2's deprecated spellings.
"""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import tfp_gradest as tge
from tfp_gradest.layers import estimators as layer_estimators
from tfp_gradest.layers.estimators.base import sampled_bias

from . import backend_utils as bu
from .conftest import Z_THRESHOLD

NUM_DRAWS = 3000


def _layer(kind, estimator):
    """A layer using `estimator` (a name or an instance: the object under test)."""
    if kind == "dense":
        layer = tge.layers.DenseReparameterization(2, gradient_estimator=estimator, seed=3)
        shape = (3, 4)
    else:
        layer = tge.layers.Conv1DReparameterization(2, 3, gradient_estimator=estimator, seed=3)
        shape = (2, 5, 2)  # P = 3 positions, k = 6 kernel weights
    rng = np.random.default_rng(1)
    x = ops.convert_to_tensor(rng.normal(size=shape), "float32")
    layer(x)
    layer.kernel_loc.assign(rng.normal(size=layer.kernel_loc.shape))
    layer.kernel_scale_raw.assign(rng.normal(size=layer.kernel_loc.shape) - 0.5)
    layer.bias_loc.assign(rng.normal(size=2))
    layer.bias_scale_raw.assign([-1.0, 0.0])
    return layer, x


def _analytic(layer, x, kind):
    """Exact mean `[B·P·F]` and covariance `[B·P·F, B·P·F]` of the pre-activations."""
    patches = bu.to_numpy(layer._linear_map().patches(x)).astype(np.float64)  # [B, P, k]
    batch, positions, _ = patches.shape
    mu = bu.to_numpy(layer.kernel_loc).reshape(-1, 2)
    sigma2 = np.square(bu.to_numpy(layer.posterior_scales()[0]).reshape(-1, 2))
    mu_b = bu.to_numpy(layer.bias_loc)
    sigma2_b = np.square(bu.to_numpy(layer.posterior_scales()[1]))
    mean = np.einsum("bpk,kf->bpf", patches, mu) + mu_b
    # Cov of the kernel part: Σ_k P[b,p,k] P[c,q,k] σ²[k,f] δ_fg; of the bias: σ_b²[f] δ_fg.
    eye_b, eye_p, eye_f = np.eye(batch), np.eye(positions), np.eye(2)
    kernel_cov = np.einsum("bpk,cqk,kf,fg->bpfcqg", patches, patches, sigma2, eye_f)
    bias_cov = np.einsum("fg,g->fg", eye_f, sigma2_b)[None, None, :, None, None, :] * np.ones(
        (batch, positions, 1, batch, positions, 1)
    )
    if kind == "shared":
        cov = kernel_cov + bias_cov
    elif kind == "flipout":
        cov = np.einsum("bpfcqg,bc->bpfcqg", kernel_cov, eye_b) + bias_cov
    else:  # independent per example and position
        cov = np.einsum("bpfcqg,bc,pq->bpfcqg", kernel_cov + bias_cov, eye_b, eye_p)
    n = batch * positions * 2
    return mean.reshape(n), cov.reshape(n, n)


def _jit(fn):
    """`fn` compiled with XLA on the current backend (`tf.function` / `jax.jit`)."""
    if bu.backend() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn, jit_compile=True)


def _draws(layer, x):
    """`NUM_DRAWS` samples of `layer(x, training=True)`, in one compiled loop.

    `stateless_call` threads the layer's state (its SeedGenerator's) through the loop,
    so every draw has fresh noise, on every backend.
    """
    trainable = [v.value for v in layer.trainable_variables]
    shape = layer.compute_output_shape(tuple(x.shape))

    def draw(state):
        def body(i, carry):
            state, draws = carry
            outputs, state = layer.stateless_call(trainable, state, x, training=True)
            start = [i] + [0] * len(shape)
            return state, ops.slice_update(draws, start, outputs[None])

        draws = ops.zeros((NUM_DRAWS, *shape), "float32")
        return ops.fori_loop(0, NUM_DRAWS, body, (state, draws))[1]

    h = bu.to_numpy(_jit(draw)([v.value for v in layer.non_trainable_variables]))
    return h.astype(np.float64).reshape(NUM_DRAWS, -1)


def _max_z(draws, mean, cov):
    """Largest |z| over the mean and every covariance element (standard errors from the draws)."""
    centred = draws - mean
    products = centred[:, :, None] * centred[:, None, :]
    z_mean = centred.mean(0) / (centred.std(0, ddof=1) / np.sqrt(len(draws)))
    se = products.std(0, ddof=1) / np.sqrt(len(draws))
    z_cov = (products.mean(0) - cov) / se
    return float(max(np.max(np.abs(z_mean)), np.max(np.abs(z_cov))))


# The covariance structure of each registered estimator's pre-activations (module
# docstring); `auto` is checked as the estimator it resolves to.
MOMENTS = {
    "reparameterization": "shared",
    "r2g2": "shared",
    "flipout": "flipout",
    "local_reparameterization": "independent",
}

# On JAX too (`backends`): every estimator's moments on the dense layer, and Flipout's on the
# convolution (the power checks below are conv Flipout's companions); the conv RT and R2-G2
# forward pass is the same sample (`test_r2g2_forward_is_the_reparameterization_sample`).
CASES = [
    pytest.param(kind, name, marks=pytest.mark.backends)
    if kind == "dense" or name == "flipout"
    else (kind, name)
    for kind in ("dense", "conv")
    for name in layer_estimators.names(kind)
]


@pytest.mark.parametrize("kind,name", CASES)
def test_pre_activation_mean_and_covariance_match_the_analytic_values(kind, name):
    layer, x = _layer(kind, name)
    resolved = layer.resolved_gradient_estimator
    assert resolved in MOMENTS, f"add the covariance of {resolved!r}'s outputs to MOMENTS"
    z = _max_z(_draws(layer, x), *_analytic(layer, x, MOMENTS[resolved]))
    print(f"{kind} {name}: max |z| {z:.2f}")
    assert z < Z_THRESHOLD


# --- power: deliberately wrong estimators fail the same test ---------------------------


class _FlipoutWithoutSigns(layer_estimators.Flipout):
    def sample(self, inputs, linear_map, posterior, noise):
        return layer_estimators.WeightReparameterization().sample(
            inputs, linear_map, posterior, noise
        )


class _FlipoutSignsSharedByBatch(layer_estimators.Flipout):
    def sample(self, inputs, linear_map, posterior, noise):
        dtype = inputs.dtype
        perturbation = posterior.kernel_scale * noise.normal(posterior.kernel_loc.shape, dtype)
        bias = sampled_bias(posterior, noise, dtype)
        ones = [1] * (len(inputs.shape) - 1)
        sign_in = noise.random_signs(ones + [inputs.shape[-1]], dtype)  # no batch axis: wrong
        sign_out = noise.random_signs(ones + [posterior.kernel_loc.shape[-1]], dtype)
        mean = linear_map.apply(inputs, posterior.kernel_loc)
        return mean + sign_out * linear_map.apply(inputs * sign_in, perturbation) + bias


class _FlipoutSignsPerPosition(layer_estimators.Flipout):
    def sample(self, inputs, linear_map, posterior, noise):
        dtype = inputs.dtype
        perturbation = posterior.kernel_scale * noise.normal(posterior.kernel_loc.shape, dtype)
        bias = sampled_bias(posterior, noise, dtype)
        mean = linear_map.apply(inputs, posterior.kernel_loc)
        sign_in = noise.random_signs(ops.shape(inputs), dtype)  # one per position: wrong
        sign_out = noise.random_signs(ops.shape(mean), dtype)
        return mean + sign_out * linear_map.apply(inputs * sign_in, perturbation) + bias


class _LRTWithVarianceForScale(layer_estimators.LocalReparameterization):
    def sample(self, inputs, linear_map, posterior, noise):
        mean = linear_map.apply(inputs, posterior.kernel_loc) + posterior.bias_loc
        variance = linear_map.apply(ops.square(inputs), ops.square(posterior.kernel_scale))
        variance = variance + ops.square(posterior.bias_scale)
        return mean + variance * noise.normal(ops.shape(mean), inputs.dtype)  # missing sqrt


@pytest.mark.parametrize(
    "kind,wrong,moments",
    [
        ("dense", _FlipoutWithoutSigns(), "flipout"),
        ("conv", _FlipoutSignsSharedByBatch(), "flipout"),
        ("conv", _FlipoutSignsPerPosition(), "flipout"),
        ("dense", _LRTWithVarianceForScale(), "independent"),
    ],
    ids=["flipout-no-signs", "flipout-batch-signs", "flipout-position-signs", "lrt-no-sqrt"],
)
@pytest.mark.backends
def test_power_the_moment_test_rejects_a_wrong_estimator(kind, wrong, moments):
    layer, x = _layer(kind, wrong)
    assert _max_z(_draws(layer, x), *_analytic(layer, x, moments)) > Z_THRESHOLD


@pytest.mark.backends
def test_r2g2_forward_is_the_reparameterization_sample():
    # Same seed, same noise draws: R2-G2 changes only the backward pass.
    outputs = []
    for name in ("reparameterization", "r2g2"):
        layer, x = _layer("conv", name)
        outputs.append(bu.to_numpy(layer(x, training=True)))
    np.testing.assert_array_equal(*outputs)


@pytest.mark.backends
def test_registry_names_every_estimator_and_refuses_unknown_ones():
    assert set(tge.layers.GRADIENT_ESTIMATORS) >= {
        "reparameterization",
        "local_reparameterization",
        "flipout",
        "r2g2",
    }
    assert "local_reparameterization" not in layer_estimators.names("conv")
    with pytest.raises(ValueError, match="Received: gradient_estimator='lrt'"):
        layer_estimators.get("lrt")
    with pytest.raises(TypeError, match="Received: gradient_estimator=3"):
        tge.layers.DenseReparameterization(2, gradient_estimator=3)


# --- auto ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,shape,expected",
    [
        (lambda: tge.layers.DenseReparameterization(4), (8, 5), "local_reparameterization"),
        # Early conv layer: P = 64 positions, k = 10 weights: RT.
        (
            lambda: tge.layers.Conv2DReparameterization(4, 3, padding="same"),
            (2, 8, 8, 1),
            "reparameterization",
        ),
        # Deep conv layers, where R2-G2's predicted per-layer variance gain k/P is large
        # (P = 4, k = 145: 36; P = 16, k = 145: 9.1), get RT too: measured end to end,
        # R2-G2 there cost 2.1x the model step for no held-out gain (docs/design/auto.md).
        (
            lambda: tge.layers.Conv2DReparameterization(4, 3, strides=2, padding="same"),
            (2, 4, 4, 16),
            "reparameterization",
        ),
        (
            lambda: tge.layers.Conv2DReparameterization(4, 3, padding="same"),
            (2, 4, 4, 16),
            "reparameterization",
        ),
        # A dense layer on [B, T, D] inputs: RT (the LRT would give each row its own weights).
        (lambda: tge.layers.DenseReparameterization(4), (2, 3, 5), "reparameterization"),
        # Unknown spatial size: RT.
        (lambda: tge.layers.Conv1DReparameterization(4, 3), (2, None, 16), "reparameterization"),
    ],
)
def test_auto_resolves_per_layer_at_build_and_keeps_auto_in_the_config(make, shape, expected):
    layer = make()
    assert layer.resolved_gradient_estimator is None
    layer.build(shape)
    assert layer.resolved_gradient_estimator == expected
    assert layer.get_config()["gradient_estimator"] == "auto"
    clone = type(layer).from_config(layer.get_config())
    clone.build(shape)
    assert clone.resolved_gradient_estimator == expected


# --- estimators are objects: get, serialize, options, configs -----------------------------


@pytest.mark.backends
@pytest.mark.parametrize("name", layer_estimators.names())
def test_get_takes_a_name_a_class_an_instance_or_a_config(name):
    estimator = layer_estimators.get(name)
    assert estimator.name == name and isinstance(estimator, layer_estimators.LayerEstimator)
    assert layer_estimators.get(type(estimator)) == estimator
    assert layer_estimators.get(estimator) is estimator
    config = layer_estimators.serialize(estimator)
    assert config["class_name"] == type(estimator).__name__
    assert layer_estimators.get(config) == estimator


@pytest.mark.backends
def test_r2g2_options_live_on_the_estimator_and_are_checked():
    estimator = layer_estimators.R2G2(cg_iterations=8, direct_solve_memory_limit=None)
    assert estimator.cg_iterations == 8 and estimator.direct_solve_memory_limit is None
    assert repr(estimator) == "R2G2(cg_iterations=8, direct_solve_memory_limit=None)"
    assert layer_estimators.get(layer_estimators.serialize(estimator)) == estimator
    bad = [
        ({"conditioning": "batch"}, ValueError),
        ({"cg_iterations": 0}, ValueError),
        ({"cg_tolerance": "1e-6"}, TypeError),
        ({"per_example_memory_limit": 0}, ValueError),
        ({"per_example_memory_limit": -1}, ValueError),
        ({"direct_solve_memory_limit": 2.5}, TypeError),
    ]
    for kwargs, error in bad:
        ((name, value),) = kwargs.items()
        with pytest.raises(error, match=f"{name}.*Received: {name}={value!r}"):
            layer_estimators.R2G2(**kwargs)


@pytest.mark.backends
def test_layer_config_keeps_a_name_and_serialises_an_object():
    r2g2 = layer_estimators.R2G2(conditioning="whole_batch", cg_iterations=8)
    for given, expected in [
        ("auto", "auto"),
        ("r2g2", "r2g2"),
        (r2g2, layer_estimators.serialize(r2g2)),
        (layer_estimators.Flipout, {"class_name": "Flipout", "config": {}}),
    ]:
        layer = tge.layers.Conv2DReparameterization(4, 3, gradient_estimator=given)
        assert layer.get_config()["gradient_estimator"] == expected
        clone = tge.layers.Conv2DReparameterization.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        assert clone.gradient_estimator == layer_estimators.get(given)


@pytest.mark.backends
def test_an_estimator_object_round_trips_through_a_keras_file(tmp_path):
    r2g2 = layer_estimators.R2G2(conditioning="whole_batch", cg_iterations=8)
    model = keras.Sequential(
        [keras.Input((5, 5, 2)), tge.layers.Conv2DReparameterization(2, 3, gradient_estimator=r2g2)]
    )
    model.save(tmp_path / "model.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        restored = keras.models.load_model(tmp_path / "model.keras")
    assert restored.layers[0].gradient_estimator == r2g2


# --- 0.2's spellings: deprecated for one release -----------------------------------------


@pytest.mark.backends
def test_r2g2_layer_arguments_are_deprecated_with_the_spelling_to_use():
    with pytest.warns(DeprecationWarning) as caught:
        layer = tge.layers.Conv2DReparameterization(
            4, 3, gradient_estimator="r2g2", conditioning="whole_batch", cg_iterations=8
        )
    expected = "R2G2(conditioning='whole_batch', cg_iterations=8)"
    assert (
        "Write Conv2DReparameterization(..., gradient_estimator=tge.layers.estimators."
        f"{expected}) instead." in str(caught[0].message)
    )
    assert layer.gradient_estimator == layer_estimators.R2G2("whole_batch", cg_iterations=8)
    assert "cg_iterations" not in layer.get_config()
    # 0.2's `per_example_memory_limit` budgeted both jobs, so it sets both limits.
    with pytest.warns(DeprecationWarning, match=r"R2G2\(per_example_memory_limit=1000, "):
        layer = tge.layers.DenseReparameterization(
            2, gradient_estimator="r2g2", per_example_memory_limit=1000
        )
    assert layer.gradient_estimator == layer_estimators.R2G2(
        per_example_memory_limit=1000, direct_solve_memory_limit=1000
    )
    with pytest.warns(DeprecationWarning, match=r"read layer.gradient_estimator.cg_iterations"):
        assert layer.cg_iterations == 50


@pytest.mark.backends
@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: tge.layers.Conv2DReparameterization(4, 3, **kw),
        lambda **kw: tge.layers.DenseReparameterization(2, **kw),
        lambda **kw: tge.layers.bayesian_mlp((3,), [2], **kw),
    ],
    ids=["conv", "dense", "bayesian_mlp"],
)
def test_the_layer_arguments_deprecation_names_the_callers_line(make):
    # Python's default filters show a DeprecationWarning only where it is attributed to the
    # user's code (`__main__`); attributed to a file of the package, it would be hidden.
    with pytest.warns(DeprecationWarning, match="R2-G2's options") as caught:
        make(gradient_estimator="r2g2", cg_iterations=8)
    assert [w.filename for w in caught] == [__file__]


@pytest.mark.backends
def test_r2g2_layer_arguments_never_silently_replace_the_estimators_options():
    own = layer_estimators.R2G2(cg_iterations=4, direct_solve_memory_limit=5)
    with pytest.raises(ValueError, match=r"`cg_iterations` given twice.*Received: .*=8"):
        tge.layers.DenseReparameterization(2, gradient_estimator=own, cg_iterations=8)
    # Agreeing or new options combine; the estimator's own direct-solve limit stays.
    with pytest.warns(DeprecationWarning):
        layer = tge.layers.DenseReparameterization(
            2, gradient_estimator=own, cg_iterations=4, per_example_memory_limit=1000
        )
    assert layer.gradient_estimator == layer_estimators.R2G2(
        cg_iterations=4, per_example_memory_limit=1000, direct_solve_memory_limit=5
    )


@pytest.mark.backends
@pytest.mark.parametrize("name", [n for n in layer_estimators.names("dense") if n != "r2g2"])
def test_r2g2_layer_arguments_with_another_estimator_still_work_with_a_warning(name):
    # 0.2 accepted and ignored them; for one release they warn that they are ignored (and how
    # to keep them), rather than break 0.2 code.
    with pytest.warns(DeprecationWarning, match=r"ignored here.*R2G2\(cg_iterations=8\)"):
        layer = tge.layers.DenseReparameterization(2, gradient_estimator=name, cg_iterations=8)
    assert layer.gradient_estimator == layer_estimators.get(name)


def _legacy(config, **options):
    """`config` as 0.2 wrote it: R2-G2's options in every layer's config."""
    legacy = dict(
        conditioning="per_example", cg_iterations=50, cg_tolerance=1e-6,
        per_example_memory_limit=2**28,
    )  # fmt: skip
    return {**config, **legacy, **options}


@pytest.mark.backends
def test_configs_written_by_0_2_still_load_without_a_warning(tmp_path):
    import json
    import zipfile

    model = keras.Sequential(
        [
            keras.Input((4, 4, 2)),
            tge.layers.Conv2DReparameterization(2, 3, gradient_estimator="r2g2"),
            keras.layers.Flatten(),
            tge.layers.DenseReparameterization(2, gradient_estimator="flipout"),
        ]
    )
    model.save(tmp_path / "new.keras")
    # The same file as 0.2 wrote it: R2-G2's options in every layer's config.
    with zipfile.ZipFile(tmp_path / "new.keras") as new:
        files = {name: new.read(name) for name in new.namelist()}
    config = json.loads(files["config.json"])
    for layer in config["config"]["layers"]:
        if "gradient_estimator" in layer["config"]:
            layer["config"] = _legacy(layer["config"], cg_iterations=7)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "old.keras", "w") as old:
        for name, data in files.items():
            old.writestr(name, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        restored = keras.models.load_model(tmp_path / "old.keras")
    conv, _, dense = restored.layers
    # R2-G2's options become the estimator's; the others ignored them in 0.2 too.
    assert conv.gradient_estimator == layer_estimators.R2G2(cg_iterations=7)
    assert dense.gradient_estimator == layer_estimators.Flipout()
    assert dense.get_config()["gradient_estimator"] == "flipout"
    # Options at 0.2's defaults leave the name as it was.
    layer = tge.layers.DenseReparameterization(2, gradient_estimator="r2g2")
    clone = tge.layers.DenseReparameterization.from_config(_legacy(layer.get_config()))
    assert clone.get_config() == layer.get_config()


@pytest.mark.backends
def test_reparameterization_is_a_deprecated_alias_of_weight_reparameterization():
    with pytest.warns(DeprecationWarning, match="now called .*WeightReparameterization"):
        alias = layer_estimators.Reparameterization
    assert alias is layer_estimators.WeightReparameterization
    assert type(layer_estimators.get("reparameterization")) is alias
    assert layer_estimators.WeightReparameterization.name == "reparameterization"
    assert "Reparameterization" not in layer_estimators.__all__


@pytest.mark.backends
def test_estimators_written_for_0_2_still_work_with_a_warning(monkeypatch):
    from tfp_gradest._util.registry import Registry
    from tfp_gradest.layers.estimators import base

    # A registry of its own, so that the session's registry keeps its names.
    monkeypatch.setattr(
        base, "_REGISTRY", Registry("layer gradient estimator", base.LayerEstimator, "x")
    )
    with pytest.warns(DeprecationWarning, match=r"write sample\(self, inputs, linear_map"):

        class OldStyle(layer_estimators.LayerEstimator):
            name = "old_style"

            def sample(self, layer, inputs, linear_map, posterior):
                noise = layer._noise(posterior.kernel_loc.shape, inputs.dtype)
                kernel = posterior.kernel_loc + posterior.kernel_scale * noise
                return linear_map.apply(inputs, kernel) + sampled_bias(
                    posterior, layer._noise_source, inputs.dtype
                )

    with pytest.warns(DeprecationWarning, match=r"write `@register\('old_style'\)`"):
        layer_estimators.register(OldStyle)
    assert layer_estimators.names() == ("old_style",)
    outputs = []
    for estimator in (OldStyle(), layer_estimators.WeightReparameterization()):
        layer = tge.layers.DenseReparameterization(
            2, gradient_estimator=estimator, kernel_loc_initializer="zeros", seed=4
        )
        outputs.append(bu.to_numpy(layer(np.ones((3, 4), "float32"), training=True)))
    np.testing.assert_array_equal(*outputs)


@pytest.mark.backends
def test_other_0_2_spellings_are_deprecated():
    from tfp_gradest.layers.estimators import auto, flipout

    with pytest.warns(DeprecationWarning, match=r"write get\(identifier\).check\(layer_kind\)"):
        with pytest.raises(ValueError, match="dense layers only"):
            layer_estimators.get("local_reparameterization", "conv")
    with pytest.warns(DeprecationWarning, match=r"write choose\(layer_kind, positions\)"):
        assert auto.choose("conv", 4, 73) == "reparameterization"
    layer = tge.layers.DenseReparameterization(2, seed=0)
    x = ops.ones((3, 4))
    with pytest.warns(DeprecationWarning, match=r"flip_signs\(noise, inputs, num_outputs\)"):
        signs = flipout.flip_signs(layer, x, 2)
    assert tuple(signs[0].shape) == (3, 4) and tuple(signs[1].shape) == (3, 2)


# --- each estimator's own rules, and the noise source -------------------------------------


@pytest.mark.backends
def test_each_estimator_says_where_it_applies():
    lrt = layer_estimators.LocalReparameterization()
    assert lrt.applies_to("dense") and lrt.applies_to("dense", (None, 4))
    assert not lrt.applies_to("dense", (None, 3, 4))  # each row would get its own weights
    assert not lrt.applies_to("conv")
    with pytest.raises(ValueError, match=r"its own weights.*Received: input_shape=\(2, 3, 4\)"):
        lrt.check("dense", (2, 3, 4))
    for name in layer_estimators.names():
        estimator = layer_estimators.get(name)
        for kind in ("dense", "conv"):
            assert estimator.applies_to(kind) == (name in layer_estimators.names(kind))


@pytest.mark.backends
def test_a_noise_source_replays_with_the_same_seed():
    draws = []
    for _ in range(2):
        noise = layer_estimators.NoiseSource(keras.random.SeedGenerator(7))
        draws.append([noise.normal((3, 2), "float32"), noise.random_signs((4,), "float32")])
    for a, b in zip(*draws):
        np.testing.assert_array_equal(bu.to_numpy(a), bu.to_numpy(b))
    assert set(np.unique(bu.to_numpy(draws[0][1]))) <= {-1.0, 1.0}
    with pytest.raises(TypeError, match="Received: seed=3"):
        layer_estimators.NoiseSource(3)
