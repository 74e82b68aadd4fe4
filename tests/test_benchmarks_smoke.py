"""Smoke tests of benchmarks/vi_structured.py and benchmarks/inference_gym.py (`--small`), and
that the package itself never imports inference-gym (a benchmark-only dependency: setup.py's
extras)."""

import csv
import json
import pathlib
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The package first: with benchmarks/ on the path, `inference_gym` is also the benchmark's name.
pytest.importorskip("inference_gym")
sys.path.insert(0, str(ROOT / "benchmarks"))

import vi_structured  # noqa: E402


def test_small_run_writes_compile_and_step_ratios(tmp_path):
    rows = vi_structured.main(
        ["--small", "--repeats", "2", "--steps", "20", "--output-dir", str(tmp_path)]
    )
    assert [(r[0], r[2]) for r in rows] == [("EightSchools", "reparameterization")]
    with open(tmp_path / "vi_structured_small.csv") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == vi_structured.HEADER and len(written) == 1
    row = written[0]
    assert row["parts"] == "3"
    for column in ("tge compile s", "tfp.vi compile s", "tge us/step", "tfp.vi us/step"):
        assert float(row[column]) > 0
    for column in ("compile ratio tge/tfp median [IQR]", "step ratio tge/tfp median [IQR]"):
        median, low, high = (float(x.strip("[],")) for x in row[column].split())
        assert 0 < low <= median <= high
    with open(tmp_path / "vi_structured_small.meta.json") as f:
        assert json.load(f)["title"].startswith("tge.vi vs tfp.vi")


def test_tfp_stl_arm_has_tge_stl_value_and_gradient():
    # The tfp.vi STL arm (DOUBLY_REPARAMETERIZED with the stopped copy) computes what tge's
    # STL computes: same loss value and surrogate gradient on the same seed (graph mode).
    target_log_prob_fn, build_surrogate = vi_structured.make_problem("EightSchools")
    surrogate = build_surrogate()
    variables = surrogate.trainable_variables

    @tf.function(autograph=False)
    def value_and_gradient(library):
        loss = vi_structured.loss_fn(library, "stl", target_log_prob_fn, surrogate)
        with tf.GradientTape() as tape:
            value = loss(tf.constant([3, 4]))
        return value, tape.gradient(value, variables)

    ours, theirs = value_and_gradient("tge"), value_and_gradient("tfp")
    assert float(ours[0]) == pytest.approx(float(theirs[0]), rel=1e-6)
    for a, b in zip(ours[1], theirs[1]):
        assert a is not None and b is not None
        tf.debugging.assert_near(a, b, rtol=1e-4, atol=1e-5)


def test_package_never_imports_inference_gym():
    sources = [p for p in (ROOT / "tfp_gradest").rglob("*.py")]
    assert sources
    assert not [str(p) for p in sources if "inference_gym" in p.read_text()]


def _random_walk(num_parts):
    """A structured target: a Gaussian random walk of `num_parts` scalar parts, observed at its
    ends, with a positive scale part; and a factored surrogate over its event space."""
    import tensorflow_probability as tfp

    tfd, tfb = tfp.distributions, tfp.bijectors

    def target_log_prob_fn(scale, *walk):
        lp = tfd.LogNormal(0.0, 1.0).log_prob(scale) + tfd.Normal(0.0, 1.0).log_prob(walk[0])
        for previous, current in zip(walk[:-1], walk[1:]):
            lp += tfd.Normal(previous, scale).log_prob(current)
        return lp + tfd.Normal(walk[-1], 0.1).log_prob(1.0)

    bijector = tfb.JointMap([tfb.Softplus()] + [tfb.Identity()] * num_parts)
    surrogate = tfp.experimental.vi.build_factored_surrogate_posterior(
        event_shape=[[]] * (num_parts + 1), bijector=bijector, seed=(0, 1)
    )
    return target_log_prob_fn, surrogate


def _compiled_instructions(loss, variables):
    """Instructions in the XLA-optimised program of one loss-and-gradient step."""

    @tf.function(jit_compile=True, autograph=False)
    def step(seed):
        with tf.GradientTape() as tape:
            value = loss(seed)
        return value, tape.gradient(value, variables)

    hlo = step.experimental_get_compiler_ir(tf.constant([0, 1]))(stage="optimized_hlo")
    return sum(" = " in line for line in hlo.splitlines())


@pytest.mark.parametrize("estimator", ["reparameterization", "stl"])
def test_compiled_step_on_a_structured_surrogate_is_as_small_as_tfp_vis(estimator):
    # A forward-pass tensor read by every part's backward pass (the infinite-value mask of
    # surrogate_objective, STL's weights) was fused into, and recomputed in, each part's
    # gradient by XLA: on 32 parts the program was 3.4x tfp.vi's, its compile time 2x.
    # (A list-structured surrogate, as here, also failed tge's validation: a ListWrapper.)
    import tensorflow_probability as tfp

    import tfp_gradest as tge

    target_log_prob_fn, surrogate = _random_walk(6)
    arguments = vi_structured.loss_arguments("tfp", estimator, surrogate)

    def ours(seed):
        return tge.vi.monte_carlo_variational_loss(
            target_log_prob_fn, surrogate, sample_size=8, seed=seed, gradient_estimator=estimator
        )

    def theirs(seed):
        return tfp.vi.monte_carlo_variational_loss(
            target_log_prob_fn, surrogate, sample_size=8, seed=seed, **arguments
        )

    variables = surrogate.trainable_variables
    ratio = _compiled_instructions(ours, variables) / _compiled_instructions(theirs, variables)
    assert ratio < 1.3, ratio  # 1.75 before (6 parts; 1.06 reparameterization, 1.14 STL now)


def _inference_gym_benchmark():
    """benchmarks/inference_gym.py, imported under another name than the package's."""
    import importlib.util

    path = ROOT / "benchmarks" / "inference_gym.py"
    spec = importlib.util.spec_from_file_location("inference_gym_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inference_gym_small_run_writes_rows_summary_figure_and_meta(tmp_path, monkeypatch):
    benchmark = _inference_gym_benchmark()
    rows, summary = benchmark.main(["--small", "--output-dir", str(tmp_path)])
    arms, reads = benchmark.SMALL_ARMS, benchmark.SMALL_READ_STEPS
    assert len(rows) == len(benchmark.SMALL_TARGETS) * len(arms) * len(reads)
    with open(tmp_path / "inference_gym_small.csv") as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows)
    for row in written:
        for column in ("elbo", "mean_error", "sd_error", "seconds"):
            assert np.isfinite(float(row[column])), row
        assert row["degenerate"] == "False" and row["detected_by"] == ""
    first = [r for r in rows if r["step"] == 0]
    assert len({(r["target"], r["mean_error"]) for r in first}) == len(benchmark.SMALL_TARGETS)
    with open(tmp_path / "inference_gym_small_summary.csv") as f:
        readings = [(r["arm"], r["reading"]) for r in csv.DictReader(f)]
    for arm in arms:
        assert (arm, "equal_time") in readings and (arm, "step") in readings
    assert (tmp_path / "inference_gym_small.png").stat().st_size > 0
    # A run split in parts is put back together from its CSVs: the same summary.
    merged = tmp_path / "merged"
    _, merged_summary = benchmark.main(
        ["--merge", str(tmp_path / "inference_gym_small.csv"), "--output-dir", str(merged)]
    )
    assert [{k: str(v) for k, v in r.items()} for r in merged_summary] == [
        {k: str(v) for k, v in r.items()} for r in summary
    ]
    with open(merged / "inference_gym.meta.json") as f:
        assert json.load(f)["runs"][0]["csv"] == "inference_gym_small.csv"
    # A merge merges again with new parts (its runs carried over, not nested); a read in
    # two of the inputs is refused.
    remerged = tmp_path / "remerged"
    benchmark.main(["--merge", str(merged / "inference_gym.csv"), "--output-dir", str(remerged)])
    with open(remerged / "inference_gym.meta.json") as f:
        assert [r["csv"] for r in json.load(f)["runs"]] == ["inference_gym_small.csv"]
    with pytest.raises(ValueError, match="more than one of the CSVs"):
        benchmark.merge(
            [str(tmp_path / "inference_gym_small.csv"), str(merged / "inference_gym.csv")],
            str(remerged),
        )
    with open(tmp_path / "inference_gym_small.meta.json") as f:
        meta = json.load(f)
    assert meta["note"].startswith("small smoke test") and meta["cost"]["wall_seconds"] > 0
    # The Results page leaves the smoke test's files out, and shows a full run's section.
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import _generate_results as generator
    finally:
        sys.path.pop(0)
    full = tmp_path / "full"
    full.mkdir()
    for file in tmp_path.glob("inference_gym_small*"):
        (full / file.name.replace("_small", "")).write_bytes(file.read_bytes())
    pages = {}
    for name, results in (("small", tmp_path), ("full", full)):
        monkeypatch.setattr(generator, "RESULTS", str(results))
        docs = tmp_path / f"docs_{name}"
        docs.mkdir()
        pages[name] = open(generator.generate(str(docs))).read()
    assert "results-inference-gym" not in pages["small"] and "gym_small" not in pages["small"]
    assert "(results-inference-gym)=" in pages["full"] and "### Banana" in pages["full"]
    assert "| mean-field | `stl` | 1 × 8 |" in pages["full"]


def test_inference_gym_full_rank_is_tfps_surrogate_with_one_dense_scale():
    # Issue 26: TFP's block-lower-triangular scale (a variable and a matrix product per pair
    # of parts: 528 on a 32-part target) made the 30-part targets' programs too big to
    # compile in 24 GB. The dense surrogate is TFP's: the same draws, log q and initial
    # values for a seed, and the same parameters in another order (the same gradients, up
    # to the sign of a diagonal entry's: the scale there is |x| + eps, from x or -x).
    import _gym
    import tensorflow_probability as tfp

    target = _gym.load("EightSchools")  # 3 parts: 1 + 1 + 8 coordinates
    # (The builder starts the scale's diagonal at |N(0, 0.01)|: with some seeds an entry
    # starts near 0, where the inverse, STL's log q, amplifies float rounding to 1%.)
    block = tfp.experimental.vi.build_affine_surrogate_posterior(
        event_shape=target.event_shape,
        bijector=target.default_event_space_bijector,
        operators="tril",
        seed=(1, 0),
    )
    dense = _gym.build_surrogate(target, "full_rank", seed=(1, 0))
    assert [tuple(v.shape) for v in dense.trainable_variables] in ([(10,), (55,)], [(55,), (10,)])
    log_prob = _gym.target_log_prob_fn(target)

    def loss_and_gradients(surrogate, arm):
        loss_fn = _inference_gym_benchmark().make_loss(arm, 1, 4, log_prob, surrogate)
        with tf.GradientTape() as tape:
            loss = loss_fn(tf.constant([5, 6]))
        grads = tape.gradient(loss, surrogate.trainable_variables)
        return loss, np.sort(np.abs(np.concatenate([np.ravel(g) for g in grads])))

    for a, b in zip(*(s.experimental_sample_and_log_prob(6, seed=(7, 8)) for s in (block, dense))):
        for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    for arm in ("tfp.vi", "stl"):  # STL: log q of the draws, through the inverse
        block_loss, block_grads = loss_and_gradients(block, arm)
        dense_loss, dense_grads = loss_and_gradients(dense, arm)
        np.testing.assert_allclose(dense_loss, block_loss, rtol=1e-5)
        np.testing.assert_allclose(dense_grads, block_grads, rtol=1e-4, atol=1e-4)


def _read(step, elbo, loss=None, sd_ratio_max=1.0, finite=True, spread=(0.0, 0.0)):
    return {
        "step": step,
        "elbo": elbo,
        "train_loss": loss,  # the median over the chunk; then its smallest and largest
        "train_loss_min": None if loss is None else loss - spread[0],
        "train_loss_max": None if loss is None else loss + spread[1],
        "sd_ratio_max": sd_ratio_max,
        "finite_parameters": finite,
    }


def test_inference_gym_flags_the_degenerate_runs_it_is_meant_to_catch():
    degeneracy = _inference_gym_benchmark().degeneracy
    healthy = [_read(0, -3e4), _read(100, -1.3e4, 1.4e4), _read(300, -1.24e4, 1.25e4)]
    assert degeneracy(healthy) == ""
    noisy = healthy + [_read(1000, -1.24e4 - 90.0, 1.25e4 + 90.0)]  # worse, but by < 100 nats
    assert degeneracy(noisy) == ""
    # IWAE-DReG on stochastic volatility (issue 26): the ELBO fell from -1.2e4 to -4e7.
    collapsed = healthy + [_read(1000, -4e7, 3.5e4)]
    assert degeneracy(collapsed).startswith("elbo_collapse at step 1000")
    assert "loss_collapse" in degeneracy(collapsed)
    assert degeneracy(healthy + [_read(1000, float("nan"))]).startswith("nonfinite")
    assert degeneracy(healthy + [_read(1000, -1.2e4, finite=False)]).startswith("nonfinite")
    assert degeneracy(healthy + [_read(1000, -1.2e4, sd_ratio_max=25.0)]).startswith("scale_blowup")
    # A fast early descent (300 -> 60 nats around a median of 120) is no spike; one step at
    # -4e6 (seen with IWAE-DReG on a full-rank BrownianMotion surrogate) is.
    early = [_read(0, -300.0), _read(100, -70.0, 120.0, spread=(60.0, 180.0))]
    assert degeneracy(early) == ""
    # Nor is a first step far above the rest (1,687 nats against a median of 17.5: the
    # quartic target's first chunk from its initial surrogate).
    assert degeneracy([_read(0, -900.0), _read(100, -20.0, 17.5, spread=(10.3, 1669.0))]) == ""
    spiked = [_read(0, -300.0), _read(100, -240.0, 60.0, spread=(4e6, 100.0))]
    assert degeneracy(spiked).startswith("loss_spike before step 100")


def test_jax_vi_small_run_times_every_arm_and_writes_meta(tmp_path):
    # benchmarks/jax_vi.py --small: tge on TFP's JAX substrate against tfp-jax, NumPyro and a
    # hand-written step (it checks tge's loss and gradient equal tfp-jax's on one key first).
    for module in ("jax", "optax", "numpyro"):
        pytest.importorskip(module)
    import jax_vi

    jax_vi.main(["--small", "--repeats", "1", "--steps", "2", "--output-dir", str(tmp_path)])
    with open(tmp_path / "jax_vi_small.csv") as f:
        written = list(csv.DictReader(f))
    assert [(r["estimator"], r["arm"]) for r in written] == [
        ("reparameterization", "tge"),
        ("reparameterization", "tfp-jax"),
        ("reparameterization", "numpyro"),
        ("reparameterization", "hand"),
        ("iwae_dreg", "tge"),
        ("iwae_dreg", "tfp-jax"),
        ("iwae_dreg", "hand"),
    ]
    for row in written:
        assert float(row["us/step"]) > 0 and float(row["XLA flops/step"]) > 0
        ratio = row["ratio to tfp-jax median [IQR]"]
        median, low, high = (float(x.strip("[],")) for x in ratio.split())
        assert 0 < low <= median <= high
    with open(tmp_path / "jax_vi_small.meta.json") as f:
        meta = json.load(f)
    assert meta["note"].startswith("small smoke test") and "numpyro" in meta["versions"]


def test_gdreg_variance_small_run_writes_every_estimator_and_group(tmp_path):
    import gdreg_variance

    gdreg_variance.main(["--small", "--output-dir", str(tmp_path)])
    with open(tmp_path / "gdreg_variance_small.csv") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == gdreg_variance.HEADER
    cells = {(r["estimator"], r["group"]): r for r in written}
    assert set(cells) == {
        (e, g) for e in gdreg_variance.ESTIMATORS for g in ("encoder", "prior", "likelihood")
    }
    assert all(float(r["variance sum"]) > 0 for r in written)
    # Same seeds, same samples: the likelihood's decoder gets IWAE's gradient from all four,
    # and IWAE-DReG gives the prior's decoder IWAE's gradient too.
    for e in gdreg_variance.ESTIMATORS:
        assert float(cells[(e, "likelihood")]["ratio to iwae"]) == 1.0
    assert float(cells[("iwae_dreg", "prior")]["ratio to iwae"]) == 1.0


def test_rqmc_small_run_writes_variances_and_slopes(tmp_path):
    import rqmc

    rows, slopes = rqmc.main(["--small", "--output-dir", str(tmp_path)])
    assert len(rows) == 2 * len(rqmc.SMALL["sizes"]) and len(slopes) == 2
    with open(tmp_path / "rqmc_small.csv") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == rqmc.HEADER and all(float(r["variance"]) > 0 for r in written)
    with open(tmp_path / "rqmc_small_slopes.csv") as f:
        fitted = {r["noise"]: float(r["slope (S >= 8)"]) for r in csv.DictReader(f)}
    assert -1.5 < fitted["iid"] < -0.5  # v_1 / S, from 50 draws at S = 2 and 16
    with open(tmp_path / "rqmc_small.meta.json") as f:
        assert json.load(f)["title"].startswith("Gradient variance")


def test_control_variate_small_run_writes_variances_and_step_times(tmp_path):
    import control_variate

    rows = control_variate.main(["--small", "--output-dir", str(tmp_path)])
    with open(tmp_path / "control_variate_small.csv") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == control_variate.HEADER and len(written) == len(rows) == 6
    assert {(r["point"], r["estimator"]) for r in written} == {
        (p, e) for p in ("init", "fitted") for e in control_variate.ESTIMATORS
    }
    assert all(float(r["variance sum"]) > 0 and float(r["us/step"]) > 0 for r in written)
    for r in written:  # each ratio's own denominator
        if r["estimator"] == "reparameterization":
            assert float(r["ratio to reparam."]) == 1.0
        if r["estimator"] == "stl":
            assert float(r["ratio to stl"]) == 1.0
    with open(tmp_path / "control_variate_small.meta.json") as f:
        assert json.load(f)["title"].startswith("Linear-response control variate")
