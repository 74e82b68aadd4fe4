"""`tge` on TFP's JAX substrate vs TFP-JAX, NumPyro and a hand-written JAX step: step time.

    python benchmarks/jax_vi.py [--repeats 9] [--steps ...]
    python benchmarks/jax_vi.py --small   # CI smoke test, well under a minute

One optimisation step is `jax.jit`-compiled (loss, gradient, `optax.adam` update,
next key) and called from Python, as a JAX user runs it. Per estimator, four arms
on the same model with the same number of target evaluations per step:

* `tge`: `tge.estimators.get(name).loss(target, q, S, K, seed=key)`, with `q` a
  `tfp.substrates.jax` distribution built from the parameter pytree inside the loss;
* `tfp-jax`: `tfp.vi.monte_carlo_variational_loss` of TFP's JAX substrate with the same
  estimator: REPARAMETERIZATION for reparameterization (`K = 1`) and IWAE (`K > 1`),
  DOUBLY_REPARAMETERIZED with a stopped copy of `q` for STL (`K = 1`) and IWAE-DReG
  (`K > 1`; the target has no parameters of its own, where TFP's DReG is exact);
* `numpyro`: `SVI` with `Trace_ELBO(num_particles=S)` (reparameterization) or
  `RenyiELBO(alpha=0, num_particles=K)` (the importance-weighted bound, IWAE);
  NumPyro has neither STL nor DReG;
* `hand`: the same estimator written directly in `jax.numpy` (the limit).

The ratio columns divide each arm's time by `tfp-jax`'s and by `hand`'s per round
of alternation (median [interquartile range]); the target for `tge` is
`<= 1.05 x tfp-jax`. `tge` and `tfp-jax` are checked to give the same loss value
and gradient on the same key before timing. Problems: Bayesian logistic regression
on synthetic data, 20,000 x 200 (the target dominates), and on scikit-learn's
bundled breast-cancer data, 569 x 31 (overhead shows); `S` or `K` is 8 on the first
and 16 on the second. XLA's own count of the compiled step's floating-point
operations (`jax.jit(step).lower(...).compile().cost_analysis()`) is reported
beside the times. No device-specific flag: the default JAX device is used (a GPU
where there is one).
"""

import argparse
import functools
import json
import os
import sys

import _common
import numpy as np

PROBLEMS = {"synthetic": (20_000, 200, 8), "breast_cancer": (569, 31, 16)}
SMALL_PROBLEMS = {"breast_cancer": (569, 31, 16)}
ESTIMATORS = ("reparameterization", "stl", "iwae", "iwae_dreg")
SMALL_ESTIMATORS = ("reparameterization", "iwae_dreg")
ARMS = ("tge", "tfp-jax", "numpyro", "hand")
HEADER = [
    "problem",
    "N x D",
    "estimator",
    "S",
    "K",
    "arm",
    "us/step",
    "ratio to tfp-jax median [IQR]",
    "ratio to hand median [IQR]",
    "XLA flops/step",
]
LEARNING_RATE = 1e-3


def load_data(problem, size):
    """`(x, y)` float32: features with an intercept column last, and 0/1 labels."""
    num_examples, dim, _ = size
    if problem == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        x = (data.data - data.data.mean(0)) / data.data.std(0)
        x, y = np.c_[x, np.ones(len(x))], data.target
    else:
        rng = np.random.default_rng(0)
        x = np.c_[rng.normal(size=(num_examples, dim - 1)) / np.sqrt(dim), np.ones(num_examples)]
        y = rng.random(num_examples) < 1.0 / (1.0 + np.exp(-x @ rng.normal(size=dim)))
    assert x.shape == (num_examples, dim), x.shape
    return x.astype(np.float32), y.astype(np.float32)


def target_log_prob(z, x, y):
    """`log N(z; 0, I) + Σ_n log Bernoulli(y_n; σ(x_nᵀ z))` for `z` of shape `[n, D]`."""
    import jax
    import jax.numpy as jnp

    logits = jnp.einsum("nf,sf->sn", x, z)
    prior = -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * z.shape[-1] * np.log(2 * np.pi)
    return prior + jnp.sum(y * logits - jax.nn.softplus(logits), axis=-1)


def initial_parameters(dim):
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    return {
        "loc": jnp.asarray(0.1 * rng.normal(size=dim), jnp.float32),
        "raw_scale": jnp.full(dim, np.log(np.expm1(0.1)), jnp.float32),  # scale 0.1
    }


def surrogate(params):
    import jax
    from tensorflow_probability.substrates import jax as tfp

    return tfp.distributions.MultivariateNormalDiag(
        params["loc"], jax.nn.softplus(params["raw_scale"])
    )


def tge_loss(estimator, sample_size, importance_sample_size):
    import tfp_gradest as tge

    est = tge.estimators.get(estimator)

    def loss(params, key, x, y):
        return est.loss(
            functools.partial(target_log_prob, x=x, y=y),
            surrogate(params),
            sample_size=sample_size,
            importance_sample_size=importance_sample_size,
            seed=key,
        )

    return loss


def tfp_loss(estimator, sample_size, importance_sample_size):
    import jax
    from tensorflow_probability.substrates import jax as tfp

    def loss(params, key, x, y):
        options = {"gradient_estimator": tfp.vi.GradientEstimators.REPARAMETERIZATION}
        if estimator in ("stl", "iwae_dreg"):
            options = {
                "gradient_estimator": tfp.vi.GradientEstimators.DOUBLY_REPARAMETERIZED,
                "stopped_surrogate_posterior": surrogate(jax.lax.stop_gradient(params)),
            }
        return tfp.vi.monte_carlo_variational_loss(
            functools.partial(target_log_prob, x=x, y=y),
            surrogate(params),
            sample_size=sample_size,
            importance_sample_size=importance_sample_size,
            seed=key,
            **options,
        )

    return loss


def hand_loss(estimator, sample_size, importance_sample_size):
    """The estimator in plain `jax.numpy`: the same draws' count, no library in between."""
    import jax
    import jax.numpy as jnp

    stop = jax.lax.stop_gradient
    n = sample_size * importance_sample_size

    def loss(params, key, x, y):
        loc, scale = params["loc"], jax.nn.softplus(params["raw_scale"])
        z = loc + scale * jax.random.normal(key, (n, loc.shape[-1]), loc.dtype)
        if estimator in ("stl", "iwae_dreg"):  # path derivative only: q's parameters stopped
            loc, scale = stop(loc), stop(scale)
        log_q = jnp.sum(
            -0.5 * ((z - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * np.log(2 * np.pi), axis=-1
        )
        log_w = (target_log_prob(z, x, y) - log_q).reshape(sample_size, importance_sample_size)
        if importance_sample_size == 1:
            return -jnp.mean(log_w)
        bound = jax.nn.logsumexp(log_w, axis=1) - np.log(importance_sample_size)
        if estimator == "iwae":
            return -jnp.mean(bound)
        weights = stop(jax.nn.softmax(log_w, axis=1))  # Tucker et al. (2019), eq. 7
        dreg = jnp.sum(weights**2 * log_w, axis=1)
        return -jnp.mean(stop(bound) + dreg - stop(dreg))

    return loss


def library_step(loss, optimizer):
    """`step(state, x, y) -> (state, loss)` with `state = (params, opt_state, key)`, jitted."""
    import jax
    import optax

    @jax.jit
    def step(state, x, y):
        params, opt_state, key = state
        key, step_key = jax.random.split(key)
        value, grads = jax.value_and_grad(loss)(params, step_key, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), value

    return step


def numpyro_step(estimator, sample_size, importance_sample_size, params, optimizer, x, y):
    """NumPyro's `SVI.update` for the same model and guide, jitted; `None` without that ELBO."""
    import jax
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, RenyiELBO, Trace_ELBO

    if estimator == "reparameterization":
        elbo = Trace_ELBO(num_particles=sample_size)
    elif estimator == "iwae" and sample_size == 1:
        elbo = RenyiELBO(alpha=0.0, num_particles=importance_sample_size)
    else:
        return None, None

    def model(x, y):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=x @ w).to_event(1), obs=y)

    def guide(x, y):
        loc = numpyro.param("loc", params["loc"])
        raw_scale = numpyro.param("raw_scale", params["raw_scale"])
        numpyro.sample("w", dist.Normal(loc, jax.nn.softplus(raw_scale)).to_event(1))

    svi = SVI(model, guide, optimizer, elbo)
    state = svi.init(jax.random.PRNGKey(0), x, y)
    return jax.jit(svi.update), state


def flops(step, *args):
    """XLA's count of floating-point operations in the compiled `step(*args)`."""
    analysis = step.lower(*args).compile().cost_analysis()
    if isinstance(analysis, list):  # one dict per device program in older JAX
        analysis = analysis[0] if analysis else {}
    value = (analysis or {}).get("flops")
    return f"{value:.3g}" if value is not None else ""


def runner(step, state, x, y, steps):
    """A zero-argument call running `steps` steps from `state`; returns the last loss."""

    def run():
        current = state
        for _ in range(steps):
            current, value = step(current, x, y)
        return value

    return run


def check_same_loss(losses, params, x, y):
    """`tge` and `tfp-jax` give the same value and gradient on the same key."""
    import jax

    key = jax.random.PRNGKey(42)
    (a, ga), (b, gb) = (jax.jit(jax.value_and_grad(f))(params, key, x, y) for f in losses)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    for u, v in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)):
        np.testing.assert_allclose(u, v, rtol=1e-3, atol=1e-3 * float(np.abs(v).max()))


def measure(problem, size, estimator, repeats, steps):
    """The table rows of one (problem, estimator): one per arm."""
    import jax
    import jax.numpy as jnp
    import optax

    num_examples, dim, particles = size
    sample_size, importance_sample_size = (
        (particles, 1) if estimator in ("reparameterization", "stl") else (1, particles)
    )
    x, y = (jnp.asarray(a) for a in load_data(problem, size))
    params = initial_parameters(dim)
    optimizer = optax.adam(LEARNING_RATE)
    state = (params, optimizer.init(params), jax.random.PRNGKey(0))
    losses = {
        "tge": tge_loss(estimator, sample_size, importance_sample_size),
        "tfp-jax": tfp_loss(estimator, sample_size, importance_sample_size),
        "hand": hand_loss(estimator, sample_size, importance_sample_size),
    }
    check_same_loss([losses["tge"], losses["tfp-jax"]], params, x, y)
    steps_of = {name: library_step(loss, optimizer) for name, loss in losses.items()}
    states = dict.fromkeys(losses, state)
    steps_of["numpyro"], states["numpyro"] = numpyro_step(
        estimator, sample_size, importance_sample_size, params, optimizer, x, y
    )
    arms = [a for a in ARMS if steps_of[a] is not None]
    times = _common.interleaved_times(
        [runner(steps_of[a], states[a], x, y, steps) for a in arms], repeats
    )
    times = dict(zip(arms, times / steps))
    rows = []
    for arm in arms:
        rows.append(
            [
                problem,
                f"{num_examples} x {dim}",
                estimator,
                sample_size,
                importance_sample_size,
                arm,
                f"{1e6 * np.median(times[arm]):.1f}",
                _common.ratio_with_spread(times[arm], times["tfp-jax"]),
                _common.ratio_with_spread(times[arm], times["hand"]),
                flops(steps_of[arm], states[arm], x, y),
            ]
        )
        print(" | ".join(str(c) for c in rows[-1]), flush=True)  # progress
    return rows


def _load_average():
    """The 1, 5 and 15 minute load averages, rounded (`None` where the system has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="CI smoke test: breast cancer only")
    parser.add_argument("--problems", nargs="+", default=None, choices=list(PROBLEMS))
    parser.add_argument("--estimators", nargs="+", default=None, choices=ESTIMATORS)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per timed run (default: ~0.2 s of steps)"
    )
    parser.add_argument("--output-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    import jax

    problems = SMALL_PROBLEMS if args.small else PROBLEMS
    if args.problems:
        problems = {p: PROBLEMS[p] for p in args.problems}
    estimators = args.estimators or (SMALL_ESTIMATORS if args.small else ESTIMATORS)
    repeats = args.repeats or (2 if args.small else 11)
    load_start = _load_average()
    rows = []
    for problem, size in problems.items():
        # About the same wall time per run on either problem (the target's cost differs 500x).
        steps = args.steps or (5 if args.small else (20 if size[0] * size[1] > 1e6 else 300))
        for estimator in estimators:
            rows += measure(problem, size, estimator, repeats, steps)
    device = jax.devices()[0]
    title = (
        "tge on TFP's JAX substrate vs tfp-jax, NumPyro and a hand-written step: "
        f"one jitted step (loss, grad, optax.adam), Bayesian logistic regression, "
        f"{repeats} rounds alternated, on {device.platform}"
    )
    _common.print_table(title, rows, HEADER)
    name = "jax_vi_small" if args.small else "jax_vi"
    path = os.path.join(args.output_dir, f"{name}.csv")
    _common.write_results(path, rows, fieldnames=HEADER, title=title)
    meta_path = os.path.join(args.output_dir, f"{name}.meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["machine"]["load_average"] = _load_average()
    meta["machine"]["load_average_at_start"] = load_start
    meta["machine"]["device"] = f"{device.platform}: {device.device_kind}"
    for module in ("optax", "numpyro"):
        meta["versions"][module] = sys.modules[module].__version__
    meta["note"] = (
        f"load average (1, 5, 15 min) {load_start} at start and "
        f"{meta['machine']['load_average']} at the end: other jobs shared the machine; "
        "each ratio is per round of alternation, so a slow spell hits every arm alike"
    )
    if args.small:
        meta["note"] = "small smoke test, not a result; " + meta["note"]
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return rows


if __name__ == "__main__":
    # The timer (`tge.diagnostics`) imports Keras: on JAX's backend, TensorFlow is not needed.
    os.environ.setdefault("KERAS_BACKEND", "jax")
    sys.exit(main() and 0)
