"""End to end: held-out results over seeds, at equal epochs and at an equal wall-clock budget.

Four problems on scikit-learn's bundled digits (8x8, 1,437 train / 360 test):

* `bnn_mlp`: a Bayesian MLP (`tge.layers.bayesian_mlp`: 200 relu units, then
  10 logits), KL weight 1/N. Arms: the layers' default (nothing
  passed; the CSV records what it resolved to), `reparameterization`,
  `local_reparameterization`, `flipout`, `r2g2`.
* `bnn_cnn`: a Bayesian CNN (two `Conv2DReparameterization` layers, 8 and 16
  filters of 3x3, the second with stride 2, then a Bayesian dense layer). Arms as
  above without `local_reparameterization` (dense only).
* `vae`: `tge.models.VariationalAutoencoder` (one tanh hidden layer of 100
  units each way, 16 latents, K = 8), dynamically binarised. Arms: `iwae`,
  `iwae_dreg`, `rws_dreg`.
* `hvae`: `tge.models.HierarchicalVAE` (three stochastic layers of 32 latents,
  conditionals with two hidden tanh layers of 16 units, ELBO training), dynamically
  binarised. Arms: `reparameterization` (RT), `r2g2`. This is the regime where R2-G2's
  decoder links act at all (latents wider than the layer they feed, the ELBO), and there
  the model collapses to independent pixels at every level (about -27.08 nats, 1 to 3
  levels alike): it compares two gradients of a collapsed model. Whether the model uses
  its levels, and the configuration that makes it, is `benchmarks/hvae_levels.py`'s.

Held-out metrics: BNNs — the test log-likelihood of the posterior predictive
`log (1/S) Σ_s p(y | x, w_s)` with S = 16 weight samples, and its accuracy; VAEs —
the test IWAE bound with K = 64 (test images binarised once, fixed).

Training: Keras's compiled training function (`model.train_function`, the body of
`fit`) with `steps_per_execution` = one epoch, so one call trains one epoch
(shuffled, whole batches) and Keras's per-step Python overhead is amortised; `fit`'s
per-call set-up, the same for every arm, is not timed.

Timing on a loaded machine: all (seed, arm) runs train one epoch each in turn
(arm order rotated every epoch), each call timed. An arm's seconds per step is
the median over its equal epochs (below; all arms then run in alternation) after
the first (which compiles) of seconds / steps; its wall-clock axis is steps x
that median. So compilation, evaluation and the machine's other load are
excluded, and slow drifts of the load hit all arms alike.

Two readings per problem:

* equal epochs: every arm after `epochs` epochs (the same data, seeds and steps);
* equal wall-clock: the budget is the slowest arm's time for those `epochs`
  epochs; every faster arm then keeps training (more epochs, in alternation with
  the other faster arms) until its clock reaches the budget (at most
  `MAX_EXTRA_FACTOR` times the epochs), and each arm is read at the budget,
  interpolated between its evaluations. An arm that did not reach the budget
  (capped) is read at its last evaluation, and flagged.

Where the layers' default resolves to one fixed arm on every layer (the MLP:
local reparameterization on both dense layers), it builds the same model and the
same compiled program as that arm, with the same seeds: it is not trained
twice (timing two identical programs measures only noise); its rows are that
arm's, with `same_as` naming it. Writes `benchmarks/results/end_to_end.csv` (one
row per evaluation), `end_to_end_summary.csv` and `end_to_end.png`.

    python benchmarks/end_to_end.py            # all problems, 5 seeds (< 30 min on 2 cores)
    python benchmarks/end_to_end.py --small    # smoke test
"""

import argparse
import csv
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import compiled_training_loop, interleaved_seconds, print_table  # noqa: E402

import tfp_gradest as tge  # noqa: E402
from tfp_gradest.diagnostics import plotting

DEFAULT = "default"  # the arm that passes no `gradient_estimator`
JIT_COMPILE = True  # `--no-jit` trains in graph mode instead of XLA
MAX_EXTRA_FACTOR = 4  # a faster arm trains at most this many times the equal-epochs epochs


class Problem:
    """One model family: its arms, how to build a run, its data per epoch, its held-out metrics."""

    name, arms, metric, epochs, eval_every, batch_size = "", (), "", 1, 1, 64

    def __init__(self, data, small):
        self.x_train, self.y_train, self.x_test, self.y_test = data
        self.small = small
        if small:
            self.epochs, self.eval_every = 2, 1

    @property
    def steps_per_epoch(self):
        return len(self.x_train) // self.batch_size

    def compile_options(self):
        """One call of the compiled training function trains one epoch (overhead amortised)."""
        return dict(jit_compile=JIT_COMPILE, steps_per_execution=self.steps_per_epoch)

    def build(self, arm, seed):
        raise NotImplementedError

    def epoch_data(self, rng, num_batches):
        """This epoch's training set: shuffled, whole batches only (one compiled shape)."""
        order = rng.permutation(len(self.x_train))[: num_batches * self.batch_size]
        return self.x_train[order], self.y_train[order]

    def ensure_built(self, model):
        if not model.built:
            model.build((None, self.x_train.shape[1]))

    def evaluate(self, model, seed):
        raise NotImplementedError

    def traced(self, model, fn):
        """`fn(model, ...)` as a graph function traced once per model (evaluations stay cheap)."""
        cache = self.__dict__.setdefault("_traced", {})
        if id(model) not in cache:
            cache[id(model)] = tf.function(lambda *args: fn(model, *args), autograph=False)
        return cache[id(model)]

    def resolved(self, model, arm):
        return arm


class BayesianClassifier(Problem):
    metric = "test_log_likelihood"
    num_weight_samples = 16

    def _estimator_kwargs(self, arm):
        return {} if arm == DEFAULT else {"gradient_estimator": arm}

    def _compile(self, model):
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            **self.compile_options(),
        )
        return model

    def evaluate(self, model, seed):
        def predictive_log_probs(model, x):
            # Each call draws fresh weights (inference_mode="sample"): the posterior predictive.
            draws = [tf.nn.log_softmax(model(x)) for _ in range(self.num_weight_samples)]
            return tf.reduce_logsumexp(tf.stack(draws), 0) - np.log(self.num_weight_samples)

        x = tf.constant(self._inputs(self.x_test))
        predictive = self.traced(model, predictive_log_probs)(x).numpy()
        y = self.y_test
        log_lik = np.take_along_axis(predictive, y[:, None], 1)[:, 0]
        accuracy = np.mean(np.argmax(predictive, 1) == y)
        return {"test_log_likelihood": float(log_lik.mean()), "test_accuracy": float(accuracy)}

    def resolved(self, model, arm):
        names = {getattr(layer, "resolved_gradient_estimator", None) for layer in model.layers}
        names.discard(None)
        return "+".join(sorted(names)) or arm

    def epoch_data(self, rng, num_batches):
        x, y = super().epoch_data(rng, num_batches)
        return self._inputs(x), y

    def _inputs(self, x):
        return x


class BNNMLP(BayesianClassifier):
    name = "bnn_mlp"
    arms = (DEFAULT, "reparameterization", "local_reparameterization", "flipout", "r2g2")
    epochs, eval_every = 30, 3

    def build(self, arm, seed):
        keras.utils.set_random_seed(seed)
        model = tge.layers.bayesian_mlp(
            (self.x_train.shape[1],),
            [200, 10],
            gradient_estimator=None if arm == DEFAULT else arm,
            seed=seed,
            kl_weight=1 / len(self.x_train),
        )
        return self._compile(model)


class BNNCNN(BayesianClassifier):
    name = "bnn_cnn"
    arms = (DEFAULT, "reparameterization", "flipout", "r2g2")
    epochs, eval_every = 30, 3

    def _inputs(self, x):
        side = int(np.sqrt(x.shape[1]))
        return x.reshape(-1, side, side, 1)

    def build(self, arm, seed):
        keras.utils.set_random_seed(seed)
        n, kwargs = len(self.x_train), self._estimator_kwargs(arm)
        side = int(np.sqrt(self.x_train.shape[1]))
        conv = dict(kl_weight=1 / n, activation="relu", **kwargs)
        model = keras.Sequential(
            [
                keras.Input((side, side, 1)),
                tge.layers.Conv2DReparameterization(8, 3, seed=seed, **conv),
                tge.layers.Conv2DReparameterization(16, 3, strides=2, seed=seed + 1, **conv),
                keras.layers.Flatten(),
                tge.layers.DenseReparameterization(10, kl_weight=1 / n, seed=seed + 2, **kwargs),
            ]
        )
        return self._compile(model)


class BinarisedImages(Problem):
    metric = "test_bound"
    test_importance_samples = 64

    def __init__(self, data, small):
        super().__init__(data, small)
        # Test images binarised once (fixed); training images afresh every epoch.
        self.x_test = (np.random.default_rng(0).random(self.x_test.shape) < self.x_test).astype(
            "float32"
        )

    def epoch_data(self, rng, num_batches):
        x, _ = super().epoch_data(rng, num_batches)
        return (rng.random(x.shape) < x).astype("float32"), None


class VAE(BinarisedImages):
    name = "vae"
    arms = ("iwae", "iwae_dreg", "rws_dreg")
    epochs, eval_every = 40, 5

    def build(self, arm, seed):
        keras.utils.set_random_seed(seed)
        latent, pixels = 16, self.x_train.shape[1]
        encoder = keras.Sequential(
            [keras.layers.Dense(100, activation="tanh"), keras.layers.Dense(2 * latent)]
        )
        decoder = keras.Sequential(
            [keras.layers.Dense(100, activation="tanh"), keras.layers.Dense(pixels)]
        )
        model = tge.models.VariationalAutoencoder(
            encoder, decoder, latent, gradient_estimator=arm, importance_sample_size=8, seed=seed
        )
        model.compile(keras.optimizers.Adam(1e-3), **self.compile_options())
        return model

    def evaluate(self, model, seed):
        iwae = tge.estimators.get("iwae")

        def bound(model, x, seed):
            negative_bound = iwae.loss(
                model.target_log_prob_fn(x),
                model.surrogate_posterior(x),
                1,
                self.test_importance_samples,
                seed=seed,
            )
            return -tf.reduce_mean(negative_bound)

        return {
            "test_bound": float(self.traced(model, bound)(self.x_test, tf.constant([seed, 12345])))
        }


class HVAE(BinarisedImages):
    name = "hvae"
    arms = ("reparameterization", "r2g2")
    epochs, eval_every = 150, 15

    def build(self, arm, seed):
        keras.utils.set_random_seed(seed)
        model = tge.models.HierarchicalVAE(
            self.x_train.shape[1],
            latent_dims=(32, 32, 32),
            hidden_units=16,
            decoder_link_gradient=arm,
            seed=seed,
        )
        model.compile(keras.optimizers.Adam(1e-3), **self.compile_options())
        return model

    def evaluate(self, model, seed):
        def bound(model, x, seed):
            return tf.reduce_mean(model.log_likelihood_bound(x, self.test_importance_samples, seed))

        return {
            "test_bound": float(self.traced(model, bound)(self.x_test, tf.constant([seed, 12345])))
        }


PROBLEMS = {p.name: p for p in (BNNMLP, HVAE, VAE, BNNCNN)}


class SeedStates:
    """One compiled model per arm; each seed's weights, noise state and optimizer state swapped in.

    Compiling once per arm instead of once per (arm, seed) cuts the benchmark's
    compile time five-fold; a seed's state is every model variable (weights and the
    layers' seed-generator states) and every optimizer variable, so a swapped-in
    run continues exactly as its own model would. The states stay in variables and
    are swapped by one compiled copy (not one eager assignment per variable).
    """

    def __init__(self, problem, arm, seeds):
        self.model = problem.build(arm, seeds[0])
        problem.ensure_built(self.model)
        self.model.optimizer.build(self.model.trainable_variables)
        self.model.make_train_function()
        self.live = list(self.model.variables) + list(self.model.optimizer.variables)
        optimizer_start = [v.numpy() for v in self.model.optimizer.variables]
        self.stores = {}
        for seed in seeds:
            fresh = problem.build(arm, seed)
            problem.ensure_built(fresh)
            values = [v.numpy() for v in fresh.variables] + optimizer_start
            if [np.shape(x) for x in values] != [tuple(v.shape) for v in self.live]:
                raise ValueError(f"{arm}: seed {seed}'s model has other variables")
            self.stores[seed] = [tf.Variable(x, trainable=False) for x in values]
        # Variables captured, not passed (arguments would be read into tensors).
        self._load = {s: _copy_all(store, self.live) for s, store in self.stores.items()}
        self._save = {s: _copy_all(self.live, store) for s, store in self.stores.items()}

    def load(self, seed):
        self._load[seed]()
        return self.model

    def save(self, seed):
        self._save[seed]()

    def train_epoch(self, batches):
        """Seconds of one call of the compiled training function: one epoch of batches."""
        iterator = iter(batches)
        start = time.perf_counter()
        logs = self.model.train_function(iterator)
        float(logs["loss"])  # wait for the result
        return time.perf_counter() - start


def _copy_all(sources, targets):
    """A compiled function assigning every `sources[i]` to `targets[i]`."""

    def copy():
        for source, target in zip(sources, targets, strict=True):
            target.assign(source)

    return tf.function(copy, autograph=False)


def resolved_alias(problem, arms):
    """The fixed arm the default is identical to (one estimator on every layer), else None."""
    if DEFAULT not in arms:
        return None
    model = problem.build(DEFAULT, 0)
    problem.ensure_built(model)
    resolved = problem.resolved(model, DEFAULT)
    return resolved if resolved in arms else None


def budget_epochs(seconds_per_step, equal_epochs):
    """Epochs each arm trains so that its clock reaches the slowest arm's `equal_epochs` epochs.

    `seconds_per_step`: arm -> seconds. The slowest arm trains `equal_epochs`; a faster
    one `ceil(equal_epochs * slowest / its own)` (up to or past the budget, so that
    the reading at the budget is interpolated, not clamped), at most
    `MAX_EXTRA_FACTOR * equal_epochs`.
    """
    slowest = max(seconds_per_step.values())
    return {
        arm: equal_epochs
        if seconds >= slowest
        else min(
            int(np.ceil(equal_epochs * slowest / seconds - 1e-9)),
            MAX_EXTRA_FACTOR * equal_epochs,
        )
        for arm, seconds in seconds_per_step.items()
    }


def run_problem(problem, seeds, arms_filter):
    """Trains every (seed, arm) run, one epoch each in turn; returns the evaluation rows.

    First every arm trains `problem.epochs` epochs (equal epochs); then the arms
    faster than the slowest keep training until their clock passes the slowest
    arm's time for those epochs (the equal wall-clock budget).
    """
    arms = [a for a in problem.arms if not arms_filter or a in arms_filter]
    alias = resolved_alias(problem, arms)
    trained = [a for a in arms if not (a == DEFAULT and alias)]
    runs = {arm: SeedStates(problem, arm, seeds) for arm in trained}
    steps = problem.steps_per_epoch
    seconds = {arm: [] for arm in trained}
    evaluations = []

    def train(done, target):
        """Each arm from its `done` epochs on to its `target` epochs."""
        for epoch in range(min(done.values()) + 1, max(target.values()) + 1):
            active = [a for a in trained if done[a] < epoch <= target[a]]
            if not active:
                continue
            for seed in seeds:
                x, y = problem.epoch_data(np.random.default_rng([seed, epoch]), steps)
                data = (x,) if y is None else (x, y)
                batches = tf.data.Dataset.from_tensor_slices(data).batch(problem.batch_size)
                shift = (epoch + seed) % len(active)
                for arm in active[shift:] + active[:shift]:  # no arm always first
                    model = runs[arm].load(seed)
                    seconds[arm].append(runs[arm].train_epoch(batches))
                    if epoch % problem.eval_every == 0 or epoch in (
                        problem.epochs,
                        target[arm],
                    ):
                        evaluations.append(
                            dict(
                                problem=problem.name,
                                arm=arm,
                                resolved=problem.resolved(model, arm),
                                seed=seed,
                                epoch=epoch,
                                steps=epoch * steps,
                                equal_epochs=problem.epochs,
                                **problem.evaluate(model, seed),
                            )
                        )
                    runs[arm].save(seed)
            print(f"  {problem.name} epoch {epoch}: {', '.join(active)}", flush=True)

    def seconds_per_step(arm):
        # The equal epochs only, when all arms ran in alternation (the later epochs ran
        # without the slowest arm, at another time: another load), after the arm's first
        # call (which compiles); with one epoch, it is all there is.
        times = seconds[arm][: len(seeds) * problem.epochs]
        return float(np.median(times[1:] or times)) / steps

    equal_epochs = {arm: problem.epochs for arm in trained}
    train(dict.fromkeys(trained, 0), equal_epochs)
    plan = budget_epochs({arm: seconds_per_step(arm) for arm in trained}, problem.epochs)
    slowest = max(trained, key=seconds_per_step)
    rounds = slice(1, len(seeds) * problem.epochs)  # the i-th call of every arm: one round
    ratio_quartiles = {  # per-round step-time ratios: how well the medians are known
        arm: np.percentile(
            np.asarray(seconds[arm][rounds]) / np.asarray(seconds[slowest][rounds]), [25, 50, 75]
        )
        for arm in trained
    }
    train(equal_epochs, plan)
    for row in evaluations:
        row["seconds_per_step"] = seconds_per_step(row["arm"])
        row["ratio_to_slowest_q25"], row["ratio_to_slowest_median"], row["ratio_to_slowest_q75"] = (
            float(q) for q in ratio_quartiles[row["arm"]]
        )
        row["wallclock_seconds"] = row["steps"] * row["seconds_per_step"]
    if alias:
        evaluations += [
            dict(row, arm=DEFAULT, same_as=alias) for row in evaluations if row["arm"] == alias
        ]
    return evaluations


def _mean_se(values):
    values = np.asarray(values, float)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def summarise(rows):
    """Per problem and arm: metrics at the equal epochs and at the equal wall-clock budget.

    The budget is the slowest arm's time for the equal epochs (steps x its seconds per step).
    """
    summary = []
    for name in dict.fromkeys(r["problem"] for r in rows):
        problem_rows = [r for r in rows if r["problem"] == name]
        arms = list(dict.fromkeys(r["arm"] for r in problem_rows))
        equal_epochs = problem_rows[0].get("equal_epochs") or min(
            max(r["epoch"] for r in problem_rows if r["arm"] == a) for a in arms
        )
        steps_per_epoch = problem_rows[0]["steps"] / problem_rows[0]["epoch"]
        budget = equal_epochs * steps_per_epoch * max(r["seconds_per_step"] for r in problem_rows)
        metrics = [
            k
            for k in ("test_log_likelihood", "test_accuracy", "test_bound")
            if k in problem_rows[0]
        ]
        for arm in arms:
            arm_rows = [r for r in problem_rows if r["arm"] == arm]
            seeds = sorted({r["seed"] for r in arm_rows})
            by_seed = {s: [r for r in arm_rows if r["seed"] == s] for s in seeds}
            at_epochs = {
                s: next(r for r in by_seed[s] if r["epoch"] == equal_epochs) for s in seeds
            }
            seconds_per_step = arm_rows[0]["seconds_per_step"]
            last_seconds = min(max(r["wallclock_seconds"] for r in by_seed[s]) for s in seeds)
            entry = dict(
                problem=name,
                arm=arm,
                resolved=arm_rows[-1]["resolved"],
                same_as=arm_rows[0].get("same_as", ""),
                seeds=len(seeds),
                epochs=equal_epochs,
                seconds_per_step=seconds_per_step,
                budget_seconds=budget,
                budget_epoch=budget / seconds_per_step / steps_per_epoch,
                trained_epochs=max(r["epoch"] for r in arm_rows),
                ratio_to_slowest=(
                    f"{arm_rows[0]['ratio_to_slowest_median']:.3f} "
                    f"[{arm_rows[0]['ratio_to_slowest_q25']:.3f}, "
                    f"{arm_rows[0]['ratio_to_slowest_q75']:.3f}]"
                    if "ratio_to_slowest_median" in arm_rows[0]
                    else ""
                ),
                budget_reached=bool(last_seconds >= budget * (1 - 1e-9)),
            )
            for metric in metrics:
                for label, values in [
                    ("final", [at_epochs[s][metric] for s in seeds]),
                    ("budget", [_at_time(by_seed[s], metric, budget) for s in seeds]),
                ]:
                    mean, se = _mean_se(values)
                    entry[f"{metric}_{label}_mean"], entry[f"{metric}_{label}_se"] = mean, se
            summary.append(entry)
    return summary


def _at_time(seed_rows, metric, seconds):
    """The metric at `seconds` of training, linearly interpolated between evaluations.

    (Clamped to the last evaluation for an arm whose training stopped before
    `seconds`, flagged `budget_reached = False` in the summary.)
    """
    seed_rows = sorted(seed_rows, key=lambda r: r["wallclock_seconds"])
    times = [r["wallclock_seconds"] for r in seed_rows]
    return float(np.interp(seconds, times, [r[metric] for r in seed_rows]))


def paired_at_time(rows, problem, arm_a, arm_b, metric, seconds):
    """Mean and SE over seeds of `metric(arm_a) - metric(arm_b)`, both read at `seconds`."""
    rows = [r for r in rows if r["problem"] == problem]
    seeds = sorted({r["seed"] for r in rows if r["arm"] == arm_a})
    return _mean_se(
        [
            _at_time([r for r in rows if r["arm"] == arm_a and r["seed"] == s], metric, seconds)
            - _at_time([r for r in rows if r["arm"] == arm_b and r["seed"] == s], metric, seconds)
            for s in seeds
        ]
    )


def paired_difference(rows, problem, arm_a, arm_b, metric, epoch):
    """Mean and standard error over seeds of `metric(arm_a) - metric(arm_b)` at `epoch`."""
    by = {
        (r["arm"], r["seed"]): r[metric]
        for r in rows
        if r["problem"] == problem and r["epoch"] == epoch
    }
    seeds = sorted(s for (a, s) in by if a == arm_a and (arm_b, s) in by)
    return _mean_se([by[(arm_a, s)] - by[(arm_b, s)] for s in seeds])


def report(rows, summary):
    for name in dict.fromkeys(s["problem"] for s in summary):
        entries = [s for s in summary if s["problem"] == name]
        first = entries[0]
        metrics = [k[: -len("_final_mean")] for k in first if k.endswith("_final_mean")]
        header = ["arm", "resolved", "ms/step", "step / slowest's [IQR]", "epochs trained"] + [
            f"{m} @ {label}"
            for m in metrics
            for label in (f"{first['epochs']} epochs", "equal time")
        ]
        table = [
            [
                s["arm"] + (f" (= {s['same_as']})" if s.get("same_as") else ""),
                s["resolved"],
                f"{1e3 * s['seconds_per_step']:.2f}",
                s["ratio_to_slowest"],
                f"{s['trained_epochs']}" + ("" if s["budget_reached"] else " (budget not reached)"),
            ]
            + [
                f"{s[f'{m}_{label}_mean']:.4f} ± {s[f'{m}_{label}_se']:.4f}"
                for m in metrics
                for label in ("final", "budget")
            ]
            for s in entries
        ]
        print_table(
            f"{name}: mean ± SE over {first['seeds']} seeds; equal time = "
            f"{first['budget_seconds']:.1f} s of training (the slowest arm's {first['epochs']} "
            "epochs)",
            table,
            header,
        )
        metric = metrics[0]
        best = max(entries, key=lambda s: s[f"{metric}_budget_mean"])
        table = []
        for s in entries:
            if s is not best:
                mean, se = paired_at_time(
                    rows, name, s["arm"], best["arm"], metric, first["budget_seconds"]
                )
                table.append([s["arm"], f"{mean:+.4f} ± {se:.4f}"])
        print_table(
            f"{name}: {metric} at equal time minus the best arm's ({best['arm']}), paired over "
            "seeds",
            table,
            ["arm", "difference ± SE"],
        )
        has_fixed = any(s["arm"] != DEFAULT for s in entries)
        if name.startswith("bnn") and has_fixed and any(s["arm"] == DEFAULT for s in entries):
            key = "test_log_likelihood_budget"
            fixed = [s for s in entries if s["arm"] != DEFAULT]
            best = max(fixed, key=lambda s: s[f"{key}_mean"])
            default = next(s for s in entries if s["arm"] == DEFAULT)
            gap = best[f"{key}_mean"] - default[f"{key}_mean"]
            verdict = "within" if gap <= best[f"{key}_se"] else "NOT within"
            same = f", identical to {default['same_as']}" if default.get("same_as") else ""
            print(
                f"Target ({name}): default ({default['resolved']}{same}) {verdict} one SE of the "
                f"best fixed choice ({best['arm']}) at equal time: "
                f"gap {gap:.4f}, SE {best[f'{key}_se']:.4f}"
            )
        if name == "hvae" and {"r2g2", "reparameterization"} <= {s["arm"] for s in entries}:
            epochs = sorted(
                {
                    r["epoch"]
                    for r in rows
                    if r["problem"] == "hvae" and r["epoch"] <= first["epochs"]
                }
            )
            table = []
            for epoch in epochs:
                mean, se = paired_difference(
                    rows, "hvae", "r2g2", "reparameterization", "test_bound", epoch
                )
                table.append([epoch, f"{mean:+.5f} ± {se:.5f}", f"{mean / se:+.1f}"])
            print_table(
                "hvae: test bound R2-G2 - RT after equal steps (paired over seeds; nats)",
                table,
                ["epoch", "difference ± SE", "difference / SE"],
            )
            mean, se = paired_difference(
                rows, "hvae", "r2g2", "reparameterization", "test_bound", epochs[-1]
            )
            verdict = "ahead by 2 SE" if mean > 2 * se else "NOT ahead by 2 SE"
            print(
                f"Target (hvae): R2-G2 {verdict} of RT after {epochs[-1]} epochs: "
                f"{mean:+.5f} ± {se:.5f} nats "
                "(the paper: +9.05 nats, 3 layers, MNIST, 100,000 steps)"
            )


def plot(rows, summary, path):
    plt = plotting.pyplot()

    names = list(dict.fromkeys(r["problem"] for r in rows))
    figure, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        problem_rows = [r for r in rows if r["problem"] == name]
        entries = {s["arm"]: s for s in summary if s["problem"] == name}
        budget = next(iter(entries.values()))["budget_seconds"]
        metric = "test_log_likelihood" if name.startswith("bnn") else "test_bound"
        aliases = {s["same_as"]: arm for arm, s in entries.items() if s.get("same_as")}
        late = []  # means in the budget's last two thirds: the y range shown
        for arm in dict.fromkeys(r["arm"] for r in problem_rows):
            if entries[arm].get("same_as"):
                continue  # drawn as the arm it is identical to
            arm_rows = [r for r in problem_rows if r["arm"] == arm]
            epochs = sorted({r["epoch"] for r in arm_rows})
            t, mean, se = [], [], []
            for e in epochs:
                values = [r[metric] for r in arm_rows if r["epoch"] == e]
                m, s = _mean_se(values)
                t.append(next(r["wallclock_seconds"] for r in arm_rows if r["epoch"] == e))
                mean.append(m)
                se.append(0.0 if np.isnan(s) else s)
            t, mean, se = np.array(t), np.array(mean), np.array(se)
            late += list((mean - se)[t >= budget / 3]) + list((mean + se)[t >= budget / 3])
            label = arm if arm != DEFAULT else f"default ({arm_rows[-1]['resolved']})"
            if arm in aliases:
                label += f" = {aliases[arm]}"
            (line,) = ax.plot(t, mean, marker=".", label=label)
            ax.fill_between(t, mean - se, mean + se, color=line.get_color(), alpha=0.25)
        ax.axvline(budget, color="grey", linestyle=":", label="equal-time budget")
        if late:
            low, high = min(late), max(late)
            ax.set_ylim(low - 0.15 * (high - low), high + 0.15 * (high - low))
        ax.set_xlabel("training seconds (steps x median s/step)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(name)
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_csv(rows, path):
    _common.write_results(path, rows)  # the CSV and its .meta.json (command, date, machine)


def hvae_step_ratio(blocks=5, repeats=5, steps=100):
    """R2-G2 / RT seconds per step of the benchmark's HVAE in a bare XLA loop (no Keras overhead).

    `blocks` ratios, each from `repeats` alternated timings of `steps` steps on one batch of 64.
    """
    x_train = tge.datasets.load_images(prefer="digits", verbose=False)[0]
    x = tf.constant((x_train[:64] > 0.5).astype("float32"))
    runs = []
    for arm in HVAE.arms:
        model = tge.models.HierarchicalVAE(
            64, latent_dims=(32, 32, 32), hidden_units=16, decoder_link_gradient=arm, seed=0
        )
        model.build((None, 64))
        loop = compiled_training_loop(
            # The training loss (the bound is evaluated with plain links whatever the arm).
            lambda seed, model=model: tf.reduce_mean(
                model.estimator.loss(
                    model.target_log_prob_fn(x), model.surrogate_posterior(x), seed=seed
                )
            ),
            model.trainable_variables,
            steps,
        )
        runs.append(lambda loop=loop: loop(tf.constant([1, 2])).numpy())
    ratios = []
    for _ in range(blocks):
        rt, r2g2 = interleaved_seconds(runs, repeats)
        ratios.append(r2g2 / rt)
    print(
        f"HVAE step time R2-G2 / RT, bare XLA loop: median {np.median(ratios):.2f} "
        f"(blocks: {', '.join(f'{r:.2f}' for r in ratios)}); RT {1e3 * rt / steps:.2f} ms/step"
    )
    return ratios


def read_csv(path):
    def value(text):
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text

    with open(path) as f:
        return [{k: value(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--small", action="store_true", help="smoke test: 2 seeds, 2 epochs, 200 images"
    )
    parser.add_argument("--seeds", type=int, default=None, help="default 5 (2 with --small)")
    parser.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS), default=list(PROBLEMS))
    parser.add_argument("--arms", nargs="+", default=None, help="keep only these arms")
    parser.add_argument("--epochs", type=int, default=None, help="override every problem's epochs")
    parser.add_argument(
        "--from-csv", default=None, help="re-summarise and re-plot an earlier run's CSV"
    )
    parser.add_argument(
        "--hvae-step-ratio", action="store_true", help="only time the HVAE step, R2-G2 / RT"
    )
    parser.add_argument("--no-jit", action="store_true", help="graph mode instead of XLA")
    parser.add_argument("--output-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    num_seeds = args.seeds or (2 if args.small else 5)
    if args.hvae_step_ratio:
        return hvae_step_ratio()
    if args.from_csv:
        rows = read_csv(args.from_csv)
        source = os.path.splitext(args.from_csv)[0] + ".meta.json"
        metadata = open(source).read() if os.path.exists(source) else None
        summary = write_results(rows, args.output_dir, "_small" if args.small else "")
        if metadata is not None:  # a re-summary: the numbers are still the original run's
            suffix = "_small" if args.small else ""
            for name in (f"end_to_end{suffix}", f"end_to_end{suffix}_summary"):
                with open(os.path.join(args.output_dir, f"{name}.meta.json"), "w") as f:
                    f.write(metadata)
        report(rows, summary)
        return rows, summary
    global JIT_COMPILE
    JIT_COMPILE = not args.no_jit
    x_train, y_train, x_test, y_test, _ = tge.datasets.load_images(prefer="digits", verbose=False)
    if args.small:
        x_train, y_train, x_test, y_test = x_train[:200], y_train[:200], x_test[:100], y_test[:100]
    data = (x_train, y_train, x_test, y_test)
    print(
        f"digits: {len(x_train)} train / {len(x_test)} test; {num_seeds} seeds; "
        f"devices: {[d.device_type for d in tf.config.list_logical_devices()]}"
    )
    rows = []
    for name in args.problems:
        problem = PROBLEMS[name](data, args.small)
        if args.epochs:
            problem.epochs = args.epochs
            problem.eval_every = min(problem.eval_every, args.epochs)
        start = time.perf_counter()
        rows += run_problem(problem, list(range(num_seeds)), args.arms)
        print(f"{name}: {time.perf_counter() - start:.0f} s in total", flush=True)
        summary = write_results(rows, args.output_dir, "_small" if args.small else "")
    report(rows, summary)
    return rows, summary


def write_results(rows, output_dir, suffix):
    """CSV, summary CSV and figure of everything so far (written after every problem)."""
    summary = summarise(rows)
    os.makedirs(output_dir, exist_ok=True)
    write_csv(rows, os.path.join(output_dir, f"end_to_end{suffix}.csv"))
    write_csv(summary, os.path.join(output_dir, f"end_to_end{suffix}_summary.csv"))
    plot(rows, summary, os.path.join(output_dir, f"end_to_end{suffix}.png"))
    return summary


if __name__ == "__main__":
    main()
