"""R2-G2: the reparameterisation forward pass with the Rao-Blackwellised backward pass."""

from tfp_gradest.layers.estimators.base import LayerEstimator, register
from tfp_gradest.r2g2 import conditioning as conditioning_lib
from tfp_gradest.r2g2 import gaussian_linear

__all__ = ["R2G2"]


@register("r2g2")
class R2G2(LayerEstimator):
    """RT's sample; the scale gradient's noise `ε` replaced by `E[ε | h]`.

    ```none
    ∂f/∂σ = Σ_b (P_bᵀ g_b) ⊙ E[ε | h_b]        (per-example conditioning)
    ```

    Unbiased because `g_b` depends on the noise only through `h_b` (Lam et al.
    2024, Definition 4.1); see `tfp_gradest.r2g2.gaussian_linear` for the
    solve. For a dense layer its backward pass is the local reparameterisation
    trick's formula under a shared-weight forward pass (Proposition 4.2).

    Args:
      conditioning: `"per_example"` (each example's gradient term conditioned on its own
        pre-activations) or `"whole_batch"` (one system per filter over the batch: less
        memory, less variance reduction). Default value: `"per_example"`.
      cg_iterations: Python `int >= 1`, the static conjugate-gradient budget, where the
        solver's cost model picks conjugate gradients (unused by the dense per-example
        closed form). Default value: `50`.
      cg_tolerance: Python `float > 0`, the relative residual above which a system's solve
        is not trusted (it then gets the unbiased reparameterisation gradient).
        Default value: `1e-6`.
      per_example_memory_limit: Python `int`, bytes, or `None`. Per-example conditioning of
        a convolution holds `B × k × F` products; above this many bytes (static shapes,
        decided at trace time) the backward pass uses whole-batch conditioning instead,
        with a warning. `None`: never. Default value: `2**28` (256 MiB).
      direct_solve_memory_limit: Python `int`, bytes, or `None`. The largest the direct
        solve's Gram matrices may be; over it the systems are solved by conjugate
        gradients (`tfp_gradest.r2g2.solvers.use_direct_solve`). `None`: no limit.
        Default value: `2**28` (256 MiB).

    #### Examples

    ```python
    layer = tge.layers.Conv2DReparameterization(
        16, 3, gradient_estimator=tge.layers.estimators.R2G2(conditioning="whole_batch"))
    ```

    #### References

    [1] Lam, Bui, Deligiannidis & Teh. Rao-Blackwellised Reparameterisation
        Gradients. 2024. https://arxiv.org/abs/2506.07687
    """

    def __init__(
        self,
        conditioning="per_example",
        cg_iterations=50,
        cg_tolerance=1e-6,
        per_example_memory_limit=conditioning_lib.DEFAULT_PER_EXAMPLE_MEMORY_LIMIT,
        direct_solve_memory_limit=conditioning_lib.DEFAULT_DIRECT_SOLVE_MEMORY_LIMIT,
    ):
        # Checked once here (a ValueError/TypeError naming the argument), as `gaussian_linear`'s
        # keyword arguments.
        self._options = conditioning_lib.validate_options(
            conditioning,
            cg_iterations,
            cg_tolerance,
            per_example_memory_limit,
            direct_solve_memory_limit,
        )

    conditioning = property(lambda self: self._options["conditioning"], doc="See Args.")
    cg_iterations = property(lambda self: self._options["cg_iterations"], doc="See Args.")
    cg_tolerance = property(lambda self: self._options["cg_tolerance"], doc="See Args.")
    per_example_memory_limit = property(
        lambda self: self._options["per_example_memory_limit"], doc="See Args."
    )
    direct_solve_memory_limit = property(
        lambda self: self._options["direct_solve_memory_limit"], doc="See Args."
    )

    def sample(self, inputs, linear_map, posterior, noise):
        dtype = inputs.dtype
        kernel_noise = noise.normal(posterior.kernel_loc.shape, dtype)
        bias_noise = noise.normal(posterior.bias_loc.shape, dtype) if posterior.use_bias else None
        return gaussian_linear(
            inputs,
            posterior.kernel_loc,
            posterior.kernel_scale,
            kernel_noise,
            linear_map,
            posterior.bias_loc,
            posterior.bias_scale,
            bias_noise,
            **self._options,
        )
