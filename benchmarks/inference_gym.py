"""Gradient estimators on Inference Gym posteriors, judged against their reference moments.

    python benchmarks/inference_gym.py            # the full run (see "Cost" below)
    python benchmarks/inference_gym.py --small    # CI smoke test, well under a minute

Targets (`inference-gym`'s own, built offline from its bundled data): EightSchools,
Banana, IllConditionedGaussian, NealsFunnel, ConvectionLorenzBridge,
NonIdentifiableQuarticMeasurementModel and
BrownianMotionUnknownScalesMissingMiddleObservations. (The German-credit and radon
targets download their data through TensorFlow Datasets: left out.) Any other target
name can be passed with `--targets`.

Surrogates, over the target's event-space bijector (`_gym.build_surrogate`):
`mean_field` (`tfp.experimental.vi.build_factored_surrogate_posterior`) and
`full_rank` (a Gaussian with a lower-triangular scale over all the unconstrained
coordinates: `build_affine_surrogate_posterior(operators="tril")`'s base draws,
parameters and initial values, with its block-lower-triangular scale, one variable
and one matrix product per pair of parts, replaced by one dense matrix:
`_gym.dense_full_rank`). The block form's training programs grow with the square of
the number of parts: on the two 30-part targets, the ten arms' programs (all compiled
before training, see "Training") did not fit in the development machine's memory
(issue 26). The full-rank
rows of EightSchools, Banana, IllConditionedGaussian, NealsFunnel and
NonIdentifiableQuarticMeasurementModel in `benchmarks/results/` were run with the
block form (the runs' `.meta.json` under `runs` give their commits): the same
distributions, initial values and base draws, the same steps up to float rounding.

Arms, all at the same number of target evaluations per step (`--budget`, B = 8):
`tfp.vi` (`tfp.vi.monte_carlo_variational_loss`'s default, the baseline), and `tge`'s
`reparameterization`, `stl`, `score_function` and `score_function_loo` (its
leave-one-out baseline) with S = B samples, and the multi-sample family `iwae`,
`iwae_dreg`, `rws_dreg`, `jvi_dreg` and `vimco` with K = B importance samples
(S = 1). `--arms NAME/K` runs any registered estimator (or `tfp.vi`) with K
importance samples and S = B / K (`--arms iwae_dreg/4` is K = 4, S = 2); a bare name
from the multi-sample family takes K = B, any other name K = 1.

Training: Adam (learning rate `--learning-rate`, 1e-2) on the arm's loss, in an
XLA-compiled loop (`train(seed, num_steps)`, compiled once per (target, surrogate,
arm) and reused across seeds and chunks: the seed and the step count are tensor
arguments). Every seed starts all arms from the same initial surrogate (drawn from
the seed), and the arms train in alternation, one chunk each between two reads
(the order rotated every chunk), so the shared machine's slow spells hit all arms
alike. Each arm's clock counts only its training chunks (not compilation, not the
reads).

Reads, at `--read-steps` (0, 100, 300, 1000, 2000, 3000): from one fixed-size draw
of the surrogate (`--eval-samples`, 4,096; the same seed for every arm):

* `mean_error`: the root mean square over the posterior's coordinates of
  `(surrogate mean - reference mean) / reference standard deviation`;
* `sd_error`: the root mean square of `(surrogate sd - reference sd) / reference sd`;
* `sd_ratio_max`: the largest `surrogate sd / reference sd`;
* `elbo`: the Monte Carlo ELBO `mean(log p(z) - log q(z))` over the draw, and its
  standard error `elbo_mc_se`;
* `train_loss` (`_min`, `_max`): the median (smallest, largest) of the arm's own
  loss over the steps since the last read (what `fit_surrogate_posterior`'s trace
  shows the user: the negative ELBO, or the negative K-sample bound).

The moments are those of `target.sample_transformations["identity"]` of the samples,
against its `ground_truth_mean` and `ground_truth_standard_deviation` (long NUTS
runs, or exact). Where a target has no reference standard deviation
(NonIdentifiableQuarticMeasurementModel) and at most two coordinates, both reference
moments come from quadrature on a grid (`reference` column). The draw's own noise
puts a floor of about `1 / sqrt(eval samples)` (0.016 at 4,096) under `mean_error`.

Degenerate runs are flagged (`degenerate`, from the first read where a rule fired
on; `detected_by` says which rule fired, at which read and with which numbers, or
`earlier: ...` for the first one), with rules a user can apply to their own run,
from the ELBO or the loss trace alone, plus one that needs the reference:

* `nonfinite`: the ELBO estimate, the training loss or a surrogate parameter is
  NaN or infinite;
* `elbo_collapse`: the ELBO fell below its best earlier read by more than
  `max(100 nats, |best ELBO|)` (e.g. from -1.2e4 to below -2.4e4);
* `loss_collapse`: the same rule on the training loss trace (chunk medians);
* `loss_spike`: one step's loss more than `10 x max(100 nats, |median|)` below
  the median of the steps since the last read: a bound estimate far above any
  plausible log evidence, from heavy-tailed log-weights (a few samples with enormous
  `log p - log q` dominate that step). Upward outliers are not flagged: the first
  steps from a poor initial surrogate have them;
* `scale_blowup` (needs the reference): a surrogate marginal standard deviation
  above 10 reference standard deviations.

Outputs (`--output-dir`, default `benchmarks/results/`; `_small` added with `--small`):
`inference_gym.csv` (long format: one row per target, surrogate, arm, seed and
read), `inference_gym_summary.csv` (mean ± standard error over seeds per read, and
an `equal_time` reading: every arm at the fastest arm's mean training time,
interpolated in each seed between its reads), `inference_gym.png` (mean error
against training seconds, one panel per target and surrogate) and their
`.meta.json` (command, versions, machine load, the run's cost). A run split in
parts (e.g. `--surrogates mean_field --output-dir A`, then `--surrogates full_rank
--output-dir B`) is put together by `--merge A/inference_gym.csv B/inference_gym.csv`,
which writes the same outputs from the union of the rows (and keeps each part's
metadata). A merged CSV can be merged again with a new part (e.g. `--merge
benchmarks/results/inference_gym.csv C/inference_gym.csv`): its parts' metadata are
carried over, and a read present in two inputs is refused.

Cost: each run's `.meta.json` records its wall and CPU seconds, the machine's load
before and after, and its peak memory (`cost`); a merged `.meta.json` keeps every
part's under `runs` (`benchmarks/results/inference_gym.meta.json`). The compile times
are in the CSVs (`compile_seconds`, per arm). Memory grows with the number of arms,
since every arm's program is compiled before training starts; time grows with the
targets' sizes, the arms and the seeds, and XLA compilation is a large share of it.
"""

import argparse
import math
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import _gym  # noqa: E402
import numpy as np  # noqa: E402

TARGETS = (
    "EightSchools",
    "Banana",
    "IllConditionedGaussian",
    "NealsFunnel",
    "ConvectionLorenzBridge",
    "NonIdentifiableQuarticMeasurementModel",
    "BrownianMotionUnknownScalesMissingMiddleObservations",
)
SMALL_TARGETS = ("EightSchools", "Banana")
ARMS = (
    "tfp.vi",
    "reparameterization",
    "stl",
    "score_function",
    "score_function_loo",
    "iwae",
    "iwae_dreg",
    "rws_dreg",
    "jvi_dreg",
    "vimco",
)
SMALL_ARMS = ("tfp.vi", "stl", "iwae_dreg")
# Bare names that take K = budget importance samples (any other bare name: K = 1).
MULTI_SAMPLE = (
    "iwae",
    "iwae_dreg",
    "iwae_stl",
    "dreg",
    "jvi",
    "jvi_dreg",
    "rws",
    "rws_dreg",
    "vimco",
)
READ_STEPS = (0, 100, 300, 1000, 2000, 3000)
SMALL_READ_STEPS = (0, 20, 40)

COLLAPSE_NATS = 100.0  # elbo_collapse / loss_collapse: a drop of more than max(this, |best|)
SPIKE_FACTOR = 10.0  # loss_spike: a loss this many times max(COLLAPSE_NATS, |median|) below
SCALE_BLOWUP = 10.0  # scale_blowup: a marginal sd above this many reference sds
GRID_POINTS = 801  # quadrature reference: points per axis (1601: the same moments to 1e-6)
GRID_HALF_WIDTH = 4.0  # ... on [-w, w] in each coordinate of the event space


def parse_arm(spec, budget):
    """`(name, K, S)` for an arm spec `NAME` or `NAME/K`, with S = budget / K."""
    name, _, k = spec.partition("/")
    k = int(k) if k else (budget if name in MULTI_SAMPLE else 1)
    if k < 1 or budget % k:
        raise ValueError(
            f"An arm's K must divide the budget ({budget}). Received: {spec!r}; pass "
            "`--arms NAME/K` with K a divisor of `--budget`."
        )
    return name, k, budget // k


def gradient_estimator(name):
    """The `gradient_estimator` argument for the arm `name` (`tge` arms only)."""
    import tfp_gradest as tge

    if name == "score_function_loo":
        return tge.estimators.ScoreFunction(baseline="leave_one_out")
    return name


def make_loss(name, k, s, log_prob, surrogate):
    """`loss(seed)`: the arm's Monte Carlo loss, built inside the traced function."""
    import tensorflow_probability as tfp

    import tfp_gradest as tge

    def loss(seed):
        if name == "tfp.vi":
            return tfp.vi.monte_carlo_variational_loss(
                log_prob, surrogate, sample_size=s, importance_sample_size=k, seed=seed
            )
        return tge.vi.monte_carlo_variational_loss(
            log_prob,
            surrogate,
            sample_size=s,
            importance_sample_size=k,
            seed=seed,
            gradient_estimator=gradient_estimator(name),
        )

    return loss


class Adam:
    """Adam's state for `variables`, reset per seed; `apply` is traced into the training loop.

    Written out (Kingma & Ba 2015, Algorithm 1, epsilon 1e-7 as Keras) so that one
    compiled loop serves every seed: the state lives in variables, not in a Keras
    optimizer built inside the trace.
    """

    def __init__(self, variables, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        import tensorflow as tf

        self.variables = variables
        self.m = [tf.Variable(tf.zeros_like(v)) for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v)) for v in variables]
        self.t = tf.Variable(0.0)
        self.learning_rate, self.beta_1, self.beta_2, self.epsilon = (
            learning_rate,
            beta_1,
            beta_2,
            epsilon,
        )

    def reset(self):
        for state in (*self.m, *self.v, self.t):
            state.assign(0.0 * state)

    def apply(self, grads):
        import tensorflow as tf

        t = self.t.assign_add(1.0)
        scale = self.learning_rate * tf.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)
        updates = []
        for variable, g, m, v in zip(self.variables, grads, self.m, self.v):
            g = tf.zeros_like(variable) if g is None else tf.convert_to_tensor(g)
            m = m.assign(self.beta_1 * m + (1.0 - self.beta_1) * g)
            v = v.assign(self.beta_2 * v + (1.0 - self.beta_2) * tf.square(g))
            updates.append(variable.assign_sub(scale * m / (tf.sqrt(v) + self.epsilon)))
        return updates


def make_train(loss_fn, variables, optimizer, jit_compile, max_steps):
    """`train(seed, num_steps) -> (next seed, losses)`: Adam steps, compiled once.

    `losses` has `max_steps` entries (a static shape, for XLA): the loss of each step
    taken, then NaN.
    """
    import tensorflow as tf
    import tensorflow_probability as tfp

    @tf.function(jit_compile=jit_compile, autograph=False)
    def train(seed, num_steps):
        def body(i, seed, losses):
            step_seed, seed = tfp.random.split_seed(seed)
            with tf.GradientTape() as tape:
                loss = loss_fn(step_seed)
            grads = tape.gradient(loss, variables)
            with tf.control_dependencies(optimizer.apply(grads)):
                losses = tf.tensor_scatter_nd_update(losses, [[i]], [loss])
                return i + 1, tf.identity(seed), losses

        nan = tf.fill([max_steps], tf.constant(float("nan")))
        _, seed, losses = tf.while_loop(
            lambda i, *_: i < tf.minimum(num_steps, max_steps), body, (tf.constant(0), seed, nan)
        )
        return seed, losses

    return train


def flat(structure, batch_dims):
    """The parts of `structure` as one array, `batch_dims` leading axes kept (nest order)."""
    import tensorflow as tf

    parts = tf.nest.flatten(structure)
    if batch_dims == 0:
        return np.concatenate([np.reshape(np.asarray(p, np.float64), [-1]) for p in parts])
    n = tf.shape(parts[0])[0]
    return tf.concat([tf.reshape(tf.cast(p, tf.float32), [n, -1]) for p in parts], axis=-1)


def reference_moments(target):
    """`(mean, sd, source)`: the reference posterior moments of the identity transformation.

    The target's ground truth where it has both; for a target with at most two
    coordinates and no reference standard deviation, quadrature on a grid in the
    event space (the unnormalised density times the identity transformation).
    """
    import tensorflow as tf

    transformation = target.sample_transformations["identity"]
    mean = transformation.ground_truth_mean
    sd = transformation.ground_truth_standard_deviation
    if mean is not None and sd is not None:
        return flat(mean, 0), flat(sd, 0), "inference_gym"
    shape = target.event_shape
    if not (isinstance(shape, tf.TensorShape) and shape.rank == 1 and shape[0] <= 2):
        raise ValueError(
            f"{target.name} has no reference standard deviation and is not a target of at most "
            "two coordinates this benchmark can integrate on a grid: leave it out of `--targets`."
        )
    axes = [np.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, GRID_POINTS)] * shape[0]
    points = np.stack([a.ravel() for a in np.meshgrid(*axes, indexing="ij")], axis=-1)
    z = tf.constant(points, target.dtype)
    log_density = target.unnormalized_log_prob(z).numpy().astype(np.float64)
    values = flat(transformation(z), 1).numpy().astype(np.float64)
    weights = np.exp(log_density - log_density.max())
    weights /= weights.sum()
    edges = weights.reshape([GRID_POINTS] * shape[0])
    edge_mass = max(
        float(np.sum(np.take(edges, i, axis))) for axis in range(shape[0]) for i in (0, -1)
    )
    if edge_mass > 1e-6:
        raise ValueError(
            f"{target.name}: the grid misses posterior mass ({edge_mass:.2g} at its edge)."
        )
    grid_mean = weights @ values
    grid_sd = np.sqrt(weights @ (values - grid_mean) ** 2)
    return grid_mean, grid_sd, f"grid quadrature ({GRID_POINTS}^{shape[0]} points)"


def make_evaluate(target, surrogate, num_samples, jit_compile):
    """`evaluate(seed) -> (mean, sd, elbo, elbo_mc_se)` of `surrogate`, from one draw."""
    import tensorflow as tf

    transformation = target.sample_transformations["identity"]

    @tf.function(jit_compile=jit_compile, autograph=False)
    def evaluate(seed):
        z, log_q = surrogate.experimental_sample_and_log_prob(num_samples, seed=seed)
        log_w = target.unnormalized_log_prob(z) - log_q
        values = flat(transformation(z), 1)
        return (
            tf.reduce_mean(values, 0),
            tf.math.reduce_std(values, 0),
            tf.reduce_mean(log_w),
            tf.math.reduce_std(log_w) / math.sqrt(num_samples),
        )

    return evaluate


def loss_trace(losses, step):
    """The read's training-loss columns from the chunk's per-step losses (None at step 0)."""
    if losses is None or len(losses) == 0:
        return {"train_loss": None, "train_loss_min": None, "train_loss_max": None}
    with np.errstate(invalid="ignore"):
        finite = losses[np.isfinite(losses)]
    return {
        "train_loss": float(np.median(losses)) if len(finite) == len(losses) else math.nan,
        "train_loss_min": float(finite.min()) if len(finite) else math.nan,
        "train_loss_max": float(finite.max()) if len(finite) else math.nan,
    }


def degeneracy(history):
    """`detected_by` for one (seed, arm) run from its reads so far ('' if none fired).

    `history`: the run's rows up to and including this read (`elbo`, `train_loss`,
    `sd_ratio_max`, `finite_parameters`). Rules: the module docstring.
    """
    now, found = history[-1], []
    step = now["step"]
    values = (now["elbo"], now["train_loss"])
    if not now["finite_parameters"] or any(v is not None and not math.isfinite(v) for v in values):
        loss = "none" if now["train_loss"] is None else format(now["train_loss"], ".3g")
        parameters = "finite" if now["finite_parameters"] else "non-finite"
        found.append(
            f"nonfinite at step {step} (ELBO {now['elbo']:.3g}, train loss {loss}, "
            f"parameters {parameters})"
        )
    earlier = [r["elbo"] for r in history[:-1] if math.isfinite(r["elbo"])]
    if earlier and math.isfinite(now["elbo"]):
        best = max(earlier)
        if now["elbo"] < best - max(COLLAPSE_NATS, abs(best)):
            found.append(
                f"elbo_collapse at step {step} (ELBO {now['elbo']:.3g} < best earlier "
                f"{best:.3g} - max({COLLAPSE_NATS:g}, |best|))"
            )
    losses = [r["train_loss"] for r in history[:-1] if r["train_loss"] is not None]
    losses = [v for v in losses if math.isfinite(v)]
    if losses and now["train_loss"] is not None and math.isfinite(now["train_loss"]):
        best = min(losses)
        if now["train_loss"] > best + max(COLLAPSE_NATS, abs(best)):
            found.append(
                f"loss_collapse at step {step} (train loss {now['train_loss']:.3g} > best "
                f"earlier {best:.3g} + max({COLLAPSE_NATS:g}, |best|))"
            )
    median, low = now["train_loss"], now.get("train_loss_min")
    if median is not None and math.isfinite(median) and low is not None:
        limit = SPIKE_FACTOR * max(COLLAPSE_NATS, abs(median))
        # Downwards only: a loss far above the median is also how a fit starts (the first
        # steps from a poor initial surrogate), a bound estimate far above it is not.
        if median - low > limit:
            found.append(
                f"loss_spike before step {step} (a step's loss {low:.3g}, more than "
                f"{SPIKE_FACTOR:g} x max({COLLAPSE_NATS:g}, |median|) below the median "
                f"{median:.3g})"
            )
    if now["sd_ratio_max"] > SCALE_BLOWUP:
        found.append(
            f"scale_blowup at step {step} (a surrogate sd {now['sd_ratio_max']:.3g} reference "
            f"sds > {SCALE_BLOWUP:g})"
        )
    return "; ".join(found)


def run_target(name, families, arm_specs, seeds, read_steps, args):
    """All rows (dicts) of one target: every surrogate family, arm, seed and read."""
    import tensorflow as tf

    target = _gym.load(name)
    log_prob = _gym.target_log_prob_fn(target)
    ref_mean, ref_sd, ref_source = reference_moments(target)
    arms = [parse_arm(spec, args.budget) for spec in arm_specs]
    max_chunk = max(b - a for a, b in zip(read_steps, read_steps[1:]))
    rows = []
    for family in families:
        start = time.perf_counter()
        evaluation_surrogate = _gym.build_surrogate(target, family, seed=(0, 0))
        evaluate = make_evaluate(target, evaluation_surrogate, args.eval_samples, args.jit)
        evaluation_variables = list(evaluation_surrogate.trainable_variables)
        runs = {}
        for arm, k, s in arms:
            surrogate = _gym.build_surrogate(target, family, seed=(0, 0))
            variables = list(surrogate.trainable_variables)
            optimizer = Adam(variables, args.learning_rate)
            loss = make_loss(arm, k, s, log_prob, surrogate)
            train = make_train(loss, variables, optimizer, args.jit, max_chunk)
            compile_start = time.perf_counter()
            train(tf.constant([0, 0]), tf.constant(0))[1].numpy()  # traces and compiles
            runs[arm] = {
                "k": k,
                "s": s,
                "variables": variables,
                "optimizer": optimizer,
                "train": train,
                "compile_seconds": time.perf_counter() - compile_start,
            }
        compile_start = time.perf_counter()
        evaluate(tf.constant([0, 0]))[2].numpy()
        evaluation_compile = time.perf_counter() - compile_start
        compiled = ", ".join(f"{a} {r['compile_seconds']:.1f}" for a, r in runs.items())
        print(
            f"{name} / {family}: compiled in {time.perf_counter() - start:.1f} s "
            f"({compiled}; "
            f"reads {evaluation_compile:.1f})",
            flush=True,
        )
        for seed in seeds:
            initial = _gym.build_surrogate(target, family, seed=(seed, 0)).trainable_variables
            histories = {}
            for arm, run in runs.items():
                for variable, value in zip(run["variables"], initial):
                    variable.assign(value)
                run["optimizer"].reset()
                run["seed"] = tf.constant([seed, 1])
                run["seconds"], run["losses"] = 0.0, None
                histories[arm] = []
            for index, step in enumerate(read_steps):
                chunk = step - (read_steps[index - 1] if index else 0)
                order = list(runs)
                order = order[index % len(order) :] + order[: index % len(order)]
                for arm in order:  # one chunk each, in rotated order
                    run = runs[arm]
                    if chunk > 0:
                        chunk_start = time.perf_counter()
                        run["seed"], losses = run["train"](run["seed"], tf.constant(chunk))
                        run["losses"] = losses.numpy()[:chunk].astype(np.float64)
                        run["seconds"] += time.perf_counter() - chunk_start
                for arm, run in runs.items():
                    for variable, value in zip(evaluation_variables, run["variables"]):
                        variable.assign(value)
                    mean, sd, elbo, elbo_se = (
                        x.numpy().astype(np.float64)
                        for x in evaluate(tf.constant([seed, 1000 + index]))
                    )
                    row = {
                        "target": name,
                        "surrogate": family,
                        "arm": arm,
                        "K": run["k"],
                        "S": run["s"],
                        "seed": seed,
                        "step": step,
                        "seconds": run["seconds"],
                        "elbo": float(elbo),
                        "elbo_mc_se": float(elbo_se),
                        **loss_trace(run["losses"], step),
                        "mean_error": float(np.sqrt(np.mean(((mean - ref_mean) / ref_sd) ** 2))),
                        "sd_error": float(np.sqrt(np.mean(((sd - ref_sd) / ref_sd) ** 2))),
                        "sd_ratio_max": float(np.max(sd / ref_sd)),
                        "finite_parameters": all(
                            bool(np.all(np.isfinite(v.numpy()))) for v in run["variables"]
                        ),
                    }
                    histories[arm].append(row)
                    row["detected_by"] = degeneracy(histories[arm])
                    earlier = [r for r in histories[arm][:-1] if r["degenerate"]]
                    row["degenerate"] = bool(row["detected_by"] or earlier)
                    if earlier and not row["detected_by"]:  # flagged once, flagged for good
                        row["detected_by"] = "earlier: " + earlier[0]["detected_by"]
                    row["compile_seconds"] = run["compile_seconds"]
                    row["reference"] = ref_source
                    rows.append(row)
            last = [histories[a][-1] for a in runs]
            print(
                f"  seed {seed}: "
                + ", ".join(
                    f"{r['arm']} {r['mean_error']:.3g}{' (degenerate)' if r['degenerate'] else ''}"
                    for r in last
                )
                + f"  [mean error at step {read_steps[-1]}]",
                flush=True,
            )
        traces = [r["train"].experimental_get_tracing_count() for r in runs.values()]
        traces.append(evaluate.experimental_get_tracing_count())
        if traces != [1] * len(traces):  # compiled once, reused for every seed and chunk
            raise AssertionError(f"{name} / {family}: retraced: {traces}")
        print(f"{name} / {family}: {time.perf_counter() - start:.1f} s", flush=True)
    return rows


def _mean_se(values):
    values = np.asarray(values, float)
    if len(values) == 0:
        return math.nan, math.nan
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return float(values.mean()), float(se)


METRICS = ("mean_error", "sd_error", "elbo")


def summarise(rows):
    """Mean ± standard error over seeds per read, and at equal time (module docstring)."""
    summary = []
    keys = dict.fromkeys((r["target"], r["surrogate"]) for r in rows)
    for target, family in keys:
        mine = [r for r in rows if r["target"] == target and r["surrogate"] == family]
        arms = list(dict.fromkeys(r["arm"] for r in mine))
        last_step = max(r["step"] for r in mine)
        finals = {
            a: [r["seconds"] for r in mine if r["arm"] == a and r["step"] == last_step]
            for a in arms
        }
        budget = min(float(np.mean(v)) for v in finals.values())
        for arm in arms:
            runs = [r for r in mine if r["arm"] == arm]
            seeds = sorted({r["seed"] for r in runs})
            base = {
                "target": target,
                "surrogate": family,
                "arm": arm,
                "K": runs[0]["K"],
                "S": runs[0]["S"],
                "seconds_per_step": float(np.mean(finals[arm])) / last_step if last_step else 0.0,
                "compile_seconds": runs[0]["compile_seconds"],
            }
            for step in sorted({r["step"] for r in runs}):
                at = [r for r in runs if r["step"] == step]
                line = {**base, "reading": "step", "step": step}
                line["seconds"] = float(np.mean([r["seconds"] for r in at]))
                line["seeds"] = len(at)
                for metric in METRICS:
                    line[f"{metric}_mean"], line[f"{metric}_se"] = _mean_se([r[metric] for r in at])
                line["degenerate_seeds"] = sum(r["degenerate"] for r in at)
                summary.append(line)
            line = {**base, "reading": "equal_time", "step": "", "seconds": budget}
            line["seeds"] = len(seeds)
            per_seed = {}
            for seed in seeds:
                trace = sorted((r for r in runs if r["seed"] == seed), key=lambda r: r["step"])
                t = [r["seconds"] for r in trace]
                per_seed[seed] = {
                    m: float(np.interp(budget, t, [r[m] for r in trace])) for m in METRICS
                }
                per_seed[seed]["degenerate"] = any(
                    r["degenerate"] for r in trace if r["seconds"] <= budget
                )
            for metric in METRICS:
                line[f"{metric}_mean"], line[f"{metric}_se"] = _mean_se(
                    [v[metric] for v in per_seed.values()]
                )
            line["degenerate_seeds"] = sum(v["degenerate"] for v in per_seed.values())
            summary.append(line)
    return summary


def plot(rows, summary, path):
    """Mean error (mean over seeds) against training seconds: a panel per target and surrogate."""
    from tfp_gradest.diagnostics import plotting

    plt = plotting.pyplot()
    panels = list(dict.fromkeys((r["target"], r["surrogate"]) for r in summary))
    targets = list(dict.fromkeys(t for t, _ in panels))
    families = list(dict.fromkeys(f for _, f in panels))
    figure, axes = plt.subplots(
        len(targets),
        len(families),
        figsize=(5.2 * len(families), 3.4 * len(targets)),
        squeeze=False,
    )
    arms = list(dict.fromkeys(s["arm"] for s in summary))
    colors = plt.get_cmap("tab10" if len(arms) <= 10 else "tab20")
    for target, family in panels:
        ax = axes[targets.index(target)][families.index(family)]
        for index, arm in enumerate(arms):
            line = [
                s
                for s in summary
                if (s["target"], s["surrogate"], s["arm"], s["reading"])
                == (target, family, arm, "step")
                and s["step"]
            ]
            if not line:
                continue
            t = np.array([s["seconds"] for s in line])
            mean = np.array([s["mean_error_mean"] for s in line])
            se = np.nan_to_num(np.array([s["mean_error_se"] for s in line]))
            degenerate = any(s["degenerate_seeds"] for s in line)
            ax.plot(
                t,
                mean,
                marker="x" if degenerate else ".",
                color=colors(index),
                label=arm + (" (degenerate seeds)" if degenerate else ""),
            )
            ax.fill_between(
                t, np.maximum(mean - se, 1e-6), mean + se, color=colors(index), alpha=0.2
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{target}\n{family.replace('_', '-')}", fontsize=9)
        ax.set_xlabel("training seconds")
        ax.set_ylabel("mean error (reference sds)")
        ax.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_outputs(rows, output_dir, suffix, extra):
    """The long CSV, the summary CSV, the figure and their `.meta.json` (with `extra`)."""
    import json

    summary = summarise(rows)
    os.makedirs(output_dir, exist_ok=True)
    for name, table in (
        (f"inference_gym{suffix}", rows),
        (f"inference_gym{suffix}_summary", summary),
    ):
        path = os.path.join(output_dir, f"{name}.csv")
        _common.write_results(path, table)
        meta_path = os.path.join(output_dir, f"{name}.meta.json")
        with open(meta_path) as f:
            meta = json.load(f)
        meta.update(extra)
        with open(meta_path, "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
    plot(rows, summary, os.path.join(output_dir, f"inference_gym{suffix}.png"))
    return summary


def read_rows(paths):
    """The rows of long-format CSVs this script wrote, typed back (numbers, booleans, None)."""
    import csv

    def value(text):
        if text == "":
            return None
        if text in ("True", "False"):
            return text == "True"
        try:
            number = float(text)
        except ValueError:
            return text
        integer = number.is_integer() and not any(c in text for c in ".en")
        return int(number) if integer else number

    rows = []
    for path in paths:
        with open(path, newline="") as f:
            rows += [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return rows


def merge(paths, output_dir):
    """Writes the outputs of the union of several runs' long CSVs (e.g. one per surrogate).

    The runs' `.meta.json` files are kept under `runs`, so each run's command and cost stay
    on record; a CSV that is itself a merge contributes its own `runs`. A read (target,
    surrogate, arm, seed, step) found in two of the CSVs is a ValueError.
    """
    import collections
    import json

    runs = []
    for path in paths:
        with open(os.path.splitext(path)[0] + ".meta.json") as f:
            meta = json.load(f)
        runs += meta["runs"] if "runs" in meta else [{"csv": os.path.basename(path), **meta}]
    rows = read_rows(paths)
    key = ("target", "surrogate", "arm", "seed", "step")
    counts = collections.Counter(tuple(r[k] for k in key) for r in rows)
    twice = [k for k, n in counts.items() if n > 1]
    if twice:
        raise ValueError(
            f"{len(twice)} reads ({', '.join(key)}) are in more than one of the CSVs, e.g. "
            f"{twice[0]}: merge each run once. Received: {paths}"
        )
    extra = {
        "note": "merged from the runs listed under `runs` ("
        + "; ".join(r.get("note", "") for r in runs)
        + ")",
        "runs": runs,
    }
    return write_outputs(rows, output_dir, "", extra)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--small",
        action="store_true",
        help=f"CI smoke test: {', '.join(SMALL_TARGETS)}, mean-field, {len(SMALL_ARMS)} arms, "
        f"reads at {SMALL_READ_STEPS}, 1 seed",
    )
    parser.add_argument("--targets", nargs="+", default=None, help="Inference Gym target names")
    parser.add_argument("--surrogates", nargs="+", default=None, choices=_gym.SURROGATE_FAMILIES)
    parser.add_argument("--arms", nargs="+", default=None, help="NAME or NAME/K (module docstring)")
    parser.add_argument("--seeds", type=int, default=None, help="default 5 (1 with --small)")
    parser.add_argument("--read-steps", type=int, nargs="+", default=None, help="increasing")
    parser.add_argument("--budget", type=int, default=8, help="target evaluations per step")
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--eval-samples", type=int, default=None, help="default 4096 (1024 small)")
    parser.add_argument("--no-jit", dest="jit", action="store_false", help="graph mode, not XLA")
    parser.add_argument("--output-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="CSV",
        help="write the outputs from these runs' inference_gym.csv files (e.g. one run per "
        "surrogate family), training nothing",
    )
    args = parser.parse_args(argv)
    if args.merge:
        summary = merge(args.merge, args.output_dir)
        report(summary)
        return None, summary
    targets = args.targets or (SMALL_TARGETS if args.small else TARGETS)
    families = args.surrogates or (("mean_field",) if args.small else _gym.SURROGATE_FAMILIES)
    arm_specs = args.arms or (SMALL_ARMS if args.small else ARMS)
    seeds = list(range(args.seeds or (1 if args.small else 5)))
    read_steps = tuple(args.read_steps or (SMALL_READ_STEPS if args.small else READ_STEPS))
    if read_steps[0] != 0 or any(b <= a for a, b in zip(read_steps, read_steps[1:])):
        raise ValueError(f"`--read-steps` must start at 0 and increase. Received: {read_steps}")
    args.eval_samples = args.eval_samples or (1024 if args.small else 4096)
    for spec in arm_specs:
        parse_arm(spec, args.budget)  # refuse a bad spec before anything is compiled
    suffix = "_small" if args.small else ""
    start, cpu_start = time.perf_counter(), time.process_time()
    load_before = list(os.getloadavg())
    rows = []
    for name in targets:
        rows += run_target(name, families, arm_specs, seeds, read_steps, args)
        extra = {
            "note": ("small smoke test (--small): not a result. " if args.small else "")
            + f"{len(seeds)} seeds, reads at steps {list(read_steps)}, {args.budget} target "
            f"evaluations per step, Adam {args.learning_rate:g}, {args.eval_samples} samples "
            f"per read, {'XLA' if args.jit else 'graph mode'}",
            "settings": {
                "targets": list(targets),
                "surrogates": list(families),
                "arms": list(arm_specs),
                "seeds": len(seeds),
                "read_steps": list(read_steps),
                "budget": args.budget,
                "learning_rate": args.learning_rate,
                "eval_samples": args.eval_samples,
                "jit_compile": args.jit,
            },
            "cost": {
                "wall_seconds": round(time.perf_counter() - start, 1),
                "cpu_seconds": round(time.process_time() - cpu_start, 1),
                "load_average_before": load_before,
                "load_average_after": list(os.getloadavg()),
                "peak_memory_gb": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
                ),
                "targets_done": list(dict.fromkeys(r["target"] for r in rows)),
            },
        }
        summary = write_outputs(rows, args.output_dir, suffix, extra)
    report(summary)
    return rows, summary


def report(summary):
    """Prints the final and equal-time mean errors per target and surrogate."""
    for target, family in dict.fromkeys((s["target"], s["surrogate"]) for s in summary):
        mine = [s for s in summary if s["target"] == target and s["surrogate"] == family]
        last = max(s["step"] for s in mine if s["reading"] == "step")
        print(f"\n{target} / {family}: mean error ± SE (reference sds), ELBO, degenerate seeds")
        for s in mine:
            if s["reading"] == "equal_time" or s["step"] == last:
                when = f"step {last}" if s["reading"] == "step" else f"at {s['seconds']:.3g} s"
                print(
                    f"  {s['arm']:>20} {when:>12}: {s['mean_error_mean']:.3g} ± "
                    f"{s['mean_error_se']:.2g}, sd error {s['sd_error_mean']:.3g}, ELBO "
                    f"{s['elbo_mean']:.4g}, {s['degenerate_seeds']}/{s['seeds']} degenerate"
                )


if __name__ == "__main__":
    main()
