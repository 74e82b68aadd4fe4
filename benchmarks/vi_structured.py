"""`tge.vi` vs `tfp.vi` on Inference Gym targets with structured event spaces (XLA).

    python benchmarks/vi_structured.py [--targets ...] [--compile-repeats 3] [--repeats 7]
    python benchmarks/vi_structured.py --small   # CI smoke test, well under a minute

For each target, a mean-field surrogate from
`tfp.experimental.vi.build_factored_surrogate_posterior` over the target's
event-space bijector (on `BrownianMotionUnknownScalesMissingMiddleObservations` a
32-part `StructTuple`; on `EightSchools` a dict; on `IllConditionedGaussian` one
flat vector), `S = 8`, and per estimator the two libraries with the same
gradient: `tge` `"reparameterization"` against `tfp.vi`'s default
(REPARAMETERIZATION), and `tge` `"stl"` against `tfp.vi`'s DOUBLY_REPARAMETERIZED
with a `stopped_surrogate_posterior` (TFP's only STL route). Two numbers, each
timed in alternation (tge, tfp, tge, tfp, ...) in one process, so that the shared
machine's slow spells hit both arms alike:

* compile: the wall time of `fit_surrogate_posterior(..., num_steps=1,
  jit_compile=True)` (tracing, XLA compilation and one step: a user's time to the
  first step), once per round; every call compiles afresh.
* step: the median seconds per step of an XLA-compiled loop of SGD steps on the
  same loss (`_common.compiled_training_loop`, compiled once), timed by
  `tfp_gradest.diagnostics.interleaved_times`. The loop keeps each step's loss
  value, as `fit_surrogate_posterior`'s default trace does: a loop that discards it
  lets XLA drop `tfp.vi`'s whole value computation but not `tge`'s, whose
  zero-density mask reads the value (a difference no fit would show).

Ratios are `tge / tfp` per round of alternation: median [interquartile range].
The two losses' values on the same seed are checked equal before timing. Needs
`inference-gym` (`pip install -e .[extras]`); the package never imports it.
"""

import argparse
import os
import sys
import time

import _common
import numpy as np

TARGETS = (
    "BrownianMotionUnknownScalesMissingMiddleObservations",
    "ConvectionLorenzBridge",
    "EightSchools",
    "IllConditionedGaussian",
)
SMALL_TARGETS = ("EightSchools",)
ESTIMATORS = ("reparameterization", "stl")
SAMPLE_SIZE = 8
HEADER = [
    "target",
    "parts",
    "estimator",
    "tge compile s",
    "tfp.vi compile s",
    "compile ratio tge/tfp median [IQR]",
    "tge us/step",
    "tfp.vi us/step",
    "step ratio tge/tfp median [IQR]",
]


def make_problem(name):
    """`(target_log_prob_fn, build_surrogate)` for the Inference Gym target `name`.

    The target function takes the surrogate's samples as `tfp.vi` passes them
    (`fn(*parts)` for a `StructTuple`, `fn(**parts)` for a dict, `fn(z)` otherwise)
    and names `seed`, so both libraries call it once, the same way.
    """
    import _gym

    target = _gym.load(name)

    def build_surrogate():
        return _gym.build_surrogate(target, "mean_field", seed=(0, 1))

    return _gym.target_log_prob_fn(target), build_surrogate


def stopped_copy(value):
    """`value` (a distribution, its parameters) rebuilt with every tensor's gradient stopped.

    `tfp.vi`'s DOUBLY_REPARAMETERIZED needs this copy of the surrogate
    (`stopped_surrogate_posterior`); `tge`'s STL stops its own gradients.
    """
    import tensorflow as tf
    import tensorflow_probability as tfp

    if hasattr(value, "log_prob") and hasattr(value, "copy"):  # also a DeferredModule's
        return value.copy(**{k: stopped_copy(v) for k, v in value.parameters.items()})
    if isinstance(value, dict):
        return {k: stopped_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(stopped_copy(v) for v in value)
    if isinstance(value, (tf.Variable, tf.Tensor, tfp.util.DeferredTensor)):
        return tf.stop_gradient(tf.convert_to_tensor(value))
    return value  # bijectors, Python values, callables


def loss_arguments(library, estimator, surrogate):
    """The keyword arguments that select `estimator` in `library` (`"tge"` or `"tfp"`)."""
    import tensorflow_probability as tfp

    if library == "tge":
        return {"gradient_estimator": estimator}
    if estimator == "reparameterization":
        return {"gradient_estimator": tfp.vi.GradientEstimators.REPARAMETERIZATION}
    return {
        "gradient_estimator": tfp.vi.GradientEstimators.DOUBLY_REPARAMETERIZED,
        "stopped_surrogate_posterior": stopped_copy(surrogate),
    }


def fit_once(library, estimator, target_log_prob_fn, build_surrogate):
    """A zero-argument call: one XLA-compiled fitting step on a fresh surrogate.

    `tge.vi.fit_surrogate_posterior`, and `tfp.vi.fit_surrogate_posterior` for its
    default estimator; for DOUBLY_REPARAMETERIZED, which it does not take, its body:
    `tfp.math.minimize` around `tfp.vi.monte_carlo_variational_loss`.
    """
    import keras
    import tensorflow_probability as tfp

    import tfp_gradest as tge

    def run():
        surrogate = build_surrogate()
        arguments = {
            "optimizer": keras.optimizers.Adam(1e-2),
            "num_steps": 1,
            "jit_compile": True,
            "seed": (0, 3),
        }
        if library == "tge":
            return tge.vi.fit_surrogate_posterior(
                target_log_prob_fn,
                surrogate,
                sample_size=SAMPLE_SIZE,
                gradient_estimator=estimator,
                **arguments,
            )
        if estimator == "reparameterization":
            return tfp.vi.fit_surrogate_posterior(
                target_log_prob_fn, surrogate, sample_size=SAMPLE_SIZE, **arguments
            )
        loss = loss_fn(library, estimator, target_log_prob_fn, surrogate)
        return tfp.math.minimize(lambda seed=None: loss(seed), **arguments)

    return run


def loss_fn(library, estimator, target_log_prob_fn, surrogate):
    import tensorflow_probability as tfp

    import tfp_gradest as tge

    module = tge.vi if library == "tge" else tfp.vi

    def loss(seed):
        # Built inside the traced function, as `fit_surrogate_posterior` builds it.
        return module.monte_carlo_variational_loss(
            target_log_prob_fn,
            surrogate,
            sample_size=SAMPLE_SIZE,
            seed=seed,
            **loss_arguments(library, estimator, surrogate),
        )

    return loss


def alternated_first_calls(runs, repeats):
    """Seconds of each zero-argument call per round, the calls alternating: `[run, repeat]`.

    For calls that compile afresh every time (so none is a warm-up), which
    `tfp_gradest.diagnostics.interleaved_times` would call twice before timing.
    """
    times = np.zeros((len(runs), repeats))
    for repeat in range(repeats):
        for index, run in enumerate(runs):
            start = time.perf_counter()
            run()
            times[index, repeat] = time.perf_counter() - start
    return times


def measure(name, estimator, compile_repeats, repeats, steps):
    """One table row: compile and step times of `tge` and `tfp.vi`, and their ratios."""
    import tensorflow as tf

    target_log_prob_fn, build_surrogate = make_problem(name)
    surrogate = build_surrogate()
    parts = len(tf.nest.flatten(surrogate.event_shape))
    seed = tf.constant([0, 1], tf.int32)
    losses = {lib: loss_fn(lib, estimator, target_log_prob_fn, surrogate) for lib in ("tge", "tfp")}
    values = {lib: float(tf.function(fn, autograph=False)(seed)) for lib, fn in losses.items()}
    if not np.isclose(values["tge"], values["tfp"], rtol=1e-5, atol=1e-5):
        raise AssertionError(f"{name}, {estimator}: loss values differ: {values}")
    compile_times = alternated_first_calls(
        [fit_once(lib, estimator, target_log_prob_fn, build_surrogate) for lib in ("tge", "tfp")],
        compile_repeats,
    )
    variables = list(surrogate.trainable_variables)
    loops = [
        _common.compiled_training_loop(losses[lib], variables, steps, learning_rate=1e-4)
        for lib in ("tge", "tfp")
    ]
    step_times = _common.interleaved_times([lambda f=f: f(seed).numpy() for f in loops], repeats)
    step_times = step_times / steps
    return [
        name,
        parts,
        estimator,
        f"{np.median(compile_times[0]):.1f}",
        f"{np.median(compile_times[1]):.1f}",
        _common.ratio_with_spread(compile_times[0], compile_times[1]),
        f"{1e6 * np.median(step_times[0]):.0f}",
        f"{1e6 * np.median(step_times[1]):.0f}",
        _common.ratio_with_spread(step_times[0], step_times[1]),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--small", action="store_true", help="CI smoke test: EightSchools, reparameterization"
    )
    parser.add_argument("--targets", nargs="+", default=None, help="Inference Gym target names")
    parser.add_argument("--estimators", nargs="+", default=None, choices=ESTIMATORS)
    parser.add_argument("--compile-repeats", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--output-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    targets = args.targets or (SMALL_TARGETS if args.small else TARGETS)
    estimators = args.estimators or (ESTIMATORS[:1] if args.small else ESTIMATORS)
    compile_repeats = args.compile_repeats or (1 if args.small else 3)
    repeats = args.repeats or (3 if args.small else 7)
    steps = args.steps or 100
    rows = []
    for name in targets:
        for estimator in estimators:
            rows.append(measure(name, estimator, compile_repeats, repeats, steps))
            print(" | ".join(str(x) for x in rows[-1]), flush=True)  # progress
    title = (
        f"tge.vi vs tfp.vi on Inference Gym targets: compile (first fit step) and step time, "
        f"mean-field factored surrogate, S={SAMPLE_SIZE}, XLA, "
        f"{compile_repeats} compiles and {repeats} x {steps} steps per arm, alternated"
    )
    _common.print_table(title, rows, HEADER)
    name = "vi_structured_small" if args.small else "vi_structured"
    _common.write_results(
        os.path.join(args.output_dir, f"{name}.csv"), rows, fieldnames=HEADER, title=title
    )
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
