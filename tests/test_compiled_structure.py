"""The compiled step's structure: what `tge` adds to `tfp.vi`'s program, pinned by op counts.

Speed is measured by the benchmarks (benchmarks/vi_overhead.py, benchmarks/vi_structured.py);
these tests pin the structural causes found there, which no timing test could
(no timing assertions here): no conditional in the traced graph, and the zero-density
mask computed once per step, not inside every parameter's gradient.
"""

import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge

tfd = tfp.distributions
NUM_PARTS = 4


def _structured_problem():
    """A 4-part mean-field surrogate and a target coupling the parts (so that every
    part's gradient reads the per-sample objective)."""
    locs = [tf.Variable(0.1 * i) for i in range(NUM_PARTS)]
    scales = [tf.Variable(1.0 + 0.1 * i) for i in range(NUM_PARTS)]
    q = tfd.JointDistributionSequential(
        [tfd.Normal(loc, scale) for loc, scale in zip(locs, scales)]
    )

    def target(*z):
        total = tf.add_n(z)
        return tfd.Normal(0.0, 1.0).log_prob(total) + tf.add_n(
            [tfd.Normal(0.0, 2.0).log_prob(part) for part in z]
        )

    return q, target, locs + scales


def _step(estimator, q, target, variables):
    @tf.function(jit_compile=True, autograph=False)
    def step(seed):
        with tf.GradientTape() as tape:
            loss = tge.vi.monte_carlo_variational_loss(
                target, q, sample_size=8, gradient_estimator=estimator, seed=seed
            )
        return [v.assign_sub(1e-3 * g) for v, g in zip(variables, tape.gradient(loss, variables))]

    return step


def _graph_op_types(concrete):
    graph_def = concrete.graph.as_graph_def()
    types = [node.op for node in graph_def.node]
    for function in graph_def.library.function:
        types += [node.op for node in function.node_def]
    return types


def test_reparameterization_step_has_no_conditional():
    # Was: `surrogate_objective` masked infinite entries in a `tf.cond` (a StatelessIf and
    # its gradient, run as real control flow without XLA, turned into selects by XLA).
    q, target, variables = _structured_problem()
    concrete = _step("reparameterization", q, target, variables).get_concrete_function(
        tf.constant([0, 1])
    )
    types = _graph_op_types(concrete)
    assert not [t for t in types if t in ("If", "StatelessIf")]


def test_zero_density_mask_is_computed_once_not_in_every_gradient():
    # Was: XLA fused the mask `is_inf(objective)` (with the objective's whole forward
    # computation) into each of the 8 parameters' update: 8 fused computations read it.
    q, target, variables = _structured_problem()
    step = _step("reparameterization", q, target, variables)
    hlo = step.experimental_get_compiler_ir(tf.constant([0, 1]))(stage="optimized_hlo")
    computations = re.split(r"\n(?=\S)", hlo)
    with_mask = [c for c in computations if re.search(r'op_name="[^"]*IsInf', c)]
    assert len(with_mask) <= 2, len(with_mask)  # the fused computation and its caller


def test_zero_density_contract_kept():
    # The mask's job: an infinite objective gives the loss +inf and no gradient; the others
    # keep theirs, exactly those of the unmasked objective.
    loc = tf.Variable([0.0, 0.5])
    with tf.GradientTape() as tape:
        surrogate = loc * tf.constant([3.0, 2.0]) + tf.constant([0.0, -np.inf])
        out = tge.estimators.surrogate_objective(tf.constant([1.5, -np.inf]), surrogate)
    np.testing.assert_array_equal(out, [1.5, -np.inf])
    np.testing.assert_array_equal(tape.gradient(out, loc), [3.0, 0.0])


@pytest.mark.parametrize("subclass", [False, True])
def test_a_deferred_surrogate_is_built_once_per_traced_loss(subclass):
    # A DeferredModule (build_factored_surrogate_posterior's surrogate) runs its build
    # function at every attribute access. Was: 4 builds per traced loss (validate's checks
    # and the sampling), each a copy of the surrogate for tracing to pay for. A subclass
    # too (the substrate's `is_deferred` is an isinstance check; was the class's name).
    builds = []
    loc, scale = tf.Variable([0.0, 1.0]), tf.Variable([1.0, 2.0])

    def build(loc, scale):
        builds.append(1)
        return tfd.JointDistributionSequential(
            [tfd.Normal(loc[0], scale[0]), tfd.Normal(loc[1], scale[1])]
        )

    deferred = tfp.experimental.util.DeferredModule
    if subclass:
        deferred = type("MyDeferredModule", (deferred,), {})
    q = deferred(build, loc, scale)
    for estimator in ("reparameterization", "stl"):
        builds.clear()
        with tf.GradientTape() as tape:
            loss = tge.vi.monte_carlo_variational_loss(
                lambda a, b: -(a**2) - b**2, q, sample_size=4, gradient_estimator=estimator, seed=1
            )
        assert len(builds) == 1, (estimator, len(builds))
        grads = tape.gradient(loss, [loc, scale])
        assert all(g is not None and np.all(g != 0) for g in grads)


def _jax_gradient_hlo_size(name, importance_sample_size):
    """Instructions of the optimised HLO of `jax.grad` of `name`'s loss on a 4-part surrogate
    whose target couples the parts (every part's gradient reads every sample)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    jtfd = pytest.importorskip("tensorflow_probability.substrates.jax").distributions

    def loss(params):
        locs, raw = params
        q = jtfd.JointDistributionSequential(
            [jtfd.Independent(jtfd.Normal(locs[i], jax.nn.softplus(raw[i])), 1) for i in range(4)]
        )

        def target(*z):
            return jnp.sum(jtfd.Normal(0.0, 1.0).log_prob(sum(z)), -1)

        estimator = tge.estimators.get(name)
        return estimator.loss(target, q, 4, importance_sample_size, seed=jax.random.PRNGKey(0))

    params = (jnp.zeros((4, 3)), jnp.ones((4, 3)))
    text = jax.jit(jax.grad(loss)).lower(params).compile().as_text()
    return sum(1 for line in text.splitlines() if " = " in line)


@pytest.mark.parametrize("name,importance_sample_size", [("stl", 1), ("iwae_dreg", 4)])
def test_the_zero_weight_mask_does_not_copy_each_parts_gradient_on_jax(
    monkeypatch, name, importance_sample_size
):
    # The path-weighted backward pass zeroes the samples of zero weight. A `select` of the
    # finished path gradient made XLA compute each part's whole backward pass (its samples,
    # the target) once per reader of that gradient (a Normal's loc and scale): +46% HLO for
    # 4 parts (STL), +59% for 8. Masked before they are combined, the two vector-Jacobian
    # products cost what no mask costs (same values and gradients bit for bit).
    from tfp_gradest._substrate import jax as substrate

    masked = _jax_gradient_hlo_size(name, importance_sample_size)
    monkeypatch.setattr(substrate, "zero_where", lambda zero_weight, gradient: gradient)
    unmasked = _jax_gradient_hlo_size(name, importance_sample_size)
    assert masked < 1.05 * unmasked, (masked, unmasked)
