"""Gradient variance against sample size: i.i.d. against randomised quasi-Monte Carlo noise.

    python benchmarks/rqmc.py                      # the full run (the lead's)
    python benchmarks/rqmc.py --small --output-dir /tmp/rqmc   # the smoke run (seconds)

On the `gaussian` problem (`tge.problems.CorrelatedGaussian`: a correlated Gaussian
target `N(m, Σ)` in `D` dimensions and a mean-field Normal surrogate, at its
initialisation), for each dimension `D`, estimator, sample size `S` and base noise
(`noise="iid"`, `noise="rqmc"`), draws `--draws` independent gradients (independent seeds:
for RQMC, an independent random digital shift per draw) and records the variance of the
gradient averaged over its elements. Variance is a property of the estimator at fixed
parameters, not a timing: the machine's load does not change it.

For i.i.d. noise the variance is exactly `v_1 / S`; randomised QMC is unbiased with
variance `o(1/S)` for integrands of bounded variation and close to `O(S^-2)` (up to log
factors) for smooth ones (Buchholz, Wenzel & Mandt, ICML 2018, Theorem 1 and Figure 1;
Owen 1997). `rqmc_slopes.csv` gives the least-squares slope of log variance against
log S over `S >= 8` for each arm (-1 for i.i.d.; the claim is a steeper one), and the
variance ratio iid / rqmc at the largest `S`. Powers of two only: a Sobol net has `2^m`
points. `iwae` at `K = 4` shows the importance-weighted case, where each objective's
four samples take one point of dimension `4 D`.

Full run: `python benchmarks/rqmc.py` writes `benchmarks/results/rqmc.csv`,
`rqmc_slopes.csv` and their `.meta.json` (about 10-15 minutes on 2 quiet cores: mostly
XLA compiles, one per arm and size).
"""

import argparse
import os
import sys
import time

import _common
import numpy as np

import tfp_gradest as tge

ESTIMATORS = (("reparameterization", 1), ("stl", 1), ("iwae", 4))
DIMS = (3, 10, 50)
SIZES = tuple(2**m for m in range(10))  # 1 ... 512
NOISES = ("iid", "rqmc")
HEADER = ["D", "estimator", "K", "S", "noise", "variance", "variance x S", "draws"]
SLOPE_HEADER = ["D", "estimator", "K", "noise", "slope (S >= 8)", "variance ratio iid/rqmc"]
# The smoke run: two sizes, one arm, no XLA (compiling dominates a run this small).
SMALL = {"dims": (3,), "sizes": (2, 16), "draws": 50, "estimators": ESTIMATORS[:1]}


def gradient_variance(
    problem, estimator, sample_size, importance_sample_size, noise, draws, jit_compile=True
):
    """Mean over gradient elements of the variance of `draws` independent gradients."""
    loss_estimator = tge.estimators.get(estimator)

    def loss(seed):
        return loss_estimator.loss(
            problem.target_log_prob,
            problem.surrogate,
            sample_size,
            importance_sample_size,
            seed=seed,
            noise=noise,
        )

    out = tge.diagnostics.gradient_draws(loss, problem.variables, draws, 1234, jit_compile)
    moments = [tge.diagnostics.gradient_moments(np.asarray(o)) for o in out]
    return float(np.mean(np.concatenate([m.variance.ravel() for m in moments])))


def slope(sizes, variances, minimum=8):
    """Least-squares slope of log variance against log S over `S >= minimum` (NaN: < 2 sizes)."""
    pairs = [(s, v) for s, v in zip(sizes, variances) if s >= minimum and v > 0]
    if len(pairs) < 2:
        pairs = [(s, v) for s, v in zip(sizes, variances) if v > 0]
    if len(pairs) < 2:
        return float("nan")
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(x, y, 1)[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--small", action="store_true", help="the smoke run: seconds")
    parser.add_argument("--output-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    estimators = ESTIMATORS
    if args.small:
        args.dims, args.sizes, args.draws = SMALL["dims"], SMALL["sizes"], SMALL["draws"]
        estimators = SMALL["estimators"]
    name = "rqmc_small" if args.small else "rqmc"
    start = time.time()
    rows, slopes = [], []
    for dim in args.dims:
        problem = tge.problems.get("gaussian", dim=dim, dtype="float64")
        for estimator, k in estimators:
            variances = {}
            for noise in NOISES:
                for s in args.sizes:
                    v = gradient_variance(
                        problem, estimator, s, k, noise, args.draws, not args.small
                    )
                    variances[noise, s] = v
                    rows.append([dim, estimator, k, s, noise, f"{v:.4g}", f"{v * s:.4g}"])
                    rows[-1].append(args.draws)
                    print(*rows[-1], sep="\t", file=sys.stderr)
            largest = max(args.sizes)
            ratio = variances["iid", largest] / variances["rqmc", largest]
            for noise in NOISES:
                fitted = slope(args.sizes, [variances[noise, s] for s in args.sizes])
                slopes.append([dim, estimator, k, noise, f"{fitted:.3f}", f"{ratio:.3g}"])
    os.makedirs(args.output_dir, exist_ok=True)
    title = (
        "Gradient variance (mean over elements) against S: i.i.d. and RQMC base noise, "
        f"correlated Gaussian target, {args.draws} draws per cell"
    )
    _common.write_results(
        os.path.join(args.output_dir, f"{name}.csv"), rows, fieldnames=HEADER, title=title
    )
    _common.write_results(
        os.path.join(args.output_dir, f"{name}_slopes.csv"),
        slopes,
        fieldnames=SLOPE_HEADER,
        title="Slope of log gradient variance against log S (S >= 8): -1 for i.i.d. noise",
    )
    _common.print_table(title, slopes, SLOPE_HEADER)
    print(f"\n{time.time() - start:.0f} s", file=sys.stderr)
    return rows, slopes


if __name__ == "__main__":
    main()
