"""A hierarchical VAE (several stochastic Gaussian layers) trained with any `tge` estimator.

The model of Lam et al. (2024), Figure 2 (after Burda et al., 2016): `L`
stochastic layers `z_1, …, z_L`, every conditional a factorised Gaussian whose
mean and standard deviation come from an MLP with two hidden tanh layers, a
standard Normal prior on the top layer and a Bernoulli likelihood:

```none
q(z_1 | x) q(z_2 | z_1) … q(z_L | z_{L-1})                       (encoder, bottom-up)
p(z_L) p(z_{L-1} | z_L) … p(z_1 | z_2) p(x | z_1)                 (decoder, top-down)
log w = log p(x, z_{1:L}) - log q(z_{1:L} | x),   z_l = μ_l + σ_l ⊙ ε_l
bound = log (1/K) Σ_k w_k                        (ELBO for K = 1, IWAE bound for K > 1)
```

The encoder is the surrogate posterior (`surrogate_posterior(x)`, a
`tfd.JointDistributionSequential` over the levels, batch shape `[B]`) and the
decoder the target (`target_log_prob_fn(x)`: `z_1, …, z_L ↦ log p(x, z)`), so
the training loss is `gradient_estimator.loss(target, surrogate, S, K)`: any
estimator of `tge.estimators` (STL, IWAE-DReG, ...) trains the model.

Each decoder conditional sees its latent only through its first dense layer,
`h = z_l W + b` (a "latent-into-dense link"). With
`decoder_link_gradient="r2g2"` the backward pass of that link gives `σ_l` the
gradient of `tge.r2g2.gaussian_latent_dense`: the reparameterisation gradient
with `ε_l` replaced by `E[ε_l | h]` (Rao-Blackwellised). The forward value is
unchanged. It is unbiased when the gradient reaching `h` depends on `ε_l` only
through `h`: it is then a function of `h` and of the lower latents `z_{<l}`
(or `x`), drawn before `ε_l` and independent of it. That holds for the ELBO
(`importance_sample_size=1`). For `K > 1` each sample's gradient is weighted
by its normalised importance weight, which depends on `ε_l` through the other
uses of `z_l` too, so conditioning on `h` alone would bias the gradient: that
combination is refused. (The
encoder's link `z_l ↦ q(z_{l+1} | z_l)` is left alone for the same reason:
through `log p(z_l | z_{l+1})` its gradient also depends on `z_l` directly.)

R2-G2 differs from the reparameterisation gradient only where the latent is
wider than the first decoder layer (`latent_dims[level] > hidden_units`);
otherwise `h` determines `ε_l`, the two are equal, and the link returns `h`
without a solve. The R2-G2 paper's setting (50-unit latents into 200-unit
layers) is that equal case. The default is the
reparameterisation gradient: on the end-to-end benchmark the two reached the
same held-out bound and R2-G2 cost more per step (docs: results,
"Hierarchical VAE on binarised digits"; `python benchmarks/end_to_end.py
--problems hvae`). That benchmark's model (16 hidden units, the ELBO) had
collapsed every level to its prior (`HierarchicalVAE`, "Using the levels"), so
its links carried no information: R2-G2 had nothing to act on there.
"""

import functools
import math
import numbers
import warnings

import keras
import numpy as np
from keras import ops

from tfp_gradest import _backend, r2g2
from tfp_gradest._util import arguments
from tfp_gradest.layers import settings
from tfp_gradest.models import _bound, _data, _estimator, _tfp
from tfp_gradest.models._loss import estimator_training_loss

__all__ = ["HierarchicalVAE"]

DECODER_LINK_GRADIENTS = ("r2g2", "reparameterization")
# The deprecated argument's values (the same choices, under their old name).
LATENT_GRADIENTS = DECODER_LINK_GRADIENTS

# `log_likelihood_bound` evaluates the `K` importance samples in chunks of about this many
# rows (`chunk × batch`) at a time: memory bounded whatever `K`, rows enough to keep
# the matmuls efficient.
BOUND_ROWS_PER_CHUNK = 4096


@keras.saving.register_keras_serializable(package="tfp_gradest")
class HierarchicalVAE(_data.BernoulliDataChecks, keras.Model):
    """A VAE with `len(latent_dims)` stochastic Gaussian layers, trained with `model.fit`.

    The training loss is `gradient_estimator.loss(target_log_prob_fn(x),
    surrogate_posterior(x), sample_size, importance_sample_size)` averaged over
    the batch: its value is the negative ELBO (`importance_sample_size=1`, the
    paper's setting) or negative IWAE bound whatever the estimator (except the
    jackknife's `"jvi"` and `"jvi_dreg"`, whose value is the negative jackknife
    estimate of `log p(x)`, not a bound), and `model.evaluate` reports it;
    `log_likelihood_bound(x, K)` gives a tighter
    test bound. `decoder_link_gradient` chooses the backward pass of the decoder
    links only (module docstring); the loss value and the samples are the same
    for both choices. With `kl_weight` `β ≠ 1` (a KL warm-up) the training loss is
    the estimator's loss for the model with its likelihood tempered by `1/β`,
    times `β`:

    ```none
    β · loss(target_β),   target_β(z) = log p(x | z_1) / β + log p(z_{1:L})
    ```

    Every estimator stays valid (the target does not depend on the encoder). With
    the ELBO (`K = 1`) this is the KL warm-up objective `-E_q[log p(x | z)] + β ·
    E_q[log q(z | x) - log p(z)]` (Bowman et al. 2016; Sønderby et al. 2016), its
    gradient included; with `K > 1`, the IWAE bound of the tempered model. `β = 1`
    is the plain loss. It acts on `fit`'s and `evaluate`'s loss, not on
    `log_likelihood_bound`.

    Using the levels. With 16 hidden units (the default up to 0.5) and the ELBO,
    every level of this model collapsed to its prior on binarised digits: no
    active unit, the bound of independent pixels, whatever the number of levels.
    The default width activates the bottom level; importance-weighted training
    (`importance_sample_size=8`) and a KL warm-up (`kl_weight` raised to 1 over
    the first third of training by `tge.callbacks.KLAnnealing(schedule,
    layers=[model])`) bring the upper ones in. With IWAE-DReG as well (the
    recommended configuration, the example below) a 2- and a 3-level model beat
    the 1-level one at equal steps on every seed measured; with plain IWAE, at
    fewer steps, only the 2-level one did. Measured: docs, results,
    "Hierarchical VAE: does it use its levels?" (`python
    benchmarks/hvae_levels.py`).

    The data are binary (or probabilities) in [0, 1], of any dtype (`uint8`,
    `bool`, floats): `fit`, `evaluate`, `train_on_batch`, `test_on_batch` and
    `log_likelihood_bound` refuse in-memory data outside [0, 1] with a `ValueError`
    (checked once per call, before the compiled step; a `tf.data.Dataset` or a
    generator is not checked). The networks run in the model's compute dtype
    (`float16` under `mixed_float16`); the log-densities and bounds are computed
    in its variable dtype (`float32` under the mixed policies, `float64` for a
    float64 model). Runs on the Keras backends TensorFlow and JAX (`keras.ops` and
    the backend's TFP substrate), with every estimator and both
    `decoder_link_gradient` choices; a `.keras` file saved on one loads on the
    other. On another backend the constructor raises a `RuntimeError` naming it.

    Args:
      num_pixels: Python `int`, size of the flat binary input.
      latent_dims: sequence of Python `int`, bottom (next to `x`) to top; one
        `int` `d` means one stochastic layer, `(d,)`. Default value: `(32, 32)`.
      hidden_units: Python `int`, width of both hidden tanh layers of every
        conditional (200 in the paper). Default value: `64` (`16` up to 0.5,
        too narrow: every level collapsed to its prior, as measured above;
        `.keras` files record the width, so older ones load unchanged).
      latent_gradient: deprecated spelling of `decoder_link_gradient` (it chose
        the decoder links' backward pass, not the estimator); it warns with a
        `DeprecationWarning`. Its `"r2g2"` with `importance_sample_size > 1` (0.2's
        default, biased there) becomes `"reparameterization"`, so 0.2's `.keras` files
        load. Default value: `None`.
      importance_sample_size: Python `int` `K` for training. Default value: `1`.
      cg_iterations: Python `int` ≥ 1, the conjugate-gradient iteration budget
        of R2-G2's solves (`decoder_link_gradient="r2g2"`). Each link's systems
        are `hidden_units × hidden_units`, one per latent sample; they are
        solved directly when the solver's cost model
        (`tfp_gradest.r2g2.solvers.use_direct_solve`) predicts that faster and
        the sizes are static (typical for small `hidden_units` and a fixed
        batch size), and by conjugate gradients with this budget otherwise
        (e.g. a batch dimension unknown when traced, `hidden_units > 256`, or
        many samples). A system whose solve misses its tolerance keeps the
        reparameterisation gradient (still unbiased). Unused with
        `"reparameterization"`. Default value: `None` (= `hidden_units`, exact
        in exact arithmetic).
      seed: Python `int` seed for the noise. Default value: `None`.
      gradient_estimator: the training gradient, anything `tge.estimators.get`
        accepts: a registered name (`"stl"`, `"iwae_dreg"`, ...), a class, an
        instance with its options or a config dict. Checked at construction by
        the estimator's own `validate` (e.g. `"stl"` needs
        `importance_sample_size=1`). `get_config` keeps a name as the name and
        writes anything else as its config dict. Default value: `"iwae"` (the
        reparameterisation gradient of the bound, as before this option).
      decoder_link_gradient: `"r2g2"` or `"reparameterization"`, the backward
        pass of each decoder link. `"r2g2"` needs an estimator that
        differentiates through the samples (its `requires_reparameterization`
        flag) and `importance_sample_size=1`: it is unbiased for the ELBO only,
        and refused with `K > 1` (module docstring). Default value:
        `"reparameterization"` (as fast or faster, and no worse, where measured).
      sample_size: Python `int` `S`, independent objectives averaged per
        example. Default value: `1`.
      kl_weight: Python `float` > 0 (or a scalar float `keras.Variable`), the
        factor `β` of a KL warm-up (the tempered loss above). A live setting,
        as the Bayesian layers' `kl_weight`: assigning a number takes effect in
        compiled functions, `tge.callbacks.KLAnnealing(schedule,
        layers=[model])` schedules it per epoch (start above zero), and
        `get_config` records the current value. Default value: `1.0`.

    #### Examples

    ```python
    x_train = (x_train > 0.5).astype("float32")  # or resample each epoch (dynamic binarisation)
    # The recommended configuration: default width, K = 8, a KL warm-up over 30 epochs.
    model = tge.models.HierarchicalVAE(
        64, latent_dims=(32, 32, 32), importance_sample_size=8, gradient_estimator="iwae_dreg"
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    warm_up = tge.callbacks.KLAnnealing(lambda epoch: min(1.0, (epoch + 1) / 30), layers=[model])
    model.fit(x_train, epochs=100, batch_size=64, callbacks=[warm_up])
    test_bound = model.log_likelihood_bound(x_test, importance_sample_size=256)
    ```

    #### References

    [1] Lam, Bui, Deligiannidis & Teh. Rao-Blackwellised Reparameterisation
        Gradients. 2024. https://arxiv.org/abs/2506.07687
    [2] Burda, Grosse & Salakhutdinov. Importance Weighted Autoencoders. 2016.
        https://arxiv.org/abs/1509.00519
    [3] Bowman et al. Generating Sentences from a Continuous Space. 2016.
        https://arxiv.org/abs/1511.06349
    [4] Sønderby et al. Ladder Variational Autoencoders. 2016.
        https://arxiv.org/abs/1602.02282
    """

    def __init__(
        self,
        num_pixels,
        latent_dims=(32, 32),
        hidden_units=64,
        latent_gradient=None,
        importance_sample_size=1,
        cg_iterations=None,
        seed=None,
        *,
        gradient_estimator="iwae",
        decoder_link_gradient="reparameterization",
        sample_size=1,
        kl_weight=1.0,
        **kwargs,
    ):
        tfd = _tfp.tfd(type(self).__name__)
        super().__init__(**kwargs)
        if latent_gradient is not None:
            decoder_link_gradient = _deprecated_latent_gradient(
                latent_gradient,
                decoder_link_gradient,
                arguments.check_positive_integer("importance_sample_size", importance_sample_size),
            )
        if (
            not isinstance(decoder_link_gradient, str)
            or decoder_link_gradient not in DECODER_LINK_GRADIENTS
        ):
            raise ValueError(
                f"`decoder_link_gradient` must be one of {DECODER_LINK_GRADIENTS}. "
                f"Received: decoder_link_gradient={decoder_link_gradient!r}"
            )
        self.latent_dims = arguments.check_integer_sequence(
            "latent_dims", latent_dims, allow_scalar=True
        )
        self.num_pixels = arguments.check_positive_integer("num_pixels", num_pixels)
        self.hidden_units = arguments.check_positive_integer("hidden_units", hidden_units)
        self.decoder_link_gradient = decoder_link_gradient
        self.importance_sample_size = arguments.check_positive_integer(
            "importance_sample_size", importance_sample_size
        )
        self.sample_size = arguments.check_positive_integer("sample_size", sample_size)
        self.kl_weight = kl_weight
        self.cg_iterations = (
            None
            if cg_iterations is None
            else arguments.check_positive_integer(
                "cg_iterations",
                cg_iterations,
                hint="Pass None for `hidden_units` iterations (exact in exact arithmetic).",
            )
        )
        self.seed = arguments.check_seed("seed", seed)
        self.estimator, self.gradient_estimator = _estimator.resolve(gradient_estimator)
        # The surrogate is a fully reparameterised Gaussian: a flat Normal stands in for it.
        self.estimator.validate(tfd.Normal(0.0, 1.0), self.sample_size, self.importance_sample_size)
        if getattr(self.estimator, "analytic_entropy", False) and len(self.latent_dims) > 1:
            raise ValueError(
                "analytic_entropy=True needs the surrogate's closed-form entropy, which the "
                "hierarchical posterior (each level conditioned on the one below) does not "
                "have. Use the estimator's default analytic_entropy=False. "
                f"Received: gradient_estimator={self.estimator!r}"
            )
        if decoder_link_gradient == "r2g2" and not self.estimator.requires_reparameterization:
            raise ValueError(
                "decoder_link_gradient='r2g2' Rao-Blackwellises the pathwise gradient through "
                f"the decoder links, but the {type(self.estimator).__name__} estimator does "
                "not differentiate through the samples. Pass "
                "decoder_link_gradient='reparameterization' with it (or choose a pathwise "
                "estimator such as 'iwae', 'stl' or 'iwae_dreg'). "
                f"Received: gradient_estimator={self.estimator!r}"
            )
        if decoder_link_gradient == "r2g2" and self.importance_sample_size > 1:
            # Unbiased only when the gradient reaching a link depends on the latent's noise
            # through the link's output alone; the normalised importance weights break that.
            raise ValueError(
                "decoder_link_gradient='r2g2' is unbiased for the ELBO (importance_sample_size=1) "
                "only: with K > 1 each sample's gradient is weighted by its normalised importance "
                "weight, which depends on the latent's noise beyond the link's output, so "
                "conditioning on that output would bias the gradient. Pass "
                "decoder_link_gradient='reparameterization' for the importance-weighted bound. "
                f"Received: importance_sample_size={self.importance_sample_size}"
            )
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        latent_dims = self.latent_dims
        dims = (self.num_pixels, *latent_dims)
        # encoders[l]: z_l -> (μ, σ) of z_{l+1} (z_0 = x); decoders[l]: z_{l+1} -> params of z_l.
        self.encoders = [
            self._mlp(2 * dims[level + 1], f"encoder_{level + 1}")
            for level in range(len(latent_dims))
        ]
        self.decoder_links, self.decoders = [], []
        for level in range(len(latent_dims)):
            self.decoder_links.append(
                keras.layers.Dense(
                    self.hidden_units, name=f"decoder_{level}_link", dtype=self.dtype_policy
                )
            )
            out = dims[0] if level == 0 else 2 * dims[level]
            self.decoders.append(self._mlp(out, f"decoder_{level}", num_hidden=1))

    # --- the KL weight (warm-up), a live setting as the Bayesian layers' ----------------

    def __setattr__(self, name, value):
        if name == "kl_weight":
            # Straight to the property: Keras would otherwise track a Variable passed as
            # `kl_weight` as a weight of the model.
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def kl_weight(self):
        """`β` of the training loss (class docstring); assigning a number takes effect in
        compiled functions (`tge.callbacks.KLAnnealing(schedule, layers=[model])` is one
        assignment per epoch). Reads as a Python float; inside a compiled function, as a
        Tensor read when the function runs."""
        if _backend.in_traced_function():
            return self._kl_weight.read(self._density_dtype)
        return self._kl_weight.value()

    @kl_weight.setter
    def kl_weight(self, value):
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and not value > 0:
            # (A Variable is checked by `KLWeight`: finite and non-negative.)
            raise ValueError(
                "HierarchicalVAE's `kl_weight` must be positive: it tempers the likelihood "
                "by 1 / kl_weight (class docstring). Start a warm-up above zero, e.g. "
                "`KLAnnealing(lambda epoch: min(1.0, (epoch + 1) / 50), layers=[model])`. "
                f"Received: kl_weight={value!r}"
            )
        if "_kl_weight" in self.__dict__:
            self._kl_weight.set(value, built=self.built)
        else:
            self._kl_weight = settings.KLWeight(value)

    @property
    def variables(self):
        """The model's state: its weights, its `SeedGenerator`'s state and the `kl_weight`
        variable (not a weight: saved weight files keep their layout; listed here so that
        JAX's stateless training step reads it, not a constant frozen at tracing)."""
        variables = super().variables
        setting = self.__dict__.get("_kl_weight")
        state = None if setting is None else setting.state()
        if state is not None and all(v is not state for v in variables):
            variables.append(state)
        return variables

    def __getattr__(self, name):
        # The deprecated attribute, outside `dir()` so that walking the model's attributes
        # (as `model.save` does) does not trigger its warning.
        if name == "latent_gradient":
            warnings.warn(
                "`HierarchicalVAE.latent_gradient` is deprecated and will be removed in the "
                "next release; read `decoder_link_gradient` instead.",
                DeprecationWarning,
                stacklevel=2,
            )
            return self.decoder_link_gradient
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _mlp(self, outputs, name, num_hidden=2):
        layers = [
            keras.layers.Dense(self.hidden_units, activation="tanh", dtype=self.dtype_policy)
            for _ in range(num_hidden)
        ]
        return keras.Sequential(
            [*layers, keras.layers.Dense(outputs, dtype=self.dtype_policy)], name=name
        )

    def build(self, input_shape):
        dims = (self.num_pixels, *self.latent_dims)
        for level in range(len(self.latent_dims)):
            self.encoders[level].build((None, dims[level]))
            self.decoder_links[level].build((None, dims[level + 1]))
            # The link's output goes through tanh: the first hidden layer of the conditional.
            self.decoders[level].build((None, self.hidden_units))
        self.built = True

    def _ensure_built(self):
        if not self.built:
            self.build((None, self.num_pixels))

    # -- the model's pieces ------------------------------------------------------------

    @property
    def _density_dtype(self):
        """The dtype of noise, log-densities and bounds: the variable dtype (float32 under the
        mixed policies, whose networks run in float16/bfloat16)."""
        return self.variable_dtype

    def _gaussian(self, params):
        loc, raw_scale = ops.split(ops.cast(params, self._density_dtype), 2, axis=-1)
        return loc, ops.softplus(raw_scale) + 1e-5

    def _density_input(self, x):
        """`x` of any real or bool dtype as a Tensor of the density dtype (a cast, not a
        conversion: uint8 0/1 pixels are data too)."""
        return ops.cast(ops.convert_to_tensor(x), self._density_dtype)

    def encoder_conditional(self, level, below):
        """`(loc, scale)` of `q(z_{level+1} | below)`, `below` being `x` (level 0) or `z_level`,
        with any leading axes."""
        return self._gaussian(_apply(self.encoders[level], below))

    def surrogate_posterior(self, x):
        """`q(z_1, …, z_L | x)`: a `tfd.JointDistributionSequential` of factorised Normals,
        bottom-up, batch shape `[B]`; its samples are the list `[z_1, …, z_L]`."""
        self._ensure_built()
        x = self._density_input(x)

        def conditional(level):
            # A one-argument function: the joint distribution passes the level below.
            return lambda below: self._encoder_distribution(level, below)

        return _tfp.tfd(type(self).__name__).JointDistributionSequential(
            [
                self._encoder_distribution(0, x),
                *(conditional(level) for level in range(1, len(self.latent_dims))),
            ]
        )

    def _encoder_distribution(self, level, below):
        """`q(z_{level+1} | below)` as a factorised Normal (`Independent` over the last axis)."""
        tfd = _tfp.tfd(type(self).__name__)
        return tfd.Independent(tfd.Normal(*self.encoder_conditional(level, below)), 1)

    def target_log_prob_fn(self, x):
        """`z_1, …, z_L ↦ log p(x, z_{1:L})`, the generative model, vectorised over leading
        sample axes (`[N, B, d_l]` latents give `[N, B]`). Its `latent_distributions(*z)`
        gives the prior conditionals `{l - 1: p(z_l | z_{l+1})}` (for `"gdreg"`)."""
        return self._target(self._density_input(x), self.decoder_link_gradient)

    def _target(self, x, decoder_link_gradient, likelihood_weight=None):
        self._ensure_built()
        tfd = _tfp.tfd(type(self).__name__)

        def target_log_prob(*latents):
            top = latents[-1]
            standard_normal = tfd.Normal(ops.zeros((), top.dtype), ops.ones((), top.dtype))
            log_p = ops.sum(standard_normal.log_prob(top), axis=-1)
            for level, latent in enumerate(latents):
                below = x if level == 0 else latents[level - 1]
                link = self.decoder_input(level, latent, below, decoder_link_gradient)
                params = _apply(self.decoders[level], ops.tanh(link))
                if level == 0:
                    likelihood = tfd.Bernoulli(logits=ops.cast(params, x.dtype), dtype=x.dtype)
                    log_likelihood = tfd.Independent(likelihood, 1).log_prob(x)
                    if likelihood_weight is not None:
                        log_likelihood = log_likelihood * ops.cast(likelihood_weight, x.dtype)
                    log_p += log_likelihood
                else:
                    log_p += tfd.Independent(tfd.Normal(*self._gaussian(params)), 1).log_prob(below)
            return log_p

        def latent_distributions(*latents):
            # The prior conditionals p(z_l | z_{l+1}), l ≥ 1, as `{index of z_l: distribution}`:
            # the factors of log p whose decoder parameters GDReG treats (its docstring).
            dists = {}
            for level in range(1, len(latents)):
                below = latents[level - 1]
                link = self.decoder_input(level, latents[level], below, "reparameterization")
                params = _apply(self.decoders[level], ops.tanh(link))
                dists[level - 1] = tfd.Independent(tfd.Normal(*self._gaussian(params)), 1)
            return dists

        target_log_prob.latent_distributions = latent_distributions
        return target_log_prob

    def decoder_input(self, level, latent, below, decoder_link_gradient=None):
        """`h = z W + b` of decoder `level`'s first layer, for the latent `z = latents[level]`
        drawn from `q(z | below)`.

        The only place `decoder_link_gradient` (default: the model's) acts: the value is
        the same for both choices. With `"r2g2"` the backward pass gives `σ` (of
        `q(z | below)`) the R2-G2 gradient of the link instead of its reparameterisation
        gradient:

        ```none
        h = z W + b  +  (h_RB - stop(h_RB)) - (h_RT - stop(h_RT))
        h_RB = gaussian_latent_dense(stop(μ), σ, ε̄, stop(W)),   h_RT = (stop(μ) + σ ⊙ ε̄) stop(W)
        ```

        with `ε̄ = stop((z - μ) / σ)`. The added terms are zero in value; their
        gradient reaches `σ` only: `(W g) ⊙ (E[ε | h] - ε)`, which turns the
        `(W g) ⊙ ε` that `σ` receives through `z` into R2-G2's `(W g) ⊙ E[ε | h]`.
        `z`, `μ`, `W` and `b` keep their ordinary gradients.
        """
        link = self.decoder_links[level]
        h = _apply(link, latent)
        decoder_link_gradient = decoder_link_gradient or self.decoder_link_gradient
        if decoder_link_gradient == "reparameterization" or (
            self.hidden_units >= self.latent_dims[level]
        ):
            return h  # an injective link: h determines ε, and R2-G2 is the RT gradient
        loc, scale = self.encoder_conditional(level, below)
        dim = self.latent_dims[level]
        # `q(z_1 | x)` has no sample axes: broadcast it to the latent's `[N..., B, d]`.
        loc, scale = (ops.broadcast_to(t, ops.shape(latent)) for t in (loc, scale))
        flat_loc, flat_scale, flat_latent = (
            ops.reshape(t, [-1, dim]) for t in (loc, scale, latent)
        )
        flat_loc = ops.stop_gradient(flat_loc)
        noise = ops.stop_gradient((flat_latent - flat_loc) / flat_scale)
        kernel = ops.stop_gradient(ops.cast(link.kernel, flat_scale.dtype))
        iterations = self.hidden_units if self.cg_iterations is None else self.cg_iterations
        rao_blackwellised = r2g2.gaussian_latent_dense(
            flat_loc, flat_scale, noise, kernel, cg_iterations=iterations
        )
        reparameterized = ops.matmul(flat_loc + flat_scale * noise, kernel)
        correction = ops.reshape(
            (rao_blackwellised - ops.stop_gradient(rao_blackwellised))
            - (reparameterized - ops.stop_gradient(reparameterized)),
            ops.shape(h),
        )
        substrate = _tfp.substrate(type(self).__name__)
        return substrate.surrogate_objective(h, h + ops.cast(correction, h.dtype))

    def _noise(self, seed, first, count, batch, dtype):
        """The standard Normal draws of importance samples `first, ..., first + count - 1`:
        one `[count * batch, d_l]` array per level, sample-major.

        Sample `k` of level `l` is drawn from `(seed, l, k)` alone (`tfp_gradest.models.
        _bound`), so a sample does not depend on how the `K` samples are grouped: the
        chunked bound uses exactly the samples of the unchunked one.
        """
        return _bound.noise(seed, first, count, batch, self.latent_dims, dtype)

    def _log_weights(self, x, first, count, seed):
        """`[count, B]` log-weights `target(z) - log q(z)` of importance samples `first, ...`
        drawn from `_noise` (`x` in the density dtype), with plain decoder links (the same
        values; the same operations whatever the model's options, so every chunking of the
        bound gives the same numbers)."""
        self._ensure_built()
        batch = x.shape[0] if x.shape[0] is not None else ops.shape(x)[0]
        noises = self._noise(seed, first, count, batch, x.dtype)
        log_q, below, latents = 0.0, x, []
        for level, noise in enumerate(noises):
            conditional = self._encoder_distribution(level, below)
            # Sample-major rows -> [count, B, d]; `x` broadcasts against the sample axis.
            noise = ops.reshape(noise, [count, -1, self.latent_dims[level]])
            latent = conditional.distribution.loc + conditional.distribution.scale * noise
            log_q += conditional.log_prob(latent)
            latents.append(latent)
            below = latent
        return self._target(x, "reparameterization")(*latents) - log_q

    def log_weights(self, x, importance_sample_size, seed):
        """`log p(x, z) - log q(z | x)` for `K` joint draws per example: `[K, B]`, in the
        model's variable dtype. Sample `k` is drawn from `(seed, k)` alone, as in
        `log_likelihood_bound`; gradients, if taken, are plain reparameterisation ones."""
        return self._log_weights(self._density_input(x), 0, importance_sample_size, seed)

    def log_likelihood_bound(self, x, importance_sample_size=64, seed=0, chunk_size=None):
        """Per-example IWAE bound `log (1/K) Σ_k w_k ≤ log p(x)`: `[B]`.

        The `K` samples are evaluated `chunk_size` at a time, with a streaming
        log-mean-exp over the chunks (a running maximum and a float64 sum, float32 on
        JAX without `jax_enable_x64`, in one `keras.ops.while_loop`), so memory does not
        grow with `K`: a `K = 5000` bound over a test set fits. Sample `k` is drawn from
        `(seed, k)` alone, the same whatever the chunking, so the value is too (exactly
        without XLA, as tested; within float32 rounding under XLA, which also draws
        other Normal numbers from the same seed than TensorFlow's own kernels; JAX,
        always compiled, draws its own numbers from `jax.random`). Differentiable when unchunked
        (`chunk_size >= K`): the plain reparameterisation gradient of the bound
        (an evaluation: `decoder_link_gradient` and `gradient_estimator` act on
        the training loss only).

        Args:
          x: `[B, num_pixels]` data in [0, 1] (any real or bool dtype); in-memory data
            outside [0, 1] is a `ValueError`.
          importance_sample_size: Python `int` `K` ≥ 1. Default value: `64`.
          seed: Python or NumPy `int`, or a stateless seed (a `[2]` integer Tensor; on
            JAX a raw `uint32[2]` PRNG key). Default value: `0`.
          chunk_size: Python `int`, importance samples per chunk, or `None`: about
            `BOUND_ROWS_PER_CHUNK / B` (all `K` at once when `B` is not static).
            Default value: `None`.
        """
        k = arguments.check_positive_integer("importance_sample_size", importance_sample_size)
        if chunk_size is not None:
            chunk_size = arguments.check_positive_integer("chunk_size", chunk_size)
        _data.check_bernoulli_data(x, "x")
        if not (ops.is_tensor(seed) or isinstance(seed, (np.ndarray, list, tuple))):
            seed = arguments.check_seed("seed", seed, allow_none=False)
        seed = _bound.seed(seed)
        x = self._density_input(x)
        batch = x.shape[0]
        if chunk_size is None:
            chunk_size = k if batch is None else max(1, BOUND_ROWS_PER_CHUNK // max(batch, 1))
        if not self.built:
            self.build((None, self.num_pixels))
        if _backend.in_traced_function():
            return self._bound(x, k, chunk_size, seed)
        # Eagerly, through one compiled function, chunked or not (the same graph rewrites).
        # One function per (K, chunk) rather than one retraced for each: no retracing warnings.
        if "_bound_functions" not in self.__dict__:
            object.__setattr__(self, "_bound_functions", {})
        key = (k, min(chunk_size, k))
        if key not in self._bound_functions:
            self._bound_functions[key] = _bound.compiled(
                functools.partial(self._bound, k=k, chunk=key[1]), self.variables
            )
        return self._bound_functions[key](x, seed=seed)

    def _bound(self, x, k, chunk, seed):
        if chunk >= k:
            return _log_mean_exp(self._log_weights(x, 0, k, seed))
        num_chunks = -(-k // chunk)
        batch = ops.shape(x)[0]
        wide = _bound.wide_dtype()

        def body(j, running_max, total):
            first = j * chunk
            log_w = ops.cast(self._log_weights(x, first, chunk, seed), wide)
            # The last chunk's samples beyond K are drawn and ignored (a static chunk shape).
            valid = ops.expand_dims(first + ops.arange(chunk) < k, 1)
            log_w = ops.where(valid, log_w, ops.full((), -np.inf, wide))
            new_max = ops.maximum(running_max, ops.max(log_w, axis=0))
            total = total * ops.exp(running_max - new_max) + ops.sum(
                ops.exp(log_w - new_max), axis=0
            )
            return j + 1, new_max, total

        _, log_max, total = ops.while_loop(
            lambda j, *_: j < num_chunks,
            body,
            (
                ops.convert_to_tensor(0, "int32"),
                ops.full((batch,), -np.inf, wide),
                ops.zeros((batch,), wide),
            ),
            maximum_iterations=num_chunks,
        )
        return ops.cast(log_max + ops.log(total) - math.log(k), x.dtype)

    def call(self, x, training=False):
        """The posterior means of the bottom latents, `E_q[z_1 | x]`."""
        return self._gaussian(self.encoders[0](ops.cast(x, self.compute_dtype)))[0]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        del y, y_pred  # unsupervised: the loss is the negative bound on log p(x)
        # `β · loss(tempered target)` (class docstring); β = 1 is the plain estimator loss.
        beta = self._kl_weight.read(self._density_dtype)
        target = self._target(self._density_input(x), self.decoder_link_gradient, 1.0 / beta)
        return estimator_training_loss(self, x, sample_weight, target, loss_scale=beta)

    def get_config(self):
        config = {
            "num_pixels": self.num_pixels,
            "latent_dims": list(self.latent_dims),
            "hidden_units": self.hidden_units,
            "importance_sample_size": self.importance_sample_size,
            "cg_iterations": self.cg_iterations,
            "seed": self.seed,
            "gradient_estimator": _estimator.config_value(self.gradient_estimator),
            "decoder_link_gradient": self.decoder_link_gradient,
            "sample_size": self.sample_size,
            "kl_weight": self.kl_weight,
        }
        return {**super().get_config(), **config}


def _log_mean_exp(log_w):
    """`log (1/K) Σ_k exp(log_w[k])` over axis 0, combined in float64 (as the chunked bound)."""
    wide = ops.cast(log_w, _bound.wide_dtype())
    log_max = ops.stop_gradient(ops.max(wide, axis=0))
    total = ops.sum(ops.exp(wide - log_max), axis=0)
    return ops.cast(log_max + ops.log(total) - math.log(log_w.shape[0]), log_w.dtype)


def _apply(network, inputs):
    """`network` on the last axis of `inputs`, any leading axes (flattened to the `[N, d]`
    batch the network was built for, and restored)."""
    if len(inputs.shape) == 2:
        return network(inputs)
    outputs = network(ops.reshape(inputs, [-1, inputs.shape[-1]]))
    return ops.reshape(outputs, (*ops.shape(inputs)[:-1], outputs.shape[-1]))


def _deprecated_latent_gradient(latent_gradient, decoder_link_gradient, importance_sample_size):
    """The `decoder_link_gradient` a deprecated `latent_gradient=` asks for, with its warning.

    0.2's `latent_gradient="r2g2"` (its default, so in every `.keras` file it saved) with
    `importance_sample_size > 1` gave a biased gradient, which `decoder_link_gradient="r2g2"`
    refuses: it becomes `"reparameterization"` (the same loss value and weights), and the
    warning says so, so that such a model still loads.
    """
    replacement, reason = latent_gradient, ""
    # (`decoder_link_gradient="r2g2"` given too is refused after the warning, below or after.)
    if latent_gradient == "r2g2" and importance_sample_size > 1 and decoder_link_gradient != "r2g2":
        replacement = "reparameterization"
        reason = (
            " (with importance_sample_size > 1 'r2g2' gave a biased gradient and is refused: "
            "it is unbiased for the ELBO, importance_sample_size=1, only; this model now uses "
            "'reparameterization', with the same loss value)"
        )
    warnings.warn(
        "`HierarchicalVAE(latent_gradient=...)` is deprecated and will be removed in the next "
        f"release: write `decoder_link_gradient={replacement!r}` instead{reason} (it chooses "
        "the decoder links' backward pass; the estimator is `gradient_estimator=`).",
        DeprecationWarning,
        stacklevel=3,
    )
    if not isinstance(latent_gradient, str) or latent_gradient not in DECODER_LINK_GRADIENTS:
        raise ValueError(
            f"`latent_gradient` (deprecated: write `decoder_link_gradient`) must be one of "
            f"{DECODER_LINK_GRADIENTS}. Received: latent_gradient={latent_gradient!r}"
        )
    # `decoder_link_gradient` at its default counts as "not given".
    if decoder_link_gradient not in ("reparameterization", latent_gradient):
        raise ValueError(
            "`latent_gradient` is the deprecated spelling of `decoder_link_gradient`: pass "
            "only `decoder_link_gradient`. Received: "
            f"latent_gradient={latent_gradient!r}, "
            f"decoder_link_gradient={decoder_link_gradient!r}"
        )
    return replacement
