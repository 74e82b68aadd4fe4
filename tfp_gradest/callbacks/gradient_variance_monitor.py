"""`GradientVarianceMonitor`: per-layer gradient variance and SNR recorded while
`model.fit` runs, on the TensorFlow and JAX Keras backends."""

import math
import warnings

import keras
import numpy as np

from tfp_gradest._util import arguments
from tfp_gradest.callbacks import _gradients
from tfp_gradest.callbacks._tensorboard import ScalarWriter
from tfp_gradest.diagnostics.moments import (
    moments_from_running,
    running_moments_update,
    signal_to_noise_ratio,
)

__all__ = ["GradientVarianceMonitor", "probe_seed_state", "seed_state_variables"]

_MODES = ("probe", "streaming")
VARIANCE_KEY = "{}log10_variance/{}"
SNR_KEY = "{}snr/{}"
_PREFIXES = {"probe": "grad_", "streaming": "grad_streaming_"}
# The name Keras gives the state variable of every `keras.random.SeedGenerator`.
SEED_STATE_NAME = "seed_generator_state"


class GradientVarianceMonitor(keras.callbacks.Callback):
    """Records how noisy the training gradient is, per layer, into `logs` and `History`.

    **Probe mode** (default). Every `every_n_epochs` epochs (or `every_n_steps`
    steps), on a fixed probe batch and the current weights, draw `num_draws`
    gradients of the model's loss, each with fresh noise (the model's Keras
    `SeedGenerator`s, e.g. those of `tge.layers`), and record per group of
    variables (a layer by default)

    ```none
    grad_log10_variance/<group> = log10( mean over elements of Var[g] )
    grad_snr/<group>            = tge.diagnostics.signal_to_noise_ratio(moments of g)
                                ≈ mean over elements of |E[g]| / sd[g]
    ```

    (streaming mode writes `grad_streaming_log10_variance/<group>` and
    `grad_streaming_snr/<group>`, so both modes can run side by side)

    with `Var` the unbiased sample variance over the draws, and the SNR the
    package's one definition (`(E g)²` estimated without the `Var/N` bias of a
    squared sample mean; elements with zero variance left out). The data are
    fixed, so this is the variance due to the estimator alone, as in the R2-G2
    paper's Figure 1. The draws run in one compiled loop with running (Welford)
    moments, so memory is that of three copies of the weights.

    The draws are stateless: each runs the model inside a `keras.StatelessScope`
    that maps every variable to a value (the mechanism of `Layer.stateless_call`),
    differentiated by the backend (`tf.GradientTape`; `jax.value_and_grad` inside
    one `jax.jit`). No variable of the model is ever assigned, so monitoring never
    changes the training run. The noise comes from the model's `SeedGenerator`
    state variables (`seed_state_variables(model)`: those named
    `"seed_generator_state"` in `model.non_trainable_variables`); for the
    recording at epoch (or step) `index`, generator `i` starts from
    `probe_seed_state(seed, index, i, dtype)`, so the numbers are reproducible, and
    advances from draw to draw inside the loop.

    **Streaming mode** (`mode="streaming"`): no extra gradients. The callback
    keeps running moments of the gradients the optimizer is actually given,
    reset after each recording. This is cheap, but its variance *includes
    minibatch noise* and the drift of the weights over the window: use it to
    watch training, and probe mode to compare estimators. Keras 3 has no
    documented hook that shows a callback the training gradients (callbacks get
    only `logs`; optimizers have no gradient callback), and the one public
    method that every Keras trainer calls with them is `Optimizer.apply`
    (`apply_gradients` on TensorFlow, `stateless_apply` on JAX both go through
    it). So for the duration of `fit` the callback sets an instance attribute
    `optimizer.apply` that records the gradients and calls the original, and
    removes it at the end of `fit`. The moments are kept in TF variables on
    TensorFlow, and on the host on JAX (the JAX train step is pure: see
    `_gradients/jax.py`). Under a `keras.optimizers.LossScaleOptimizer` (Keras
    wraps the optimizer in one under `mixed_float16`) the callback watches its
    `inner_optimizer`, which is given the unscaled gradients of the steps
    actually taken: the outer one sees loss-scaled gradients, including those of
    the steps it skips for overflowing, and JAX's train step bypasses its `apply`.
    Under a TensorFlow distribution strategy the gradients are summed across
    replicas first (one extra all-reduce), so the moments are of the
    global-batch gradient.

    The loss is `model.compute_loss(x, y, y_pred, sample_weight)` on
    `y_pred = model(x, training=True)` (this includes the layers' `add_loss`
    KL terms); a model with its own `train_step` passes `loss_fn(model, x, y,
    sample_weight) -> scalar`, written with the model's layers (it runs inside
    the stateless scope). Epochs that are not recorded get NaN, so every
    `History` list has one entry per epoch. `self.history` keeps the recorded
    values with their epoch (or step); `plot()` draws them.

    **Non-finite gradients.** A group whose gradient draws are exactly equal
    (a deterministic layer) records `log10_variance = -inf`. A group with a NaN
    or infinite gradient element records NaN for both its variance and its SNR
    (in `logs`, `History`, `self.history` and TensorBoard), and the monitor
    warns once per variable, naming it and its layer: the gradient itself is
    broken, which says nothing about the estimator's noise.

    Args:
      probe_data: `(x, y)` or `(x, y, sample_weight)` (or `x` alone), a fixed
        batch. Required in probe mode.
      num_draws: Python `int` ≥ 2, gradient draws per recording. Default value: `16`.
      every_n_epochs: Python `int`. Default value: `1`.
      every_n_steps: Python `int` or `None`: record every this many training
        steps instead (probe mode; the last value of an epoch goes to `logs`).
      mode: `"probe"` or `"streaming"`. Default value: `"probe"`.
      group_by: `"layer"` (variables grouped by the path of the layer that
        owns them) or `"variable"`. Default value: `"layer"`.
      loss_fn: optional callable `(model, x, y, sample_weight) -> scalar loss`.
      seed: Python `int`. Default value: `0`.
      log_dir: optional directory for TensorBoard scalars (written with
        `tf.summary` on either backend; skipped with a warning if TensorFlow
        is not installed).
      jit_compile: compile the probe loop with XLA (TensorFlow; JAX always
        compiles it). Default value: `None`, meaning the model's own
        `jit_compile` setting.
      show_in_progress_bar: Python `bool`. `True` adds the values to the epoch's
        `logs`, so Keras's progress bar prints them (and `History`,
        `CSVLogger`, `EarlyStopping` and any other callback that reads `logs`
        see them). `False` keeps them off the progress line: they are appended
        to the model's `History` directly (and written to `log_dir` and
        `self.history`) but are not in `logs`. Default value: `None`, meaning
        `True` with `group_by="layer"` (two values per layer) and `False` with
        `group_by="variable"` (two per variable: four variables per Bayesian
        layer make a progress line of thousands of characters).

    #### Examples

    ```python
    monitor = tge.callbacks.GradientVarianceMonitor((x[:256], y[:256]), num_draws=32)
    history = model.fit(x, y, epochs=10, callbacks=[monitor])
    history.history["grad_log10_variance/dense_reparameterization_1"]
    monitor.plot("gradient_variance.png")
    ```

    #### References

    [1] Lam, Bui, Deligiannidis & Teh. Rao-Blackwellised Reparameterisation
        Gradients. 2024. https://arxiv.org/abs/2506.07687 (Figure 1)
    [2] Welford. Note on a method for calculating corrected sums of squares and
        products. Technometrics, 1962.
    """

    def __init__(
        self,
        probe_data=None,
        num_draws=16,
        every_n_epochs=1,
        every_n_steps=None,
        mode="probe",
        group_by="layer",
        loss_fn=None,
        seed=0,
        log_dir=None,
        jit_compile=None,
        show_in_progress_bar=None,
    ):
        super().__init__()
        _gradients.check_supported()  # refuse e.g. PyTorch here, not at the first epoch's end
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}. Received: mode={mode!r}")
        if group_by not in ("layer", "variable"):
            raise ValueError(
                f"`group_by` must be 'layer' or 'variable'. Received: group_by={group_by!r}"
            )
        if mode == "probe" and probe_data is None:
            raise ValueError(
                "`probe_data` is required in probe mode: pass a fixed batch `(x, y)`, "
                'or use mode="streaming".'
            )
        num_draws = arguments.check_integer(
            "num_draws", num_draws, minimum=2, reason="a variance needs two draws"
        )
        every_n_epochs = arguments.check_positive_integer("every_n_epochs", every_n_epochs)
        if every_n_steps is not None:
            every_n_steps = arguments.check_positive_integer("every_n_steps", every_n_steps)
        seed = arguments.check_seed("seed", seed, allow_none=False)
        if every_n_steps is not None and mode == "streaming":
            raise ValueError("`every_n_steps` applies to probe mode; streaming records per epoch.")
        if show_in_progress_bar not in (None, True, False):
            raise TypeError(
                "`show_in_progress_bar` must be True, False or None (True for "
                'group_by="layer", False for group_by="variable"). '
                f"Received: show_in_progress_bar={show_in_progress_bar!r}"
            )
        self.probe_data = _unpack(probe_data) if probe_data is not None else None
        self.num_draws, self.every_n_epochs = num_draws, every_n_epochs  # ints, checked above
        self.every_n_steps = every_n_steps
        self.mode, self.group_by, self.loss_fn = mode, group_by, loss_fn
        self.seed, self.log_dir, self.jit_compile = seed, log_dir, jit_compile
        self.show_in_progress_bar = (
            group_by == "layer" if show_in_progress_bar is None else show_in_progress_bar
        )
        self._warned_not_finite = set()  # variable paths warned about
        self._warned_too_few_steps = False
        self.history = {}  # key -> list of (epoch or step, value)
        self._probe_function = None
        self._streaming = None
        self._writer = None
        self._step = 0
        self._last_logs = {}

    # --- grouping ----------------------------------------------------------------------

    def groups(self):
        """`{group name: [variable indices into model.trainable_weights]}`, in order."""
        groups = {}
        prefix = self.model.name + "/"
        for index, variable in enumerate(self.model.trainable_weights):
            path = (
                variable.path[len(prefix) :] if variable.path.startswith(prefix) else variable.path
            )
            name = path.rsplit("/", 1)[0] if self.group_by == "layer" and "/" in path else path
            groups.setdefault(name, []).append(index)
        return groups

    def keys(self):
        """The `logs`/`History` keys this callback writes."""
        prefix = _PREFIXES[self.mode]
        return [k.format(prefix, g) for g in self.groups() for k in (VARIANCE_KEY, SNR_KEY)]

    # --- the statistics ----------------------------------------------------------------

    def summarize(self, moments, index=None):
        """Per-group `{key: value}` from per-variable `tge.diagnostics.GradientMoments`.

        `log10_variance` is `-inf` for a noiseless group (variance exactly 0); a group
        with a non-finite gradient element gets NaN for both values and a warning, once
        per variable. `index` (the epoch or step) only goes into the warning.
        """
        logs, prefix = {}, _PREFIXES[self.mode]
        variables = self.model.trainable_weights
        if moments and min(m.num_draws for m in moments) < 2:
            # Streaming over a window with fewer than two optimizer steps: no variance at all
            # (`moments_from_running` gives 0 there, which would read as "noiseless").
            self._warn_too_few_steps(min(m.num_draws for m in moments), index)
            return {key: float("nan") for key in self.keys()}
        for group, indices in self.groups().items():
            mine = [moments[i] for i in indices]
            variance_key = VARIANCE_KEY.format(prefix, group)
            snr_key = SNR_KEY.format(prefix, group)
            broken = [i for i, m in zip(indices, mine) if not _all_finite(m)]
            if broken:
                for i in broken:
                    self._warn_not_finite(variables[i], group, moments[i], index)
                logs[variance_key] = logs[snr_key] = float("nan")
                continue
            variance = float(np.mean(np.concatenate([np.ravel(m.variance) for m in mine])))
            logs[variance_key] = math.log10(variance) if variance > 0 else -np.inf
            logs[snr_key] = signal_to_noise_ratio(mine)
        return logs

    def _when(self, index, preposition):
        """`" at epoch 3"`-style words for a warning; empty without an index."""
        unit = "step" if self.every_n_steps is not None else "epoch"
        return "" if index is None else f" {preposition} {unit} {index}"

    def _warn_too_few_steps(self, count, index):
        if self._warned_too_few_steps:
            return
        self._warned_too_few_steps = True
        when = self._when(index, "ending at")
        warnings.warn(
            f'GradientVarianceMonitor(mode="streaming"): the optimizer took {count} step(s) in '
            f"the window{when}; a variance needs at least 2, so every value of this window is "
            "recorded as NaN. Record over more steps (more batches per epoch, a larger "
            "`every_n_epochs`) or use probe mode. (Steps a LossScaleOptimizer skips do not "
            "count.) This warning is given once.",
            RuntimeWarning,
            stacklevel=3,
        )

    def _warn_not_finite(self, variable, group, moments, index):
        if variable.path in self._warned_not_finite:
            return
        self._warned_not_finite.add(variable.path)
        layer = variable.path.rsplit("/", 1)[0] if "/" in variable.path else variable.path
        bad = int(np.sum(~(np.isfinite(moments.mean) & np.isfinite(moments.variance))))
        when = self._when(index, "at")
        source = (
            "the gradients handed to the optimizer"
            if self.mode == "streaming"
            else "the gradient draws on the probe batch"
        )
        prefix = _PREFIXES[self.mode]
        warnings.warn(
            f"GradientVarianceMonitor: the gradient of variable {variable.name!r} of layer "
            f"{layer!r} is not finite: {source} have NaN or infinite values in {bad} of "
            f"{moments.mean.size} elements{when}. "
            f"{VARIANCE_KEY.format(prefix, group)!r} and {SNR_KEY.format(prefix, group)!r} "
            "are recorded as NaN (a noiseless gradient would give -inf). Look for a NaN or "
            "an overflow in the loss or the model (e.g. log or sqrt of 0, float16 range). "
            "This warning is given once per variable.",
            RuntimeWarning,
            stacklevel=3,
        )

    def _loss(self, model, x, y, sample_weight):
        if self.loss_fn is not None:
            return self.loss_fn(model, x, y, sample_weight)
        y_pred = model(x, training=True)
        return model.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )

    def _build_probe_function(self):
        model = self.model
        backend = _gradients.current()
        trainable = list(model.trainable_variables)
        state = list(model.non_trainable_variables)
        jit = model.jit_compile if self.jit_compile is None else self.jit_compile
        num_draws = self.num_draws

        def one_gradient(trainable_values, state_values, data):
            def loss_of(values):
                # `values` is None where the backend differentiates the variables themselves.
                weights = [] if values is None else list(zip(trainable, values))
                mapping = weights + list(zip(state, state_values))
                with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
                    loss = self._loss(model, *data)
                # The SeedGenerators advanced (and e.g. BatchNorm statistics moved): carry
                # their new values to the next draw; nothing is assigned to the model.
                updated = [scope.get_current_value(v) for v in state]
                return loss, _carried(state_values, updated)

            (_, state_values), grads = backend.value_and_grad(loss_of, trainable, trainable_values)
            return grads, state_values

        def probe(trainable_values, state_values, data):
            zeros = [keras.ops.zeros(v.shape, v.dtype) for v in trainable]

            def body(n, carry):
                state_values, mean, m2 = carry
                grads, state_values = one_gradient(trainable_values, state_values, data)
                new_mean, new_m2 = [], []
                for g, mu, s in zip(grads, mean, m2):
                    count = keras.ops.cast(n + 1, mu.dtype)
                    mu, s = running_moments_update(count, mu, s, keras.ops.cast(g, mu.dtype))
                    new_mean.append(mu)
                    new_m2.append(s)
                return state_values, new_mean, new_m2

            _, mean, m2 = keras.ops.fori_loop(0, num_draws, body, (state_values, zeros, zeros))
            return mean, m2

        return backend.compiled(probe, jit)

    def probe_moments(self, epoch):
        """Per-variable `tge.diagnostics.GradientMoments` on the probe batch, as recorded at
        `epoch` (or step, with `every_n_steps`)."""
        model = self.model
        if self._probe_function is None:
            self._probe_function = self._build_probe_function()
            self._probe_tensors = keras.tree.map_structure(_as_tensor, self.probe_data)
        seeds = {id(v): i for i, v in enumerate(seed_state_variables(model))}
        state_values = [
            probe_seed_state(self.seed, epoch, seeds[id(v)], v.dtype)
            if id(v) in seeds
            else keras.ops.convert_to_tensor(v)
            for v in model.non_trainable_variables
        ]
        trainable_values = [keras.ops.convert_to_tensor(v) for v in model.trainable_variables]
        mean, m2 = self._probe_function(trainable_values, state_values, self._probe_tensors)
        return [
            moments_from_running(keras.ops.convert_to_numpy(mu), keras.ops.convert_to_numpy(s),
                                 self.num_draws, np.dtype(v.dtype).type)
            for mu, s, v in zip(mean, m2, model.trainable_variables)
        ]  # fmt: skip

    # --- streaming -----------------------------------------------------------------------

    def _start_streaming(self):
        model = self.model
        optimizer = _applying_optimizer(model.optimizer)
        variables = list(model.trainable_variables)
        if not variables:
            raise ValueError(
                'GradientVarianceMonitor(mode="streaming") needs the model\'s weights before '
                "training starts: build the model first, e.g. call it on one batch."
            )
        self._streaming = accumulator = _gradients.current().StreamingMoments(model)
        keys = {id(v): i for i, v in enumerate(variables)}
        original = optimizer.apply

        def apply(grads, trainable_variables=None):
            grads = list(grads)
            if trainable_variables is None:
                # The optimizer's own list: for `fit`, the model's trainable variables
                # (both trainers build the optimizer on them).
                if len(grads) != len(variables):
                    raise ValueError(
                        'GradientVarianceMonitor(mode="streaming") was given '
                        f"{len(grads)} gradients without their variables, but the model has "
                        f"{len(variables)} trainable variables; pass `trainable_variables` to "
                        "`optimizer.apply`, or use probe mode."
                    )
                indices = list(range(len(grads)))
            else:
                indices = [keys.get(id(v)) for v in trainable_variables]
            accumulator.update(grads, indices)
            return original(grads, trainable_variables)

        self._patched_optimizer = optimizer
        self._optimizer_had_own_apply = "apply" in vars(optimizer)
        self._original_apply = original
        optimizer.apply = apply
        model.make_train_function(force=True)

    def _stop_streaming(self):
        model = self.model
        optimizer = self._patched_optimizer
        if self._optimizer_had_own_apply:
            optimizer.apply = self._original_apply
        else:
            del optimizer.apply  # back to the class's method
        del self._patched_optimizer
        del self._original_apply
        model.make_train_function(force=True)

    def _streaming_moments(self):
        count, mean, m2 = self._streaming.read_and_reset()
        count = int(count)
        return [
            moments_from_running(mu, s, count, np.dtype(v.dtype).type)
            for mu, s, v in zip(mean, m2, self.model.trainable_variables)
        ]

    # --- Keras hooks ---------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._probe_function = None  # the model may have changed since the last fit
        if self.log_dir is not None:
            self._writer = ScalarWriter(self.log_dir)
        if self.mode == "streaming":
            self._start_streaming()

    def on_train_end(self, logs=None):
        if self.mode == "streaming" and hasattr(self, "_original_apply"):
            self._stop_streaming()
        if self._writer is not None:
            self._writer.flush()

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.every_n_steps is not None and self._step % self.every_n_steps == 0:
            self._last_logs = self._record(self._step, self.probe_moments(self._step))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        record = self.every_n_steps is None and (epoch + 1) % self.every_n_epochs == 0
        if record:
            moments = (
                self._streaming_moments() if self.mode == "streaming" else self.probe_moments(epoch)
            )
            self._last_logs = self._record(epoch, moments)
        values = self._last_logs if (record or self.every_n_steps is not None) else {}
        entries = {key: values.get(key, float("nan")) for key in self.keys()}
        history = getattr(self.model, "history", None)
        if self.show_in_progress_bar or not isinstance(history, keras.callbacks.History):
            logs.update(entries)
        else:
            # Keras's `History` (set on the model before training) records `logs` at the end
            # of each epoch, after this callback; these keys get their entry here instead.
            for key, value in entries.items():
                history.history.setdefault(key, []).append(value)

    def _record(self, index, moments):
        values = self.summarize(moments, index)
        for key, value in values.items():
            self.history.setdefault(key, []).append((index, value))
        if self._writer is not None:
            self._writer.write(values, step=index)
        return values

    # --- plotting -------------------------------------------------------------------------

    def plot(self, path=None, groups=None, ax=None, label=None):
        """Draws log10 gradient variance against epoch (or step), one line per group.

        Args:
          path: optional PNG file name to save to.
          groups: group names to draw (default: all).
          ax: optional matplotlib `Axes` (e.g. to overlay several monitors).
          label: prefix for the legend entries (e.g. the estimator's name).

        Returns:
          The matplotlib `Axes`.
        """
        from tfp_gradest.callbacks.plotting import plot_gradient_variance

        return plot_gradient_variance({label or "": self}, path=path, groups=groups, ax=ax)


def seed_state_variables(model):
    """The state variables of `model`'s `keras.random.SeedGenerator`s, in
    `model.non_trainable_variables` order (Keras names each `"seed_generator_state"`)."""
    return [v for v in model.non_trainable_variables if v.name == SEED_STATE_NAME]


def probe_seed_state(seed, index, generator, dtype):
    """The state generator number `generator` starts from at recording `index` (an
    epoch or a step) of a monitor with `seed`: two 32-bit words of
    `numpy.random.SeedSequence([seed, index, generator])`, so that different seeds,
    recordings and generators get unrelated streams, on every backend's seed dtype
    (int64 on TensorFlow, uint32 on JAX).
    """
    words = np.random.SeedSequence([seed % 2**64, index, generator]).generate_state(2)
    return keras.ops.convert_to_tensor(np.asarray(words).astype(dtype))


def _applying_optimizer(optimizer):
    """The optimizer whose `apply` receives the gradients that update the weights, unscaled."""
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


def _all_finite(moments):
    return bool(np.all(np.isfinite(moments.mean)) and np.all(np.isfinite(moments.variance)))


def _as_tensor(value):
    return None if value is None else keras.ops.convert_to_tensor(value)


def _carried(old_values, new_values):
    return [old if new is None else new for old, new in zip(old_values, new_values)]


def _unpack(data):
    if isinstance(data, (tuple, list)):
        data = tuple(data) + (None,) * (3 - len(data))
        return data[:3]
    return data, None, None
