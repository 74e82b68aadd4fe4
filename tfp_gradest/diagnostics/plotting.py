"""A picture of an estimator comparison: variance, SNR and work-normalised variance side by side."""

import math

__all__ = ["plot_comparison", "plot_reductions", "pyplot"]


def plot_reductions(sections, path=None, target=5.0):
    """One panel per problem: each estimator's variance cut and work-normalised cut.

    The cuts are `baseline / estimator` for the mean gradient variance and for
    variance × seconds per gradient, the baseline being each section's first
    report (the plain reparameterisation gradient of that objective); log scale,
    with a dashed line at `target` (the cut the showcase sets out to show), and
    labelled as such in the legend. A row flagged as biased (its `max_abs_bias_z`
    above the section's `bias_threshold`, see `compare_estimators`) is drawn
    hatched and pale with a "biased (|z| = ...)" note above it: its low variance
    is not a win, since its mean is not the objective's gradient.

    Args:
      sections: list of `(title, reports)`, `reports` from `compare_estimators`.
      path: optional PNG file to write.
      target: where to draw the reference line. Default value: `5.0`.

    Returns:
      The matplotlib `Figure`.
    """
    plt = pyplot()
    figure, axes = plt.subplots(
        1, len(sections), figsize=(1.0 + 3.6 * len(sections), 4.0), squeeze=False
    )
    any_biased = False
    for ax, (title, reports) in zip(axes[0], sections):
        base = reports[0]
        threshold = getattr(reports, "bias_threshold", float("nan"))
        positions = range(len(reports))
        cuts = [base.mean_variance / r.mean_variance for r in reports]
        work = [base.work_normalized_variance / r.work_normalized_variance for r in reports]
        variance_bars = ax.bar(
            [p - 0.2 for p in positions], cuts, width=0.4, color="C0", label="variance cut"
        )
        work_bars = ax.bar(
            [p + 0.2 for p in positions], work, width=0.4, color="C1", label="variance x time cut"
        )
        for index, report in enumerate(reports):
            if not report.max_abs_bias_z > threshold:  # NaN (no reference): not flagged
                continue
            any_biased = True
            for bar in (variance_bars[index], work_bars[index]):
                bar.set_hatch("///")
                bar.set_alpha(0.35)
                bar.set_edgecolor("k")
            ax.annotate(
                f"biased\n(|z| = {report.max_abs_bias_z:.0f})",
                (index, max(cuts[index], work[index])),
                textcoords="offset points",
                xytext=(0, 3),
                ha="center",
                va="bottom",
                fontsize="small",
                color="firebrick",
            )
        ax.axhline(
            target, color="k", linestyle="--", linewidth=0.8, label=f"{target:g}x (target cut)"
        )
        ax.set_yscale("log")
        ax.margins(y=0.25)
        ax.set_xticks(list(positions), [r.estimator for r in reports], rotation=30, ha="right")
        ax.set_title(f"{title} (vs {base.estimator})", fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("reduction factor vs the baseline (log)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if any_biased:
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="w", edgecolor="k", hatch="///"))
        labels.append("biased: not a win")
    axes[0][0].legend(handles, labels, fontsize="small")
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure


def pyplot():
    """`matplotlib.pyplot`, with the file-writing "Agg" backend selected if it can be (the
    package's plots are saved to files and may run without a display); an `ImportError`
    saying what to install without matplotlib. Imported on first use, so the plotting
    functions cost nothing until called."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "Plotting needs matplotlib: `pip install matplotlib` (or tfp_gradest[extras])."
        ) from error
    return plt


def plot_comparison(reports, path=None, title=None):
    """Three bar panels (log10 variance, SNR, log10 variance × step time), one bar per estimator.

    Args:
      reports: `EstimatorReport`s from `compare_estimators`.
      path: optional PNG file to write.
      title: optional figure title.

    Returns:
      The matplotlib `Figure`.
    """
    plt = pyplot()
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
