"""Does `tge.models.HierarchicalVAE` use its hierarchy? Levels, configurations, estimators.

Issue 25 item 6. On binarised scikit-learn digits (8x8; 1,437 train / 360 test, test images
binarised once, training images afresh every epoch), every run trains the same number of
Adam steps (learning rate 1e-3, batch 64) and is read on the test set:

* the IWAE bound with K = 64 (`log_likelihood_bound`), in nats;
* per level, the active units (Burda et al. 2016, §5.2: unit `u` is active when
  `A_u = Cov_x(E_q[u | x]) > 0.01`, with `E_q[z_l | x]` the mean over samples of `z_{l-1}`
  of `q(z_l | z_{l-1})`'s mean);
* per level, the KL term `E_q[log q(z_l | z_{l-1}) - log p(z_l | z_{l+1})]` (the top level
  against its standard Normal prior), estimated from the same samples. The levels' terms
  add up to the bound's KL part.

Two studies:

1. `levels`: 1, 2 and 3 stochastic levels (32 latents each) under each configuration:
   `before` (the end-to-end benchmark's `hvae` problem: 16 hidden units, ELBO) and the
   recommended configuration of the model's docstring. The reading is paired: each seed's
   bound minus the 1-level bound of the same seed and configuration (same steps, data
   order and test noise).
2. `estimators`: the recommended configuration's model trained with IWAE, IWAE-DReG and
   GDReG: `gdreg` (its default, `conditional_scores="keep"`: IWAE-DReG's surrogate
   gradient with the prior conditionals doubly reparameterised) and `gdreg_transform`
   (`"transform"`, the paper's construction).

Writes `benchmarks/results/hvae_levels.csv` (one row per run) and `hvae_levels_summary.csv`
(mean ± standard error over seeds, the paired differences), each with its `.meta.json`
(command, date, commit, machine, and the run's cost in CPU and wall seconds); the
estimators study run alone writes `hvae_levels_estimators*`, and `--tag T` appends `_T`.
The recorded results are three runs (their costs: in the `.meta.json` files):

    python benchmarks/hvae_levels.py --studies levels       # before/recommended, IWAE
    python benchmarks/hvae_levels.py --studies estimators   # IWAE, IWAE-DReG, GDReG
    python benchmarks/hvae_levels.py --studies levels --configs recommended \
        --level-estimators iwae_dreg --epochs 150 --tag dreg
    python benchmarks/hvae_levels.py --small                # smoke run (seconds of training)
"""

import argparse
import json
import os
import sys
import time

import _common
import keras
import numpy as np

import tfp_gradest as tge

# The recommended configuration (HierarchicalVAE's docstring): the model's default width,
# importance-weighted training and a KL warm-up (`kl_weight` raised linearly to 1 over the
# first WARMUP_FRACTION of the epochs by `tge.callbacks.KLAnnealing`).
RECOMMENDED = dict(hidden_units=64, importance_sample_size=8)
BEFORE = dict(hidden_units=16, importance_sample_size=1)  # end_to_end.py's `hvae` problem
CONFIGS = {"before": BEFORE, "recommended": RECOMMENDED}
WARMUP_FRACTION = {"before": 0.0, "recommended": 0.3}
ESTIMATORS = ("iwae", "iwae_dreg", "gdreg", "gdreg_transform")  # "gdreg": its default, "keep"
# Labels that are not registered names: the estimator each stands for.
ESTIMATOR_SPECS = {
    "gdreg_transform": {"class_name": "GDReG", "config": {"conditional_scores": "transform"}}
}
LATENT_WIDTH = 32
BATCH = 64
TEST_K = 64
ACTIVE_THRESHOLD = 0.01  # Burda et al. (2016)
DIAGNOSTIC_SAMPLES = 32


def level_diagnostics(model, x, samples=DIAGNOSTIC_SAMPLES, seed=0):
    """Per level: active units (`A_u > 0.01`) and the KL term (nats), as NumPy numbers."""
    from keras import ops

    x = ops.convert_to_tensor(x)
    latents = model.surrogate_posterior(x).sample(samples, seed=seed)
    priors = model.target_log_prob_fn(x).latent_distributions(*latents)
    active, kls, below = [], [], ops.broadcast_to(x, (samples, *x.shape))
    for level, latent in enumerate(latents):
        loc, scale = model.encoder_conditional(level, below)
        posterior_mean = ops.convert_to_numpy(ops.mean(loc, axis=0))  # E_q[z_l | x], [B, d]
        active.append(int(np.sum(np.var(posterior_mean, axis=0) > ACTIVE_THRESHOLD)))
        log_q = _normal_log_prob(latent, loc, scale)
        if level + 1 < len(latents):
            prior = priors[level].distribution
            log_p = _normal_log_prob(latent, prior.loc, prior.scale)
        else:
            log_p = _normal_log_prob(latent, 0.0, 1.0)
        kls.append(float(ops.convert_to_numpy(ops.mean(log_q - log_p))))
        below = latent
    return active, kls


def _normal_log_prob(z, loc, scale):
    from keras import ops

    scale = ops.convert_to_tensor(scale, z.dtype)
    return ops.sum(
        -0.5 * ops.square((z - loc) / scale) - ops.log(scale) - 0.5 * np.log(2 * np.pi), axis=-1
    )


class Runs:
    """One compiled model per (configuration, levels, estimator); each seed's initial weights,
    seed-generator state and a fresh optimizer state assigned in turn (one compilation)."""

    def __init__(self, levels, kwargs, seeds, num_pixels, steps_per_epoch):
        self.levels, self.kwargs, self.steps_per_epoch = levels, kwargs, steps_per_epoch
        self.model = self._build(seeds[0], num_pixels)
        self.model.compile(
            keras.optimizers.Adam(1e-3), jit_compile=True, steps_per_execution=steps_per_epoch
        )
        self.model.optimizer.build(self.model.trainable_variables)
        self.optimizer_start = [v.numpy() for v in self.model.optimizer.variables]
        self.starts = {s: [v.numpy() for v in self._build(s, num_pixels).variables] for s in seeds}

    def _build(self, seed, num_pixels):
        keras.utils.set_random_seed(seed)
        model = tge.models.HierarchicalVAE(
            num_pixels, latent_dims=(LATENT_WIDTH,) * self.levels, seed=seed, **self.kwargs
        )
        model.build((None, num_pixels))
        return model

    def train(self, seed, x, warmup_epochs):
        import tensorflow as tf

        for v, value in zip(self.model.variables, self.starts[seed], strict=True):
            v.assign(value)
        for v, value in zip(self.model.optimizer.variables, self.optimizer_start, strict=True):
            v.assign(value)
        self.model.kl_weight = 1.0
        callbacks = []
        if warmup_epochs:
            schedule = lambda epoch: min(1.0, (epoch + 1) / warmup_epochs)  # noqa: E731
            callbacks.append(tge.callbacks.KLAnnealing(schedule, layers=[self.model]))
        # One dataset of every epoch's batches; with `steps_per_epoch` Keras keeps iterating it
        # across epochs (each epoch its own shuffle and binarisation).
        batches = tf.data.Dataset.from_tensor_slices(x).batch(BATCH)
        epochs = len(x) // (BATCH * self.steps_per_epoch)
        self.model.fit(
            batches,
            epochs=epochs,
            steps_per_epoch=self.steps_per_epoch,
            verbose=0,
            callbacks=callbacks,
        )
        return self.model


def training_data(x_train, epochs, seed):
    """`epochs` passes in one array: each shuffled (whole batches) and binarised afresh."""
    rng = np.random.default_rng([seed, 1])
    n = (len(x_train) // BATCH) * BATCH
    passes = [x_train[rng.permutation(len(x_train))[:n]] for _ in range(epochs)]
    return np.concatenate([(rng.random(p.shape) < p).astype("float32") for p in passes])


def _mean_se(values):
    values = np.asarray(values, float)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def summarise(rows):
    """Per (study, configuration, estimator, levels): mean ± s.e. over seeds, and the paired
    difference to the 1-level model of the same study, configuration, estimator and seed."""
    groups = {}
    for r in rows:
        groups.setdefault((r["study"], r["config"], r["estimator"], r["levels"]), []).append(r)
    summary = []
    for (study, config, estimator, levels), mine in groups.items():
        mine = sorted(mine, key=lambda r: r["seed"])
        bound = _mean_se([r["test_bound"] for r in mine])
        row = dict(
            study=study,
            config=config,
            estimator=estimator,
            levels=levels,
            hidden_units=mine[0]["hidden_units"],
            K=mine[0]["K"],
            warmup_epochs=mine[0]["warmup_epochs"],
            steps=mine[0]["steps"],
            seeds=len(mine),
            test_bound_mean=round(bound[0], 4),
            test_bound_se=round(bound[1], 4),
            active_units="/".join(
                f"{np.mean([json.loads(r['active_units'])[i] for r in mine]):.1f}"
                for i in range(levels)
            ),
            kl_nats="/".join(
                f"{np.mean([json.loads(r['kl_nats'])[i] for r in mine]):.2f}" for i in range(levels)
            ),
        )
        base = {r["seed"]: r["test_bound"] for r in groups.get((study, config, estimator, 1), [])}
        paired = [r["test_bound"] - base[r["seed"]] for r in mine if r["seed"] in base]
        if levels > 1 and len(paired) == len(mine):
            diff = _mean_se(paired)
            row.update(
                minus_1_level_mean=round(diff[0], 4),
                minus_1_level_se=round(diff[1], 4),
                minus_1_level_per_seed=" ".join(f"{d:+.3f}" for d in paired),
            )
        if study == "estimators" and estimator != "iwae":
            ref = {
                r["seed"]: r["test_bound"] for r in groups.get((study, config, "iwae", levels), [])
            }
            paired = [r["test_bound"] - ref[r["seed"]] for r in mine if r["seed"] in ref]
            if len(paired) == len(mine):
                diff = _mean_se(paired)
                row.update(
                    minus_iwae_mean=round(diff[0], 4),
                    minus_iwae_se=round(diff[1], 4),
                    minus_iwae_per_seed=" ".join(f"{d:+.3f}" for d in paired),
                )
        summary.append(row)
    columns = list(dict.fromkeys(k for row in summary for k in row))
    return [{k: row.get(k, "") for k in columns} for row in summary]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100, help="passes over the training set")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--estimator-levels", type=int, default=2)
    parser.add_argument("--studies", nargs="+", default=["levels", "estimators"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--level-estimators", nargs="+", default=["iwae"], help="estimators of the levels study"
    )
    parser.add_argument("--tag", default="", help="appended to the output files' names")
    parser.add_argument("--small", action="store_true", help="smoke run: 2 epochs, 2 seeds")
    parser.add_argument(
        "--output-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    )
    args = parser.parse_args(argv)
    if args.small:
        args.epochs, args.seeds = 2, 2
    if keras.backend.backend() != "tensorflow":
        sys.exit("hvae_levels.py swaps TensorFlow variables: run with KERAS_BACKEND=tensorflow")
    start_wall, start_cpu = time.perf_counter(), time.process_time()

    x_train, _, x_test, _, data = tge.datasets.load_images(prefer="digits", verbose=False)
    x_test = (np.random.default_rng(0).random(x_test.shape) < x_test).astype("float32")
    seeds = list(range(args.seeds))
    data_by_seed = {s: training_data(x_train, args.epochs, s) for s in seeds}
    steps = args.epochs * (len(x_train) // BATCH)

    plan = []
    if "levels" in args.studies:
        plan += [
            ("levels", c, e, lv)
            for c in args.configs
            for e in args.level_estimators
            for lv in args.levels
        ]
    if "estimators" in args.studies:
        plan += [("estimators", "recommended", e, args.estimator_levels) for e in ESTIMATORS]
    rows = []
    for study, config, estimator, levels in plan:
        kwargs = dict(CONFIGS[config], gradient_estimator=ESTIMATOR_SPECS.get(estimator, estimator))
        if study == "estimators" and ("levels", config, estimator, levels) in plan:
            # The same runs as the levels study's (same model, seeds and data): not repeated.
            rows += [
                dict(r, study="estimators")
                for r in rows
                if (r["study"], r["config"], r["estimator"], r["levels"])
                == ("levels", config, estimator, levels)
            ]
            continue
        runs = Runs(levels, kwargs, seeds, x_train.shape[1], len(x_train) // BATCH)
        warmup_epochs = round(WARMUP_FRACTION[config] * args.epochs)
        for seed in seeds:
            model = runs.train(seed, data_by_seed[seed], warmup_epochs)
            bound = float(np.mean(model.log_likelihood_bound(x_test, TEST_K, seed=seed)))
            active, kls = level_diagnostics(model, x_test, seed=seed)
            rows.append(
                dict(
                    study=study,
                    config=config,
                    estimator=estimator,
                    levels=levels,
                    hidden_units=kwargs["hidden_units"],
                    K=kwargs["importance_sample_size"],
                    warmup_epochs=warmup_epochs,
                    seed=seed,
                    steps=steps,
                    test_bound=round(bound, 4),
                    active_units=json.dumps(active),
                    kl_nats=json.dumps([round(k, 3) for k in kls]),
                )
            )
            print(json.dumps(rows[-1]), flush=True)
    summary = summarise(rows)
    cost = {
        "wall_seconds": round(time.perf_counter() - start_wall, 1),
        "cpu_seconds": round(time.process_time() - start_cpu, 1),
    }
    # The levels study (alone or with the estimators) writes `hvae_levels*`, the estimators
    # study alone `hvae_levels_estimators*`, so the two can run as separate processes.
    name = "hvae_levels" if "levels" in args.studies else "hvae_levels_estimators"
    name += (f"_{args.tag}" if args.tag else "") + ("_small" if args.small else "")
    title = (
        f"Hierarchical VAE: levels, configurations and estimators ({data}, {args.seeds} seeds, "
        f"{steps} Adam steps each)"
    )
    note = json.dumps({"configs": CONFIGS, "warmup_fraction": WARMUP_FRACTION})
    if args.small:
        note = "small smoke test; " + note
    for suffix, table in (("", rows), ("_summary", summary)):
        path = os.path.join(args.output_dir, f"{name}{suffix}.csv")
        _common.write_results(path, table, title=title)
        _add_to_meta(path, note=note, cost=cost)
    _common.print_table(title, [list(r.values()) for r in summary], list(summary[0]))
    return rows, summary


def _add_to_meta(csv_path, **fields):
    path = os.path.splitext(csv_path)[0] + ".meta.json"
    with open(path) as f:
        meta = json.load(f)
    meta.update(fields)
    with open(path, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
