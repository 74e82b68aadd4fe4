"""φ-gradient SNR, bias² and variance vs K on the toy Gaussian (Tucker et al. 2019, Figure 1).

    python benchmarks/snr_scaling.py [--draws 20000] [--out benchmarks/results]

For each K in {1, 3, 10, 30, 100, 300, 1000} and each estimator, draws single-
objective (S = 1) φ-gradients at the papers' perturbed optimum (D = 20) and
reports, over the 40 elements of φ = (a, b):

* SNR: `tge.diagnostics.signal_to_noise_ratio`, the package's one definition: the
  mean over elements of `|E g| / sd(g)`, with `(E g)²` estimated without the
  `var/N` bias of a squared sample mean. IWAE's signal
  `E g` is taken from the IWAE-DReG draws: both are unbiased for the same
  gradient (tests/test_multisample.py), and IWAE's own sample mean cannot
  resolve it (its SNR at K = 1000 is ~1e-3, so ~1e7 draws would be needed);
  its noise `sd(g)` is its own. STL is biased, so its signal is its own mean;
* mean variance of g;
* bias² = (mean(g) - mean(g_IWAE-DReG))², against IWAE-DReG, the lowest-variance
  unbiased estimator here (so IWAE's and DReG's own rows are noise, IWAE-STL's
  is its bias).

Fits the log-log SNR slope over K >= 30 (the +-0.5 laws are asymptotic) and
writes `snr_scaling.csv` and `snr_scaling.png`. Targets: slope(IWAE-DReG) >= 0.4,
slope(IWAE) <= -0.4.
"""

import argparse
import os

import _common
import numpy as np
import tensorflow as tf

import tfp_gradest as tge
from tfp_gradest.diagnostics import plotting
from tfp_gradest.problems import ToyGaussian

KS = [1, 3, 10, 30, 100, 300, 1000]
ESTIMATORS = ["iwae", "iwae_stl", "iwae_dreg"]


def gradient_samples(problem, name, k, draws, seed):
    estimator = tge.estimators.get(name)
    out = tge.diagnostics.gradient_draws(
        lambda s: estimator.loss(problem.target_log_prob, problem.surrogate, 1, k, seed=s),
        problem.variables,
        draws,
        seed,
    )
    return np.concatenate([o.numpy().reshape(draws, -1) for o in out], axis=1)


def summarise(samples, reference_mean, signal_samples=None):
    moments = tge.diagnostics.gradient_moments(samples)
    signal = None if signal_samples is None else tge.diagnostics.gradient_moments(signal_samples)
    return {
        "snr": tge.diagnostics.signal_to_noise_ratio(moments, signal=signal),
        "variance": float(np.mean(moments.variance)),
        "bias2": float(np.mean((moments.mean - reference_mean) ** 2)),
    }


def slope(ks, values):
    ks, values = np.asarray(ks, float), np.asarray(values, float)
    keep = (ks >= 30) & (values > 0)
    return float(np.polyfit(np.log(ks[keep]), np.log(values[keep]), 1)[0])


def plot(rows, path):
    plt = plotting.pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name in ESTIMATORS:
        mine = [r for r in rows if r["estimator"] == name]
        for ax, key in zip(axes, ["snr", "bias2", "variance"]):
            ax.loglog([r["K"] for r in mine], [max(r[key], 1e-12) for r in mine], "o-", label=name)
    for ax, title in zip(axes, ["φ-gradient SNR", "bias² (vs IWAE-DReG mean)", "variance"]):
        ax.set_title(title)
        ax.set_xlabel("K")
    axes[0].legend()
    fig.suptitle(
        "Toy Gaussian (D=20), inference-network gradients — cf. Tucker et al. 2019, Fig. 1"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--draws", type=int, default=20000, help="per cell")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    problem = ToyGaussian(dtype=tf.float64)
    rows = []
    for k in KS:
        samples = {n: gradient_samples(problem, n, k, args.draws, seed=k) for n in ESTIMATORS}
        reference = samples["iwae_dreg"].mean(0)
        for name in ESTIMATORS:
            signal = samples["iwae_dreg"] if name == "iwae" else None
            rows.append({"estimator": name, "K": k, **summarise(samples[name], reference, signal)})
        print(
            f"K={k:5d} " + "  ".join(f"{r['estimator']}: SNR {r['snr']:.4f}" for r in rows[-3:]),
            flush=True,
        )
    os.makedirs(args.out, exist_ok=True)
    _common.write_results(
        os.path.join(args.out, "snr_scaling.csv"),
        rows,
        fieldnames=["estimator", "K", "snr", "variance", "bias2"],
    )
    plot(rows, os.path.join(args.out, "snr_scaling.png"))
    table = []
    for name in ESTIMATORS:
        mine = [r for r in rows if r["estimator"] == name]
        table.append(
            (
                name,
                *[f"{r['snr']:.3g}" for r in mine],
                f"{slope(KS, [r['snr'] for r in mine]):+.2f}",
            )
        )
    _common.print_table(
        f"φ-SNR vs K, toy Gaussian D=20, {args.draws} draws per cell",
        table,
        ["estimator", *[f"K={k}" for k in KS], "slope (K>=30)"],
    )


if __name__ == "__main__":
    main()
