"""The documentation: every public name is in the API reference, and the site builds with -W.

The API reference (`docs/api/*.md`) lists names in `autosummary` tables under a
`currentmodule`. A name in a public module's `__all__` counts as documented when it is
listed under that module, or under a package above it that re-exports the same object
(`tge.estimators.STL` documents `tfp_gradest.estimators.elbo.STL`).
"""

import glob
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import types

import tfp_gradest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
DOCS = os.path.join(ROOT, "docs")


def public_modules():
    """`tfp_gradest` and every submodule with no `_`-prefixed part in its dotted name."""
    names = ["tfp_gradest"]
    for info in pkgutil.walk_packages(tfp_gradest.__path__, "tfp_gradest."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def documented_names(text):
    """`(modules, names)` documented by the reference pages' Markdown `text`.

    `modules`: the `automodule` targets; `names`: `module.name` for every entry of an
    `autosummary` table, qualified by the `currentmodule` in force.
    """
    modules, names, current, in_table = set(), set(), None, False
    for line in text.splitlines():
        stripped = line.strip()
        if match := re.match(r"\.\. automodule:: (\S+)", stripped):
            modules.add(match[1])
        if match := re.match(r"\.\. currentmodule:: (\S+)", stripped):
            current = match[1]
        if stripped.startswith(".. autosummary::"):
            in_table = True
            continue
        if in_table:
            if stripped.startswith(":") or not stripped:
                continue
            if line.startswith("   ") and not stripped.startswith(".."):
                names.add(f"{current}.{stripped}")
                continue
            in_table = False
    return modules, names


def missing_from_reference(modules, names, module_names):
    """`module.name` of each name in a module's `__all__` that the reference lacks."""
    missing = []
    for module_name in module_names:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            value = getattr(module, name)
            if isinstance(value, types.ModuleType):
                if value.__name__ not in modules:
                    missing.append(f"{module_name}.{name}")
                continue
            parents = module_name.split(".")
            owners = [".".join(parents[:i]) for i in range(len(parents), 0, -1)]
            if not any(
                f"{owner}.{name}" in names
                and getattr(importlib.import_module(owner), name, None) is value
                for owner in owners
            ):
                missing.append(f"{module_name}.{name}")
    return missing


def _reference_text():
    texts = []
    for path in sorted(glob.glob(os.path.join(DOCS, "api", "*.md"))):
        with open(path, encoding="utf-8") as f:
            texts.append(f.read())
    return "\n".join(texts)


def test_every_public_name_is_in_the_api_reference():
    modules, names = documented_names(_reference_text())
    missing = missing_from_reference(modules, names, public_modules())
    assert not missing, (
        "Names in a public module's `__all__` missing from the API reference; add them to "
        f"the autosummary table of their page in docs/api/: {missing}"
    )


def test_the_coverage_check_finds_a_missing_name():
    # Power check: drop one documented name, and the check must report exactly it.
    modules, names = documented_names(_reference_text())
    assert "tfp_gradest.estimators.STL" in names
    names.discard("tfp_gradest.estimators.STL")
    missing = missing_from_reference(modules, names, ["tfp_gradest.estimators"])
    assert missing == ["tfp_gradest.estimators.STL"]
    # A lower-level module's name counts only if a package above re-exports that object.
    missing = missing_from_reference(modules, names, ["tfp_gradest.estimators.elbo"])
    assert missing == ["tfp_gradest.estimators.elbo.STL"]


def test_documented_names_reads_autosummary_tables():
    text = (
        "```{eval-rst}\n.. automodule:: pkg\n   :no-members:\n\n.. currentmodule:: pkg\n\n"
        ".. autosummary::\n   :toctree: generated\n\n   A\n   b\n```\n\nProse.\n\n"
        "```{eval-rst}\n.. currentmodule:: pkg.sub\n\n.. autosummary::\n\n   c\n```\n"
    )
    assert documented_names(text) == ({"pkg"}, {"pkg.A", "pkg.b", "pkg.sub.c"})


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    # What CI and the README's docs command run: warnings are errors, so a broken
    # cross-reference, a docstring reStructuredText cannot parse or a missing page fails.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-j",
            "1",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            DOCS,
            str(tmp_path / "html"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"sphinx-build -W failed:\n{result.stderr[-6000:]}"
    assert (tmp_path / "html" / "results.html").exists()
    assert (
        tmp_path / "html" / "api" / "generated" / "tfp_gradest.vi.fit_surrogate_posterior.html"
    ).exists()


def _benchmark_module(name):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_a_recorded_result_reaches_the_results_page(tmp_path, monkeypatch):
    # A benchmark writes its table through `write_results`; the page is regenerated from it,
    # so a re-run changes the page and nobody edits numbers by hand.
    common = _benchmark_module("_common")
    sys.path.insert(0, DOCS)
    try:
        generator = importlib.import_module("_generate_results")
    finally:
        sys.path.pop(0)
    results = tmp_path / "results"
    monkeypatch.setattr(generator, "RESULTS", str(results))
    rows = [{"estimator": "stl", "ratio": 21.5}, {"estimator": "iwae", "ratio": 1.0}]
    common.write_results(str(results / "toy.csv"), rows, command="python toy.py --fast")
    meta = json.loads((results / "toy.meta.json").read_text())
    assert meta["command"] == "python toy.py --fast"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["date"])
    assert meta["commit"] and meta["machine"]["cpu_count"] == os.cpu_count()
    page = tmp_path / "docs"
    page.mkdir()
    text = open(generator.generate(str(page))).read()
    assert "| stl | 21.5 |" in text and "`python toy.py --fast`" in text
    assert "(results-toy)=" in text
    common.write_results(str(results / "toy.csv"), [{"estimator": "stl", "ratio": 19.0}])
    assert "| stl | 19.0 |" in open(generator.generate(str(page))).read()


def test_resummarising_an_end_to_end_csv_keeps_the_runs_metadata(tmp_path):
    # `end_to_end.py --from-csv` rewrites the CSVs from an earlier run's rows: their
    # metadata must stay the run's (its command, date and machine), not the re-summary's.
    end_to_end = _benchmark_module("end_to_end")
    source = os.path.join(ROOT, "benchmarks", "results", "end_to_end")
    with open(f"{source}.csv") as f:
        mlp = [line for i, line in enumerate(f) if i == 0 or line.startswith("bnn_mlp,")]
    (tmp_path / "run.csv").write_text("".join(mlp))
    run_metadata = {"command": "python benchmarks/end_to_end.py", "date": "2026-11-30"}
    (tmp_path / "run.meta.json").write_text(json.dumps(run_metadata))
    out = tmp_path / "out"
    end_to_end.main(["--from-csv", str(tmp_path / "run.csv"), "--output-dir", str(out)])
    for name in ("end_to_end", "end_to_end_summary"):
        assert json.loads((out / f"{name}.meta.json").read_text()) == run_metadata
