"""Linear maps from a weight matrix to pre-activations, as patches:
`h[b, p, f] = Σ_k P[b, p, k] β[k, f]`.

A dense layer is the case `P = 1` (one "position" per example, the patch is the
input row); a convolution's patches are its im2col rows. The kernel is used
flattened to `[k, F]`; a bias is one more weight row whose input is a constant 1.
"""

import math

import numpy as np
from keras import ops

__all__ = ["DenseMap", "ConvolutionMap"]


class _PatchMap:
    """What every map shares: the kernel's and outputs' layouts around the `[k, F]` flat
    kernel and `[B, P, F]` positions (subclasses give `apply`, `patches`,
    `num_positions` and `flat_kernel`)."""

    def unflatten_kernel(self, flat, kernel_shape):
        return ops.reshape(flat, kernel_shape)

    def to_positions(self, outputs):
        """`[B, ..., F]` -> `[B, P, F]`."""
        return _to_positions(outputs)

    def from_positions(self, outputs, output_shape):
        return ops.reshape(outputs, output_shape)


class DenseMap(_PatchMap):
    """`h = x @ β` for `x` of shape `[B, ..., D_in]` and `β` of shape `[D_in, F]`.

    Like `keras.layers.Dense`, inputs of rank > 2 (e.g. sequences `[B, T, D_in]`)
    are mapped row by row with the same `β`. For R2-G2 an example's rows are its
    positions (`P = T`, as for a convolution with a 1-wide kernel), so
    per-example conditioning conditions on all of the example's
    pre-activations: the rows share one weight sample, and the upstream
    gradient of one row may depend on the others (a recurrent or attention
    layer after this one).
    """

    rank = 0

    def apply(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def patches(self, inputs):
        """`[B, P, D_in]`: `P = 1` for `[B, D_in]` inputs, the product of the middle sizes
        otherwise."""
        return _to_positions(inputs)

    def num_positions(self, input_shape):
        """`P` for inputs of `input_shape` (static; `None` if a middle size is unknown)."""
        return _positions(input_shape[1:-1])

    def flat_kernel(self, kernel):
        return kernel


class ConvolutionMap(_PatchMap):
    """`h = conv(x, β)` for channels-last `x` of rank 1, 2 or 3 (spatial), `β` of shape
    `kernel_size + [C_in, F]`.

    Args:
      rank: Python `int` in {1, 2, 3}.
      kernel_size, strides, dilation_rate: tuples of length `rank`.
      padding: `"valid"` or `"same"`.
    """

    def __init__(self, rank, kernel_size, strides, padding, dilation_rate):
        if rank not in (1, 2, 3):
            raise ValueError(f"`rank` must be 1, 2 or 3. Received: rank={rank}")
        self.rank = rank
        self.kernel_size, self.strides = tuple(kernel_size), tuple(strides)
        self.padding, self.dilation_rate = padding.lower(), tuple(dilation_rate)

    def apply(self, inputs, kernel):
        # `data_format` explicitly (not the global Keras setting): the maps are channels-last.
        return ops.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
            dilation_rate=self.dilation_rate,
        )

    def patches(self, inputs):
        """im2col: `[B, P, prod(kernel_size) * C_in]`, ordered like the kernel flattened row-major.

        Computed as a convolution with a one-hot kernel (output channel `j`
        copies the `j`-th entry of the flattened receptive field): exact, any
        rank, strides and dilation, on every backend, and compilable by XLA
        (TensorFlow's `extract_volume_patches` is not).
        """
        channels = inputs.shape[-1]
        size = channels * int(np.prod(self.kernel_size))
        one_hot = np.eye(size).reshape([*self.kernel_size, channels, size])
        patches = self.apply(inputs, ops.convert_to_tensor(one_hot, inputs.dtype))
        return _to_positions(patches)

    def num_positions(self, input_shape):
        """`P`, the number of output positions for inputs of `input_shape` (static; `None` if
        a spatial size is unknown), by Keras's output-size rule."""
        sizes = []
        for size, k, s, d in zip(
            input_shape[1:-1], self.kernel_size, self.strides, self.dilation_rate
        ):
            if size is None:
                return None
            span = size if self.padding == "same" else size - d * (k - 1)
            sizes.append(max(0, -(-span // s)))  # ceil(span / s)
        return _positions(sizes)

    def flat_kernel(self, kernel):
        return ops.reshape(kernel, [-1, kernel.shape[-1]])


def _to_positions(outputs):
    """`[B, ..., C]` -> `[B, P, C]`, keeping `P` static when the middle sizes are."""
    positions = _num_positions(outputs)
    if positions is None:
        return ops.reshape(outputs, [ops.shape(outputs)[0], -1, outputs.shape[-1]])
    return ops.reshape(outputs, [-1, positions, outputs.shape[-1]])


def _num_positions(outputs):
    """The number of output positions, static whenever the spatial shape is (even with an
    unknown batch).

    R2-G2 decides statically whether to solve, so it must not be lost when
    Keras relaxes the batch dimension to `None` (e.g. for a partial last batch).
    """
    return _positions(outputs.shape[1:-1])


def _positions(spatial):
    return math.prod(spatial) if all(d is not None for d in spatial) else None
