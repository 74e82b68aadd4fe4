"""Gradient-variance curves, the R2-G2 paper's Figure 1 style (matplotlib, imported lazily)."""

from tfp_gradest.callbacks._recording import variance_key
from tfp_gradest.diagnostics.plotting import pyplot

__all__ = ["plot_gradient_variance"]


def plot_gradient_variance(monitors, path=None, groups=None, ax=None):
    """log10 gradient variance vs epoch for several monitors (e.g. one per estimator).

    Args:
      monitors: `{label: GradientVarianceMonitor}`.
      path: optional PNG file to write.
      groups: group names to draw (default: every group of every monitor). A
        name also selects groups whose path ends with it, e.g. `"top"` selects
        `"sequential/top"`.
      ax: optional matplotlib `Axes`.

    Returns:
      The matplotlib `Axes`.
    """
    if ax is None:
        _, ax = pyplot().subplots(figsize=(6, 4))
    for label, monitor in monitors.items():
        prefix = variance_key(monitor.mode, "")
        for key, points in monitor.history.items():
            group = key[len(prefix) :] if key.startswith(prefix) else None
            if group is None or (groups is not None and not _selected(group, groups)):
                continue
            x, y = zip(*points)
            ax.plot(x, y, marker="o", markersize=3, label=f"{label} {group}".strip())
    unit = "step" if any(m.every_n_steps for m in monitors.values()) else "epoch"
    ax.set_xlabel(unit)
    ax.set_ylabel("log10 gradient variance")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    if path is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=120)
    return ax


def _selected(group, groups):
    return any(group == g or group.endswith("/" + g) for g in groups)
