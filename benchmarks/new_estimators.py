"""Where GDReG, VarGrad and LinearResponseCV win and where they do not: gradient variance.

Three comparisons on the built-in problems (`tge.problems`), each estimator's gradient drawn
`--draws` times (independent seeds, one compiled loop) at a fixed point, and its variance
averaged over the elements of each parameter group; per seed (`--seeds`: the problem's
initialisation and the draws) the ratio of the baseline's variance to the estimator's
(`variance cut`, above 1: less variance), reported as mean ± standard error over seeds:

* `gdreg`: `hierarchical_gaussian` (a learnable prior conditional `p_θ(z1 | z2)`, the
  surrogate near the posterior) at two prior scales `s` and two `K`: IWAE, IWAE-DReG,
  GDReG (`conditional_scores="transform"`) and `GDReG("keep")`; groups `q(z2)` (m2, r2),
  `q(z1|z2)` (w, m1, r1), `prior θ` (a, b, log s) and `likelihood c`; baseline IWAE-DReG.
* `vargrad`: `latent_bits` (6 binary latents, mean-field Bernoulli surrogate) at its
  initialisation and after 300 Adam steps, `S` = 4 and 16: the score function, its
  leave-one-out baseline and VarGrad (ELBO gradient); VIMCO at `K = S` draws the IWAE
  bound's gradient, another objective (same number of target evaluations). Baseline: the
  score function.
* `linear_response_cv`: `gaussian` (D = 3, correlated) and `logistic_regression` at
  initialisation and after fitting, `S` = 4 and 16: reparameterization, STL and
  LinearResponseCV; baseline reparameterization.

Variance is a property of the estimator at a fixed point: the machine's load does not
change it, so no time is recorded (`python -m tfp_gradest compare` times them).

Full run: `python benchmarks/new_estimators.py` (5 seeds, 1000 draws; about 10 minutes of
one core; three times that under load), writing
`benchmarks/results/new_estimators_{gdreg,vargrad,control_variate}.csv`. `--small` is the
smoke run (one seed, one setting each, 50 draws).
"""

import argparse
import json
import os
import sys

import _common
import numpy as np

import tfp_gradest as tge

HEADER = [
    "comparison",
    "problem",
    "setting",
    "parameters",
    "estimator",
    "variance (mean ± se)",
    "variance cut vs baseline (mean ± se)",
    "baseline",
    "seeds",
]

NOTE = (
    "variance: the mean over a group's gradient elements of their variance over the draws; "
    "variance cut: the baseline's variance over the estimator's, per seed (above 1: less "
    "variance). The three tables (new_estimators_*.csv) come from one run. Seeds change the "
    "problem's starting point (and latent_bits' data) and the "
    "draws. VIMCO estimates the K-sample IWAE bound's gradient, not the ELBO's: its row "
    "compares noise at the same number of target evaluations, not the same gradient."
)

HIERARCHICAL_GROUPS = {
    "q(z2)": ["m2", "r2"],
    "q(z1|z2)": ["w", "m1", "r1"],
    "prior θ (a, b, log s)": ["a", "b", "log_s"],
}  # (the likelihood's c: every estimator here gives it IWAE's gradient, the same draws)
HIERARCHICAL_NAMES = ["m2", "r2", "w", "m1", "r1", "a", "b", "log_s", "c"]


def _group_variances(problem, estimator, sample_size, k, draws, seed, groups=None):
    """`{group: mean per-element variance}` of `estimator`'s gradient draws on `problem`."""
    samples = tge.diagnostics.gradient_draws(
        problem.loss_fn(estimator, sample_size, k), problem.variables, draws, seed
    )
    per_variable = [np.var(d.numpy(), axis=0, ddof=1).ravel() for d in samples]
    if groups is None:
        return {"all": float(np.mean(np.concatenate(per_variable)))}
    by_name = dict(zip(HIERARCHICAL_NAMES, per_variable))
    return {g: float(np.mean(np.concatenate([by_name[n] for n in ns]))) for g, ns in groups.items()}


def _mean_se(values, digits=3):
    values = np.asarray(values, float)
    if len(values) < 2:
        return f"{values.mean():.{digits}g}"
    se = values.std(ddof=1) / np.sqrt(len(values))
    return f"{values.mean():.{digits}g} ± {se:.2g}"


def _summarise(comparison, problem, setting, per_seed, baseline, labels):
    """Rows from `per_seed[seed][estimator][group]` variances."""
    rows = []
    seeds = sorted(per_seed)
    groups = list(next(iter(per_seed.values()))[baseline])
    for group in groups:
        for estimator in labels:
            variances = [per_seed[s][estimator][group] for s in seeds]
            cuts = [per_seed[s][baseline][group] / per_seed[s][estimator][group] for s in seeds]
            rows.append(
                [
                    comparison,
                    problem,
                    setting,
                    group,
                    labels[estimator],
                    _mean_se(variances),
                    _mean_se(cuts),
                    labels[baseline],
                    len(seeds),
                ]
            )
    return rows


def gdreg_rows(seeds, draws, prior_scales, ks):
    estimators = {
        "iwae": "iwae",
        "iwae_dreg": "iwae_dreg",
        "gdreg_transform": tge.estimators.GDReG("transform"),
        "gdreg_keep": tge.estimators.GDReG("keep"),  # the default, "gdreg"
    }
    labels = {
        **{k: k for k in estimators},
        "gdreg_transform": 'GDReG("transform")',
        "gdreg_keep": 'GDReG("keep")',
    }
    rows = []
    for s in prior_scales:
        for k in ks:
            per_seed = {}
            for seed in seeds:
                problem = tge.problems.get("hierarchical_gaussian", prior_scale=s, seed=seed)
                per_seed[seed] = {
                    name: _group_variances(problem, e, 1, k, draws, seed, HIERARCHICAL_GROUPS)
                    for name, e in estimators.items()
                }
            setting = f"prior scale s={s}, K={k}, near the posterior"
            rows += _summarise("gdreg", "hierarchical_gaussian", setting, per_seed, "iwae_dreg",
                               labels)  # fmt: skip
            _progress(rows)
    return rows


def vargrad_rows(seeds, draws, sample_sizes, fit_steps):
    loo = tge.estimators.ScoreFunction(baseline="leave_one_out")
    labels = {
        "score_function": "score_function",
        "loo": 'ScoreFunction(baseline="leave_one_out")',
        "vargrad": "vargrad",
        "vimco": "vimco (K = S; IWAE bound)",
    }
    rows = []
    for at in ("init", "fitted"):
        for size in sample_sizes:
            per_seed = {}
            for seed in seeds:
                problem = tge.problems.get("latent_bits", seed=seed)
                if at == "fitted":
                    problem.fit(fit_steps, seed=seed)
                per_seed[seed] = {
                    "score_function": _group_variances(
                        problem, "score_function", size, 1, draws, seed
                    ),
                    "loo": _group_variances(problem, loo, size, 1, draws, seed),
                    "vargrad": _group_variances(problem, "vargrad", size, 1, draws, seed),
                    "vimco": _group_variances(problem, "vimco", 1, size, draws, seed),
                }
            where = "initialisation" if at == "init" else f"after {fit_steps} steps"
            setting = f"S={size} ({where})"
            rows += _summarise("vargrad", "latent_bits", setting, per_seed, "score_function",
                               labels)  # fmt: skip
            _progress(rows)
    return rows


def control_variate_rows(seeds, draws, sample_sizes, fit_steps, problems):
    labels = {n: n for n in ("reparameterization", "stl", "linear_response_cv")}
    rows = []
    for name, kwargs in problems:
        for at in ("init", "fitted"):
            for size in sample_sizes:
                per_seed = {}
                for seed in seeds:
                    problem = tge.problems.get(name, seed=seed, **kwargs)
                    if at == "fitted":
                        problem.fit(fit_steps, seed=seed)
                    per_seed[seed] = {
                        e: _group_variances(problem, e, size, 1, draws, seed) for e in labels
                    }
                where = "initialisation" if at == "init" else f"after {fit_steps} steps"
                rows += _summarise("linear_response_cv", name, f"S={size} ({where})", per_seed,
                                   "reparameterization", labels)  # fmt: skip
                _progress(rows)
    return rows


def _progress(rows):
    sys.stderr.write(f"\r{len(rows)} rows")
    sys.stderr.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--fit-steps", type=int, default=300)
    parser.add_argument("--small", action="store_true", help="smoke run: 1 seed, 50 draws")
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args(argv)
    if args.small:
        seeds, draws, fit_steps = [0], 50, 20
        prior_scales, ks, sample_sizes = [0.5], [4], [4]
        cv_problems = [("gaussian", {})]
    else:
        seeds, draws, fit_steps = list(range(args.seeds)), args.draws, args.fit_steps
        prior_scales, ks, sample_sizes = [1.0, 0.25], [4, 16], [4, 16]
        cv_problems = [("gaussian", {}), ("logistic_regression", {})]
    parts = {
        "gdreg": (
            "GDReG against IWAE and IWAE-DReG on hierarchical_gaussian",
            gdreg_rows(seeds, draws, prior_scales, ks),
        ),
        "vargrad": (
            "VarGrad against the score function, its leave-one-out baseline and VIMCO on "
            "latent_bits",
            vargrad_rows(seeds, draws, sample_sizes, fit_steps),
        ),
        "control_variate": (
            "LinearResponseCV against reparameterization and STL",
            control_variate_rows(seeds, draws, sample_sizes, fit_steps, cv_problems),
        ),
    }
    sys.stderr.write("\n")
    output_dir = args.output_dir or os.path.join(_common._REPOSITORY, "benchmarks", "results")
    rows = []
    for part, (title, part_rows) in parts.items():
        name = f"new_estimators_{part}" + ("_small" if args.small else "")
        _write(output_dir, name, part_rows, f"{title}: gradient variance by parameter group "
               f"({draws} draws per estimator, mean ± s.e. over {len(seeds)} seeds)")  # fmt: skip
        rows += part_rows
    return rows


def _write(output_dir, name, rows, title):
    path = os.path.join(output_dir, f"{name}.csv")
    _common.write_results(path, rows, fieldnames=HEADER, title=title)
    meta_path = os.path.join(output_dir, f"{name}.meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["note"] = NOTE
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    _common.print_table(f"{name} ({path})", rows, HEADER)


if __name__ == "__main__":
    main()
