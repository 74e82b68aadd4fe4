"""The printed tables: one aligned table per case, ratios with three significant digits."""

import math
import sys

__all__ = ["format_ratio", "format_table", "print_case"]


def format_ratio(ratio, times="×"):
    """`8770.3` -> `'8,770×'`, `16.04` -> `'16.0×'`, `1.034` -> `'1.03×'`."""
    return f"{_three_digits(ratio)}{times}"


def _three_digits(value):
    """Three significant digits without an exponent: `10565.8` -> `'10,600'`, `0.0203`."""
    if not math.isfinite(value) or value == 0:
        return f"{value:.3g}"
    value = float(f"{value:.3g}")
    return f"{value:,.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


def _times_sign():
    """`×`, or `x` where standard output cannot encode it (an ASCII-only terminal)."""
    try:
        "×".encode(getattr(sys.stdout, "encoding", None) or "ascii")
    except (LookupError, UnicodeEncodeError):
        return "x"
    return "×"


def format_table(reports):
    """The table of one case, columns aligned; the cuts are relative to the first (baseline)
    row; a row whose bias z-score is above `reports.bias_threshold` is marked `biased`."""
    times = _times_sign()
    threshold = getattr(reports, "bias_threshold", float("nan"))
    header = (
        "estimator",
        "variance",
        "var cut",
        "SNR",
        "max|bias z|",
        "us/grad [q25, q75]",
        "var x time",
        "cut",
    )
    base = reports[0]
    rows = []
    for r in reports:
        if r.max_abs_bias_z != r.max_abs_bias_z:
            bias = "n/a"
        else:
            bias = f"{r.max_abs_bias_z:.2f}"
            if r.max_abs_bias_z > threshold:
                bias += " biased"
        rows.append(
            (
                r.estimator,
                f"{r.mean_variance:.3g}",
                format_ratio(_ratio(base.mean_variance, r.mean_variance), times),
                _three_digits(r.mean_snr),
                bias,
                f"{_three_digits(1e6 * r.step_seconds)} [{_three_digits(1e6 * r.step_seconds_low)}"
                f", {_three_digits(1e6 * r.step_seconds_high)}]",
                f"{r.work_normalized_variance:.3g}",
                format_ratio(
                    _ratio(base.work_normalized_variance, r.work_normalized_variance), times
                ),
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells):
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    lines = [line(header), "-" * len(line(header)), *(line(row) for row in rows)]
    if any(r.max_abs_bias_z > threshold for r in reports):
        lines.append(
            f"biased: max|bias z| above {threshold:.1f}; its mean gradient is not the "
            "objective's, so its variance cut is not a like-for-like win"
        )
    return "\n".join(lines)


def _ratio(base, value):
    return base / value if value > 0 else float("inf")


def print_case(result):
    """Prints one case: its heading, where the gradients were drawn, the bias reference, the
    table."""
    case = result.case
    print(
        f"\n== {case.problem}: S={case.sample_size}, K={case.importance_sample_size}, "
        + ("" if case.noise == "iid" else f"{case.noise} noise, ")
        + f"{case.draws} draws per estimator, baseline {case.estimators[0]} =="
    )
    print(f"gradients drawn {result.location}")
    print(f"bias z measured against: {result.reference}")
    print(format_table(result.reports))
