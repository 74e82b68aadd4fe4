"""R2-G2 for a Gaussian *latent* seen through a dense layer: `h = (μ + σ ⊙ ε) W + b`.

In a (hierarchical) VAE the decoder's first layer sees the latent sample only
through `h_n = W ᵀ z_n`. This is the R2-G2 primitive with the roles swapped: the
Gaussian is the per-example latent and the linear map is the (learned, but
not random) matrix `Wᵀ`. For example `n`, conditioning `ε_n ~ N(0, I_d)` on
`h_n` gives (DESIGN §4, the same formula as for weights)

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

import tensorflow as tf

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
    noise = tf.random.stateless_normal(tf.shape(loc), seed)
    h = tge.r2g2.gaussian_latent_dense(loc, scale, noise, dense.kernel, dense.bias)
    logits = rest_of_decoder(tf.nn.relu(h))
    ```

    #### References

    [1] Lam, Bui, Deligiannidis & Teh. Rao-Blackwellised Reparameterisation
        Gradients. 2024. https://arxiv.org/abs/2506.07687
    """
    cg_iterations, cg_tolerance = solvers.validate_solver_options(cg_iterations, cg_tolerance)
    loc = tf.convert_to_tensor(loc)
    dtype = loc.dtype
    scale = tf.convert_to_tensor(scale, dtype)
    kernel = tf.convert_to_tensor(kernel, dtype)
    noise = tf.stop_gradient(tf.convert_to_tensor(noise, dtype))
    if kernel.shape.rank != 2 or kernel.shape[0] != loc.shape[-1]:
        raise ValueError(
            f"`kernel` must have shape [d, units] with d = loc.shape[-1] = {loc.shape[-1]}. "
            f"Received: kernel.shape={kernel.shape}"
        )
    if scale.shape != loc.shape or noise.shape != loc.shape:
        raise ValueError(
            "`loc`, `scale` and `noise` must have the same shape. Received: "
            f"loc.shape={loc.shape}, scale.shape={scale.shape}, noise.shape={noise.shape}"
        )
    use_bias = bias is not None
    latent_size, units = kernel.shape

    @tf.custom_gradient
    def sample(loc, scale, kernel, *maybe_bias):
        z = loc + scale * noise
        outputs = tf.matmul(z, kernel) + (maybe_bias[0] if use_bias else 0)

        def grad_fn(upstream):
            d_z = tf.matmul(upstream, kernel, transpose_b=True)
            flat_z = tf.reshape(z, [-1, latent_size])
            flat_upstream = tf.reshape(upstream, [-1, units])
            d_kernel = tf.matmul(flat_z, flat_upstream, transpose_a=True)
            grads = [d_z, _scale_gradient(scale, d_z, upstream), d_kernel]
            if use_bias:
                grads.append(tf.reduce_sum(flat_upstream, axis=0))
            return grads

        return outputs, grad_fn

    def _scale_gradient(scale, d_z, upstream):
        if units >= latent_size:
            return d_z * noise  # injective map: R2-G2 is the reparameterisation gradient
        # One system per example: the examples are the "filters" of a single patch matrix Wᵀ.
        flat_scale = tf.transpose(tf.reshape(scale, [-1, latent_size]))
        flat_noise = tf.transpose(tf.reshape(noise, [-1, latent_size]))
        expected, _ = conditioning_lib.conditional_noise(
            tf.transpose(kernel)[tf.newaxis],
            flat_scale,
            flat_noise,
            "per_example",
            cg_iterations,
            cg_tolerance,
        )
        return d_z * tf.reshape(tf.transpose(expected[0]), tf.shape(scale))

    return sample(loc, scale, kernel, *([tf.convert_to_tensor(bias, dtype)] if use_bias else []))
