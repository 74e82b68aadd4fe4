"""Randomised quasi-Monte Carlo base noise for the pathwise estimators (`noise="rqmc"`).

Buchholz, Wenzel & Mandt (2018) replace the i.i.d. standard normals `ε` of the
reparameterisation `z = g_φ(ε)` by a randomised quasi-Monte Carlo (RQMC) point
set pushed through the inverse normal CDF:

```none
u_s  = x_s ⊕ Δ                       s = 0, ..., S-1    (digital shift, per call)
ε_s  = Φ⁻¹(u_s) ∈ R^{K·d}            (split into K samples of d standard normals)
z_sk = g_φ(ε_sk)
```

`x_s` are the first `S` points of the (unscrambled) Sobol sequence in dimension
`K·d`, as 32-bit integers; `Δ` is a uniformly random 32-bit integer per dimension,
drawn from the call's seed; `⊕` is the bitwise exclusive or. `d` is the number of
standard normals one sample of the surrogate is made of (its total event size, over
every part of a joint distribution).

Why a digital shift. Each `u_s` is exactly uniform on the grid of `2^b` cell
midpoints of `[0, 1)^{K·d}` (`x_s ⊕ Δ` is uniform whatever `x_s`; `b = 32` bits in
float64, the top 23 bits in float32 so that `(k + 1/2) 2^-23` is exact and never 0
or 1), so every sample is an exact draw of `q` up to that grid and the estimator is
unbiased; the shift keeps the Sobol points a digital net (every elementary interval
keeps its share of points), which a shift modulo 1 does not (L'Ecuyer & Lemieux
2002). The Sobol sequence rather than a lattice or Halton points: the paper's choice,
no generating vector to search for, good projections up to thousands of dimensions,
and the same points on both substrates: SciPy's `scipy.stats.qmc.Sobol` (installed
with JAX) and TensorFlow's `tf.math.sobol_sample` share Joe & Kuo's direction
numbers; the points are constants computed when the loss is traced (`S` and `K·d`
are static), and only the shift is drawn in the graph (it traces under XLA).

Why the points index the `S` objectives and not the `S·K` samples. The `K` samples
of one importance-weighted objective must be independent for its expectation to be
the IWAE bound; one point of dimension `K·d` gives `K` independent samples (its
coordinates are jointly uniform), while `S·K` points of dimension `d` would be
dependent (two points of a net are never independent) and bias `log (1/K) Σ_k w_k`
for `K > 1`. So the `S` objectives are the RQMC average: RQMC helps through
`sample_size`, best a power of two (a whole net); at `S = 1` it is plain Monte Carlo.

Which surrogates. Those that are deterministic transforms of standard normals:
`Normal` (`loc + scale · ε`), `Independent` and `Sample` of those,
`TransformedDistribution` (`bijector.forward` of its base: so
`MultivariateNormalDiag`/`TriL`/`LinearOperator`, `LogNormal`), joint distributions
of those (their parts drawn in order, each conditional built from the earlier parts'
quasi-random values), and what `tfp.experimental.vi.build_factored_surrogate_posterior`
and `build_affine_surrogate_posterior` build. Anything else is a `ValueError` naming
`noise` and the part. `log q(z)` is the surrogate's own `log_prob` at the quasi-random
`z`, so the log-weights are those of `z` whatever the noise.

#### References

[1]: Alexander Buchholz, Florian Wenzel, Stephan Mandt. Quasi-Monte Carlo Variational
     Inference. ICML 2018. https://arxiv.org/abs/1807.01604
[2]: Pierre L'Ecuyer, Christiane Lemieux. Recent advances in randomized quasi-Monte
     Carlo methods. In Modeling Uncertainty, 2002.
[3]: Stephen Joe, Frances Y. Kuo. Constructing Sobol sequences with better
     two-dimensional projections. SIAM J. Sci. Comput. 30, 2008.
"""

import functools
import math
import sys
import warnings
from collections.abc import Mapping

import numpy as np

__all__ = ["MAX_DIMENSION", "NOISES", "check_noise", "check_surrogate", "sample", "sobol_integers"]

# The values of `noise`: i.i.d. normals (TFP's own sampling), or RQMC normals.
NOISES = ("iid", "rqmc")

# Joe & Kuo's direction numbers (SciPy's and TensorFlow's) go up to this dimension.
MAX_DIMENSION = 21201


def check_noise(noise):
    """`noise` in lower case; a `ValueError` naming `noise` unless it is one of `NOISES`."""
    if not isinstance(noise, str) or noise.lower() not in NOISES:
        raise ValueError(
            "`noise` must be 'iid' (independent standard normals, TFP's own sampling) or "
            "'rqmc' (randomised quasi-Monte Carlo: digitally shifted Sobol points through "
            f"the inverse normal CDF). Received: noise={noise!r}"
        )
    return noise.lower()


@functools.lru_cache(maxsize=32)
def sobol_integers(num_points, num_dims):
    """The first `num_points` points of the unscrambled Sobol sequence, as 32-bit integers.

    Point 0 is the origin (so the first `2^m` points are a digital net). A read-only
    NumPy `uint32` array of shape `[num_points, num_dims]` (`x · 2^32` of the points
    `x ∈ [0, 1)`): SciPy's `scipy.stats.qmc.Sobol` where SciPy is installed (always
    with JAX), else TensorFlow's `tf.math.sobol_sample` (the same points: both use Joe
    & Kuo's direction numbers; TensorFlow's omits the origin, which is prepended).
    """
    if num_dims > MAX_DIMENSION:
        raise ValueError(
            f"noise='rqmc' needs one Sobol dimension per standard normal of an objective "
            f"(importance_sample_size times the surrogate's total event size), at most "
            f"{MAX_DIMENSION}. Received: {num_dims} dimensions. Use noise='iid'."
        )
    try:
        from scipy.stats import qmc
    except ImportError:
        points = _tensorflow_sobol(num_points, num_dims)
    else:
        with warnings.catch_warnings():  # "balance properties ... n a power of 2"
            warnings.simplefilter("ignore", UserWarning)
            sobol = qmc.Sobol(num_dims, scramble=False, bits=32)
            points = sobol.random(num_points) if num_points else np.zeros((0, num_dims))
    integers = np.asarray(np.round(points * 2.0**32), dtype=np.uint32)
    integers.setflags(write=False)
    return integers


def _tensorflow_sobol(num_points, num_dims):
    import tensorflow as tf

    with tf.init_scope():  # a constant of the trace, computed eagerly
        rest = tf.math.sobol_sample(num_dims, max(num_points - 1, 0), dtype=tf.float64)
        return np.concatenate([np.zeros((1, num_dims)), rest.numpy()])[:num_points]


class _QuasiNormals:
    """Hands out the call's RQMC standard normals, one chunk of Sobol dimensions per part.

    `take(shape, dtype)` returns `[S * K] + shape` normals: the next `K · prod(shape)`
    Sobol dimensions of the `S` points, each point split into its `K` samples. Chunks
    are remembered by position, so a joint distribution drawn again (`rewind`) gets the
    same normals for the same parts.
    """

    def __init__(self, ops, sample_size, importance_sample_size, seed, randomize=True):
        self.ops = ops
        self.sample_size = sample_size
        self.importance_sample_size = importance_sample_size
        self.num_samples = sample_size * importance_sample_size
        self.seed = seed
        self.randomize = randomize
        self.num_dims = 0  # Sobol dimensions handed out
        self.chunks = []  # (shape, dtype, normals), in the order taken
        self.cursor = 0

    def next_seed(self):
        self.seed, seed = self.ops.split_seed(self.seed, n=2)
        return seed

    def take(self, shape, dtype, part):
        shape = tuple(shape)
        if self.cursor < len(self.chunks):
            cached_shape, cached_dtype, normals = self.chunks[self.cursor]
            if (cached_shape, cached_dtype) != (shape, dtype):
                raise ValueError(
                    f"noise='rqmc' drew part {part} of `surrogate_posterior` twice with "
                    f"different shapes ({cached_shape} and {shape}): its shape depends on "
                    f"the values of other parts. Use noise='iid'. Received: noise='rqmc'"
                )
            self.cursor += 1
            return normals
        normals = self._normals(shape, dtype)
        self.chunks.append((shape, dtype, normals))
        self.cursor += 1
        return normals

    def _normals(self, shape, dtype):
        ops = self.ops
        size = self.importance_sample_size * math.prod(shape)
        start = self.num_dims
        self.num_dims += size
        points = sobol_integers(self.sample_size, self.num_dims)[:, start:]
        bits = ops.constant(points, np.uint32)
        if self.randomize:
            bits = ops.bitwise_xor(bits, ops.uniform_bits([size], self.next_seed()))
        if np.dtype(getattr(dtype, "as_numpy_dtype", dtype)) == np.float64:
            u = (ops.cast(bits, np.float64) + 0.5) * 2.0**-32
        else:  # the top 23 bits: (k + 1/2) 2^-23 is exact in float32, never 0 or 1
            u = (ops.cast(ops.right_shift(bits, 9), np.float32) + 0.5) * 2.0**-23
        normals = ops.cast(ops.ndtri(u), dtype)
        return ops.reshape(normals, (self.num_samples,) + shape)


def sample(surrogate_posterior, sample_size, importance_sample_size, seed, randomize=True):
    """`S * K` samples of `surrogate_posterior` (flat leading axis) from RQMC normals.

    The samples are structured as `surrogate_posterior.sample([S * K])`'s, and
    differentiable in the surrogate's parameters as TFP's reparameterised samples are.
    `randomize=False` omits the digital shift (the bare Sobol points: biased; for tests).
    Raises a `ValueError` naming `noise` for a surrogate part that is not a transform of
    standard normals.
    """
    from tfp_gradest import _substrate

    ops = _substrate.of(surrogate_posterior)
    noise = _QuasiNormals(ops, sample_size, importance_sample_size, seed, randomize)
    return _draw(_materialize(surrogate_posterior), [noise.num_samples], noise, None, "", 0)


def check_surrogate(surrogate_posterior):
    """Raises a `ValueError` naming `noise` for a part `noise="rqmc"` cannot draw.

    Reads the distribution's classes only (nothing is sampled); the parts of a joint
    distribution built from its earlier parts' values are checked when they are drawn.
    """
    from tfp_gradest import _substrate

    _check(_materialize(surrogate_posterior), _substrate.of(surrogate_posterior).tfp, "")


def _materialize(distribution):
    # `tfp.experimental.vi`'s builders return a `DeferredModule`, which builds the
    # distribution on each attribute access; `copy()` returns the distribution itself.
    if not _is_distribution(distribution) and callable(getattr(distribution, "copy", None)):
        return distribution.copy()
    return distribution


def _is_distribution(distribution):
    from tfp_gradest import _substrate

    tfd = _substrate.of(distribution).tfp.distributions
    return isinstance(distribution, tfd.Distribution)


def _unsupported(distribution, part):
    where = f"part {part} of " if part else ""
    return ValueError(
        f"noise='rqmc' draws the surrogate's standard normals from a randomised Sobol "
        f"sequence, so every part of `surrogate_posterior` must be a transform of standard "
        f"normals (Normal, MultivariateNormalDiag/TriL, TransformedDistribution, "
        f"Independent, Sample, or joint distributions of those), but {where}"
        f"`surrogate_posterior` is a {type(distribution).__name__}. Use noise='iid'. "
        f"Received: noise='rqmc'"
    )


def _check(distribution, tfp, part):
    tfd = tfp.distributions
    distribution = _materialize(distribution)
    if isinstance(distribution, tfd.Normal):
        return
    if isinstance(distribution, (tfd.Independent, tfd.Sample, tfd.TransformedDistribution)):
        return _check(distribution.distribution, tfp, part)
    if isinstance(distribution, tfd.JointDistribution):
        for key, component in _independent_components(distribution, tfd) or ():
            _check(component, tfp, _join(part, key))
        return
    raise _unsupported(distribution, part)


def _join(part, key):
    return f"{part}[{key!r}]" if part else repr(key)


def _static_shape(shape, distribution, part):
    dims = list(shape)
    if any(d is None for d in dims):
        raise ValueError(
            f"noise='rqmc' needs static shapes, but part {part or '<the surrogate>'} "
            f"({type(distribution).__name__}) has shape {shape}. Use noise='iid'. "
            "Received: noise='rqmc'"
        )
    return [int(d) for d in dims]


def _static_ints(value, distribution, part):
    tf = sys.modules.get("tensorflow")
    if tf is not None and tf.is_tensor(value):
        value = tf.get_static_value(value)
    if value is None:
        _static_shape([None], distribution, part)
    return [int(v) for v in np.reshape(np.asarray(value), [-1])]


def _draw(distribution, sample_shape, noise, batch_shape, part, axis):
    """`distribution`'s draw of shape `sample_shape + batch_shape + event_shape` from `noise`.

    `batch_shape` (a list, `None`: the distribution's own) is the batch the draw must
    have: a `TransformedDistribution` whose bijector has a batch shape broadcasts its
    base to it, as TFP does, so every batch member gets its own normals. `axis` is the
    axis of `sample_shape + batch_shape` that indexes the `S * K` samples (0, but for a
    joint distribution's part built from earlier values it is a batch axis, moved by a
    `Sample` around it).
    """
    tfd = noise.ops.tfp.distributions
    distribution = _materialize(distribution)
    if isinstance(distribution, tfd.JointDistribution):
        return _draw_joint(distribution, sample_shape, noise, part)
    nested = noise.ops.is_nested(distribution.dtype)  # e.g. an affine map of a joint base
    if batch_shape is None and not nested:
        batch_shape = _static_shape(distribution.batch_shape, distribution, part)
    if isinstance(distribution, tfd.Normal):
        shape = list(sample_shape) + list(batch_shape)
        if len(shape) <= axis or shape[axis] != noise.num_samples:
            raise ValueError(
                f"noise='rqmc' needs one axis of size {noise.num_samples} (the samples) in "
                f"every part, but part {part or '<the surrogate>'} is drawn with shape "
                f"{shape} (a joint distribution's part that ignores the values it is given?). "
                "Use noise='iid'. Received: noise='rqmc'"
            )
        rest = shape[:axis] + shape[axis + 1 :]
        normals = noise.take(rest, distribution.dtype, part or "<the surrogate>")
        if axis:  # the samples' axis from the front to `axis`
            perm = [*range(1, axis + 1), 0, *range(axis + 1, len(shape))]
            normals = noise.ops.transpose(normals, perm)
        # As `tfd.Normal` samples: `ε · scale + loc`.
        return normals * distribution.scale + distribution.loc
    if isinstance(distribution, tfd.Independent):
        inner = distribution.distribution
        inner_batch = _static_shape(inner.batch_shape, inner, part)
        (ndims,) = _static_ints(distribution.reinterpreted_batch_ndims, distribution, part)
        kept = inner_batch[len(inner_batch) - ndims :] if ndims else []
        return _draw(inner, sample_shape, noise, list(batch_shape) + kept, part, axis)
    if isinstance(distribution, tfd.Sample):
        inner = distribution.distribution
        extra = _static_ints(distribution.sample_shape, distribution, part)
        inner_axis = axis if axis < len(sample_shape) else axis + len(extra)
        draw = _draw(inner, list(sample_shape) + extra, noise, batch_shape, part, inner_axis)
        # As `tfd.Sample` samples: its sample axes move after the batch axes.
        n, m, b = len(sample_shape), len(extra), len(batch_shape)
        rank = n + m + b + len(_static_shape(inner.event_shape, inner, part))
        perm = [*range(n), *range(n + m, n + m + b), *range(n, n + m), *range(n + m + b, rank)]
        return draw if perm == sorted(perm) else noise.ops.transpose(draw, perm)
    if isinstance(distribution, tfd.TransformedDistribution):
        base = distribution.distribution
        nested = noise.ops.is_nested(base.dtype)
        draw = _draw(base, sample_shape, noise, None if nested else batch_shape, part, axis)
        return distribution.bijector.forward(draw)
    raise _unsupported(distribution, part)


def _independent_components(joint, tfd):
    """`[(key, distribution)]` of a joint distribution whose model is a list or dict of
    distributions (no part depends on another: `tfp.experimental.vi`'s surrogates), in
    the order its samples flatten (dict keys sorted); `None` otherwise."""
    model = getattr(joint, "model", None)
    if isinstance(model, Mapping):
        items = [(key, model[key]) for key in sorted(model)]
    elif isinstance(model, (list, tuple)) or type(model).__name__ == "ListWrapper":
        items = list(enumerate(model))
    else:
        return None
    if all(isinstance(d, tfd.Distribution) for _, d in items):
        return items
    return None


def _draw_joint(joint, sample_shape, noise, part):
    """A joint distribution's draw: its parts in turn, each from its own chunk of normals."""
    tfd = noise.ops.tfp.distributions
    structure = joint.dtype
    components = _independent_components(joint, tfd)
    if components is not None:
        values = [_draw(d, sample_shape, noise, None, _join(part, k), 0) for k, d in components]
        return _pack_like(structure, values)
    # Parts built from earlier parts' values: draw every part given the previous round's
    # values. Round r gets every part whose chain of parents is shorter than r right
    # (its parents were right in round r - 1), so as many rounds as parts suffice, and the
    # final values depend on the parameters only through exact paths. The first round's
    # values are TFP's own draws, to give the parts their conditionals' shapes.
    distributions, values = joint.sample_distributions(sample_shape, seed=noise.next_seed())
    keys = _keys(structure)
    start = noise.cursor
    for round_index in range(len(keys)):
        noise.cursor = start  # the same normals for the same parts in every round
        drawn = []
        for key in keys:
            d, x = _component(distributions, key), _component(values, key)
            if noise.ops.is_nested(x):  # a joint distribution as a part: drawn as a root
                own = list(sample_shape)
            else:  # a root part has the sample axes; a part built from values, its batch
                rank = len(d.batch_shape) + len(d.event_shape)
                own = list(sample_shape) if len(x.shape) > rank else []
            drawn.append(_draw(d, own, noise, None, _join(part, key), 0))
        values = _pack_like(values, drawn)
        if round_index < len(keys) - 1:
            distributions, _ = joint.sample_distributions(
                sample_shape, seed=noise.next_seed(), value=values
            )
    return values


def _keys(structure):
    if isinstance(structure, Mapping):
        return sorted(structure)
    return list(range(len(structure)))


def _component(structure, key):
    return structure[key]


def _pack_like(template, values):
    """`values` (flat, in `_keys` order) in the container type of `template`."""
    if isinstance(template, Mapping):
        return type(template)(zip(sorted(template), values))
    if hasattr(template, "_fields"):  # a namedtuple, or a coroutine's StructTuple
        return type(template)(*values)
    if isinstance(template, tuple):
        return tuple(values)
    return list(values)
