"""`GradientVarianceMonitor`: per-layer gradient variance and SNR recorded while
`model.fit` runs."""

import math

import keras
import numpy as np
import tensorflow as tf

__all__ = ["GradientVarianceMonitor"]

_MODES = ("probe", "streaming")
VARIANCE_KEY = "{}log10_variance/{}"
SNR_KEY = "{}snr/{}"
_PREFIXES = {"probe": "grad_", "streaming": "grad_streaming_"}


class GradientVarianceMonitor(keras.callbacks.Callback):
    """Records how noisy the training gradient is, per layer, into `logs` and `History`.

    **Probe mode** (default). Every `every_n_epochs` epochs (or `every_n_steps`
    steps), on a fixed probe batch and the current weights, draw `num_draws`
    gradients of the model's loss, each with fresh noise (the model's Keras
    `SeedGenerator`s, e.g. those of `tge.layers`), and record per group of
    variables (a layer by default)

    ```none
    grad_log10_variance/<group> = log10( mean over elements of Var[g] )
    grad_snr/<group>            = mean over elements of |E[g]| / sd[g]
    ```

    (streaming mode writes `grad_streaming_log10_variance/<group>` and
    `grad_streaming_snr/<group>`, so both modes can run side by side)

    with `Var` the unbiased sample variance over the draws. The data are fixed,
    so this is the variance due to the estimator alone, as in the R2-G2 paper's
    Figure 1. The draws run in one compiled loop with running (Welford)
    moments, so memory is that of three copies of the weights. Before drawing,
    generator `i` (in `model._flatten_layers()` order) is set to state
    `[seed · 2²⁰ + i, (epoch + 1) · 2³²]` so that the numbers are reproducible;
    afterwards the training states are restored, so monitoring never changes
    the training run.

    **Streaming mode** (`mode="streaming"`): no extra gradients. The callback
    wraps `model.optimizer.apply` for the duration of `fit` and keeps running
    moments of the gradients the optimizer is actually given, reset after each
    recording. This is cheap, but its variance *includes minibatch noise* and
    the drift of the weights over the window: use it to watch training, and
    probe mode to compare estimators. Under a distribution strategy the
    gradients are summed across replicas first (one extra all-reduce), so the
    moments are of the global-batch gradient.

    The loss is `model.compute_loss(x, y, y_pred, sample_weight)` on
    `y_pred = model(x, training=True)` (this includes the layers' `add_loss`
    KL terms); a model with its own `train_step` passes `loss_fn(model, x, y,
    sample_weight) -> scalar`. Epochs that are not recorded get NaN, so every
    `History` list has one entry per epoch. `self.history` keeps the recorded
    values with their epoch (or step); `plot()` draws them.

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
      log_dir: optional directory for TensorBoard scalars.
      jit_compile: compile the probe loop with XLA. Default value: `None`,
        meaning the model's own `jit_compile` setting.

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
    ):
        super().__init__()
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
        if int(num_draws) < 2:
            raise ValueError(
                "`num_draws` must be at least 2 (a variance needs two draws). "
                f"Received: num_draws={num_draws}"
            )
        for name, value in [("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps)]:
            if value is not None and int(value) < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")
        if every_n_steps is not None and mode == "streaming":
            raise ValueError("`every_n_steps` applies to probe mode; streaming records per epoch.")
        self.probe_data = _unpack(probe_data) if probe_data is not None else None
        self.num_draws, self.every_n_epochs = int(num_draws), int(every_n_epochs)
        self.every_n_steps = None if every_n_steps is None else int(every_n_steps)
        self.mode, self.group_by, self.loss_fn = mode, group_by, loss_fn
        self.seed, self.log_dir, self.jit_compile = int(seed), log_dir, jit_compile
        self.history = {}  # key -> list of (epoch or step, value)
        self._probe_function = None
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

    def summarize(self, mean, variance):
        """Per-group `{key: value}` from element-wise moments (lists of numpy arrays)."""
        logs, prefix = {}, _PREFIXES[self.mode]
        for group, indices in self.groups().items():
            var = np.concatenate([np.ravel(variance[i]) for i in indices]).astype(np.float64)
            avg = np.concatenate([np.ravel(mean[i]) for i in indices]).astype(np.float64)
            positive = var > 0
            logs[VARIANCE_KEY.format(prefix, group)] = (
                math.log10(var.mean()) if var.mean() > 0 else -np.inf
            )
            logs[SNR_KEY.format(prefix, group)] = (
                float(np.mean(np.abs(avg[positive]) / np.sqrt(var[positive])))
                if positive.any()
                else float("nan")
            )
        return logs

    def _loss(self, x, y, sample_weight):
        if self.loss_fn is not None:
            return self.loss_fn(self.model, x, y, sample_weight)
        y_pred = self.model(x, training=True)
        return self.model.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )

    def _build_probe_function(self):
        variables = list(self.model.trainable_weights)
        x, y, sample_weight = self.probe_data
        jit = self.model.jit_compile if self.jit_compile is None else self.jit_compile
        num_draws = self.num_draws

        def one_gradient():
            with tf.GradientTape() as tape:
                loss = self._loss(x, y, sample_weight)
            return tape.gradient(
                loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )

        @tf.function(jit_compile=bool(jit), autograph=False)
        def probe():
            zeros = [tf.zeros(v.shape, v.dtype) for v in variables]

            def body(n, mean, m2):
                # Welford's update: stable running mean and sum of squared deviations.
                grads = one_gradient()
                count = tf.cast(n + 1, variables[0].dtype)
                new_mean, new_m2 = [], []
                for g, mu, s in zip(grads, mean, m2):
                    g = tf.cast(g, mu.dtype)
                    delta = g - mu
                    mu = mu + delta / tf.cast(count, mu.dtype)
                    new_mean.append(mu)
                    new_m2.append(s + delta * (g - mu))
                return n + 1, new_mean, new_m2

            _, mean, m2 = tf.while_loop(
                lambda n, *_: n < num_draws, body, (tf.constant(0), zeros, zeros)
            )
            return mean, [s / tf.cast(num_draws - 1, s.dtype) for s in m2]

        return probe

    def probe_moments(self, epoch):
        """Element-wise gradient mean and variance on the probe batch, as monitored at `epoch`."""
        if self._probe_function is None:
            self._probe_function = self._build_probe_function()
        generators = _seed_generators(self.model)
        saved = [g.state.numpy() for g in generators]
        for i, g in enumerate(generators):
            g.state.assign(np.array([self.seed * 2**20 + i, (epoch + 1) * 2**32], np.int64))
        try:
            mean, variance = self._probe_function()
        finally:
            for g, state in zip(generators, saved):
                g.state.assign(state)
        return [m.numpy() for m in mean], [v.numpy() for v in variance]

    # --- streaming -----------------------------------------------------------------------

    def _start_streaming(self):
        optimizer = self.model.optimizer
        variables = list(self.model.trainable_weights)
        if not variables:
            raise ValueError(
                'GradientVarianceMonitor(mode="streaming") needs the model\'s weights before '
                "training starts: build the model first, e.g. call it on one batch."
            )
        with self.model.distribute_strategy.scope():
            first = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self._count = tf.Variable(0.0, **first)
            self._mean = [tf.Variable(tf.zeros(v.shape, v.dtype), **first) for v in variables]
            self._m2 = [tf.Variable(tf.zeros(v.shape, v.dtype), **first) for v in variables]
        keys = {id(v): i for i, v in enumerate(variables)}
        original = optimizer.apply
        monitor = self

        def apply(grads, trainable_variables=None):
            grads = list(grads)
            targets = list(trainable_variables or optimizer._trainable_variables)
            context = tf.distribute.get_replica_context()
            if context is not None and context.num_replicas_in_sync > 1:
                # Keras scales each replica's loss by 1/replicas: the sum is the batch gradient.
                summed = context.all_reduce("sum", [g for g in grads if g is not None])
                it = iter(summed)
                grads = [None if g is None else next(it) for g in grads]
            monitor._update_streaming(grads, [keys.get(id(v)) for v in targets])
            return original(grads, trainable_variables)

        self._optimizer_had_own_apply = "apply" in vars(optimizer)
        self._original_apply = original
        optimizer.apply = apply
        self.model.make_train_function(force=True)

    def _update_streaming(self, grads, indices):
        count = self._count.assign_add(1.0)
        for g, i in zip(grads, indices):
            if g is None or i is None:
                continue
            g = tf.convert_to_tensor(g)
            delta = g - self._mean[i]
            mean = self._mean[i].assign_add(delta / tf.cast(count, g.dtype))
            self._m2[i].assign_add(delta * (g - mean))

    def _streaming_moments(self):
        count = float(self._count.numpy())
        mean = [m.numpy() for m in self._mean]
        variance = [s.numpy() / max(count - 1.0, 1.0) for s in self._m2]
        self._count.assign(0.0)
        for m, s in zip(self._mean, self._m2):
            m.assign(tf.zeros_like(m))
            s.assign(tf.zeros_like(s))
        return mean, variance

    # --- Keras hooks ---------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._probe_function = None  # the model may have changed since the last fit
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        if self.mode == "streaming":
            self._start_streaming()

    def on_train_end(self, logs=None):
        if self.mode == "streaming" and hasattr(self, "_original_apply"):
            if self._optimizer_had_own_apply:
                self.model.optimizer.apply = self._original_apply
            else:
                del self.model.optimizer.apply  # back to the class's method
            del self._original_apply
            self.model.make_train_function(force=True)
        if self._writer is not None:
            self._writer.flush()

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.every_n_steps is not None and self._step % self.every_n_steps == 0:
            self._last_logs = self._record(self._step, *self.probe_moments(self._step))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        record = self.every_n_steps is None and (epoch + 1) % self.every_n_epochs == 0
        if record:
            moments = (
                self._streaming_moments() if self.mode == "streaming" else self.probe_moments(epoch)
            )
            self._last_logs = self._record(epoch, *moments)
        values = self._last_logs if (record or self.every_n_steps is not None) else {}
        for key in self.keys():
            logs[key] = values.get(key, float("nan"))

    def _record(self, index, mean, variance):
        values = self.summarize(mean, variance)
        for key, value in values.items():
            self.history.setdefault(key, []).append((index, value))
        if self._writer is not None:
            with self._writer.as_default():
                for key, value in values.items():
                    tf.summary.scalar(key, value, step=index)
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


def _unpack(data):
    if isinstance(data, (tuple, list)):
        data = tuple(data) + (None,) * (3 - len(data))
        return data[:3]
    return data, None, None


def _seed_generators(model):
    generators = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        generators.extend(getattr(layer, "_seed_generators", []))
    return generators
