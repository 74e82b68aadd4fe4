"""A picture of an estimator comparison: variance, SNR and work-normalised variance side by side."""

import math

__all__ = ["plot_comparison"]


def plot_comparison(reports, path=None, title=None):
    """Three bar panels (log10 variance, SNR, log10 variance × step time), one bar per estimator.

    Args:
      reports: `EstimatorReport`s from `compare_estimators`.
      path: optional PNG file to write.
      title: optional figure title.

    Returns:
      The matplotlib `Figure`.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "Plotting needs matplotlib: `pip install matplotlib` (or tfp_gradest[extras])."
        ) from error
    names = [r.estimator for r in reports]
    panels = [
        ("log10 gradient variance", [_log10(r.mean_variance) for r in reports]),
        ("SNR (mean over elements)", [r.mean_snr for r in reports]),
        ("log10 variance × step time", [_log10(r.work_normalized_variance) for r in reports]),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(4 + 1.2 * len(names), 3.6))
    for ax, (label, values) in zip(axes, panels):
        ax.bar(range(len(names)), values, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize="small")
        ax.set_title(label, fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure


def _log10(value):
    return math.log10(value) if value > 0 else float("nan")
