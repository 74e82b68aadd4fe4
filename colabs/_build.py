"""Writes the notebooks in this folder from the cell sources below (run: python colabs/_build.py).

Keeping the sources here makes the notebooks reviewable as code. Each notebook
has a `parameters` cell (papermill's convention): `SMALL = True` is what CI
runs; `FIGURE_DIR` set to a folder saves the figures there as PNG.
"""

import os
import re

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))


def _package_url():
    """The package's home, read from `tfp_gradest/__init__.py` (`__url__`; setup.py reads it
    too)."""
    init = os.path.join(HERE, os.pardir, "tfp_gradest", "__init__.py")
    with open(init, encoding="utf-8") as f:
        return re.search(r'^__url__ = "([^"]+)"', f.read(), re.MULTILINE).group(1)


INSTALL = f"""\
# TensorFlow's C++ log lines (e.g. a `cuInit` error without a GPU) are harmless; this hides
# them. It must be set before TensorFlow is imported.
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# In Colab: install tfp_gradest from its repository (skipped when it is importable already).
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("tfp_gradest") is None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         "tfp_gradest[extras] @ git+{_package_url()}"],
        check=True,
    )"""

# Papermill-style parameters: CI runs every notebook with SMALL = True.
PARAMETERS = """SMALL = False      # CI runs the notebook with SMALL = True
FIGURE_DIR = None  # a folder to save the figures in, or None"""

IMPORTS = """import os

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge

tfd, tfb = tfp.distributions, tfp.bijectors


def save(figure, name):
    if FIGURE_DIR:
        os.makedirs(FIGURE_DIR, exist_ok=True)
        figure.savefig(os.path.join(FIGURE_DIR, name), dpi=110, bbox_inches="tight")"""


def setup_cells(sizes):
    """The cells every notebook starts with after its title: install, the `parameters` cell,
    the imports and the notebook's `sizes` (their values at SMALL and full size)."""
    return [("code", INSTALL), ("params", PARAMETERS), ("code", IMPORTS + "\n\n" + sizes)]


NOTEBOOKS = {}

NOTEBOOKS["quickstart"] = [
    (
        "md",
        """# tfp_gradest quickstart

`tge.vi.fit_surrogate_posterior` is `tfp.vi.fit_surrogate_posterior` with one more
keyword, `gradient_estimator`. We fit a Bayesian logistic regression (scikit-learn's
breast-cancer data) with three estimators, then show STL *sticking the landing*: at
the optimum its gradient variance goes to zero while the reparameterisation
gradient's does not (Roeder et al., 2017).""",
    ),
    *setup_cells(
        """NUM_STEPS = 100 if SMALL else 1500
NUM_DRAWS = 100 if SMALL else 1000"""
    ),
    ("md", "## Three estimators on a real model"),
    (
        "code",
        """traces = {}
for name in ["reparameterization", "stl", "score_function"]:
    problem = tge.problems.get("logistic_regression")  # fresh variables for each fit
    traces[name] = tge.vi.fit_surrogate_posterior(
        problem.target_log_prob, problem.surrogate,
        optimizer=keras.optimizers.Adam(0.02), num_steps=NUM_STEPS,
        gradient_estimator=name, sample_size=4, seed=0,
        jit_compile=not SMALL,  # CI: skip XLA compiles
    ).numpy()

figure, ax = plt.subplots(figsize=(6, 3.5))
window = max(NUM_STEPS // 30, 1)
for name, trace in traces.items():
    smooth = np.convolve(trace, np.ones(window) / window, mode="valid")
    ax.plot(smooth, label=name)
ax.set_yscale("log"); ax.set_xlabel("step"); ax.set_ylabel("negative ELBO (smoothed)")
ax.set_title("Bayesian logistic regression, breast-cancer data"); ax.legend()
save(figure, "quickstart_traces.png")""",
    ),
    (
        "md",
        """## Sticking the landing

Bayesian linear regression with a full-rank Normal surrogate: the exact posterior is
in the family, so at the optimum `log p(z) - log q(z)` is constant and STL's
gradient is exactly zero. We fit with STL and measure both estimators' gradient
variance along the way.""",
    ),
    (
        "code",
        """problem = tge.problems.get("linear_regression")
estimators = {name: tge.estimators.get(name) for name in ["reparameterization", "stl"]}
# One compiled sampler per estimator, built once and called at every checkpoint (it reads
# the surrogate's variables as they are then); the same seeds each time.
samplers = {
    name: tge.diagnostics.gradient_sampler(
        lambda s, est=est: est.loss(problem.target_log_prob, problem.surrogate, seed=s),
        problem.variables, jit_compile=not SMALL)
    for name, est in estimators.items()}
seeds = tge.diagnostics.draw_seeds(1, NUM_DRAWS)
checkpoints, variance = [], {name: [] for name in estimators}
for chunk in range(6):
    if chunk:
        tge.vi.fit_surrogate_posterior(
            problem.target_log_prob, problem.surrogate,
            keras.optimizers.Adam(0.05 / 4**(chunk - 1)),
            NUM_STEPS // 3, gradient_estimator="stl", jit_compile=not SMALL, seed=chunk)
    checkpoints.append(chunk * (NUM_STEPS // 3))
    for name, sampler in samplers.items():
        draws = sampler(seeds)
        variance[name].append(np.mean([d.numpy().var(0).mean() for d in draws]))

figure, ax = plt.subplots(figsize=(6, 3.5))
for name, values in variance.items():
    ax.semilogy(checkpoints, values, "o-", label=name)
ax.set_xlabel("STL fitting steps"); ax.set_ylabel("mean gradient variance")
ax.set_title(f"KL(q || posterior) at the end: {float(problem.kl_to_posterior()):.1e}")
ax.legend()
save(figure, "quickstart_stl_landing.png")""",
    ),
]

NOTEBOOKS["dreg_toy_gaussian"] = [
    (
        "md",
        """# DReG on the toy Gaussian (Tucker et al., 2019, Figure 1)

`z ~ N(μ, I)`, `x | z ~ N(z, I)` in 20 dimensions, `q(z|x) = N(Ax + b, 2/3 I)` near
the IWAE optimum. As the number of importance samples `K` grows, the IWAE
gradient's signal-to-noise ratio for the inference network falls like `K^-1/2`
(Rainforth et al., 2018), while IWAE-DReG's rises like `K^1/2`. IWAE-STL has low
variance but is biased for `K > 1`.""",
    ),
    *setup_cells(
        """KS = [2, 8, 32] if SMALL else [1, 3, 10, 30, 100, 300]
NUM_DRAWS = 300 if SMALL else 4000"""
    ),
    (
        "code",
        """problem = tge.problems.get("toy_gaussian", dtype=tf.float64)
names = ["iwae", "iwae_stl", "iwae_dreg"]
stats = {name: {"snr": [], "variance": [], "bias2": []} for name in names}
for k in KS:
    draws = {}
    for name in names:
        est = tge.estimators.get(name)
        grads = tge.diagnostics.gradient_draws(
            lambda s, est=est, k=k: est.loss(
                problem.target_log_prob, problem.surrogate, 1, k, seed=s),
            problem.variables, NUM_DRAWS, seed=k)
        draws[name] = np.concatenate([g.numpy().reshape(NUM_DRAWS, -1) for g in grads], 1)
    reference = draws["iwae_dreg"].mean(0)  # unbiased and the least noisy
    for name, d in draws.items():
        mean, var = d.mean(0), d.var(0, ddof=1)
        stats[name]["snr"].append(np.sqrt(np.mean(mean**2) / np.mean(var)))
        stats[name]["variance"].append(var.mean())
        stats[name]["bias2"].append(np.mean((mean - reference) ** 2))

figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for name in names:
    for ax, key in zip(axes, ["snr", "bias2", "variance"]):
        ax.loglog(KS, stats[name][key], "o-", label=name)
titles = ["SNR (inference network)", "(mean − IWAE-DReG mean)²", "variance"]
for ax, title in zip(axes, titles):
    ax.set_xlabel("K"); ax.set_title(title)
axes[0].legend()
save(figure, "dreg_toy_gaussian.png")""",
    ),
    (
        "md",
        """The middle panel is IWAE-STL's bias (it does not vanish as `K` grows); for
IWAE, which is unbiased, it is only the Monte Carlo error of its noisy mean.
IWAE's apparent SNR at large `K` is limited by how few draws can resolve a
tiny mean; `benchmarks/snr_scaling.py` runs 20,000 draws per cell and fits the
slopes (+0.48 for IWAE-DReG, −0.50 for IWAE).""",
    ),
]

NOTEBOOKS["vae_iwae_dreg"] = [
    (
        "md",
        """# A VAE trained with `model.fit`: IWAE vs IWAE-DReG vs RWS-DReG

`tge.models.VariationalAutoencoder` takes an encoder, a decoder and an estimator
name. `tge.callbacks.GradientVarianceMonitor` records the gradient variance of each
sub-network on a fixed probe batch every epoch; DReG's encoder gradients are far
less noisy at the same `K`.""",
    ),
    *setup_cells(
        """EPOCHS = 1 if SMALL else 20
K = 8 if SMALL else 32
NUM_TRAIN = 400 if SMALL else None
NUM_DRAWS = 4 if SMALL else 16"""
    ),
    (
        "code",
        """x_train, _, x_test, _, data_name = tge.datasets.load_images(num_train=NUM_TRAIN)
x_train, x_test = (x_train > 0.5).astype("float32"), (x_test > 0.5).astype("float32")
pixels = x_train.shape[1]
print(x_train.shape, x_test.shape)""",
    ),
    (
        "code",
        """def make_vae(estimator):
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.layers.Dense(128, activation="tanh", name="encoder_hidden"),
                                keras.layers.Dense(2 * 16, name="encoder_output")])
    decoder = keras.Sequential([keras.layers.Dense(128, activation="tanh", name="decoder_hidden"),
                                keras.layers.Dense(pixels, name="decoder_output")])
    return tge.models.VariationalAutoencoder(
        encoder, decoder, latent_dim=16, gradient_estimator=estimator,
        importance_sample_size=K, seed=0)

monitors, test_bounds = {}, {}
for estimator in ["iwae", "iwae_dreg", "rws_dreg"]:
    model = make_vae(estimator)
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
    monitors[estimator] = tge.callbacks.GradientVarianceMonitor(x_train[:128], num_draws=NUM_DRAWS)
    model.fit(x_train, epochs=EPOCHS, batch_size=100, verbose=0, callbacks=[monitors[estimator]])
    test_bounds[estimator] = -model.evaluate(x_test, verbose=0)
    print(f"{estimator:>10}: test IWAE bound (K={K}) {test_bounds[estimator]:.2f} nats")""",
    ),
    (
        "code",
        """figure, axes = plt.subplots(1, 3, figsize=(14, 3.6))
for ax, group in zip(axes[:2], ["encoder_hidden", "decoder_hidden"]):
    tge.callbacks.plot_gradient_variance(monitors, groups=[group], ax=ax)
    ax.set_title(f"{group} gradient variance")
for i, (name, bound) in enumerate(test_bounds.items()):
    axes[2].plot(i, bound, "o", color=f"C{i}", markersize=10)
axes[2].set_xticks(range(len(test_bounds)), list(test_bounds))
axes[2].set_ylabel("nats (higher is better)")
axes[2].set_title(f"test IWAE bound, {data_name}")
save(figure, "vae_iwae_dreg.png")""",
    ),
]

NOTEBOOKS["bnn_r2g2"] = [
    (
        "md",
        """# Bayesian neural networks with R2-G2 (Lam et al., 2024)

The same Bayesian MLP trained with the reparameterisation trick (RT), the local
reparameterisation trick (LRT), Flipout and R2-G2. R2-G2 has RT's forward pass and
a Rao-Blackwellised backward pass: it conditions the weight noise on the
pre-activations it produced. We record per-layer gradient variance of the
posterior-scale parameters every epoch (the paper's Figures 1 and 3), the
accuracy, and a Bayesian CNN's deepest-layer variance (Figures 4–5).""",
    ),
    *setup_cells(
        """EPOCHS = 1 if SMALL else 15
NUM_TRAIN = 300 if SMALL else None
NUM_DRAWS = 4 if SMALL else 16  # gradient draws per monitored epoch"""
    ),
    (
        "code",
        """\
x_train, y_train, x_test, y_test, data_name = tge.datasets.load_images(num_train=NUM_TRAIN)
n, pixels = x_train.shape
probe = (x_train[:256], y_train[:256])""",
    ),
    (
        "code",
        """def mlp(estimator, seed=0):
    \"\"\"estimator=None passes nothing: the layers' default.\"\"\"
    keras.utils.set_random_seed(seed)
    model = tge.layers.bayesian_mlp((pixels,), [200, 10], gradient_estimator=estimator,
                                    seed=seed + 1, names=["bottom", "top"], kl_weight=1 / n)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=not SMALL)  # CI: skip XLA compiles
    return model

monitors, accuracy = {}, {}
for estimator in ["reparameterization", "local_reparameterization", "flipout", "r2g2"]:
    model = mlp(estimator)
    monitors[estimator] = tge.callbacks.GradientVarianceMonitor(
        probe, num_draws=NUM_DRAWS, group_by="variable")
    model.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=0,
              callbacks=[monitors[estimator]])
    for layer in model.layers:
        layer.inference_mode = "mean"
    accuracy[estimator] = model.evaluate(x_test, y_test, verbose=0)[1]
    print(f"{estimator:>25}: test accuracy {accuracy[estimator]:.3f}")""",
    ),
    (
        "code",
        """figure, axes = plt.subplots(1, 3, figsize=(15, 3.8))
for ax, layer in zip(axes, ["top", "bottom"]):
    tge.callbacks.plot_gradient_variance(monitors, groups=[f"{layer}/kernel_scale_raw"], ax=ax)
    ax.set_title(f"{layer} layer: posterior-scale gradient variance")
axes[2].bar(range(4), list(accuracy.values()), color=["C0", "C1", "C2", "C3"])
axes[2].set_xticks(range(4), ["RT", "LRT", "Flipout", "R2-G2"])
axes[2].set_ylim(min(accuracy.values()) - 0.05, 1.0)
axes[2].set_title(f"test accuracy, {data_name}")
save(figure, "bnn_r2g2_mlp.png")""",
    ),
    (
        "md",
        """## Held-out results over seeds

One run says little: here every estimator, and the layers' default (nothing passed),
trains from several seeds, and we report the test log-likelihood of the posterior
predictive, `log (1/16) Σ_s p(y | x, w_s)` over 16 weight draws, and its accuracy, as
mean ± standard error over seeds. Where the default resolves to one fixed choice on
every layer (here LRT on both dense layers) it is the same model and compiled program as
that choice, so it gets that choice's numbers rather than a second identical run.
`benchmarks/end_to_end.py` runs the same comparison at more epochs, adds an equal
wall-clock budget (the slowest estimator's epochs; faster ones train on for the same
seconds) and a Bayesian CNN, and the README reports its numbers.""",
    ),
    (
        "code",
        """SEEDS = range(2 if SMALL else 5)
ARMS = {"RT": "reparameterization", "LRT": "local_reparameterization",
        "Flipout": "flipout", "R2-G2": "r2g2", "default": None}

def predictive(model, x, y, draws=16):
    # Each call draws fresh weights (inference_mode="sample").
    log_probs = tf.stack([tf.nn.log_softmax(model(x)) for _ in range(draws)])
    log_predictive = (tf.reduce_logsumexp(log_probs, 0) - np.log(draws)).numpy()
    return log_predictive[np.arange(len(y)), y].mean(), np.mean(log_predictive.argmax(1) == y)

results = {name: [] for name in ARMS}
for seed in SEEDS:
    for name, estimator in ARMS.items():
        model = mlp(estimator, seed)
        if estimator is None:  # what the default resolved to, per layer
            default_choice = [layer.resolved_gradient_estimator for layer in model.layers]
            same = [k for k, v in ARMS.items() if v is not None and {v} == set(default_choice)]
            if same:  # the same model, program and seed as that arm: the same numbers
                results[name].append(results[same[0]][-1])
                continue
        model.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=0)
        results[name].append(predictive(model, x_test, y_test))
print("the layers' default resolved to:", default_choice)
for name, runs in results.items():
    runs = np.array(runs)
    mean, se = runs.mean(0), runs.std(0, ddof=1) / np.sqrt(len(runs))
    print(f"{name:>8}: test log-lik {mean[0]:.4f} ± {se[0]:.4f}   "
          f"accuracy {mean[1]:.4f} ± {se[1]:.4f}")""",
    ),
    (
        "code",
        """figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, column, label in zip(axes, [0, 1], ["test log-likelihood (nats)", "test accuracy"]):
    values = [np.array(results[name])[:, column] for name in ARMS]
    means = [v.mean() for v in values]
    errors = [v.std(ddof=1) / np.sqrt(len(v)) for v in values]
    ax.bar(range(len(ARMS)), means, yerr=errors, capsize=4,
           color=[f"C{i}" for i in range(len(ARMS))])
    ax.set_xticks(range(len(ARMS)), list(ARMS))
    low = min(m - e for m, e in zip(means, errors))
    high = max(m + e for m, e in zip(means, errors))
    ax.set_ylim(low - 0.5 * (high - low + 1e-3), high + 0.2 * (high - low + 1e-3))
    ax.set_title(f"{label}: mean ± SE over {len(SEEDS)} seeds, {data_name}")
save(figure, "bnn_r2g2_seeds.png")""",
    ),
    (
        "md",
        """## A Bayesian CNN

R2-G2 for convolutions conditions through the im2col patches; where a layer has at
least as many output positions as weights per filter the solve is skipped
(R2-G2 = RT, free). The gain is in deep layers with small outputs.""",
    ),
    (
        "code",
        """side = int(np.sqrt(pixels))
images = x_train.reshape(-1, side, side, 1)

def cnn(estimator):
    keras.utils.set_random_seed(0)
    conv = dict(gradient_estimator=estimator, kl_weight=1 / n, activation="relu")
    model = keras.Sequential([
        keras.Input((side, side, 1)),
        tge.layers.Conv2DReparameterization(8, 3, seed=1, name="conv_first", **conv),
        tge.layers.Conv2DReparameterization(16, 3, strides=2, seed=2, name="conv_deep", **conv),
        keras.layers.Flatten(),
        tge.layers.DenseReparameterization(10, gradient_estimator=estimator, kl_weight=1 / n,
                                           seed=3, name="top"),
    ])
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=not SMALL)  # CI: skip XLA compiles
    return model

cnn_monitors = {}
for estimator in ["reparameterization", "r2g2"] + ([] if SMALL else ["flipout"]):
    cnn_monitors[estimator] = tge.callbacks.GradientVarianceMonitor(
        (images[:128], y_train[:128]), num_draws=NUM_DRAWS, group_by="variable")
    cnn(estimator).fit(images, y_train, epochs=EPOCHS, batch_size=64, verbose=0,
                       callbacks=[cnn_monitors[estimator]])

figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, layer in zip(axes, ["conv_first", "conv_deep"]):
    tge.callbacks.plot_gradient_variance(cnn_monitors, groups=[f"{layer}/kernel_scale_raw"], ax=ax)
    ax.set_title(f"{layer}: posterior-scale gradient variance")
save(figure, "bnn_r2g2_cnn.png")""",
    ),
]

NOTEBOOKS["isag_gmm"] = [
    (
        "md",
        """# Re-using gradients in minibatched VI: I-SAG (Sakaya & Klami)

A Gaussian mixture (unit-variance components, equal weights, unknown means) fitted by
minibatched VI to a PCA projection of the digits. Plain SGD, SAG, and I-SAG, which
re-uses a batch's stored samples and target gradients with probability `ρ`,
re-weighted to the current parameters. `benchmarks/isag_gmm.py` runs the full
experiment (50 initialisations, steps and seconds to a target ELBO).""",
    ),
    *setup_cells(
        """NUM_INITS = 1 if SMALL else 10
NUM_STEPS = 200 if SMALL else 400"""
    ),
    (
        "code",
        """# The model is a built-in problem, shared with benchmarks/isag_gmm.py: 8 components,
# 4 principal components, 20 minibatches; `batch_target_log_prob(θ, b)` is batch b's
# share of log p(x, θ) (see tge.problems.GaussianMixture).
problem = tge.problems.get("gaussian_mixture")
print(problem.x.shape, "points in", problem.num_batches, "batches")
elbo_noise = tf.random.stateless_normal([256, int(problem.loc.shape[0])], [0, 1])""",
    ),
    (
        "code",
        """methods = {
    "SGD": tge.reuse.ISAG(rho=0.0, alpha=0.0),
    "SAG": tge.reuse.ISAG(rho=0.0, alpha=0.9),
    "I-SAG per-element": tge.reuse.ISAG(rho=0.5, alpha=0.9, weighting="per_element"),
}
rng = np.random.default_rng(0)
traces, final = {m: [] for m in methods}, {m: [] for m in methods}
for init in range(NUM_INITS):
    start = rng.normal(size=int(problem.loc.shape[0])).astype("float32")
    for name, isag in methods.items():
        problem.restart(start)  # every method starts from the same point
        losses = tge.reuse.fit(
            problem.batch_target_log_prob, problem.surrogate, keras.optimizers.SGD(1e-3),
            NUM_STEPS, problem.num_batches, gradient_reuse=isag, sample_size=2,
            jit_compile=True, seed=init)
        traces[name].append(losses.numpy())
        final[name].append(float(problem.elbo(elbo_noise)))
    print(f"init {init}: " + ", ".join(f"{m} {final[m][-1]:.0f}" for m in methods))""",
    ),
    (
        "code",
        """figure, axes = plt.subplots(1, 2, figsize=(12, 3.8))
window = 20
for name, runs in traces.items():
    median = np.median(np.array(runs), 0)
    axes[0].plot(np.convolve(median, np.ones(window) / window, mode="valid"), label=name)
axes[0].set_yscale("log"); axes[0].set_xlabel("step")
axes[0].set_ylabel("minibatch negative ELBO (median, smoothed)"); axes[0].legend()
axes[1].boxplot(list(final.values()), tick_labels=list(final))
axes[1].set_ylabel("full-data ELBO after the fit")
save(figure, "isag_gmm.png")""",
    ),
]


def make_notebook(cells):
    """The notebook (no outputs) for a list of `(kind, source)` cells."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    for index, (kind, source) in enumerate(cells):
        if kind == "md":
            cell = nbformat.v4.new_markdown_cell(source)
        else:
            cell = nbformat.v4.new_code_cell(source)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
        cell.id = f"cell-{index}"  # stable ids: rebuilding changes only what changed
        notebook.cells.append(cell)
    return notebook


def build():
    for name, cells in NOTEBOOKS.items():
        nbformat.write(make_notebook(cells), os.path.join(HERE, f"{name}.ipynb"))


if __name__ == "__main__":
    build()
