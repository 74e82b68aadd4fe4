"""What `GradientVarianceMonitor` records: its keys, its per-group values, and the warnings
about values that cannot be measured (a non-finite gradient; too few steps in a window)."""

import math
import warnings

import numpy as np

from tfp_gradest.diagnostics.statistics import signal_to_noise_ratio

__all__ = ["GroupSummary", "snr_key", "variance_key"]

_PREFIXES = {"probe": "grad_", "streaming": "grad_streaming_"}


def variance_key(mode, group):
    """The `logs`/`History` key of `group`'s log10 variance in `mode`, e.g.
    `"grad_log10_variance/top"`, `"grad_streaming_log10_variance/top"`."""
    return f"{_PREFIXES[mode]}log10_variance/{group}"


def snr_key(mode, group):
    """The `logs`/`History` key of `group`'s signal-to-noise ratio in `mode`."""
    return f"{_PREFIXES[mode]}snr/{group}"


class GroupSummary:
    """Per-variable moments to per-group `{key: value}`, warning once about each kind of
    value that cannot be measured.

    Args:
      mode: `"probe"` or `"streaming"` (the keys' prefix and the warnings' words).
      group_by: `"layer"` (variables grouped by the path of the layer that owns them)
        or `"variable"`.
      unit: `"epoch"` or `"step"`, what a recording's index counts (for the warnings).
    """

    def __init__(self, mode, group_by, unit):
        self.mode, self.group_by, self.unit = mode, group_by, unit
        self._warned_not_finite = set()  # variable paths warned about
        self._warned_too_few_steps = False

    def groups(self, model):
        """`{group name: [variable indices into model.trainable_weights]}`, in order."""
        groups = {}
        prefix = model.name + "/"
        for index, variable in enumerate(model.trainable_weights):
            path = variable.path
            path = path[len(prefix) :] if path.startswith(prefix) else path
            name = path.rsplit("/", 1)[0] if self.group_by == "layer" and "/" in path else path
            groups.setdefault(name, []).append(index)
        return groups

    def keys(self, model):
        """The `logs`/`History` keys, two per group (variance, then SNR)."""
        return [
            key(self.mode, group) for group in self.groups(model) for key in (variance_key, snr_key)
        ]

    def summarize(self, model, moments, index=None):
        """Per-group `{key: value}` from per-variable `tge.diagnostics.GradientMoments`.

        `log10_variance` is `-inf` for a noiseless group (variance exactly 0); a group
        with a non-finite gradient element gets NaN for both values and a warning, once
        per variable. Moments of fewer than two draws (a streaming window with fewer
        than two optimizer steps) give NaN everywhere, with one warning. `index` (the
        epoch or step) only goes into the warnings.
        """
        if moments and min(m.num_draws for m in moments) < 2:
            # No variance at all (`moments_from_running` gives 0, which reads as noiseless).
            self._warn_too_few_steps(min(m.num_draws for m in moments), index)
            return {key: float("nan") for key in self.keys(model)}
        variables, logs = model.trainable_weights, {}
        for group, indices in self.groups(model).items():
            mine = [moments[i] for i in indices]
            keys = variance_key(self.mode, group), snr_key(self.mode, group)
            broken = [i for i, m in zip(indices, mine) if not _all_finite(m)]
            if broken:
                for i in broken:
                    self._warn_not_finite(variables[i], keys, moments[i], index)
                logs[keys[0]] = logs[keys[1]] = float("nan")
                continue
            variance = float(np.mean(np.concatenate([np.ravel(m.variance) for m in mine])))
            logs[keys[0]] = math.log10(variance) if variance > 0 else -np.inf
            logs[keys[1]] = signal_to_noise_ratio(mine)
        return logs

    def _when(self, index, preposition):
        """`" at epoch 3"`-style words for a warning; empty without an index."""
        return "" if index is None else f" {preposition} {self.unit} {index}"

    def _warn_too_few_steps(self, count, index):
        if self._warned_too_few_steps:
            return
        self._warned_too_few_steps = True
        warnings.warn(
            f'GradientVarianceMonitor(mode="streaming"): the optimizer took {count} step(s) in '
            f"the window{self._when(index, 'ending at')}; a variance needs at least 2, so "
            "every value of this window is recorded as NaN. Record over more steps (more "
            "batches per epoch, a larger `every_n_epochs`) or use probe mode. (Steps a "
            "LossScaleOptimizer skips do not count.) This warning is given once.",
            RuntimeWarning,
            stacklevel=_USER_LEVEL,
        )

    def _warn_not_finite(self, variable, keys, moments, index):
        if variable.path in self._warned_not_finite:
            return
        self._warned_not_finite.add(variable.path)
        layer = variable.path.rsplit("/", 1)[0] if "/" in variable.path else variable.path
        bad = int(np.sum(~(np.isfinite(moments.mean) & np.isfinite(moments.variance))))
        source = (
            "the gradients handed to the optimizer"
            if self.mode == "streaming"
            else "the gradient draws on the probe batch"
        )
        warnings.warn(
            f"GradientVarianceMonitor: the gradient of variable {variable.name!r} of layer "
            f"{layer!r} is not finite: {source} have NaN or infinite values in {bad} of "
            f"{moments.mean.size} elements{self._when(index, 'at')}. {keys[0]!r} and "
            f"{keys[1]!r} are recorded as NaN (a noiseless gradient would give -inf). Look "
            "for a NaN or an overflow in the loss or the model (e.g. log or sqrt of 0, "
            "float16 range). This warning is given once per variable.",
            RuntimeWarning,
            stacklevel=_USER_LEVEL,
        )


# The warnings point at the caller of `GradientVarianceMonitor.summarize` (which calls
# `GroupSummary.summarize`, which calls `_warn_...`).
_USER_LEVEL = 4


def _all_finite(moments):
    return bool(np.all(np.isfinite(moments.mean)) and np.all(np.isfinite(moments.variance)))
