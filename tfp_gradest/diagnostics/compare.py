"""Run estimators side by side on one problem: bias, variance, SNR, step time, work-normalised
variance."""

import statistics
from typing import NamedTuple

import numpy as np

from tfp_gradest.diagnostics import draws
from tfp_gradest.diagnostics.statistics import (
    bias_z_scores,
    gradient_moments,
    merge_moments,
    signal_to_noise_ratio,
)
from tfp_gradest.diagnostics.timing import interleaved_step_seconds
from tfp_gradest.problems.base import Problem, tfp_module

__all__ = [
    "Comparison",
    "EstimatorReport",
    "ReferenceGradient",
    "bias_z_threshold",
    "compare_estimators",
    "reference_gradient",
]

# Estimators whose loss value estimates another objective than the IWAE bound at K > 1
# (the jackknife bound), so a reference for the IWAE bound's gradient does not apply.
_OTHER_OBJECTIVE = frozenset({"jvi", "jvi_dreg"})


class EstimatorReport(NamedTuple):
    """One row of a comparison. Variances are averaged over all gradient elements.

    `mean_snr` is `tge.diagnostics.signal_to_noise_ratio`; `max_abs_bias_z` is
    NaN where no reference gradient is known; `step_seconds` is the median over
    alternated repeats and `step_seconds_low`/`_high` its quartiles.
    """

    estimator: str
    mean_variance: float
    mean_snr: float
    max_abs_bias_z: float
    step_seconds: float
    work_normalized_variance: float  # mean_variance * step_seconds
    step_seconds_low: float = float("nan")
    step_seconds_high: float = float("nan")

    def as_dict(self):
        return self._asdict()


class Comparison(list):
    """The `EstimatorReport`s of `compare_estimators`, with the `reference` they were tested
    against and the `bias_threshold` above which a row's `max_abs_bias_z` flags a bias
    (`bias_z_threshold` of the number of elements tested; NaN without a reference)."""

    reference = None
    bias_threshold = float("nan")
    num_elements = 0

    def biased(self, report):
        """Whether `report`'s bias z-score is above `bias_threshold` (False where not measured)."""
        return bool(report.max_abs_bias_z > self.bias_threshold)


# One false alarm in 1,000 runs of an unbiased estimator, had the z-scores normal tails.
BIAS_FALSE_ALARM_RATE = 1e-3


def bias_z_threshold(num_elements, false_alarm_rate=BIAS_FALSE_ALARM_RATE):
    """The line `max |bias z|` over `num_elements` elements crosses with probability
    `false_alarm_rate` when the estimator is unbiased.

    ```none
    P(max_i |z_i| < m) = (1 - 2 Φ(-m))^d = 1 - false_alarm_rate    (Šidák)
    ```

    for `d = num_elements` independent standard normal z-scores (correlated elements
    only lower the chance), so the line grows with the number of elements tested:
    about 3.3 for one element, 4.2 for 40 and 5.1 for 2,410 at the default rate.

    Why 1e-3 and not 1e-2: each z-score is a mean of a few hundred gradient draws
    divided by its estimated standard error, and the maximum over thousands of
    elements probes its tail at 4-5 standard deviations, where skewed or spiky
    gradients (a ReLU unit active in a few draws) are far from normal: on
    `bnn_layers` (`python -m tfp_gradest compare --problem bnn_layers`, a few seeds)
    unbiased layer estimators cross the 1% line far more often than normal tails
    allow, while their draws are independent, so it is the tails, not the standard
    error. A flag just
    above the line on such a problem means "draw more (`--draws`) and look again";
    a real bias (IWAE-STL's on the toy Gaussian) scores far above it.

    Args:
      num_elements: Python `int`, gradient elements whose z-scores are maximised over.
      false_alarm_rate: Python `float` in (0, 1). Default value: `1e-3`.

    Returns:
      A Python `float`.
    """
    if num_elements < 1:
        return float("nan")
    tail = (1.0 - (1.0 - false_alarm_rate) ** (1.0 / num_elements)) / 2.0
    return statistics.NormalDist().inv_cdf(1.0 - tail)


class ReferenceGradient(NamedTuple):
    """The gradient biases are measured against: exact, or a Monte Carlo mean with its error."""

    gradients: list  # numpy arrays, one per variable
    standard_errors: list  # numpy arrays (zeros when exact)
    description: str


def reference_gradient(
    problem,
    importance_sample_size=1,
    num_draws=10000,
    seed=12345,
    sample_size=1,
    sampler=None,
    backend="tensorflow",
):
    """The true gradient of the objective the losses' values estimate, or `None`.

    At `K = 1` a problem with `exact_objective()` gives it in closed form. Otherwise
    the mean of about `num_draws` draws (seed `seed`, independent of the compared
    draws) of the problem's unbiased reference estimator
    (`problem.reference_estimator_for(K)`: e.g. IWAE-DReG for the IWAE bound), with
    its standard error, which `bias_z_scores` adds in quadrature. `num_draws=0` or
    no reference estimator that applies: `None`.

    Args:
      problem: a `tge.problems.Problem`.
      importance_sample_size: Python `int`, `K`.
      num_draws: Python `int`, reference draws (rounded up to whole batches).
      seed: PRNG seed of the reference draws.
      sample_size: Python `int`, `S` of each reference draw.
      sampler: optional `(gradient_sampler, batch_size)` of the reference estimator
        at these sizes, already compiled, run `ceil(num_draws / batch_size)` times.
      backend: the TFP substrate, `"tensorflow"` or `"jax"` (`problem.substrates`).
    """
    problem = _as_problem(problem)
    problem.check_substrate(backend)
    if importance_sample_size == 1:
        gradients = _exact_gradients(problem, backend)
        if gradients is not None:
            return ReferenceGradient(
                gradients, [np.zeros_like(g) for g in gradients], "exact (closed-form ELBO)"
            )
    name = problem.reference_estimator_for(importance_sample_size)
    if not num_draws or name is None:
        return None
    if sampler is None:
        try:
            problem.validate_estimator(name, sample_size, importance_sample_size)
        except (TypeError, ValueError):
            return None
        batch = min(num_draws, 1000)
        run = _sampler(problem, name, sample_size, importance_sample_size, backend)
    else:
        run, batch = sampler
    num_batches = -(-num_draws // batch)
    moments = None
    seeds = _draw_seeds(seed, num_batches * batch, backend)
    for index in range(num_batches):
        batch_moments = [
            gradient_moments(d) for d in run(seeds[index * batch : (index + 1) * batch])
        ]
        moments = (
            batch_moments if moments is None else list(map(merge_moments, moments, batch_moments))
        )
    n = num_batches * batch
    objective = (
        "ELBO" if importance_sample_size == 1 else f"IWAE bound (K={importance_sample_size})"
    )
    return ReferenceGradient(
        [m.mean for m in moments],
        [m.standard_error for m in moments],
        f"{objective} gradient = mean of {n} {name} draws (seed {seed})",
    )


def compare_estimators(
    problem,
    estimators,
    sample_size=1,
    importance_sample_size=1,
    num_draws=1000,
    seed=0,
    time_steps=True,
    progress=None,
    reference="auto",
    timing_repeats=7,
    reference_draws=None,
    backend="tensorflow",
    noise="iid",
):
    """Measures each estimator's gradient on `problem` at its current parameters.

    On `backend="jax"`, each estimator's draws are one jitted `jax.lax.map` over PRNG
    keys of `jax.grad` of its loss with respect to the problem's `parameters()`, the
    surrogate built by `problem.build_surrogate` from TFP's JAX substrate; the same
    statistics, reference and timing follow.

    Args:
      problem: a `tge.problems.Problem` (or any object with `target_log_prob`,
        `surrogate`, `variables` and optionally `exact_objective()`).
      estimators: names (or, for surrogate problems, `GradientEstimator`s).
      sample_size, importance_sample_size: Python `int`s, passed to `loss`.
      num_draws: Python `int`, gradient draws per estimator.
      seed: PRNG seed; every estimator sees the same seed.
      time_steps: time each estimator's gradient, all of them in alternation
        (`interleaved_step_seconds`): the compiled loop that drew the
        `num_draws` gradients runs again `timing_repeats` times per estimator,
        and `step_seconds` is its median time divided by `num_draws` (seconds
        per gradient, with no compilation added).
      progress: optional callable `(index, total, name)` called before each estimator.
      reference: a `ReferenceGradient`, `None` (no bias column), or `"auto"`:
        `reference_gradient(problem, importance_sample_size, reference_draws)`,
        re-using the compiled draws of the reference estimator if it is compared.
      timing_repeats: Python `int`, rounds of alternated timing.
      reference_draws: Python `int`, draws of a Monte Carlo reference for
        `reference="auto"`. Default value: `None`, meaning `10 * num_draws`.
      backend: the TFP substrate the gradients are drawn on, `"tensorflow"` or `"jax"`
        (one of `problem.substrates`, else `ValueError`). Default value: `"tensorflow"`.
      noise: the compared estimators' base noise, `"iid"` or `"rqmc"` (as
        `GradientEstimator.loss` takes it; the reference gradient is drawn with `"iid"`
        unless the reference estimator is compared). Default value: `"iid"`.

    Returns:
      A `Comparison`: a list of `EstimatorReport`, in the order given, whose
      attribute `reference` is the `ReferenceGradient` used (or `None`) and
      `bias_threshold` the `bias_z_threshold` of the number of elements tested.
    """
    problem = _as_problem(problem)
    problem.check_substrate(backend)
    seeds = _draw_seeds(seed, num_draws, backend)
    rows, samplers = [], {}
    for index, identifier in enumerate(estimators):
        label = identifier if isinstance(identifier, str) else repr(identifier)
        if progress is not None:
            progress(index, len(estimators), label)
        samplers[label] = _sampler(
            problem, identifier, sample_size, importance_sample_size, backend, noise
        )
        moments = [gradient_moments(d) for d in samplers[label](seeds)]
        variance = float(np.mean(np.concatenate([m.variance.ravel() for m in moments])))
        rows.append((label, moments, variance, signal_to_noise_ratio(moments)))
    if isinstance(reference, str):
        name = problem.reference_estimator_for(importance_sample_size)
        sampler = (samplers[name], num_draws) if name in samplers else None
        reference = reference_gradient(
            problem,
            importance_sample_size,
            10 * num_draws if reference_draws is None else reference_draws,
            seed=seed + 12345,  # independent of the compared draws
            sample_size=sample_size,
            sampler=sampler,
            backend=backend,
        )
    if time_steps:
        times = interleaved_step_seconds(list(samplers.values()), (seeds,), timing_repeats, 1)
        times = [[t / num_draws for t in time] for time in times]
    else:
        times = [(float("nan"),) * 3] * len(rows)
    reports = Comparison()
    reports.reference = reference
    if reference is not None:
        reports.num_elements = int(sum(np.size(g) for g in reference.gradients))
        reports.bias_threshold = bias_z_threshold(reports.num_elements)
    for (label, moments, variance, snr), time in zip(rows, times):
        bias = float("nan")
        if reference is not None and label not in _OTHER_OBJECTIVE:
            bias = _max_abs_bias_z(moments, reference)
        reports.append(
            EstimatorReport(label, variance, snr, bias, time[0], variance * time[0], *time[1:])
        )
    return reports


def _draw_seeds(seed, num_draws, backend):
    """`num_draws` independent seeds split from `seed`: `[num_draws, 2]` stateless TensorFlow
    seeds, or `num_draws` JAX PRNG keys."""
    if backend == "jax":
        import jax

        return jax.random.split(jax.random.PRNGKey(seed), num_draws)
    return draws.draw_seeds(seed, num_draws)


def _sampler(problem, estimator, sample_size, importance_sample_size, backend, noise="iid"):
    """The compiled draw loop of `estimator` on `problem`: `seeds -> [gradient draws]`, one
    array per variable (leading axis: draws)."""
    # `noise` only when asked for: a problem of one's own may not take it.
    options = {} if noise == "iid" else {"noise": noise}
    if backend == "jax":
        if problem.state_variables_for(estimator) is not None:
            return _jax_model_sampler(
                problem, estimator, sample_size, importance_sample_size, **options
            )
        return _jax_sampler(problem, estimator, sample_size, importance_sample_size, noise)
    return draws.gradient_sampler(
        problem.loss_fn(estimator, sample_size, importance_sample_size, **options),
        problem.variables_for(estimator),
    )


def _jax_sampler(problem, estimator, sample_size, importance_sample_size, noise="iid"):
    import jax

    from tfp_gradest import estimators

    estimator = estimators.get(estimator)
    tfp = tfp_module("jax")
    target = problem.target_log_prob_fn("jax")
    parameters = jax.tree_util.tree_map(jax.numpy.asarray, problem.parameters())

    def loss(parameters, key):
        surrogate = problem.build_surrogate(parameters, tfp)
        return estimator.loss(
            target, surrogate, sample_size, importance_sample_size, seed=key, noise=noise
        )

    gradient = jax.grad(loss)
    run = jax.jit(lambda parameters, keys: jax.lax.map(lambda k: gradient(parameters, k), keys))
    return lambda keys: jax.tree_util.tree_leaves(run(parameters, keys))


def _jax_model_sampler(problem, estimator, sample_size, importance_sample_size, **options):
    """The draws of a Keras model's loss on Keras's JAX backend: one jitted `lax.scan` over the
    keys (one draw each) carrying the model's `SeedGenerator` states, as
    `model_gradient_draws` draws them; the states are written back after each call."""
    import jax

    from tfp_gradest._backend import stateless

    loss = problem.loss_fn(estimator, sample_size, importance_sample_size, **options)
    variables = list(problem.variables_for(estimator))
    differentiated = {id(v) for v in variables}
    state = [v for v in problem.state_variables_for(estimator) if id(v) not in differentiated]
    gradient = jax.grad(stateless(lambda: loss(None), variables, state), has_aux=True)

    def draw(values, state_values, keys):
        def body(state_values, _):
            gradients, state_values = gradient(values, state_values)
            return state_values, gradients

        return jax.lax.scan(body, state_values, keys)

    run = jax.jit(draw)

    def sampler(keys):
        new_state, gradients = run([v.value for v in variables], [v.value for v in state], keys)
        for variable, value in zip(state, new_state):
            variable.assign(value)
        return gradients

    return sampler


def _exact_gradients(problem, backend):
    """The closed-form ELBO's gradient (numpy arrays, one per variable), or `None`."""
    if backend == "jax":
        import jax

        objective = problem.exact_objective_fn("jax")
        if objective is None:
            return None
        parameters = jax.tree_util.tree_map(jax.numpy.asarray, problem.parameters())
        gradients = jax.grad(lambda p: -jax.numpy.sum(objective(p)))(parameters)
        return [np.asarray(g) for g in jax.tree_util.tree_leaves(gradients)]
    import tensorflow as tf

    objective = problem.exact_objective()
    if objective is None:
        return None
    with tf.GradientTape() as tape:
        loss = -tf.reduce_sum(problem.exact_objective())
    return [g.numpy() for g in tape.gradient(loss, problem.variables)]


def _max_abs_bias_z(moments, reference):
    return float(
        max(
            np.max(np.abs(bias_z_scores(m, r, e)))
            for m, r, e in zip(moments, reference.gradients, reference.standard_errors)
        )
    )


def _as_problem(problem):
    return problem if isinstance(problem, Problem) else _DuckTypedProblem(problem)


class _DuckTypedProblem(Problem):
    """An object with `target_log_prob`, `surrogate` and `variables`, given the
    `Problem` methods."""

    def __init__(self, problem):
        self._problem = problem
        self.surrogate = problem.surrogate

    @property
    def variables(self):
        return list(self._problem.variables)

    def target_log_prob(self, z):
        return self._problem.target_log_prob(z)

    def exact_objective(self):
        exact = getattr(self._problem, "exact_objective", None)
        return None if exact is None else exact()
