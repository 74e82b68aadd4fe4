"""STL and IWAE-DReG on normalising-flow surrogates: the forward-pass score vs the inverse pass.

    python benchmarks/flow_path_gradient.py [--repeats 21] [--steps 200] [--dim 32]
        [--hidden 128] [--layers 4] [--output benchmarks/results/flow_path_gradient.csv]

`tfp_gradest._util.flow_path` gives STL and the DReG family the surrogate's score
`∇z log q(z)` alongside the forward pass (Vaitl et al., ICLR 2024) for RealNVP /
Shift / Scale / Permute flows; `flow_path.inverse_route()` restores the route every
other surrogate takes (`q.log_prob` at a fresh copy of `z`: the flow's inverse pass).
Both routes run in the same XLA-compiled loop of SGD steps, compiled once, timed in
alternation in one process; each row gives the median microseconds per step of both
and the median [IQR] of the per-round ratio new/today.

Surrogates on a `--dim`-dimensional Gaussian target (cheap, so the flow's cost shows):
`realnvp`, `--layers` affine coupling layers (one-hidden-layer tanh conditioners of
width `--hidden`) with reversing permutations between them, after a `Scale` and before
a `Shift`; `maf`, `--layers` `MaskedAutoregressiveFlow` layers (`tfb.AutoregressiveNetwork`
conditioners of the same width) with the same permutations. The MAF keeps the inverse
route by design (its inverse is already one pass; see `flow_path`), so its rows show that
nothing changed there: both columns run the same graph.

Structural columns (independent of the machine's load): conditioner-network calls
traced into one loss-and-gradient step (a Python counter in the conditioner, before
XLA's common-subexpression elimination; a MAF's `tf.while_loop` body counts once), and
the instructions and dot products (`dot`/`custom-call`) of the step's optimised HLO.
Smoke run (seconds, numbers meaningless): `--repeats 2 --steps 3 --dim 8 --hidden 16
--layers 2 --output /tmp/flow_path_gradient.csv`.
"""

import argparse
import functools
import os
import re

import _common
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest._util import flow_path

tfd, tfb = tfp.distributions, tfp.bijectors

ROWS = (  # (surrogate, estimator, S, K)
    ("realnvp", "stl", 16, 1),
    ("realnvp", "iwae_dreg", 2, 8),
    ("maf", "stl", 16, 1),
    ("maf", "iwae_dreg", 2, 8),
)
COUNTS = {"calls": 0}


def _counted(fn):
    def wrapped(*args, **kwargs):
        COUNTS["calls"] += 1
        return fn(*args, **kwargs)

    return wrapped


def _real_nvp(dim, hidden, layers, rng):
    variables, bijectors = [], []
    for i in range(layers):
        masked = dim // 2
        w1 = rng.normal(size=(masked, hidden)) / np.sqrt(masked)
        w2 = 0.1 * rng.normal(size=(hidden, 2 * (dim - masked))) / np.sqrt(hidden)
        w1, w2 = tf.Variable(w1.astype("float32")), tf.Variable(w2.astype("float32"))
        variables += [w1, w2]

        @_counted
        def conditioner(x, units, w1=w1, w2=w2):
            h = tf.tanh(x @ w1) @ w2
            return h[..., :units], h[..., units:]

        if i:
            bijectors.append(tfb.Permute(list(reversed(range(dim)))))
        bijectors.append(tfb.RealNVP(num_masked=masked, shift_and_log_scale_fn=conditioner))
    return variables, bijectors


def _maf(dim, hidden, layers, rng):
    variables, bijectors = [], []
    for i in range(layers):
        made = tfb.AutoregressiveNetwork(params=2, hidden_units=[hidden], activation="tanh")
        made.build((dim,))
        variables += list(made.trainable_variables)
        if i:
            bijectors.append(tfb.Permute(list(reversed(range(dim)))))
        bijectors.append(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=_counted(made)))
    return variables, bijectors


def make_problem(kind, dim, hidden, layers, seed=0):
    """`(surrogate, variables, target_log_prob)` of one benchmark surrogate."""
    rng = np.random.default_rng(seed)
    variables, bijectors = {"realnvp": _real_nvp, "maf": _maf}[kind](dim, hidden, layers, rng)
    loc = tf.Variable(np.zeros(dim, "float32"))
    log_scale = tf.Variable(np.zeros(dim, "float32"))
    # A Chain applies its last bijector first: Scale, the flow layers, then Shift.
    bijector = tfb.Chain([tfb.Shift(loc)] + bijectors[::-1] + [tfb.Scale(log_scale=log_scale)])
    surrogate = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(dim)), bijector)
    target = tfd.MultivariateNormalDiag(tf.ones(dim), 2.0 * tf.ones(dim))
    return surrogate, [loc, log_scale] + variables, target.log_prob


def loss_fn(surrogate, target, estimator, sample_size, importance_sample_size, inverse):
    def loss(seed):
        context = flow_path.inverse_route() if inverse else _nothing()
        with context:  # read while the loss is traced
            return tge.estimators.get(estimator).loss(
                target, surrogate, sample_size, importance_sample_size, seed=seed
            )

    return loss


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def structure(loss, variables, seed):
    """`(conditioner calls traced, HLO instructions, dots)` of one loss-and-gradient step."""

    def step(seed):
        with tf.GradientTape() as tape:
            value = loss(seed)
        return value, tape.gradient(value, variables)

    COUNTS["calls"] = 0
    compiled = tf.function(step, jit_compile=True, autograph=False)
    hlo = compiled.experimental_get_compiler_ir(seed)(stage="optimized_hlo")
    calls = COUNTS["calls"]
    instructions = [line for line in hlo.splitlines() if " = " in line]
    dots = [line for line in instructions if re.search(r"\bdot\(|custom-call\(", line)]
    return calls, len(instructions), len(dots)


def _run(loop, seed):
    return loop(seed).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument(
        "--output",
        default=os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "results", "flow_path_gradient.csv"
        ),
    )
    args = parser.parse_args(argv)
    seed = tf.constant([0, 1], tf.int32)
    rows = []
    for kind, estimator, sample_size, importance_sample_size in ROWS:
        surrogate, variables, target = make_problem(kind, args.dim, args.hidden, args.layers)
        losses = [
            loss_fn(surrogate, target, estimator, sample_size, importance_sample_size, inverse)
            for inverse in (False, True)
        ]
        new_structure, old_structure = [structure(f, variables, seed) for f in losses]
        loops = [_common.compiled_training_loop(f, variables, args.steps) for f in losses]
        new, old = _common.interleaved_times(
            [functools.partial(_run, loop, seed) for loop in loops], args.repeats
        )
        route = (
            "forward"
            if flow_path.flow_route(tge._substrate.get("tensorflow"), surrogate, 1, seed)
            else "inverse (kept)"
        )
        rows.append(
            (
                kind,
                estimator,
                sample_size,
                importance_sample_size,
                route,
                f"{1e6 * np.median(old) / args.steps:.0f}",
                f"{1e6 * np.median(new) / args.steps:.0f}",
                _common.ratio_with_spread(new, old),
                f"{old_structure[0]} / {new_structure[0]}",
                f"{old_structure[1]} / {new_structure[1]}",
                f"{old_structure[2]} / {new_structure[2]}",
            )
        )
        print(" | ".join(str(c) for c in rows[-1]), flush=True)  # progress
    header = [
        "surrogate",
        "estimator",
        "S",
        "K",
        "route taken",
        "inverse route us/step",
        "forward route us/step",
        "ratio forward/inverse median [IQR]",
        "conditioner calls traced (inverse / forward)",
        "optimised HLO instructions (inverse / forward)",
        "HLO dots (inverse / forward)",
    ]
    title = (
        f"STL and IWAE-DReG on flow surrogates: the score alongside the forward pass vs the "
        f"inverse pass; XLA-compiled SGD loops of {args.steps} steps x {args.repeats} rounds "
        f"alternated; dim {args.dim}, {args.layers} layers, conditioner width {args.hidden}"
    )
    print(f"\n{title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
    _common.write_results(args.output, [list(r) for r in rows], fieldnames=header, title=title)


if __name__ == "__main__":
    main()
