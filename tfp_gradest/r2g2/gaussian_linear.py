"""The R2-G2 primitive: a Gaussian weight sample seen through a linear map, with a
Rao-Blackwellised backward pass."""

import math

from keras import ops

from tfp_gradest.r2g2 import conditioning as conditioning_lib

__all__ = ["gaussian_linear"]


def gaussian_linear(
    inputs,
    kernel_loc,
    kernel_scale,
    kernel_noise,
    linear_map,
    bias_loc=None,
    bias_scale=None,
    bias_noise=None,
    conditioning="per_example",
    cg_iterations=50,
    cg_tolerance=1e-6,
    per_example_memory_limit=conditioning_lib.DEFAULT_PER_EXAMPLE_MEMORY_LIMIT,
    direct_solve_memory_limit=conditioning_lib.DEFAULT_DIRECT_SOLVE_MEMORY_LIMIT,
):
    """`h = map(x, μ + σ ⊙ ε) + (μ_b + σ_b ⊙ ε_b)`, differentiated with R2-G2.

    The forward pass is the ordinary reparameterised sample (the same outputs
    as the reparameterisation trick for the same noise). The backward pass gives
    the reparameterisation gradient for the inputs and the means, and for the
    scales the Rao-Blackwellised gradient

    ```none
    ∂f/∂σ = E[(Pᵀ g) ⊙ ε | h]      (see `tfp_gradest.r2g2.conditioning`)
    ```

    The bias is treated as one more weight row with a constant input of 1, so
    it is conditioned jointly with the kernel.

    Args:
      inputs: the layer's input, `[B, ...]`.
      kernel_loc, kernel_scale, kernel_noise: kernel-shaped Tensors `μ, σ, ε`.
      linear_map: `tfp_gradest.r2g2.DenseMap` or `ConvolutionMap`.
      bias_loc, bias_scale, bias_noise: `[F]` Tensors, or `None` for no bias.
      conditioning: `"per_example"` (default) or `"whole_batch"`.
      cg_iterations: Python `int >= 1`, conjugate-gradient iteration budget
        (used where the cost model of `tfp_gradest.r2g2.solvers` prefers
        conjugate gradients to a direct solve).
      cg_tolerance: Python `float > 0`, relative residual above which a
        system's solve is not trusted: that system then gets the (unbiased)
        reparameterisation gradient.
      per_example_memory_limit: Python `int`, bytes, or `None`. Per-example
        conditioning of a convolution holds `B × k × F` products; when that exceeds
        the limit (static shapes, decided at trace time) the backward pass falls
        back to whole-batch conditioning, which is also unbiased, with a
        warning. `None` never falls back. Default value: 256 MiB.
      direct_solve_memory_limit: Python `int`, bytes, or `None`: the largest the
        direct solve's Gram matrices may be; over it the systems are solved by
        conjugate gradients. `None`: no limit. Default value: 256 MiB.

    Returns:
      The pre-activations `h`.

    #### References

    [1] Lam, Bui, Deligiannidis & Teh. Rao-Blackwellised Reparameterisation
        Gradients. 2024. https://arxiv.org/abs/2506.07687
    """
    options = conditioning_lib.validate_options(
        conditioning,
        cg_iterations,
        cg_tolerance,
        per_example_memory_limit,
        direct_solve_memory_limit,
    )
    inputs, kernel_loc, kernel_scale = (
        ops.convert_to_tensor(t) for t in (inputs, kernel_loc, kernel_scale)
    )
    # No gradient reaches the noise: R2-G2 replaces it by E[ε | h] in the scale's gradient.
    kernel_noise = ops.stop_gradient(kernel_noise)
    bias = ()
    if bias_loc is not None:
        bias = (
            ops.convert_to_tensor(bias_loc),
            ops.convert_to_tensor(bias_scale),
            ops.stop_gradient(bias_noise),
        )
    num_weights = _num_rows(kernel_scale) + int(bool(bias))
    positions = linear_map.num_positions(inputs.shape)
    skipped = conditioning_lib.solve_is_skipped(
        options["conditioning"], inputs.shape[0], positions, num_weights
    )
    if skipped:
        # Identity projection: R2-G2 is the reparameterisation gradient, which autodiff gives.
        return _sample(inputs, kernel_loc, kernel_scale, kernel_noise, bias, linear_map)
    # The forward sample, differentiated as usual for the inputs and the means; the scales
    # are cut off here and get their gradient from the identity's backward pass below.
    cut_bias = (bias[0], ops.stop_gradient(bias[1]), bias[2]) if bias else ()
    outputs = _sample(
        inputs, kernel_loc, ops.stop_gradient(kernel_scale), kernel_noise, cut_bias, linear_map
    )
    identity = _identity_with_scale_gradient(linear_map, bool(bias), options)
    return identity(outputs, inputs, kernel_scale, kernel_noise, *bias[1:])


def _sample(inputs, kernel_loc, kernel_scale, kernel_noise, bias, linear_map):
    """`map(x, μ + σ ⊙ ε) + μ_b + σ_b ⊙ ε_b`; `bias` is `(μ_b, σ_b, ε_b)` or `()`."""
    outputs = linear_map.apply(inputs, kernel_loc + kernel_scale * kernel_noise)
    if not bias:
        return outputs
    bias_loc, bias_scale, bias_noise = bias
    return outputs + (bias_loc + bias_scale * bias_noise)


def _identity_with_scale_gradient(linear_map, use_bias, options):
    """`identity(outputs, inputs, kernel_scale, kernel_noise, [bias_scale, bias_noise])`:
    returns `outputs`; its backward pass gives the scales their R2-G2 gradient
    (`_scale_gradients`) and nothing to the other arguments.

    Every tensor the backward pass reads is an argument (JAX's custom VJP may not close
    over values being differentiated); the static ones (`linear_map`, `options`) are
    closed over, as a custom VJP takes tensors only.
    """

    @ops.custom_gradient
    def identity(outputs, inputs, kernel_scale, kernel_noise, *bias):
        def grad_fn(*args, upstream=None):
            if upstream is None:  # TensorFlow passes it positionally, JAX by name
                (upstream,) = args
            at_positions = linear_map.to_positions(upstream)
            d_scales = _scale_gradients(
                inputs, kernel_scale, kernel_noise, bias, at_positions, linear_map, options
            )
            grads = [upstream, ops.zeros_like(inputs), d_scales[0], ops.zeros_like(kernel_noise)]
            if use_bias:
                grads += [d_scales[1], ops.zeros_like(bias[1])]
            return tuple(grads)

        return outputs, grad_fn

    return identity


def _scale_gradients(inputs, kernel_scale, kernel_noise, bias, upstream, linear_map, options):
    """The R2-G2 gradients of the kernel's scale (and of the bias's, if `bias` is
    `(σ_b, ε_b)`), given the upstream gradient `g` at the positions (`[B, P, F]`).

    Per-example conditioning falls back to whole-batch conditioning when its products
    would exceed `options["per_example_memory_limit"]` (`fit_to_memory`).
    """
    patches = linear_map.patches(inputs)
    flat_scale = linear_map.flat_kernel(kernel_scale)
    conditioning = conditioning_lib.fit_to_memory(
        options["conditioning"],
        patches.shape,
        flat_scale.shape[-1],
        kernel_scale.dtype,
        options["per_example_memory_limit"],
    )
    patches, flat_scale, flat_noise = _with_bias_row(
        patches, flat_scale, linear_map.flat_kernel(kernel_noise), bias
    )
    flat_grad = conditioning_lib.scale_gradient(
        patches,
        flat_scale,
        flat_noise,
        upstream,
        conditioning,
        options["cg_iterations"],
        options["cg_tolerance"],
        options["direct_solve_memory_limit"],
    )
    if not bias:
        return [linear_map.unflatten_kernel(flat_grad, kernel_scale.shape)]
    return [linear_map.unflatten_kernel(flat_grad[:-1], kernel_scale.shape), flat_grad[-1]]


def _with_bias_row(patches, flat_scale, flat_noise, bias):
    """The bias as one more weight row whose input is a constant 1, so that it is
    conditioned jointly with the kernel: `patches` `[B, P, k + 1]`, `σ`, `ε` `[k + 1, F]`."""
    if not bias:
        return patches, flat_scale, flat_noise
    bias_scale, bias_noise = bias
    patches = ops.concatenate([patches, ops.ones_like(patches[..., :1])], axis=-1)
    flat_scale = ops.concatenate([flat_scale, bias_scale[None]], axis=0)
    flat_noise = ops.concatenate([flat_noise, bias_noise[None]], axis=0)
    return patches, flat_scale, flat_noise


def _num_rows(kernel):
    """Weights per filter: the product of all but the last dimension."""
    return math.prod(kernel.shape[:-1])
