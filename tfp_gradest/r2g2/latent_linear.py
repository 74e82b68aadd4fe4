"""R2-G2 for a Gaussian *latent* seen through a dense layer: `h = (μ + σ ⊙ ε) W + b`.

In a (hierarchical) VAE the decoder's first layer sees the latent sample only
through `h_n = W ᵀ z_n`. This is the R2-G2 primitive with the roles swapped: the
Gaussian is the per-example latent and the linear map is the (learned, but
not random) matrix `Wᵀ`. For example `n`, conditioning `ε_n ~ N(0, I_d)` on
`h_n` gives (docs/design/r2g2.md; the same formula as for weights)

```none
E[ε_n | h_n] = σ_n ⊙ W u_n,     (Wᵀ diag(σ_n²) W) u_n = h_n - Wᵀ μ_n,
∂f/∂σ_n = (W g_n) ⊙ E[ε_n | h_n],           g_n = ∂f/∂h_n,
```

an `F × F` system per example (`F` = units), solved directly or by conjugate
gradients (`tfp_gradest.r2g2.solvers`).
When `F ≥ d` the map is injective (for full-rank `W`), `h_n` determines `ε_n`
and R2-G2 equals the reparameterisation gradient, so the solve is skipped: the
gain is for latents wider than the first decoder layer.

It is the weight primitive's per-example conditioning with one "filter" per
example: patches `Wᵀ` (`[1, F, d]`), scales `σᵀ` (`[d, N]`).
"""

from keras import ops

from tfp_gradest.r2g2 import conditioning as conditioning_lib
from tfp_gradest.r2g2 import solvers

__all__ = ["gaussian_latent_dense"]


def gaussian_latent_dense(
    loc, scale, noise, kernel, bias=None, cg_iterations=50, cg_tolerance=1e-6
):
    """`h = (μ + σ ⊙ ε) @ W + b`, with the R2-G2 gradient for `σ`.

    Forward: the reparameterised sample through the layer, identical to
    `(loc + scale * noise) @ kernel + bias`. Backward: ordinary gradients for
    `loc`, `kernel` and `bias`; the Rao-Blackwellised gradient (module
    docstring) for `scale`. It is unbiased when the loss depends on `noise`
    only through `h` and through other uses of `z = loc + scale * noise`
    differentiated as usual — e.g. a VAE's `log q(z)` term keeps its
    reparameterisation gradient, the decoder's term gets R2-G2.

    Args:
      loc, scale: `[..., d]` floating Tensors, the latent's mean and standard
        deviation per example (e.g. an encoder's outputs).
      noise: `[..., d]`, the standard Normal draw `ε` (no gradient flows to it).
      kernel: `[d, F]`, the decoder's first weight matrix.
      bias: `[F]` or `None`.
      cg_iterations: Python `int`, static conjugate-gradient budget.
      cg_tolerance: Python `float`, relative residual tolerance.

    Returns:
      `h`, `[..., F]`.

    #### Examples

    ```python
    loc, scale = encoder(x)                      # [N, d] each
    noise = keras.random.normal(keras.ops.shape(loc), seed=seed_generator)
    h = tge.r2g2.gaussian_latent_dense(loc, scale, noise, dense.kernel, dense.bias)
    logits = rest_of_decoder(keras.ops.relu(h))
    ```

    #### References

    [1] Lam, Bui, Deligiannidis & Teh. Rao-Blackwellised Reparameterisation
        Gradients. 2024. https://arxiv.org/abs/2506.07687
    """
    cg_iterations, cg_tolerance = solvers.validate_solver_options(cg_iterations, cg_tolerance)
    loc = ops.convert_to_tensor(loc)
    dtype = loc.dtype
    scale = ops.convert_to_tensor(scale, dtype)
    kernel = ops.convert_to_tensor(kernel, dtype)
    noise = ops.stop_gradient(ops.convert_to_tensor(noise, dtype))
    if len(kernel.shape) != 2 or kernel.shape[0] != loc.shape[-1]:
        raise ValueError(
            f"`kernel` must have shape [d, units] with d = loc.shape[-1] = {loc.shape[-1]}. "
            f"Received: kernel.shape={tuple(kernel.shape)}"
        )
    if tuple(scale.shape) != tuple(loc.shape) or tuple(noise.shape) != tuple(loc.shape):
        raise ValueError(
            "`loc`, `scale` and `noise` must have the same shape. Received: "
            f"loc.shape={tuple(loc.shape)}, scale.shape={tuple(scale.shape)}, "
            f"noise.shape={tuple(noise.shape)}"
        )
    bias = 0 if bias is None else ops.convert_to_tensor(bias, dtype)
    latent_size, units = kernel.shape
    if units >= latent_size:
        # Injective map: h determines ε, and R2-G2 is the reparameterisation gradient.
        return ops.matmul(loc + scale * noise, kernel) + bias

    # The sample, differentiated as usual for `loc`, `kernel` and `bias`; `scale` is cut off
    # here and gets its gradient from `attach_scale_gradient`.
    outputs = ops.matmul(loc + ops.stop_gradient(scale) * noise, kernel) + bias

    # Every tensor the backward pass reads is an argument (JAX's custom VJP may not close
    # over values being differentiated); those that take no gradient here get zeros.
    @ops.custom_gradient
    def attach_scale_gradient(outputs, scale, kernel, noise):
        """Identity on `outputs`; its backward pass gives `scale` its R2-G2 gradient."""

        def grad_fn(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            d_z = ops.matmul(upstream, ops.transpose(kernel))
            # One system per example: the examples are the "filters" of one patch matrix Wᵀ.
            flat_scale = ops.transpose(ops.reshape(scale, [-1, latent_size]))
            flat_noise = ops.transpose(ops.reshape(noise, [-1, latent_size]))
            expected, _ = conditioning_lib.conditional_noise(
                ops.transpose(kernel)[None],
                flat_scale,
                flat_noise,
                "per_example",
                cg_iterations,
                cg_tolerance,
            )
            d_scale = d_z * ops.reshape(ops.transpose(expected[0]), ops.shape(scale))
            return upstream, d_scale, ops.zeros_like(kernel), ops.zeros_like(noise)

        return outputs, grad_fn

    return attach_scale_gradient(outputs, scale, kernel, noise)
