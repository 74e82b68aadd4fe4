"""R2-G2's two exact solvers timed on a grid of (R, k, F, B), and the cost model fitted to them.

    python benchmarks/solver_costs.py [--quick] [--repeats 9] [--fit]

For each cell (`R` rows = output positions, `k` weights, `F` filters, `B` examples:
`S = B·F` systems of `R × R`) the script times, under XLA, in alternation,
`tfp_gradest.r2g2.solvers.direct_conditional_noise` (Gram + elimination) and
conjugate gradients run for `R` iterations (the count an exact answer may
need; `tfp_gradest.r2g2.solvers.cg_conditional_noise`, the solver R2-G2 uses),
both in float64 on ReLU'd Gaussian patches.
It prints the measured medians, the cost model's predictions
(`solvers.solve_cost`), which solver was faster and which the model picks.

With `--fit` it re-fits the model's constants (`solvers.DIRECT_SECONDS`,
`solvers.CG_SECONDS`) and prints them, to be pasted into `solvers.py`: their
ratios by least squares on the cells' log time ratios direct / CG (each cell's
two solvers are timed in alternation, so the ratio survives a loaded machine;
absolute seconds do not), then one overall scale from the CG seconds.
Absolute seconds depend on the machine; the choice depends only on the ratios.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import tfp_gradest as tge  # noqa: E402
from tfp_gradest.r2g2 import solvers  # noqa: E402


def jit(fn):
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn, jit_compile=True, autograph=False)


def direct(patches, scale, noise):
    return solvers.direct_conditional_noise(patches, scale, noise, 1e-6)


def exact_cg(patches, scale, noise):
    # A tolerance no system reaches: exactly `R` iterations, the exact solve's count.
    return solvers.cg_conditional_noise(patches, scale, noise, patches.shape[1], 1e-300)


def time_cell(rows, weights, filters, batch, repeats, rng):
    patches = ops.convert_to_tensor(np.maximum(rng.normal(size=(batch, rows, weights)), 0))
    scale = ops.convert_to_tensor(np.exp(rng.normal(size=(weights, filters)) - 2))
    noise = ops.convert_to_tensor(rng.normal(size=(weights, filters)))
    compiled = [jit(direct), jit(exact_cg)]
    # Each call waits for (copies) one system's answer, not all of them.
    times = tge.diagnostics.interleaved_times(
        [lambda *a, run=run: run(*a)[0] for run in compiled],
        (patches, scale, noise),
        repeats,
        calls_per_repeat=1,
        min_repeat_seconds=0,
    )
    return np.median(times, axis=1), np.median(times[0] / times[1])


def features(rows, weights, systems):
    """Work terms of `solvers.solve_cost`: direct (Gram, elimination, steps); CG (products,
    iterations)."""
    pairs = rows * (rows + 1) / 2
    direct_terms = [systems * (pairs + rows) * weights, systems * rows**2 * (rows + 1), rows]
    cg_terms = [rows * systems * 2 * rows * weights, rows]
    return direct_terms, cg_terms


def fit(cells, measured, ratios):
    """The cost model's constants from the grid.

    The *ratios* direct / CG of each cell (timed in alternation, so robust to the
    machine's load) fix the constants relative to CG's per-multiply-add constant, by
    least squares on log ratios; that one is then the median measured CG seconds per
    unit of its work. (The Gram matrices' work is proportional to exact CG's in every
    cell, `S R² k / 2` against `2 S R² k`, so the ratios hardly separate the Gram's
    constant from CG's; the fit may put it near zero and let CG's carry the difference.)
    Returns `(DIRECT_SECONDS, CG_SECONDS)`.
    """
    from scipy.optimize import least_squares

    terms = [features(r, k, f * b) for r, k, f, b in cells]
    direct_terms = np.array([t[0] for t in terms], float)
    cg_terms = np.array([t[1] for t in terms], float)

    def log_ratio_errors(log_constants):
        gram, elimination, step, iteration = np.exp(log_constants)
        direct = direct_terms @ [gram, elimination, step]
        cg = cg_terms @ [1.0, iteration]
        return np.log(direct / cg) - np.log(ratios)

    start = np.log([1.0, 1.0, 1e5, 1e5])
    # soft_l1: a few cells hit by a burst of load (ratio 6 among neighbours near 1) must not
    # steer the fit.
    relative = np.exp(least_squares(log_ratio_errors, start, loss="soft_l1", f_scale=0.2).x)
    per_product = np.median(measured[:, 1] / (cg_terms @ [1.0, relative[3]]))
    direct_c = tuple(per_product * relative[:3])
    return direct_c, (per_product, per_product * relative[3])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="fewer cells and repeats")
    parser.add_argument("--fit", action="store_true", help="re-fit and print the constants")
    args = parser.parse_args()
    rows_grid, weights_grid = (4, 8, 16, 32, 64), (37, 73, 145, 289)
    shapes = ((16, 16), (16, 64))  # (F, B)
    if args.quick:
        rows_grid, weights_grid, shapes, args.repeats = (4, 16, 64), (37, 145), ((16, 64),), 5
    cells = [(r, k, f, b) for r in rows_grid for k in weights_grid for f, b in shapes if r < k]
    rng = np.random.default_rng(0)
    measured, ratios = [], []
    for cell in cells:
        seconds, ratio = time_cell(*cell, args.repeats, rng)
        measured.append(seconds)
        ratios.append(ratio)
        print(".", end="", flush=True)
    measured = np.array(measured)
    if args.fit:
        direct_c, cg_c = fit(cells, measured, np.array(ratios))
        print(f"\nDIRECT_SECONDS = ({', '.join(f'{c:.2e}' for c in direct_c)})")
        print(f"CG_SECONDS = ({', '.join(f'{c:.2e}' for c in cg_c)})")
        solvers.DIRECT_SECONDS, solvers.CG_SECONDS = tuple(direct_c), tuple(cg_c)
    print(
        f"\nExact solvers, float64, XLA on {keras.backend.backend()} "
        "(ms: medians; ratio: median of per-repeat direct / CG)"
    )
    print("| R | k | F | B | direct ms | CG (R iterations) ms | direct / CG | model: direct ms, "
          "CG ms | faster | model picks |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    agree = 0
    for (r, k, f, b), (d, c), ratio in zip(cells, measured, ratios):
        cost = solvers.solve_cost(b, f, r, k)
        faster = "direct" if ratio < 1 else "CG"
        picks = "direct" if cost.direct <= cost.conjugate_gradient else "CG"
        agree += faster == picks
        print(
            f"| {r} | {k} | {f} | {b} | {1e3 * d:.2f} | {1e3 * c:.2f} | {ratio:.2f} | "
            f"{1e3 * cost.direct:.2f}, {1e3 * cost.conjugate_gradient:.2f} | {faster} | {picks} |"
        )
    print(f"The model picks the faster solver in {agree} of {len(cells)} cells.")


if __name__ == "__main__":
    main()
