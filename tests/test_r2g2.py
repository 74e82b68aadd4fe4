"""The R2-G2 primitive: exact identities first, then unbiasedness with power, then the solver.

Tests marked `backends` also run under `KERAS_BACKEND=jax` (tests/backend_utils.py): they
use `keras.ops`, numpy and the backend-neutral gradient helpers only. On JAX they run with
`jax_enable_x64` (the `_float64_on_jax` fixture): R2-G2 solves its systems in float64.
"""

import functools
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import tfp_gradest as tge
from tfp_gradest import _backend, r2g2
from tfp_gradest.r2g2 import solvers

from . import backend_utils as bu
from .conftest import Z_THRESHOLD

if bu.backend() == "tensorflow":
    import tensorflow as tf  # the TensorFlow-only tests (not marked `backends`)

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _float64_on_jax():
    """float64 on JAX needs `jax_enable_x64` (otherwise JAX computes float32): on for these
    tests, restored afterwards."""
    if bu.backend() != "jax":
        yield
        return
    import jax

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def _sin(h):
    """`sin(h)` in the dtype of `h`. (On JAX, `keras.ops.sin` of float64 computes float32:
    Keras's JAX type promotion caps floats at 32 bits; `jax.numpy.sin` does not.)"""
    if bu.backend() == "jax":
        import jax.numpy as jnp

        return jnp.sin(h)
    return ops.sin(h)


def _grads(loss_fn, values):
    """Numpy gradients of `loss_fn(*variables)` at `values` (numpy arrays), on any backend.

    Compiled on JAX only, where eager dispatch is the slower choice (and on TensorFlow,
    compiling is).
    """
    variables = [keras.Variable(v, dtype=np.asarray(v).dtype.name) for v in values]
    jit_compile = bu.backend() == "jax"
    return bu.value_and_grad(lambda: loss_fn(*variables), variables, jit_compile=jit_compile)[1]


def _dense_case(batch=8, d_in=50, units=3, seed=0):
    rng = np.random.default_rng(seed)  # per case: the data never depends on test order
    x = rng.normal(size=(batch, d_in))
    loc = 0.1 * rng.normal(size=(d_in, units))
    scale = np.exp(rng.normal(size=(d_in, units)) - 2)
    bias_loc, bias_scale = 0.1 * rng.normal(size=units), np.linspace(0.1, 0.3, units)
    return x, loc, scale, bias_loc, bias_scale


def _loss_grads(
    x, loc, scale, noise, linear_map, bias=None, conditioning="per_example", use_r2g2=True
):
    """Gradients of a non-linear per-example loss, `Σ sin(h)`, w.r.t. (loc, scale[, bias_loc,
    bias_scale])."""

    def loss(loc, scale, *bias_variables):
        if use_r2g2:
            h = r2g2.gaussian_linear(
                x,
                loc,
                scale,
                noise,
                linear_map,
                *bias_variables,
                *(bias[2:] if bias else ()),
                conditioning=conditioning,
                cg_iterations=200,
                cg_tolerance=1e-12,
            )
        else:
            h = linear_map.apply(x, loc + scale * noise)
            if bias:
                h = h + bias_variables[0] + bias_variables[1] * bias[2]
        return ops.sum(_sin(h))

    return _grads(loss, [loc, scale] + (list(bias[:2]) if bias else []))


@pytest.mark.backends
def test_forward_is_the_reparameterized_sample():
    x, loc, scale, bl, bs = _dense_case()
    noise, bias_noise = RNG.normal(size=loc.shape), RNG.normal(size=3)
    h = r2g2.gaussian_linear(x, loc, scale, noise, r2g2.DenseMap(), bl, bs, bias_noise)
    np.testing.assert_allclose(
        bu.to_numpy(h), x @ (loc + scale * noise) + bl + bs * bias_noise, rtol=1e-12
    )


@pytest.mark.backends
def test_dense_per_example_equals_the_local_reparameterization_backward_formula():
    x, loc, scale, bl, bs = _dense_case()
    noise, bias_noise = RNG.normal(size=loc.shape), RNG.normal(size=3)

    def loss(*variables):
        return ops.sum(_sin(r2g2.gaussian_linear(x, *variables[:2], noise, r2g2.DenseMap(),
                                                    *variables[2:], bias_noise)))  # fmt: skip

    grads = _grads(loss, [loc, scale, bl, bs])
    h = x @ (loc + scale * noise) + bl + bs * bias_noise  # the forward sample (test above)
    # LRT: h = m + sqrt(v) ζ, so ∂h_bj/∂σ_ij = x_bi² σ_ij (h_bj - m_bj) / v_bj (bias: input 1).
    g = np.cos(h)
    xa = np.c_[x, np.ones(len(x))]
    sa, ma = np.r_[scale, bs[None]], np.r_[loc, bl[None]]
    lrt = sa * ((xa**2).T @ (g * (h - xa @ ma) / ((xa**2) @ sa**2)))
    np.testing.assert_allclose(np.r_[grads[1], grads[3][None]], lrt, rtol=1e-10)
    # Means and inputs keep the ordinary gradients.
    np.testing.assert_allclose(grads[0], x.T @ g, rtol=1e-10)


@pytest.mark.backends
@pytest.mark.parametrize("conditioning", ["per_example", "whole_batch"])
def test_conv_equals_rt_exactly_when_the_solve_is_skipped(conditioning):
    # 8x8 input, 3x3 kernel, 2 channels: P = 36 positions >= k = 19 weights.
    rng = np.random.default_rng(1)
    conv = r2g2.ConvolutionMap(2, (3, 3), (1, 1), "valid", (1, 1))
    x = rng.normal(size=(4, 8, 8, 2))
    loc, scale = rng.normal(size=(3, 3, 2, 5)), np.exp(rng.normal(size=(3, 3, 2, 5)) - 1)
    bias = (rng.normal(size=5), np.full(5, 0.2), rng.normal(size=5))
    noise = rng.normal(size=loc.shape)
    assert r2g2.solve_is_skipped(conditioning, 4, 36, 19)
    ours = _loss_grads(x, loc, scale, noise, conv, bias, conditioning)
    rt = _loss_grads(x, loc, scale, noise, conv, bias, use_r2g2=False)
    for a, b in zip(ours, rt):
        # Equal up to the order of floating-point operations.
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.backends
@pytest.mark.parametrize("memory_limit", [None, 1], ids=["direct", "cg"])
@pytest.mark.parametrize("conditioning", ["per_example", "whole_batch"])
def test_conjugate_gradient_residual_is_below_tolerance(conditioning, memory_limit):
    # 4x4 input, 3x3 kernel, 4 channels: P = 4 positions (B·P = 8) < k = 36: a real solve,
    # direct (chosen by the cost model) or by conjugate gradients (no memory for direct).
    rng = np.random.default_rng(2)
    conv = r2g2.ConvolutionMap(2, (3, 3), (1, 1), "valid", (1, 1))
    patches = bu.to_numpy(conv.patches(ops.convert_to_tensor(rng.normal(size=(2, 4, 4, 4)))))
    scale = np.exp(rng.normal(size=(36, 3)) - 1)
    noise = rng.normal(size=(36, 3))
    rows = 4 if conditioning == "per_example" else 8
    groups = 2 if conditioning == "per_example" else 1
    assert solvers.use_direct_solve(groups, 3, rows, 36, memory_limit) == (memory_limit is None)
    expected, residual = r2g2.conditional_noise(
        ops.convert_to_tensor(patches),
        ops.convert_to_tensor(scale),
        ops.convert_to_tensor(noise),
        conditioning,
        cg_iterations=100,
        cg_tolerance=1e-8,
        direct_solve_memory_limit=memory_limit,
    )
    expected = bu.to_numpy(expected)
    assert float(bu.to_numpy(residual)) < 1e-8
    # The conditional mean reproduces the observation: P (σ ⊙ E[ε|h]) = P (σ ⊙ ε).
    observed = np.einsum("bpk,kf->bpf", patches, scale * noise)
    if conditioning == "per_example":
        reproduced = np.einsum("bpk,bkf->bpf", patches, scale * expected)
    else:
        reproduced = np.einsum("bpk,kf->bpf", patches, scale * expected)
    np.testing.assert_allclose(reproduced, observed, rtol=1e-6, atol=1e-9)
    # And it is a projection: never longer than ε.
    assert np.all(np.linalg.norm(expected, axis=-2) <= np.linalg.norm(noise, axis=0) + 1e-9)


@pytest.mark.backends
def test_solving_without_float64_warns_and_still_reproduces_the_observation():
    bu.skip_unless("jax", "a backend without float64 (JAX without jax_enable_x64)")
    import jax

    jax.config.update("jax_enable_x64", False)  # the autouse fixture restores it
    rng = np.random.default_rng(2)
    conv = r2g2.ConvolutionMap(2, (3, 3), (1, 1), "valid", (1, 1))
    patches = conv.patches(ops.convert_to_tensor(rng.normal(size=(2, 4, 4, 4)), "float32"))
    scale = np.exp(rng.normal(size=(36, 3)) - 1).astype("float32")
    noise = rng.normal(size=(36, 3)).astype("float32")
    with pytest.warns(UserWarning, match="R2-G2 solves its systems in float64"):
        expected, residual = r2g2.conditional_noise(
            patches, ops.convert_to_tensor(scale), ops.convert_to_tensor(noise)
        )
    patches, expected = bu.to_numpy(patches), bu.to_numpy(expected)
    assert expected.dtype == np.float32 and np.all(np.isfinite(expected))
    # Solved (or fallen back to ε) systems both reproduce the observation, to float32 rounding.
    np.testing.assert_allclose(
        np.einsum("bpk,bkf->bpf", patches, scale * expected),
        np.einsum("bpk,kf->bpf", patches, scale * noise),
        rtol=1e-3,
        atol=1e-4,
    )


def _paired_draws(loss_fn, values, num_draws, seed):
    """`num_draws` paired gradient draws of R2-G2 and of RT, each pair with the same noise.

    `loss_fn(r2g2_variables, rt_variables, seed_generator)` returns the sum of the two
    estimators' losses (separate copies of the variables, made from `values`), so one
    compiled call gives one draw of both. Returns `(ours, rt)`: lists of `[N, *shape]`
    arrays.
    """
    ours = [keras.Variable(v, dtype=v.dtype.name) for v in values]
    rt = [keras.Variable(v, dtype=v.dtype.name) for v in values]
    seeds = keras.random.SeedGenerator(seed)
    step = bu.gradient_fn(
        lambda: loss_fn(ours, rt, seeds), ours + rt, state_variables=[seeds.state],
        jit_compile=True,
    )  # fmt: skip
    draws = [np.stack(d) for d in zip(*(step()[1] for _ in range(num_draws)))]
    return draws[: len(values)], draws[len(values) :]


def _paired_z(ours, rt):
    """Max |z| of the mean paired difference over all elements (zero under unbiasedness).

    Both estimators see the same noise in each draw; the standard error comes from the
    draws. Elements whose difference is exactly 0 in every draw (the means' gradients,
    identical by construction) count as z = 0.
    """
    worst = 0.0
    for a, b in zip(ours, rt):
        difference = (a - b).reshape(len(a), -1)
        se = difference.std(0, ddof=1) / np.sqrt(len(a))
        mean = np.abs(difference.mean(0))
        z = np.where(se > 0, mean / np.where(se > 0, se, 1.0), np.where(mean > 0, np.inf, 0.0))
        worst = max(worst, float(np.max(z)))
    return worst


@functools.cache  # the power check re-uses the unbiasedness test's draws
def _weight_draws(case, conditioning, num_draws):
    """R2-G2 and RT gradient draws (kernel and bias, means and scales) of a per-example
    non-linear loss: `Σ sin(h)` (dense), `Σ sin(h) + ½ h²` (conv)."""
    if case == "dense":
        linear_map = r2g2.DenseMap()
        x, loc, scale, _, _ = _dense_case(batch=4, d_in=20, units=2)
        loss_of_outputs = _sin_loss
    else:
        # The quadratic term gives the scale gradient a large mean, so that the power check
        # below detects a 1.5x error (measured: z ≈ 22 at 1000 draws; 2.9 at 2000 without it).
        loss_of_outputs = _sin_and_square_loss
        rng = np.random.default_rng(4)
        linear_map = r2g2.ConvolutionMap(2, (3, 3), (1, 1), "valid", (1, 1))
        x = rng.normal(size=(2, 4, 4, 3))
        loc = 0.3 * rng.normal(size=(3, 3, 3, 2))
        scale = np.exp(rng.normal(size=(3, 3, 3, 2)) - 1)
    units = loc.shape[-1]

    def loss(ours, rt, seeds):
        noise = _backend.normal(loc.shape, seeds.next(), "float64")
        bias_noise = _backend.normal((units,), seeds.next(), "float64")
        h_ours = r2g2.gaussian_linear(
            x, *ours[:2], noise, linear_map, *ours[2:], bias_noise,
            conditioning=conditioning, cg_iterations=100, cg_tolerance=1e-10,
        )  # fmt: skip
        h_rt = linear_map.apply(x, rt[0] + rt[1] * noise) + rt[2] + rt[3] * bias_noise
        return loss_of_outputs(h_ours) + loss_of_outputs(h_rt)

    return _paired_draws(loss, [loc, scale, np.zeros(units), np.full(units, 0.3)], num_draws, 7)


def _sin_loss(h):
    return ops.sum(_sin(h))


def _sin_and_square_loss(h):
    return ops.sum(_sin(h) + 0.5 * ops.square(h))


def _unbiasedness_z(case, conditioning, num_draws, wrong=False):
    """Paired test of R2-G2 against RT for every variable (`_paired_z`), and the RT / R2-G2
    variance ratio of the kernel scale's gradient."""
    ours, rt = _weight_draws(case, conditioning, num_draws)
    if wrong:
        ours = [ours[0], 1.5 * ours[1], *ours[2:]]  # a deliberately mis-scaled scale gradient
    return _paired_z(ours, rt), float(np.mean(rt[1].var(0)) / np.mean(ours[1].var(0)))


@pytest.mark.backends
@pytest.mark.parametrize("conditioning", ["per_example", "whole_batch"])
def test_dense_r2g2_is_unbiased_and_lower_variance(conditioning):
    z, ratio = _unbiasedness_z("dense", conditioning, 4000)
    print(f"dense {conditioning}: max |z| {z:.2f}, RT/R2-G2 variance {ratio:.1f}")
    assert z < Z_THRESHOLD and ratio > 1.5


@pytest.mark.backends
@pytest.mark.parametrize("conditioning", ["per_example", "whole_batch"])
def test_conv_r2g2_is_unbiased_and_lower_variance(conditioning):
    z, ratio = _unbiasedness_z("conv", conditioning, 1000)
    print(f"conv {conditioning}: max |z| {z:.2f}, RT/R2-G2 variance {ratio:.1f}")
    assert z < Z_THRESHOLD and ratio > 1.5


@pytest.mark.backends
def test_power_the_unbiasedness_test_rejects_a_mis_scaled_gradient():
    z, _ = _unbiasedness_z("dense", "per_example", 4000, wrong=True)
    assert z > Z_THRESHOLD


@pytest.mark.backends
def test_power_the_conv_unbiasedness_test_rejects_a_mis_scaled_gradient():
    z, _ = _unbiasedness_z("conv", "per_example", 1000, wrong=True)
    assert z > Z_THRESHOLD


@pytest.mark.backends
def test_bad_conditioning_is_named():
    x, loc, scale, _, _ = _dense_case()
    with pytest.raises(ValueError, match="conditioning"):
        r2g2.gaussian_linear(x, loc, scale, scale, r2g2.DenseMap(), conditioning="batch")


@pytest.mark.backends
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize(
    "padding,strides,dilation", [("valid", 1, 1), ("same", 2, 1), ("valid", 1, 2)]
)
def test_patches_reproduce_the_convolution(rank, padding, strides, dilation):
    conv = r2g2.ConvolutionMap(rank, (3,) * rank, (strides,) * rank, padding, (dilation,) * rank)
    x = ops.convert_to_tensor(RNG.normal(size=(2,) + (7,) * rank + (2,)))
    kernel = RNG.normal(size=(3,) * rank + (2, 4))
    patches = bu.to_numpy(conv.patches(x))
    outputs = bu.to_numpy(conv.to_positions(conv.apply(x, ops.convert_to_tensor(kernel))))
    assert patches.shape[1] == outputs.shape[1] == conv.num_positions(x.shape)
    via_patches = np.einsum("bpk,kf->bpf", patches, kernel.reshape(-1, 4))
    np.testing.assert_allclose(via_patches, outputs, rtol=1e-10, atol=1e-12)


# --- automatic fallback to whole-batch conditioning ------------------------------------


@pytest.mark.backends
def test_per_example_falls_back_to_whole_batch_over_the_memory_limit():
    conv = r2g2.ConvolutionMap(2, (3, 3), (1, 1), "valid", (1, 1))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 4, 3))
    loc, scale = rng.normal(size=(3, 3, 3, 2)), np.full((3, 3, 3, 2), 0.5)
    noise = rng.normal(size=(3, 3, 3, 2))

    def scale_grad(conditioning, limit):
        def loss(scale):
            h = r2g2.gaussian_linear(
                x, loc, scale, noise, conv, conditioning=conditioning,
                cg_iterations=100, cg_tolerance=1e-12, per_example_memory_limit=limit,
            )  # fmt: skip
            return ops.sum(_sin(h))

        return _grads(loss, [scale])[0]

    with pytest.warns(UserWarning, match="whole-batch"):
        fallen_back = scale_grad("per_example", 100)  # 2 × 27 × 2 doubles > 100 bytes
    np.testing.assert_allclose(fallen_back, scale_grad("whole_batch", None), rtol=1e-8)
    # Within the limit, per-example conditioning is kept (and differs).
    assert not np.allclose(scale_grad("per_example", 10**6), fallen_back)


@pytest.mark.backends
@pytest.mark.parametrize(
    "per_example_limit,direct_limit,falls_back,direct",
    [(100, None, True, True), (None, 1, False, False)],
    ids=["per-example-limit", "direct-solve-limit"],
)
def test_the_two_memory_limits_have_one_job_each(
    per_example_limit, direct_limit, falls_back, direct, monkeypatch
):
    # `per_example_memory_limit` only switches to whole-batch conditioning;
    # `direct_solve_memory_limit` only sends the solves to conjugate gradients.
    conv = r2g2.ConvolutionMap(2, (3, 3), (1, 1), "valid", (1, 1))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 4, 3))
    loc, scale = rng.normal(size=(3, 3, 3, 2)), np.full((3, 3, 3, 2), 0.5)
    noise = rng.normal(size=(3, 3, 3, 2))
    chosen = []
    choose = solvers.use_direct_solve
    monkeypatch.setattr(
        solvers, "use_direct_solve", lambda *args: chosen.append(choose(*args)) or chosen[-1]
    )

    def loss(scale):
        h = r2g2.gaussian_linear(
            x, loc, scale, noise, conv, per_example_memory_limit=per_example_limit,
            direct_solve_memory_limit=direct_limit,
        )  # fmt: skip
        return ops.sum(_sin(h))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _grads(loss, [scale])
    assert any("whole-batch" in str(w.message) for w in caught) == falls_back
    assert chosen and set(chosen) == {direct}


def _systems_case(seed):
    """`patches [2, 4, 36]`, `scale`, `noise [36, 3]`: 2 groups of 4 rows, 3 filters."""
    rng = np.random.default_rng(seed)
    patches = ops.convert_to_tensor(rng.normal(size=(2, 4, 36)))
    scale = ops.convert_to_tensor(np.exp(rng.normal(size=(36, 3)) - 1))
    noise = ops.convert_to_tensor(rng.normal(size=(36, 3)))
    return patches, scale, noise


@pytest.mark.backends
def test_cg_conditional_noise_is_the_direct_solve_matrix_free():
    # 2 groups of 4 rows, k = 36: well conditioned, so 20 CG iterations reach 1e-10.
    patches, scale, noise = _systems_case(seed=5)
    direct, _ = solvers.direct_conditional_noise(patches, scale, noise)
    cg, residual = solvers.cg_conditional_noise(patches, scale, noise, 20, 1e-10)
    assert tuple(residual.shape) == (2, 3) and np.all(bu.to_numpy(residual) < 1e-10)
    np.testing.assert_allclose(bu.to_numpy(cg), bu.to_numpy(direct), rtol=1e-7, atol=1e-9)
    # One iteration is not the answer, and says so in its residual.
    short, residual = solvers.cg_conditional_noise(patches, scale, noise, 1, 1e-10)
    assert np.all(bu.to_numpy(residual) > 1e-3)
    assert not np.allclose(bu.to_numpy(short), bu.to_numpy(direct), atol=1e-3)


@pytest.mark.backends
def test_unknown_sizes_are_none():
    conv = r2g2.ConvolutionMap(2, (3, 3), (1, 1), "same", (1, 1))
    assert conv.num_positions((2, None, 4, 3)) is None
    assert r2g2.DenseMap().num_positions((2, None, 3)) is None
    assert r2g2.DenseMap().num_positions((None, 3)) == 1
    # An unknown batch or position count never skips a solve it cannot prove redundant.
    assert not r2g2.solve_is_skipped("whole_batch", None, 4, 3)
    assert not r2g2.solve_is_skipped("per_example", 8, None, 3)
    assert r2g2.solve_is_skipped("whole_batch", 2, 4, 8)
    assert not solvers.use_direct_solve(2, 3, None, 36, None)


@pytest.mark.backends
def test_memory_limit_is_a_deprecated_spelling_of_direct_solve_memory_limit():
    patches, scale, noise = _systems_case(seed=2)
    new = r2g2.conditional_noise(patches, scale, noise, direct_solve_memory_limit=1)
    with pytest.warns(DeprecationWarning, match=r"conditional_noise\(direct_solve_memory_limit"):
        old = r2g2.conditional_noise(patches, scale, noise, memory_limit=1)
    np.testing.assert_array_equal(bu.to_numpy(old[0]), bu.to_numpy(new[0]))
    upstream = ops.convert_to_tensor(np.random.default_rng(3).normal(size=(2, 4, 3)))
    with pytest.warns(DeprecationWarning, match=r"scale_gradient\(direct_solve_memory_limit"):
        r2g2.scale_gradient(patches, scale, noise, upstream, memory_limit=1)


# --- a Gaussian latent before a decoder's first dense layer ----------------------------


def _latent_case(num=4, latent=12, units=3, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(num, latent)),
        np.exp(rng.normal(size=(num, latent)) - 1),
        rng.normal(size=(latent, units)) / np.sqrt(latent),
        0.1 * rng.normal(size=units),
    )


def _latent_grads(loc, scale, kernel, bias, noise, use_r2g2=True):
    def loss(*variables):
        return ops.sum(_sin(_latent_outputs(*variables, noise, use_r2g2)))

    h = _latent_outputs(loc, scale, kernel, bias, noise, use_r2g2)
    return bu.to_numpy(h), _grads(loss, [loc, scale, kernel, bias])


def _latent_outputs(loc, scale, kernel, bias, noise, use_r2g2):
    if use_r2g2:
        return r2g2.gaussian_latent_dense(
            loc, scale, noise, kernel, bias, cg_iterations=100, cg_tolerance=1e-12
        )
    return ops.matmul(loc + scale * noise, kernel) + bias


@pytest.mark.backends
def test_latent_dense_forward_is_the_sample_and_equals_rt_when_injective():
    loc, scale, kernel, bias = _latent_case(latent=3, units=5)  # units >= latent: skip
    noise = RNG.normal(size=loc.shape)
    (h, ours), (h_rt, rt) = (_latent_grads(loc, scale, kernel, bias, noise, f) for f in (1, 0))
    np.testing.assert_allclose(h, h_rt, rtol=1e-12)
    for a, b in zip(ours, rt):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.backends
def test_latent_dense_conditional_noise_reproduces_the_pre_activations():
    loc, scale, kernel, bias = _latent_case()
    noise = RNG.normal(size=loc.shape)
    (h, ours), (_, rt) = (_latent_grads(loc, scale, kernel, bias, noise, f) for f in (1, 0))
    for a, b in zip([ours[0], ours[2], ours[3]], [rt[0], rt[2], rt[3]]):
        np.testing.assert_allclose(a, b, rtol=1e-12)  # loc, kernel, bias: ordinary gradients
    # E[ε|h] = ours_σ / (W g); it must generate the same h as ε does.
    d_z = np.cos(h) @ kernel.T
    expected_noise = ours[1] / d_z
    np.testing.assert_allclose(
        (scale * expected_noise) @ kernel, (scale * noise) @ kernel, rtol=1e-8
    )


@functools.cache  # the power check re-uses the unbiasedness test's draws
def _latent_draws(num_draws):
    """R2-G2 and RT draws of the latent scale's gradient of `Σ sin(h)`."""
    loc, scale, kernel, bias = _latent_case()

    def loss(ours, rt, seeds):
        noise = _backend.normal(loc.shape, seeds.next(), "float64")
        h_ours = r2g2.gaussian_latent_dense(loc, ours[0], noise, kernel, bias, 100, 1e-10)
        h_rt = ops.matmul(loc + rt[0] * noise, kernel) + bias
        return ops.sum(_sin(h_ours)) + ops.sum(_sin(h_rt))

    ours, rt = _paired_draws(loss, [scale], num_draws, 5)
    return ours[0], rt[0]


def _latent_unbiasedness_z(num_draws, wrong=False):
    ours, rt = _latent_draws(num_draws)
    if wrong:
        ours = 1.5 * ours
    return _paired_z([ours], [rt]), float(rt.var(0).mean() / ours.var(0).mean())


@pytest.mark.backends
def test_latent_dense_r2g2_is_unbiased_and_lower_variance():
    z, ratio = _latent_unbiasedness_z(1600)
    print(f"latent dense: max |z| {z:.2f}, RT/R2-G2 variance of σ-gradient {ratio:.1f}")
    # Threshold: conditioning the 12-d noise on the 3 observed units keeps a fraction
    # about 3/12 of its energy, so the predicted gain is up to k/P = 4 (measured 4.1).
    # Each mean variance over 1600 draws has a relative standard error of about
    # sqrt(2/1600) ≈ 4%, so 1.5 sits far below the measurement (no false alarm) while
    # still failing an estimator that reduces nothing (ratio 1).
    assert z < Z_THRESHOLD and ratio > 1.5


@pytest.mark.backends
def test_power_the_latent_unbiasedness_test_rejects_a_mis_scaled_gradient():
    z, _ = _latent_unbiasedness_z(1600, wrong=True)
    assert z > Z_THRESHOLD


@pytest.mark.backends
def test_latent_dense_compiles_with_xla_in_float32():
    loc, scale, kernel, bias = (v.astype("float32") for v in _latent_case())
    seeds = keras.random.SeedGenerator(1)
    scale_variable = keras.Variable(scale, dtype="float32")

    def loss():
        noise = _backend.normal(loc.shape, seeds.next(), "float32")
        h = r2g2.gaussian_latent_dense(loc, scale_variable, noise, kernel, bias)
        return ops.sum(_sin(h))

    _, (g,) = bu.value_and_grad(
        loss, [scale_variable], state_variables=[seeds.state], jit_compile=True
    )
    assert g.dtype == np.float32 and np.all(np.isfinite(g))


@pytest.mark.backends
def test_latent_dense_bad_shapes_are_named():
    loc, scale, kernel, _ = _latent_case()
    with pytest.raises(ValueError, match="kernel"):
        r2g2.gaussian_latent_dense(loc, scale, scale, kernel.T)
    with pytest.raises(ValueError, match="noise"):
        r2g2.gaussian_latent_dense(loc, scale, scale[:2], kernel)


# --- exact solves on ill-conditioned conv layers, argument validation ----------------


def _smooth_features(batch=2, size=12, channels=16, seed=0):
    """Smooth, strongly correlated conv inputs: 16 channels mixing three low-frequency waves.

    The per-example Gram matrices of their 3x3 patches have condition numbers of
    1e8 (valid, 100 positions) to 1e12 (same, 144 positions) against k = 145
    weights; conjugate gradients reach only 1e-2 to 1e-3 relative residual.
    """
    rng = np.random.default_rng(seed)
    i, j = np.arange(size)[:, None, None], np.arange(size)[None, :, None]
    x = np.zeros((batch, size, size, channels))
    for b in range(batch):
        for m in range(1, 4):
            phase = rng.uniform(0, 6, size=2)
            wave = np.sin(0.25 * m * i + phase[0]) * np.cos(0.2 * m * j + phase[1])
            x[b] += rng.normal(size=channels) * wave
    return x + 0.01 * rng.normal(size=x.shape)


@functools.cache  # the power check re-uses the unbiasedness test's draws
def _ill_conditioned_draws(
    padding, num_draws, cg_iterations=50, memory_limit=None, seed=11, solver=None
):
    """R2-G2's kernel-scale gradient draws and the exact gradient (float32 layer), for
    `_ill_conditioned_bias_z`. `solver="direct"` forces the direct solve (the cost
    model picks CG at `R = 100` with `B = 1`, where CG does not converge and every
    system would fall back to RT, leaving the direct solve's exactness untested).

    For the loss `½ Σ h²` with Gaussian pre-activations `h ~ N(m, v)` the
    expected loss is `½ Σ (m² + v)`, so the exact gradient `g` is known. The
    draws are combined with inverse-variance weights `w = g / Var` (the most
    powerful linear statistic for independent elements): the mean of `d · w`
    should be `g · w`, its standard error is the draws' standard deviation
    over √N, and a relative bias `b` shifts it by `b g · w`.
    """
    conv = r2g2.ConvolutionMap(2, (3, 3), (1, 1), padding, (1, 1))
    x = tf.constant(_smooth_features(batch=1), tf.float32)
    rng = np.random.default_rng(2)
    # 16 filters: independent systems, each adding information on a common bias.
    loc = tf.Variable(0.01 * rng.normal(size=(3, 3, 16, 16)), dtype=tf.float32)
    scale = tf.Variable(np.exp(rng.normal(size=(3, 3, 16, 16)) - 2.0), dtype=tf.float32)
    bias_loc, bias_scale = tf.Variable(tf.zeros(16)), tf.Variable(tf.fill([16], 0.1))

    def loss(seed):
        noise = tf.random.stateless_normal(loc.shape, seed)
        bias_noise = tf.random.stateless_normal([16], seed + 1)
        h = r2g2.gaussian_linear(
            x, loc, scale, noise, conv, bias_loc, bias_scale, bias_noise,
            cg_iterations=cg_iterations, per_example_memory_limit=memory_limit,
            direct_solve_memory_limit=memory_limit,
        )  # fmt: skip
        return 0.5 * tf.reduce_sum(tf.square(h))

    chooser = solvers.use_direct_solve
    if solver == "direct":  # the choice is made while tracing, inside gradient_draws
        solvers.use_direct_solve = lambda *args: True
    try:
        draws = tge.diagnostics.gradient_draws(loss, [scale], num_draws, seed=seed)[0].numpy()
    finally:
        solvers.use_direct_solve = chooser
    draws = draws.reshape(num_draws, -1).astype(np.float64)
    with tf.GradientTape() as tape:
        mean = conv.apply(x, loc) + bias_loc
        variance = conv.apply(tf.square(x), tf.square(scale)) + tf.square(bias_scale)
        expected_loss = 0.5 * tf.reduce_sum(tf.square(mean) + variance)
    exact = tape.gradient(expected_loss, scale).numpy().ravel().astype(np.float64)
    return draws, exact


def _ill_conditioned_bias_z(padding, num_draws, scale_factor=1.0, **kwargs):
    """|z| of the inverse-variance-weighted mean against the exact gradient (see above)."""
    draws, exact = _ill_conditioned_draws(padding, num_draws, **kwargs)
    draws = scale_factor * draws
    # Inverse-variance weights (the most powerful linear statistic for independent elements).
    weights = exact / draws.var(0, ddof=1)
    projected = draws @ weights
    z = (projected.mean() - exact @ weights) / (projected.std(ddof=1) / np.sqrt(num_draws))
    return float(abs(z))


@pytest.mark.parametrize(
    "padding,solver", [("valid", "direct"), ("same", None)], ids=["P100-direct", "P144-auto"]
)
def test_r2g2_is_unbiased_on_ill_conditioned_conv_features(padding, solver):
    z = _ill_conditioned_bias_z(padding, 1200, solver=solver)
    print(f"ill-conditioned conv ({padding}): |z| {z:.2f}")
    assert z < Z_THRESHOLD


@pytest.mark.filterwarnings(
    "ignore:R2-G2"
)  # memory_limit=1 also asks for whole-batch (B = 1: the same)
def test_r2g2_with_a_one_iteration_budget_stays_unbiased():
    # Forced onto conjugate gradients (no memory for the direct solve) with 1 iteration:
    # every system stops short and falls back to ε, the reparameterisation gradient.
    z = _ill_conditioned_bias_z("valid", 1200, cg_iterations=1, memory_limit=1)
    assert z < Z_THRESHOLD


def test_power_the_ill_conditioned_test_detects_a_5_percent_bias():
    # 1200 draws of 16 filters: a 5% bias shifts the statistic by about 8 standard errors.
    z = _ill_conditioned_bias_z("valid", 1200, scale_factor=1.05, solver="direct")
    assert z > Z_THRESHOLD


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"cg_iterations": 0}, ValueError),
        ({"cg_iterations": -3}, ValueError),
        ({"cg_iterations": 2.5}, TypeError),
        ({"cg_tolerance": 0.0}, ValueError),
        ({"cg_tolerance": float("nan")}, ValueError),
        ({"cg_tolerance": float("inf")}, ValueError),
        ({"cg_tolerance": "1e-6"}, TypeError),
    ],
)
def test_bad_solver_arguments_are_named(kwargs, error):
    name = next(iter(kwargs))
    with pytest.raises(error, match=f"{name}.*Received"):
        tge.layers.estimators.R2G2(**kwargs)
    x, loc, scale, _, _ = _dense_case()
    with pytest.raises(error, match=name):
        r2g2.gaussian_linear(x, loc, scale, scale, r2g2.DenseMap(), **kwargs)


def test_direct_solve_is_the_minimum_norm_projection_on_ill_conditioned_features():
    # (TensorFlow only: on JAX the same direct solve is checked on 4- and 8-row systems by
    # test_conjugate_gradient_residual_is_below_tolerance; 100 rows eagerly take ~30 s there.)
    # Exact check: E[ε|h] = A⁺ A ε (A = P diag σ), computed by SVD in numpy, for the
    # smooth 16-channel features with 100 positions (condition numbers ~1e8).
    conv = r2g2.ConvolutionMap(2, (3, 3), (1, 1), "valid", (1, 1))
    patches = conv.patches(ops.convert_to_tensor(_smooth_features(batch=1)))
    rng = np.random.default_rng(8)
    scale = np.exp(rng.normal(size=(144, 2)) - 1)
    noise = rng.normal(size=(144, 2))
    assert solvers.use_direct_solve(1, 2, 100, 144, memory_limit=None)
    expected, residual = r2g2.conditional_noise(
        patches,
        ops.convert_to_tensor(scale),
        ops.convert_to_tensor(noise),
        direct_solve_memory_limit=None,
    )
    assert float(bu.to_numpy(residual)) < 1e-8
    patches, expected = bu.to_numpy(patches), bu.to_numpy(expected)
    for f in range(2):
        a = patches[0] * scale[:, f]
        projection = np.linalg.pinv(a, rcond=1e-13) @ (a @ noise[:, f])
        np.testing.assert_allclose(expected[0, :, f], projection, atol=1e-6)


@pytest.mark.backends
def test_cost_model_prefers_direct_solves_for_few_positions_and_cg_over_memory():
    # The model fitted to benchmarks/solver_costs.py's grid; the cells below were measured
    # (time direct / exact CG): the benchmark CNN's conv 3 (B 64, F 16, R 16, k 145) 0.52;
    # R 64, k 145 8.7 (the elimination's R·(R+1)·S numbers per step leave the caches).
    cost = solvers.solve_cost(64, 16, 16, 145)
    assert cost.direct < cost.conjugate_gradient
    assert solvers.use_direct_solve(64, 16, 16, 145, memory_limit=2**28)
    assert not solvers.use_direct_solve(64, 16, 16, 145, memory_limit=1000)
    assert not solvers.use_direct_solve(64, 16, 64, 145, memory_limit=None)
    assert not solvers.use_direct_solve(1, 16, 140, 145, memory_limit=None)
    assert not solvers.use_direct_solve(None, 16, 16, 145, memory_limit=None)


@pytest.mark.backends
def test_gram_matrices_from_the_upper_triangle_are_the_full_products():
    # The direct solve forms A Aᵀ from the R(R+1)/2 upper-triangle row pairs and mirrors them.
    rng = np.random.default_rng(3)
    patches, variance = rng.normal(size=(3, 5, 7)), np.exp(rng.normal(size=(7, 2)))
    gram = solvers.gram_matrices(ops.convert_to_tensor(patches), ops.convert_to_tensor(variance))
    expected = np.einsum("grk,kf,gsk->gfrs", patches, variance, patches)
    np.testing.assert_allclose(bu.to_numpy(gram), expected, rtol=1e-13)


@pytest.mark.backends
def test_direct_solve_refines_only_the_batches_that_need_it():
    # Two 6 x 6 systems in one batch: eigenvalues 1..0.1 (well conditioned) and 1..1e-7
    # with the right-hand side along the smallest eigenvector. The elimination's jitter
    # (1e-13 x mean diagonal) leaves the second a relative residual of about 2e-7, over
    # the 1e-8 tolerance, so one refinement step runs and brings it to about 1e-9.
    rng = np.random.default_rng(4)
    q = np.linalg.qr(rng.normal(size=(2, 6, 6)))[0]
    eigenvalues = np.stack([np.geomspace(1, 0.1, 6), np.geomspace(1, 1e-7, 6)])
    gram = np.einsum("sij,sj,skj->sik", q, eigenvalues, q)
    rhs = np.stack([rng.normal(size=6), q[1, :, -1] * 1e-7 + 1e-12 * rng.normal(size=6)])
    exact = np.linalg.solve(gram, rhs[..., None])[..., 0]
    u, residual = solvers.direct_solve(ops.convert_to_tensor(gram), ops.convert_to_tensor(rhs))
    assert np.all(bu.to_numpy(residual) < 1e-8)
    np.testing.assert_allclose(bu.to_numpy(u), exact, rtol=1e-6)
    # Without the refinement (a tolerance every system meets) the second system stays off.
    _, unrefined = solvers.direct_solve(
        ops.convert_to_tensor(gram), ops.convert_to_tensor(rhs), tolerance=1.0
    )
    unrefined = bu.to_numpy(unrefined)
    assert unrefined[0] < 1e-12 and unrefined[1] > 1e-8
