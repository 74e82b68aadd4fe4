"""I-SAG vs SGD and SAG: a Gaussian mixture fitted by minibatched VI on digits (the poster's
experiment).

Model: `C` isotropic unit-variance components with equal weights in the
first `D` principal components of scikit-learn's digits (standardised),
means `μ_c ~ N(0, 3² I)`; the assignments are summed out, so
`log p_b(θ) = log p(θ)/N + Σ_{n∈b} logsumexp_c [log N(x_n; μ_c, I) - log C]`.
Surrogate: mean-field Normal over all `C·D` means. Plain SGD on every method.

For each of `--inits` random initialisations every method runs `--steps`
steps in one XLA-compiled loop; the full-data ELBO (64 fixed draws) is
recorded every `--eval-every` steps. Each method's seconds per step are
timed separately, on the same loop without the ELBO evaluations, all
methods in alternation, one round per init. An init's target is 99% of the way from
its initial ELBO to the best ELBO any method reached from it; a method's cost
is the first recorded step at or above the target (the step budget if never),
and seconds are steps × that method's measured seconds per step. Prints the
median steps and seconds per method and the median ratio I-SAG / SGD;
writes benchmarks/results/isag_gmm.csv and .png.

    python benchmarks/isag_gmm.py     # 50 inits x 5 methods
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import interleaved_times, print_table, write_results  # noqa: E402

import tfp_gradest as tge  # noqa: E402
from tfp_gradest.diagnostics import plotting


def methods(rho, alpha):
    return {
        "SGD": dict(rho=0.0, alpha=0.0),
        "SAG": dict(rho=0.0, alpha=alpha),
        "I-SAG none": dict(rho=rho, alpha=alpha, weighting="none"),
        "I-SAG global": dict(rho=rho, alpha=alpha, weighting="global"),
        "I-SAG per-element": dict(rho=rho, alpha=alpha, weighting="per_element"),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inits", type=int, default=50)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--dim", type=int, default=4)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--sample-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--rho", type=float, default=0.5, help="I-SAG re-use probability")
    parser.add_argument("--alpha", type=float, default=0.9, help="SAG decay of other batches")
    parser.add_argument("--output-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    METHODS = methods(args.rho, args.alpha)  # noqa: N806

    # The model lives in the package (one copy, shared with colabs/isag_gmm.ipynb).
    problem = tge.problems.get(
        "gaussian_mixture",
        num_components=args.components,
        dim=args.dim,
        num_batches=args.batches,
    )
    target, q, num_points = (
        problem.batch_target_log_prob,
        problem.surrogate,
        int(problem.x.shape[0]),
    )
    size = args.components * args.dim
    eval_noise = tf.random.stateless_normal([64, size], [0, 1])

    def full_elbo():
        return problem.elbo(eval_noise)

    num_evals = args.steps // args.eval_every
    loops = {}
    for name, config in METHODS.items():
        isag = tge.reuse.ISAG(**config).build(q, args.batches, args.sample_size)
        loops[name] = (
            isag,
            _loop(isag, target, full_elbo, args, True),
            _loop(isag, target, full_elbo, args, False),
        )

    rng = np.random.default_rng(0)
    traces = {name: [] for name in METHODS}
    initial = []
    for init in range(args.inits):
        start_loc = rng.normal(size=size).astype("float32")
        if init == 0:
            first_loc = start_loc
        for name, (isag, run, _) in loops.items():
            _restart(isag, problem, start_loc)
            if name == "SGD":
                initial.append(float(full_elbo()))
            traces[name].append(run(tf.constant([init, 0])).numpy())
        sys.stderr.write(f"\rinit {init + 1}/{args.inits}")
    sys.stderr.write("\n")
    # Seconds per step: the fits without ELBO evaluations, timed in alternation, one round
    # per init (each continues from where the last stopped; the work per step is the same).
    for isag, _, _ in loops.values():
        _restart(isag, problem, first_loc)
    seed = tf.constant([0, 0])
    times = interleaved_times(
        [lambda fit=fit: fit(seed) for _, _, fit in loops.values()], args.inits
    )
    seconds = {name: [float(x) for x in t / args.steps] for name, t in zip(METHODS, times)}

    traces = {name: np.array(t) for name, t in traces.items()}
    best = np.max([t.max(1) for t in traces.values()], axis=0)
    goal = np.array(initial) + 0.99 * (best - np.array(initial))
    steps_to = {}
    for name, t in traces.items():
        reached = t >= goal[:, None]
        first = np.where(reached.any(1), reached.argmax(1), num_evals - 1)
        steps_to[name] = (first + 1) * args.eval_every
    rows = []
    for name in METHODS:
        per_step = float(np.median(seconds[name]))
        med_steps = float(np.median(steps_to[name]))
        ratio = float(np.median(steps_to[name] / steps_to["SGD"]))
        sec_ratio = float(
            np.median(
                steps_to[name]
                * np.array(seconds[name])
                / (steps_to["SGD"] * np.array(seconds["SGD"]))
            )
        )
        reached = float(np.mean(traces[name].max(1) >= goal))
        rows.append(
            [
                name,
                f"{med_steps:.0f}",
                f"{1e3 * per_step:.3f}",
                f"{ratio:.2f}",
                f"{sec_ratio:.2f}",
                f"{reached:.0%}",
            ]
        )
    print_table(
        f"GMM by minibatched VI on digits ({args.components} components, {args.dim}-d PCA, "
        f"{num_points} points, "
        f"{args.batches} batches, M={args.sample_size}, SGD lr {args.learning_rate}, "
        f"rho={args.rho}, alpha={args.alpha}, {args.inits} inits)",
        rows,
        [
            "method",
            "median steps to target",
            "ms / step",
            "median steps ratio / SGD",
            "median seconds ratio / SGD",
            "reached",
        ],
    )
    os.makedirs(args.output_dir, exist_ok=True)
    write_results(
        os.path.join(args.output_dir, "isag_gmm.csv"),
        [
            [i, name, int(s), t]
            for name in METHODS
            for i, (s, t) in enumerate(zip(steps_to[name], seconds[name]))
        ],
        fieldnames=["init", "method", "steps_to_target", "seconds_per_step"],
    )
    _plot(traces, steps_to, args, os.path.join(args.output_dir, "isag_gmm.png"))


def _restart(isag, problem, start_loc):
    problem.restart(start_loc)
    isag.reset()


def _loop(isag, target, full_elbo, args, record):
    """`args.steps` plain-SGD steps in one XLA loop; the full ELBO every `eval_every` steps if
    `record`."""
    num_evals = args.steps // args.eval_every

    @tf.function(jit_compile=True, autograph=False)
    def run(seed):
        def body(i, trace):
            with tf.GradientTape() as tape:
                loss = isag.loss(target, seed=tf.random.experimental.stateless_fold_in(seed, i))
            grads = tape.gradient(loss, isag.variables)
            with tf.control_dependencies(
                [v.assign_sub(args.learning_rate * g) for v, g in zip(isag.variables, grads)]
            ):
                if not record:
                    return i + 1, tf.identity(trace)
                evaluate = (i + 1) % args.eval_every == 0
                index = [[(i + 1) // args.eval_every - 1]]
                trace = tf.cond(
                    evaluate,
                    lambda: tf.tensor_scatter_nd_update(trace, index, [full_elbo()]),
                    lambda: tf.identity(trace),
                )
                return i + 1, trace

        trace = tf.zeros([num_evals])
        return tf.while_loop(lambda i, _: i < args.steps, body, (tf.constant(0), trace))[1]

    return run


def _plot(traces, steps_to, args, path):  # noqa: D103
    plt = plotting.pyplot()

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = np.arange(1, traces["SGD"].shape[1] + 1) * args.eval_every
    best = np.max([t.max(1) for t in traces.values()], axis=0)[:, None]
    for i, (name, t) in enumerate(traces.items()):
        left.semilogy(steps, np.median(best - t, 0) + 1e-3, color=f"C{i}", label=name)
    left.set_xlabel("step")
    left.set_ylabel("best ELBO − ELBO (median over inits)")
    left.legend(fontsize="small")
    right.boxplot(list(steps_to.values()), tick_labels=list(steps_to))
    right.set_ylabel("steps to 99% of the best ELBO")
    right.tick_params(axis="x", labelrotation=25, labelsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
