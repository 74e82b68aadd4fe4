"""The R2-G2 primitive: a Gaussian weight sample seen through a linear map, with a
Rao-Blackwellised backward pass."""

import math

from keras import ops

from tfp_gradest.r2g2 import conditioning as conditioning_lib
from tfp_gradest.r2g2 import solvers

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
      per_example_memory_limit: Python `int`, bytes. Per-example conditioning
        of a convolution holds `B × k × F` products; when that exceeds the
        limit (static shapes, decided at trace time) the backward pass falls
        back to whole-batch conditioning, which is also unbiased, with a
        warning. `None` never falls back. Default value: 256 MiB.

    Returns:
      The pre-activations `h`.

    #### References

    [1] Lam, Bui, Deligiannidis & Teh. Rao-Blackwellised Reparameterisation
        Gradients. 2024. https://arxiv.org/abs/2506.07687
    """
    if conditioning not in conditioning_lib.CONDITIONINGS:
        raise ValueError(
            f"`conditioning` must be one of {conditioning_lib.CONDITIONINGS}. "
            f"Received: conditioning={conditioning!r}"
        )
    cg_iterations, cg_tolerance = solvers.validate_solver_options(cg_iterations, cg_tolerance)
    use_bias = bias_loc is not None
    inputs, kernel_loc, kernel_scale = (
        ops.convert_to_tensor(t) for t in (inputs, kernel_loc, kernel_scale)
    )
    # No gradient reaches the noise: R2-G2 replaces it by E[ε | h] in the scale's gradient.
    kernel_noise = ops.stop_gradient(kernel_noise)
    if use_bias:
        bias_loc, bias_scale = ops.convert_to_tensor(bias_loc), ops.convert_to_tensor(bias_scale)
        bias_noise = ops.stop_gradient(bias_noise)
    num_weights = _num_rows(kernel_scale) + int(use_bias)
    if conditioning_lib.solve_is_skipped(
        conditioning, inputs.shape[0] or 0, linear_map.num_positions(inputs.shape), num_weights
    ):
        # Identity projection: R2-G2 is the reparameterisation gradient, which autodiff gives.
        outputs = linear_map.apply(inputs, kernel_loc + kernel_scale * kernel_noise)
        return outputs + (bias_loc + bias_scale * bias_noise) if use_bias else outputs

    # The forward sample, differentiated as usual for the inputs and the means; the scales
    # are cut off here and get their gradient from `attach_scale_gradient` below.
    outputs = linear_map.apply(inputs, kernel_loc + ops.stop_gradient(kernel_scale) * kernel_noise)
    if use_bias:
        outputs = outputs + (bias_loc + ops.stop_gradient(bias_scale) * bias_noise)

    # Every tensor the backward pass reads is an argument (JAX's custom VJP may not close
    # over values being differentiated); those that take no gradient here get zeros.
    @ops.custom_gradient
    def attach_scale_gradient(outputs, inputs, kernel_scale, kernel_noise, *bias):
        """Identity on `outputs`; its backward pass gives the scales their R2-G2 gradient."""

        def grad_fn(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            d_scale = _scale_gradient(
                inputs, kernel_scale, kernel_noise, *bias, linear_map.to_positions(upstream)
            )
            grads = [upstream, ops.zeros_like(inputs), d_scale[0], ops.zeros_like(kernel_noise)]
            if use_bias:
                grads += [d_scale[1], ops.zeros_like(bias[1])]
            return tuple(grads)

        return outputs, grad_fn

    def _scale_gradient(inputs, kernel_scale, kernel_noise, *bias_and_positions):
        *bias, positions = bias_and_positions
        flat_scale = linear_map.flat_kernel(kernel_scale)
        flat_noise = linear_map.flat_kernel(kernel_noise)
        patches = linear_map.patches(inputs)
        effective = conditioning_lib.fit_to_memory(
            conditioning,
            patches.shape,
            flat_scale.shape[-1],
            kernel_scale.dtype,
            per_example_memory_limit,
        )
        if use_bias:
            bias_scale, bias_noise = bias
            patches = ops.concatenate([patches, ops.ones_like(patches[..., :1])], axis=-1)
            flat_scale = ops.concatenate([flat_scale, bias_scale[None]], axis=0)
            flat_noise = ops.concatenate([flat_noise, bias_noise[None]], axis=0)
        flat_grad = conditioning_lib.scale_gradient(
            patches,
            flat_scale,
            flat_noise,
            positions,
            effective,
            cg_iterations,
            cg_tolerance,
            per_example_memory_limit,
        )
        kernel_grad = linear_map.unflatten_kernel(
            flat_grad[: flat_grad.shape[0] - int(use_bias)], kernel_scale.shape
        )
        return [kernel_grad, flat_grad[-1]] if use_bias else [kernel_grad]

    bias_args = [bias_scale, bias_noise] if use_bias else []
    return attach_scale_gradient(outputs, inputs, kernel_scale, kernel_noise, *bias_args)


def _num_rows(kernel):
    """Weights per filter: the product of all but the last dimension."""
    return math.prod(kernel.shape[:-1])
