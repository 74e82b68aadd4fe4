"""Generate `docs/results.md` from `benchmarks/results/*.csv` and their `.meta.json`.

Run by `docs/conf.py` at every build, so a re-run of a benchmark updates the page
and no number on it is typed by hand. Each table's header gives the command that
produced it, the date, the commit and the machine (from the `.meta.json` that
`benchmarks/_common.write_results` writes beside the CSV). Figures (`*.png`) are
copied next to the page. Standard library only (and NumPy for the fits).

    python docs/_generate_results.py  # writes docs/results.md and docs/_generated/
"""

import csv
import json
import math
import os
import shutil
import statistics

DOCS = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(os.path.dirname(DOCS), "benchmarks", "results")
FIGURES = "_generated"  # relative to DOCS; gitignored

# Benchmarks that print their tables but do not write a CSV yet: listed so the page says
# where those numbers come from (see the user guides), never with numbers typed in.
# Keys are CSV name prefixes: an entry is listed until a CSV with that prefix exists.
PRINTED_ONLY = {
    "layers_dense": "python benchmarks/layers.py --quick --skip-tfp",
    "layers_mixed_precision": "python benchmarks/layers_mixed_precision.py",
    "backends": "python benchmarks/backends.py --pairs 4 --steps 20 --repeats 5",
    "solver_costs": "python benchmarks/solver_costs.py --fit",
    "multisample": "python benchmarks/multisample.py",
    "vi_overhead": "python benchmarks/vi_overhead.py --repeats 21 --steps 100",
    "leave_one_out_memory": "python benchmarks/leave_one_out_memory.py",
    "noise_path": "python benchmarks/noise_path.py",
    "end_to_end --hvae-step-ratio": "python benchmarks/end_to_end.py --hvae-step-ratio",
}

PROBLEM_TITLES = {
    "bnn_mlp": "Bayesian MLP on digits",
    "bnn_cnn": "Bayesian CNN on digits",
    "vae": "VAE on binarised digits",
    "hvae": "Hierarchical VAE on binarised digits",
}


def _read(name):
    with open(os.path.join(RESULTS, f"{name}.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _meta(name):
    path = os.path.join(RESULTS, f"{name}.meta.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _float(value):
    return float(value) if value not in ("", None) else math.nan


def _header(name):
    meta = _meta(name)
    lines = [f"Source: `benchmarks/results/{name}.csv`."]
    if meta is None:
        lines.append("No `.meta.json` beside it: command, date and machine unknown.")
        return "\n".join(lines) + "\n"
    machine = meta.get("machine", {})
    versions = meta.get("versions", {})
    lines += [
        "",
        f"- command: `{meta.get('command', 'unknown')}`",
        f"- date: {meta.get('date', 'unknown')}",
        f"- commit: `{meta.get('commit', 'unknown')}`",
        "- machine: "
        + ", ".join(
            f"{k.replace('_', ' ')} {v}" for k, v in machine.items() if v not in (None, [], "")
        ),
    ]
    if versions:
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if meta.get("note"):
        lines.append(f"- note: {meta['note']}")
    return "\n".join(lines) + "\n"


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def _mean_se(row, metric, when, digits):
    mean, se = _float(row.get(f"{metric}_{when}_mean")), _float(row.get(f"{metric}_{when}_se"))
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def _paired_at_budget(evaluations, problem, arm, best, metric, budget):
    """Mean and SE over seeds of `metric(arm) - metric(best)`, both read at `budget` seconds.

    As `benchmarks/end_to_end.py` computes it: each seed's metric linearly interpolated in
    training seconds between its evaluations.
    """
    import numpy as np

    def at_budget(a, seed):
        mine = sorted(
            (
                (_float(r["wallclock_seconds"]), _float(r[metric]))
                for r in evaluations
                if r["problem"] == problem and r["arm"] == a and r["seed"] == seed
            ),
        )
        return float(np.interp(budget, [t for t, _ in mine], [v for _, v in mine]))

    seeds = sorted({r["seed"] for r in evaluations if r["problem"] == problem and r["arm"] == arm})
    seeds = [s for s in seeds if any(r["arm"] == best and r["seed"] == s for r in evaluations)]
    if not seeds:
        return None
    diffs = np.array([at_budget(arm, s) - at_budget(best, s) for s in seeds])
    se = diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    return float(diffs.mean()), float(se)


def _end_to_end():
    rows = _read("end_to_end_summary")
    has_evaluations = os.path.exists(os.path.join(RESULTS, "end_to_end.csv"))
    evaluations = _read("end_to_end") if has_evaluations else []
    parts = [
        "(results-end-to-end)=\n## End to end: held-out results over seeds and wall-clock\n",
        _header("end_to_end_summary"),
        "Mean ± standard error over seeds. *Equal epochs*: after the same steps. *Equal "
        "time*: every arm read at the slowest arm's training time (the budget), faster arms "
        "having trained more epochs. BNNs: test log-likelihood of the posterior predictive "
        "and its accuracy; VAEs: test IWAE bound (K = 64), in nats. An arm whose layers "
        "resolve to another arm's estimators is that arm (`same as`).\n",
    ]
    for problem in dict.fromkeys(r["problem"] for r in rows):
        mine = [r for r in rows if r["problem"] == problem]
        bnn = problem.startswith("bnn")
        metric, digits = ("test_log_likelihood", 4) if bnn else ("test_bound", 3)
        first = mine[0]
        header = [
            "arm (resolved)",
            "ms / step",
            "step / slowest's, median [IQR]",
            "epochs trained",
            f"{metric.replace('_', ' ')}, {first['epochs']} epochs",
            f"equal time ({_float(first['budget_seconds']):.1f} s)",
        ]
        if bnn:
            header += ["accuracy, equal epochs", "accuracy, equal time"]
        budget = _float(first["budget_seconds"])
        best = max(mine, key=lambda r: _float(r[f"{metric}_budget_mean"]))
        if evaluations:
            header.append(f"equal time − best's (`{best['arm']}`), paired over seeds")
        table = []
        for r in mine:
            arm = f"`{r['arm']}`" + (f" ({r['resolved']})" if r["resolved"] != r["arm"] else "")
            if r.get("same_as"):
                arm += f", same as `{r['same_as']}`"
            line = [
                arm,
                f"{1000 * _float(r['seconds_per_step']):.2f}",
                r["ratio_to_slowest"],
                r["trained_epochs"],
                _mean_se(r, metric, "final", digits),
                _mean_se(r, metric, "budget", digits),
            ]
            if bnn:
                line += [
                    _mean_se(r, "test_accuracy", "final", 3),
                    _mean_se(r, "test_accuracy", "budget", 3),
                ]
            if evaluations:
                arm_rows = (
                    r["arm"]
                    if any(e["problem"] == problem and e["arm"] == r["arm"] for e in evaluations)
                    else r.get("same_as") or r["arm"]
                )
                paired = None
                if r is not best and (r.get("same_as") or r["arm"]) != best["arm"]:
                    paired = _paired_at_budget(
                        evaluations, problem, arm_rows, best["arm"], metric, budget
                    )
                line.append(
                    "—" if paired is None else f"{paired[0]:+.{digits}f} ± {paired[1]:.{digits}f}"
                )
            table.append(line)
        title = PROBLEM_TITLES.get(problem, problem)
        parts.append(f"(results-end-to-end-{problem})=\n### {title}\n\n{_table(header, table)}")
    if os.path.exists(os.path.join(RESULTS, "end_to_end.png")):
        parts.append(
            f"![Metric against training seconds, mean ± SE over seeds; dotted: the equal-time "
            f"budget]({FIGURES}/end_to_end.png)\n\nPer-evaluation rows (every arm, seed and "
            "evaluated epoch): `benchmarks/results/end_to_end.csv`.\n"
        )
    return "\n".join(parts)


def _isag():
    rows = _read("isag_gmm")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {m: [r for r in rows if r["method"] == m] for m in methods}
    sgd = {r["init"]: r for r in by["SGD"]}
    table = []
    for m in methods:
        steps = [int(r["steps_to_target"]) for r in by[m]]
        per_step = [_float(r["seconds_per_step"]) for r in by[m]]
        step_ratio = [
            int(r["steps_to_target"]) / int(sgd[r["init"]]["steps_to_target"]) for r in by[m]
        ]
        time_ratio = [
            int(r["steps_to_target"])
            * _float(r["seconds_per_step"])
            / (int(sgd[r["init"]]["steps_to_target"]) * _float(sgd[r["init"]]["seconds_per_step"]))
            for r in by[m]
        ]
        table.append(
            [
                m,
                f"{statistics.median(steps):g}",
                f"{1e6 * statistics.median(per_step):.1f}",
                f"{statistics.median(step_ratio):.2f}",
                f"{statistics.median(time_ratio):.2f}",
            ]
        )
    header = [
        "method",
        "median steps to target",
        "µs / step",
        "steps / SGD's (median over inits)",
        "seconds / SGD's (median over inits)",
    ]
    parts = [
        "(results-isag)=\n## Minibatched VI with gradient re-use (I-SAG)\n",
        _header("isag_gmm"),
        f"Gaussian mixture on digits, {len(sgd)} initialisations. Target: 99% of the way from "
        "the initial ELBO to the best ELBO any method reached from that initialisation.\n",
        _table(header, table),
    ]
    if os.path.exists(os.path.join(RESULTS, "isag_gmm.png")):
        parts.append(f"![I-SAG on a Gaussian mixture]({FIGURES}/isag_gmm.png)\n")
    return "\n".join(parts)


def _slope(ks, values):
    import numpy as np

    ks, values = np.asarray(ks, float), np.asarray(values, float)
    keep = (ks >= 30) & (values > 0)
    return float(np.polyfit(np.log(ks[keep]), np.log(values[keep]), 1)[0])


def _snr():
    rows = _read("snr_scaling")
    estimators = list(dict.fromkeys(r["estimator"] for r in rows))
    ks = sorted({int(r["K"]) for r in rows})
    table = []
    for e in estimators:
        snr = {int(r["K"]): _float(r["snr"]) for r in rows if r["estimator"] == e}
        table.append(
            [f"`{e}`", *[f"{snr[k]:.3g}" for k in ks], f"{_slope(ks, [snr[k] for k in ks]):+.2f}"]
        )
    header = ["estimator", *[f"K = {k}" for k in ks], "log-log slope, K ≥ 30"]
    parts = [
        "(results-snr)=\n## Signal-to-noise ratio of the surrogate's gradient against K\n",
        _header("snr_scaling"),
        "φ-gradient SNR on the DReG paper's toy Gaussian (its §6.1). Theory: IWAE's SNR falls "
        "like K^(-1/2), IWAE-DReG's grows like K^(1/2).\n",
        _table(header, table),
    ]
    if os.path.exists(os.path.join(RESULTS, "snr_scaling.png")):
        parts.append(f"![SNR, bias² and variance against K]({FIGURES}/snr_scaling.png)\n")
    return "\n".join(parts)


INFERENCE_GYM_SMALL = ("inference_gym_small", "inference_gym_small_summary")


def _estimate(row, metric, digits):
    """`"mean ± se"` of `metric` in an `inference_gym_summary.csv` row."""
    mean, se = _float(row.get(f"{metric}_mean")), _float(row.get(f"{metric}_se"))
    if math.isnan(mean):
        return "—"
    if abs(mean) >= 1e5:  # a collapsed run's ELBO: magnitude, not decimals
        return f"{mean:.3g}" + ("" if math.isnan(se) else f" ± {se:.2g}")
    return f"{mean:.{digits}f}" + ("" if math.isnan(se) else f" ± {se:.{digits}f}")


BASELINE_ARM = "tfp.vi"


def _inference_gym_wins(rows, steps):
    """Per surrogate family and read: how often each arm is the best (or tied), and by how much.

    An arm *ties the best* on a target when its mean error is within two combined standard
    errors of the lowest mean error there (`|a - b| <= 2 sqrt(se_a² + se_b²)`); *vs the
    baseline* is the geometric mean over targets of its mean error divided by the baseline
    arm's (`tfp.vi`, the default users start from): below 1 is better.
    """
    reads = [("step", s) for s in steps] + [("equal_time", None)]
    parts = []
    for family in dict.fromkeys(r["surrogate"] for r in rows):
        mine = [r for r in rows if r["surrogate"] == family]
        targets = list(dict.fromkeys(r["target"] for r in mine))
        arms = list(dict.fromkeys(r["arm"] for r in mine))
        columns = []
        for reading, step in reads:
            cells = {}
            for arm in arms:
                ties, ratios, degenerate = 0, [], 0
                for target in targets:
                    at = {
                        r["arm"]: r
                        for r in mine
                        if r["target"] == target
                        and r["reading"] == reading
                        and (step is None or int(r["step"]) == step)
                    }
                    if arm not in at:
                        continue
                    row = at[arm]
                    degenerate += int(row["degenerate_seeds"]) > 0
                    error = lambda r: _float(r["mean_error_mean"])  # noqa: E731
                    se = lambda r: _float(r["mean_error_se"])  # noqa: E731
                    finite = [r for r in at.values() if math.isfinite(error(r))]
                    if finite and math.isfinite(error(row)):
                        best = min(finite, key=error)
                        margin = 2 * math.hypot(se(best) or 0.0, se(row) or 0.0)
                        ties += error(row) - error(best) <= margin
                        base = at.get(BASELINE_ARM)
                        if base is not None and error(base) > 0 and math.isfinite(error(base)):
                            ratios.append(error(row) / error(base))
                ratio = (
                    math.exp(statistics.fmean(math.log(r) for r in ratios if r > 0))
                    if ratios
                    else math.nan
                )
                cells[arm] = (ties, len(targets), ratio, degenerate)
            label = f"step {step}" if reading == "step" else "equal time"
            columns.append((label, cells))
        header = ["arm"] + [f"{label}: best or tied · vs `{BASELINE_ARM}`" for label, _ in columns]
        header.append("targets with a degenerate seed (last read)")
        table = []
        for arm in arms:
            row = [f"`{arm}`"]
            for _, cells in columns:
                ties, n, ratio, _ = cells[arm]
                row.append(f"{ties}/{n} · " + ("—" if math.isnan(ratio) else f"{ratio:.2f}×"))
            row.append(str(columns[-2][1][arm][3] if len(columns) > 1 else columns[-1][1][arm][3]))
            table.append(row)
        parts.append(
            f"### Who wins, {family.replace('_', '-')} surrogates\n\n"
            "Per read: on how many targets the arm has the lowest mean error or is within two "
            "combined standard errors of it, and the geometric mean over targets of its mean "
            f"error divided by `{BASELINE_ARM}`'s (below 1: closer to the reference than the "
            "default). The guide's advice ([Which estimator?](which_estimator.md)) is read from "
            "this table.\n\n" + _table(header, table)
        )
    return parts


def _inference_gym():
    """Per target: mean error at every read and at equal time, sd error, ELBO, degenerate runs."""
    rows = _read("inference_gym_summary")
    per_read = os.path.exists(os.path.join(RESULTS, "inference_gym.csv"))
    reads = [r for r in rows if r["reading"] == "step"]
    steps = sorted({int(r["step"]) for r in reads if int(r["step"]) > 0})
    last = steps[-1] if steps else 0
    parts = [
        "(results-inference-gym)=\n## Inference Gym posteriors: distance to the reference\n",
        _header("inference_gym_summary"),
        "Mean ± standard error over seeds. *Mean error*: the root mean square over the "
        "posterior's coordinates of (surrogate mean − reference mean) / reference sd; *sd "
        "error*: the same for (surrogate sd − reference sd) / reference sd; references from "
        "`inference-gym` (long NUTS runs or exact). Every arm evaluates the target the same "
        "number of times per step (`K × S`). *Equal time*: every arm read at the fastest "
        "arm's training time (per surrogate). *Degenerate*: seeds flagged by the rules of "
        "`benchmarks/inference_gym.py` (listed below the tables).\n",
    ]
    parts += _inference_gym_wins(rows, steps)
    for target in dict.fromkeys(r["target"] for r in rows):
        mine = [r for r in rows if r["target"] == target]
        header = [
            "surrogate",
            "arm",
            "K × S",
            "ms / step",
            *[f"mean error, step {s}" for s in steps],
            "equal time (s)",
            "mean error, equal time",
            f"sd error, step {last}",
            f"ELBO, step {last}",
            "degenerate seeds",
        ]
        table = []
        for r in mine:
            if r["reading"] != "equal_time":
                continue
            at = {
                int(x["step"]): x
                for x in reads
                if (x["target"], x["surrogate"], x["arm"]) == (target, r["surrogate"], r["arm"])
            }
            final = at[last]
            table.append(
                [
                    r["surrogate"].replace("_", "-"),
                    f"`{r['arm']}`",
                    f"{r['K']} × {r['S']}",
                    f"{1000 * _float(r['seconds_per_step']):.3f}",
                    *[_estimate(at[s], "mean_error", 3) if s in at else "—" for s in steps],
                    f"{_float(r['seconds']):.3g}",
                    _estimate(r, "mean_error", 3),
                    _estimate(final, "sd_error", 3),
                    _estimate(final, "elbo", 1),
                    f"{final['degenerate_seeds']} / {final['seeds']}",
                ]
            )
        parts.append(f"### {target}\n\n{_table(header, table)}")
    if per_read:
        flagged = {}
        for r in _read("inference_gym"):
            key = (r["target"], r["surrogate"], r["arm"], r["seed"])
            if r["degenerate"] == "True" and key not in flagged:
                flagged[key] = r["detected_by"]
        lines = [
            f"- {t}, {f.replace('_', '-')}, `{a}`, seed {s}: {how}"
            for (t, f, a, s), how in flagged.items()
        ]
        parts.append(
            "### Degenerate runs\n\nFirst flag of each flagged run (per-read rows: "
            "`benchmarks/results/inference_gym.csv`, column `detected_by`).\n\n"
            + ("\n".join(lines) if lines else "None flagged.")
            + "\n"
        )
    if os.path.exists(os.path.join(RESULTS, "inference_gym.png")):
        parts.append(
            f"![Mean error against training seconds, mean ± SE over seeds]"
            f"({FIGURES}/inference_gym.png)\n"
        )
    return "\n".join(parts)


def _jax_vi():
    """tge on TFP's JAX substrate against tfp-jax, NumPyro and a hand-written step."""
    rows = _read("jax_vi")
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    cases = list(dict.fromkeys((r["problem"], r["estimator"]) for r in rows))
    header = ["problem (N x D)", "estimator", "S", "K"]
    header += [f"`{a}` µs / step" for a in arms]
    header += ["`tge` / `tfp-jax`, median [IQR]", "`tge` / `hand`, median [IQR]"]
    table = []
    for problem, estimator in cases:
        mine = {r["arm"]: r for r in rows if (r["problem"], r["estimator"]) == (problem, estimator)}
        first = next(iter(mine.values()))
        tge = mine.get("tge", {})
        table.append(
            [
                f"{problem.replace('_', ' ')} ({first['N x D']})",
                f"`{estimator}`",
                first["S"],
                first["K"],
                *[mine[a]["us/step"] if a in mine else "—" for a in arms],
                tge.get("ratio to tfp-jax median [IQR]", "—"),
                tge.get("ratio to hand median [IQR]", "—"),
            ]
        )
    return "\n".join(
        [
            "(results-jax-vi)=\n## The estimators on JAX: step time against TFP-JAX, NumPyro and "
            "a hand-written step\n",
            _header("jax_vi"),
            "One `jax.jit`-compiled step (loss, gradient, `optax.adam` update) called from "
            "Python, Bayesian logistic regression. `tfp-jax`: `tfp.vi.monte_carlo_variational_"
            "loss` of TFP's JAX substrate with the same estimator (DOUBLY_REPARAMETERIZED for "
            "STL and IWAE-DReG); `numpyro`: `SVI` with `Trace_ELBO` (reparameterization) or "
            "`RenyiELBO(alpha=0)` (IWAE), which has no STL or DReG; `hand`: the estimator "
            "written in `jax.numpy`. Target: `tge` ≤ 1.05 × `tfp-jax`. Per-arm rows with XLA's "
            "flop counts: `benchmarks/results/jax_vi.csv`.\n",
            _table(header, table),
        ]
    )


def _hvae_levels_names():
    """`benchmarks/hvae_levels.py`'s tables (each run's `--tag`), without its smoke runs."""
    return sorted(
        os.path.splitext(f)[0]
        for f in os.listdir(RESULTS)
        if f.startswith("hvae_levels") and f.endswith(".csv") and "_small" not in f
    )


def _hvae_levels():
    """`benchmarks/hvae_levels.py`: the hierarchical VAE's levels, configurations, estimators."""
    names = [n for n in _hvae_levels_names() if n.endswith("_summary")]
    rows = [r for n in names for r in _read(n)]

    def estimate(r, key):
        mean, se = _float(r.get(f"{key}_mean")), _float(r.get(f"{key}_se"))
        return "—" if math.isnan(mean) else f"{mean:+.3f} ± {se:.3f}"

    def bound(r):
        return f"{_float(r['test_bound_mean']):.3f} ± {_float(r['test_bound_se']):.3f}"

    parts = [
        "(results-hvae-levels)=\n## Hierarchical VAE: does it use its levels?\n",
        *(_header(n) for n in names),
        "Binarised digits, 32 latents per level, Adam (1e-3), every run the same number of "
        "steps. Test IWAE bound (K = 64, nats), mean ± standard error over seeds; *− 1 level*: "
        "each seed's bound minus the 1-level model's of the same seed and configuration "
        "(paired), then mean ± standard error, and per seed. *Active units* (Burda et al. "
        "2016: `Cov_x(E_q[u | x]) > 0.01`) and *KL* (nats, `E_q[log q(z_l | z_{l-1}) − log "
        "p(z_l | z_{l+1})]`) per level, bottom to top, mean over seeds. `before`: the "
        "end-to-end benchmark's setting (16 hidden units, ELBO); `recommended`: "
        "`HierarchicalVAE`'s docstring (the default 64 hidden units, K = 8, a KL warm-up by "
        "`tge.callbacks.KLAnnealing` over the first warm-up epochs), with the estimator of "
        "the `estimator` column. Where steps differ between rows, compare rows of equal "
        "steps only.\n",
    ]
    for name in names:
        meta = _meta(name) or {}
        if meta.get("cost"):
            cost = meta["cost"]
            parts.append(
                f"Cost of the run writing `{name[: -len('_summary')]}*`: "
                f"{cost['cpu_seconds'] / 60:.1f} CPU-minutes, "
                f"{cost['wall_seconds'] / 60:.1f} minutes of wall-clock.\n"
            )
    levels = sorted(
        (r for r in rows if r["study"] == "levels"),
        key=lambda r: (
            r["config"] != "before",
            r["estimator"] != "iwae",
            r["estimator"],
            r["levels"],
        ),
    )
    if levels:
        header = [
            "configuration",
            "estimator",
            "levels",
            "hidden units",
            "K",
            "warm-up epochs",
            "steps",
            "test bound",
            "− 1 level",
            "− 1 level, per seed",
            "active units",
            "KL",
        ]
        table = [
            [
                f"`{r['config']}`",
                f"`{r['estimator']}`",
                r["levels"],
                r["hidden_units"],
                r["K"],
                r["warmup_epochs"],
                r["steps"],
                bound(r),
                estimate(r, "minus_1_level"),
                r.get("minus_1_level_per_seed") or "—",
                r["active_units"],
                r["kl_nats"],
            ]
            for r in levels
        ]
        parts.append("### Levels\n\n" + _table(header, table))
    estimators = [r for r in rows if r["study"] == "estimators"]
    runs = [
        r
        for n in names
        if os.path.exists(os.path.join(RESULTS, f"{n[: -len('_summary')]}.csv"))
        for r in _read(n[: -len("_summary")])
        if r["study"] == "estimators"
    ]

    def minus_dreg(r):
        """Mean ± s.e. over seeds of this estimator's bound minus IWAE-DReG's (paired)."""
        bounds = {
            (e["estimator"], e["seed"]): _float(e["test_bound"])
            for e in runs
            if (e["config"], e["levels"]) == (r["config"], r["levels"])
        }
        seeds = sorted({s for (e, s) in bounds if e == r["estimator"]})
        diffs = [bounds[(r["estimator"], s)] - bounds[("iwae_dreg", s)] for s in seeds]
        if r["estimator"] == "iwae_dreg" or len(diffs) < 2 or any(map(math.isnan, diffs)):
            return "—"
        se = statistics.stdev(diffs) / math.sqrt(len(diffs))
        return f"{statistics.fmean(diffs):+.3f} ± {se:.3f}"

    if estimators:
        header = [
            "estimator",
            "levels",
            "steps",
            "test bound",
            "− IWAE",
            "− IWAE, per seed",
            "− IWAE-DReG",
            "active units",
            "KL",
        ]
        table = [
            [
                f"`{r['estimator']}`",
                r["levels"],
                r["steps"],
                bound(r),
                estimate(r, "minus_iwae"),
                r.get("minus_iwae_per_seed") or "—",
                minus_dreg(r),
                r["active_units"],
                r["kl_nats"],
            ]
            for r in estimators
        ]
        parts.append(
            "(results-hvae-levels-estimators)=\n### Estimators (recommended configuration)\n\n"
            "*− IWAE*, *− IWAE-DReG*: each seed's bound minus that estimator's (same seed, data "
            "and initialisation), mean ± standard error over seeds.\n\n" + _table(header, table)
        )
    return "\n".join(parts)


def _generic(name, max_rows=60):
    """Any other recorded table (`benchmarks/_common.print_table(..., name=...)`), as written."""
    rows = _read(name)
    meta = _meta(name) or {}
    title = meta.get("title", name.replace("_", " "))
    header = list(rows[0]) if rows else []
    shown = [[r[h] for h in header] for r in rows[:max_rows]]
    more = f"\n({len(rows) - max_rows} more rows in the CSV.)\n" if len(rows) > max_rows else ""
    parts = [f"(results-{name})=\n## {title}\n", _header(name), _table(header, shown) + more]
    if os.path.exists(os.path.join(RESULTS, f"{name}.png")):
        parts.append(f"![{title}]({FIGURES}/{name}.png)\n")
    return "\n".join(parts)


def _printed_only():
    recorded = {os.path.splitext(f)[0] for f in os.listdir(RESULTS) if f.endswith(".csv")}
    rows = [
        [f"`{cmd}`"]
        for prefix, cmd in PRINTED_ONLY.items()
        if not any(name.startswith(prefix) for name in recorded)
    ]
    return (
        "(results-printed-only)=\n## Benchmarks that print their results\n\n"
        "These print their tables and do not write `benchmarks/results/` yet; run them to "
        "measure on your machine. The guides quote them by command.\n\n" + _table(["command"], rows)
    )


def generate(docs=DOCS):
    """Write `results.md` and copy the figures; returns the page's path."""
    figures = os.path.join(docs, FIGURES)
    os.makedirs(figures, exist_ok=True)
    for name in sorted(os.listdir(RESULTS)):
        if name.endswith(".png"):
            shutil.copy2(os.path.join(RESULTS, name), os.path.join(figures, name))
    sections = [
        "<!-- Generated by docs/_generate_results.py from benchmarks/results/: do not edit. -->\n",
        "# Results\n",
        "Generated from `benchmarks/results/*.csv` at every documentation build. Absolute "
        "times belong to the machine named in each header; the ratios are what carry over. "
        "Times were measured in alternation (every arm in turn) and are reported as medians, "
        "with interquartile ranges where given.\n",
    ]
    generators = {
        "end_to_end_summary": _end_to_end,
        "snr_scaling": _snr,
        "isag_gmm": _isag,
        "inference_gym_summary": _inference_gym,
        "jax_vi": _jax_vi,
        "hvae_levels_summary": _hvae_levels,
    }
    for name, make in generators.items():
        if os.path.exists(os.path.join(RESULTS, f"{name}.csv")):
            sections.append(make())
    # Tables read by the sections above, and every other recorded table as it is written.
    # (inference_gym_small*, jax_vi_small: the CI smoke tests' output, not results.)
    used = {*generators, "end_to_end", "inference_gym", *INFERENCE_GYM_SMALL, "jax_vi_small"}
    # (hvae_levels*: the section above, its per-run rows and smoke runs.)
    used |= {os.path.splitext(f)[0] for f in os.listdir(RESULTS) if f.startswith("hvae_levels")}
    for file in sorted(os.listdir(RESULTS)):
        name, extension = os.path.splitext(file)
        if extension == ".csv" and name not in used:
            sections.append(_generic(name))
    sections.append(_printed_only())
    path = os.path.join(docs, "results.md")
    text = "\n".join(sections)
    old = open(path).read() if os.path.exists(path) else None
    if text != old:  # leave the file alone when nothing changed (no needless rebuilds)
        with open(path, "w") as f:
            f.write(text)
    return path


if __name__ == "__main__":
    print(generate())
