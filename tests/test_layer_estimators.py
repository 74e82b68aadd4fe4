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
"""

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
    if kind == "dense":
        layer = tge.layers.DenseReparameterization(
            2, gradient_estimator="reparameterization", seed=3
        )
        shape = (3, 4)
    else:
        layer = tge.layers.Conv1DReparameterization(
            2, 3, gradient_estimator="reparameterization", seed=3
        )
        shape = (2, 5, 2)  # P = 3 positions, k = 6 kernel weights
    rng = np.random.default_rng(1)
    x = ops.convert_to_tensor(rng.normal(size=shape), "float32")
    layer(x)
    layer.kernel_loc.assign(rng.normal(size=layer.kernel_loc.shape))
    layer.kernel_scale_raw.assign(rng.normal(size=layer.kernel_loc.shape) - 0.5)
    layer.bias_loc.assign(rng.normal(size=2))
    layer.bias_scale_raw.assign([-1.0, 0.0])
    layer._resolved_estimator = estimator  # the object under test, with this layer's noise
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


# On JAX too (`backends`): each estimator's moments on the dense layer, and Flipout's on the
# convolution (the power checks below are conv Flipout's companions); the conv RT and R2-G2
# forward pass is the same sample (`test_r2g2_forward_is_the_reparameterization_sample`).
_JAX = pytest.mark.backends
CASES = [
    pytest.param("dense", "reparameterization", "shared", marks=_JAX),
    pytest.param("dense", "r2g2", "shared", marks=_JAX),
    pytest.param("dense", "flipout", "flipout", marks=_JAX),
    pytest.param("dense", "local_reparameterization", "independent", marks=_JAX),
    ("conv", "reparameterization", "shared"),
    ("conv", "r2g2", "shared"),
    pytest.param("conv", "flipout", "flipout", marks=_JAX),
]


@pytest.mark.parametrize("kind,name,moments", CASES)
def test_pre_activation_mean_and_covariance_match_the_analytic_values(kind, name, moments):
    layer, x = _layer(kind, layer_estimators.get(name))
    z = _max_z(_draws(layer, x), *_analytic(layer, x, moments))
    print(f"{kind} {name}: max |z| {z:.2f}")
    assert z < Z_THRESHOLD


# --- power: deliberately wrong estimators fail the same test ---------------------------


class _FlipoutWithoutSigns(layer_estimators.Flipout):
    def sample(self, layer, inputs, linear_map, posterior):
        return layer_estimators.Reparameterization().sample(layer, inputs, linear_map, posterior)


class _FlipoutSignsSharedByBatch(layer_estimators.Flipout):
    def sample(self, layer, inputs, linear_map, posterior):
        dtype = inputs.dtype
        perturbation = posterior.kernel_scale * layer._noise(posterior.kernel_loc.shape, dtype)
        bias = sampled_bias(layer, posterior, dtype)
        ones = [1] * (len(inputs.shape) - 1)
        sign_in = layer._random_signs(ones + [inputs.shape[-1]], dtype)  # no batch axis: wrong
        sign_out = layer._random_signs(ones + [posterior.kernel_loc.shape[-1]], dtype)
        mean = linear_map.apply(inputs, posterior.kernel_loc)
        return mean + sign_out * linear_map.apply(inputs * sign_in, perturbation) + bias


class _FlipoutSignsPerPosition(layer_estimators.Flipout):
    def sample(self, layer, inputs, linear_map, posterior):
        dtype = inputs.dtype
        perturbation = posterior.kernel_scale * layer._noise(posterior.kernel_loc.shape, dtype)
        bias = sampled_bias(layer, posterior, dtype)
        mean = linear_map.apply(inputs, posterior.kernel_loc)
        sign_in = layer._random_signs(ops.shape(inputs), dtype)  # one per position: wrong
        sign_out = layer._random_signs(ops.shape(mean), dtype)
        return mean + sign_out * linear_map.apply(inputs * sign_in, perturbation) + bias


class _LRTWithVarianceForScale(layer_estimators.LocalReparameterization):
    def sample(self, layer, inputs, linear_map, posterior):
        mean = linear_map.apply(inputs, posterior.kernel_loc) + posterior.bias_loc
        variance = linear_map.apply(ops.square(inputs), ops.square(posterior.kernel_scale))
        variance = variance + ops.square(posterior.bias_scale)
        return mean + variance * layer._noise(ops.shape(mean), inputs.dtype)  # missing sqrt


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
        layer, x = _layer("conv", layer_estimators.get(name))
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
        # R2-G2 there cost 2.1x the model step for no held-out gain (`Auto`'s docstring).
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
