"""Linear maps from a weight matrix to pre-activations, as patches:
`h[b, p, f] = Σ_k P[b, p, k] β[k, f]`.

A dense layer is the case `P = 1` (one "position" per example, the patch is the
input row); a convolution's patches are its im2col rows. The kernel is used
flattened to `[k, F]`; a bias is one more weight row whose input is a constant 1.
"""

import numpy as np
import tensorflow as tf

__all__ = ["DenseMap", "ConvolutionMap"]


class DenseMap:
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
        if inputs.shape.rank == 2:
            return tf.matmul(inputs, kernel)
        return tf.einsum("...i,io->...o", inputs, kernel)

    def patches(self, inputs):
        """`[B, P, D_in]`: `P = 1` for `[B, D_in]` inputs, the product of the middle sizes
        otherwise."""
        return _to_positions(inputs)

    def flat_kernel(self, kernel):
        return kernel

    def unflatten_kernel(self, flat, kernel_shape):
        return tf.reshape(flat, kernel_shape)

    def to_positions(self, outputs):
        """`[B, ..., F]` -> `[B, P, F]`."""
        return _to_positions(outputs)

    def from_positions(self, outputs, output_shape):
        return tf.reshape(outputs, output_shape)


class ConvolutionMap:
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
        self.padding, self.dilation_rate = padding.upper(), tuple(dilation_rate)

    def apply(self, inputs, kernel):
        # `data_format` explicitly, as Keras's convolutions pass it: without it TF's eager
        # Conv3D gradient fails (`'NoneType' object has no attribute 'decode'`).
        return tf.nn.convolution(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilations=self.dilation_rate,
            data_format=_CHANNELS_LAST[self.rank],
        )

    def patches(self, inputs):
        """im2col: `[B, P, prod(kernel_size) * C_in]`, ordered like the kernel flattened row-major.

        Computed as a convolution with a one-hot kernel (output channel `j`
        copies the `j`-th entry of the flattened receptive field): exact, any
        rank, strides and dilation, and compilable by XLA (TensorFlow's
        `extract_volume_patches` is not).
        """
        channels = inputs.shape[-1]
        size = channels * int(np.prod(self.kernel_size))
        one_hot = tf.reshape(tf.eye(size, dtype=inputs.dtype), [*self.kernel_size, channels, size])
        patches = self.apply(inputs, one_hot)
        return tf.reshape(patches, [tf.shape(patches)[0], _num_positions(patches), size])

    def flat_kernel(self, kernel):
        return tf.reshape(kernel, [-1, kernel.shape[-1]])

    def unflatten_kernel(self, flat, kernel_shape):
        return tf.reshape(flat, kernel_shape)

    def to_positions(self, outputs):
        return _to_positions(outputs)

    def from_positions(self, outputs, output_shape):
        return tf.reshape(outputs, output_shape)


_CHANNELS_LAST = {1: "NWC", 2: "NHWC", 3: "NDHWC"}


def _to_positions(outputs):
    """`[B, ..., C]` -> `[B, P, C]`, keeping `P` static when the middle sizes are."""
    return tf.reshape(outputs, [tf.shape(outputs)[0], _num_positions(outputs), outputs.shape[-1]])


def _num_positions(outputs):
    """The number of output positions, static whenever the spatial shape is (even with an
    unknown batch).

    R2-G2 decides statically whether to solve, so it must not be lost when
    Keras relaxes the batch dimension to `None` (e.g. for a partial last batch).
    """
    spatial = outputs.shape[1:-1]
    return int(np.prod(spatial)) if all(d is not None for d in spatial) else -1
