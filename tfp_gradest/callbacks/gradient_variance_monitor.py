"""`GradientVarianceMonitor`: per-layer gradient variance and SNR recorded while
`model.fit` runs, on the TensorFlow and JAX Keras backends.

This module is the Keras callback: its arguments, hooks, `logs`/`History` entries and
plot. The two ways of measuring are `_probe.py` (gradient draws on a fixed batch) and
`_streaming.py` (the optimizer's gradients); `_recording.py` turns moments into the
recorded values and warns about those that cannot be measured.
"""

import keras

from tfp_gradest import _backend
from tfp_gradest._util import arguments
from tfp_gradest._util.keras_private import seed_state_variables
from tfp_gradest.callbacks._probe import ProbeMoments, probe_seed_state, unpack
from tfp_gradest.callbacks._recording import GroupSummary
from tfp_gradest.callbacks._streaming import GradientStream
from tfp_gradest.callbacks._tensorboard import ScalarWriter
from tfp_gradest.callbacks.plotting import plot_gradient_variance

__all__ = ["GradientVarianceMonitor", "probe_seed_state", "seed_state_variables"]

_MODES = ("probe", "streaming")


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
    state variables (`seed_state_variables(model)`); for the recording at epoch
    (or step) `index`, generator `i` starts from `probe_seed_state(seed, index, i,
    dtype)`, so the numbers are reproducible, and advances from draw to draw
    inside the loop.

    **Streaming mode** (`mode="streaming"`): no extra gradients. The callback
    keeps running moments of the gradients the optimizer is actually given,
    reset after each recording. This is cheap, but its variance *includes
    minibatch noise* and the drift of the weights over the window: use it to
    watch training, and probe mode to compare estimators. Keras 3 has no
    documented hook that shows a callback the training gradients, so for the
    duration of `fit` the callback taps `Optimizer.apply`, the one method both
    Keras trainers hand them to: an instance attribute `optimizer.apply` records
    them and calls the class's method, and is removed at the end of `fit` (Keras
    calls no `on_train_end` when `fit` raises, e.g. on `KeyboardInterrupt`: the tap
    then stays until this monitor's next `fit` replaces it). The
    moments are kept in TF variables on TensorFlow, and on the host on JAX (the
    JAX train step is pure). Under a `keras.optimizers.LossScaleOptimizer` (Keras
    wraps the optimizer in one under `mixed_float16`) the callback watches its
    `inner_optimizer`, which is given the unscaled gradients of the steps
    actually taken. Under a TensorFlow distribution strategy the gradients are
    summed across replicas first (one extra all-reduce), so the moments are of
    the global-batch gradient. A window in which the optimizer took fewer than
    two steps records NaN, with one warning.

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
        # Refuse e.g. PyTorch here, not at the first epoch's end.
        _backend.check_supported("GradientVarianceMonitor")
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
        self.probe_data = unpack(probe_data) if probe_data is not None else None
        self.num_draws, self.every_n_epochs = num_draws, every_n_epochs  # ints, checked above
        self.every_n_steps = every_n_steps
        self.mode, self.group_by, self.loss_fn = mode, group_by, loss_fn
        self.seed, self.log_dir, self.jit_compile = seed, log_dir, jit_compile
        self.show_in_progress_bar = (
            group_by == "layer" if show_in_progress_bar is None else show_in_progress_bar
        )
        unit = "step" if every_n_steps is not None else "epoch"
        self._summary = GroupSummary(mode, group_by, unit)
        self.history = {}  # key -> list of (epoch or step, value)
        self._probe = None  # ProbeMoments, built at the first recording of each fit
        self._stream = None  # GradientStream, for the duration of each fit
        self._writer = None
        self._step = 0
        self._last_logs = {}

    # --- what is recorded ----------------------------------------------------------------

    def groups(self):
        """`{group name: [variable indices into model.trainable_weights]}`, in order."""
        return self._summary.groups(self.model)

    def keys(self):
        """The `logs`/`History` keys this callback writes."""
        return self._summary.keys(self.model)

    def summarize(self, moments, index=None):
        """Per-group `{key: value}` from per-variable `tge.diagnostics.GradientMoments`.

        `log10_variance` is `-inf` for a noiseless group (variance exactly 0); a group
        with a non-finite gradient element gets NaN for both values and a warning, once
        per variable; moments of fewer than two draws (a streaming window with fewer than
        two optimizer steps) give NaN everywhere, with one warning. `index` (the epoch or
        step) only goes into the warnings.
        """
        return self._summary.summarize(self.model, moments, index)

    def probe_moments(self, epoch):
        """Per-variable `tge.diagnostics.GradientMoments` on the probe batch, as recorded at
        `epoch` (or step, with `every_n_steps`)."""
        if self._probe is None:
            jit = self.model.jit_compile if self.jit_compile is None else self.jit_compile
            self._probe = ProbeMoments(
                self.model, self.probe_data, self.num_draws, self.seed, self.loss_fn, jit
            )
        return self._probe(self.model, epoch)

    # --- Keras hooks ---------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._probe = None  # the model may have changed since the last fit
        if self.log_dir is not None:
            self._writer = ScalarWriter(self.log_dir)
        if self.mode == "streaming":
            self._close_stream()  # left open by a `fit` that raised
            self._stream = GradientStream(self.model)

    def on_train_end(self, logs=None):
        self._close_stream()
        if self._writer is not None:
            self._writer.flush()

    def _close_stream(self):
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.every_n_steps is not None and self._step % self.every_n_steps == 0:
            self._last_logs = self._record(self._step, self.probe_moments(self._step))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        record = self.every_n_steps is None and (epoch + 1) % self.every_n_epochs == 0
        if record:
            streaming = self.mode == "streaming"
            moments = self._stream.moments() if streaming else self.probe_moments(epoch)
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
        return plot_gradient_variance({label or "": self}, path=path, groups=groups, ax=ax)
