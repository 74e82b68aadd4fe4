"""Release checks: the wheel and the source archive build, pass `twine check`, hold what they
should, and the wheel works on its own in a fresh virtual environment.

The build runs on a copy of the working tree, so it never writes into the checkout. It is
one test (one build), so a parallel run (`pytest -n 2`) does not build twice.
"""

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
PACKAGE_DIR = os.path.join(ROOT, "tfp_gradest")
NOT_SHIPPED = ("tests/", "benchmarks/", "colabs/", "docs/", ".ci/")


def _about(field):
    """`__version__`/`__url__` as setup.py reads them (text, nothing imported)."""
    with open(os.path.join(PACKAGE_DIR, "__init__.py"), encoding="utf-8") as f:
        return re.search(rf'^__{field}__ = "([^"]+)"', f.read(), re.MULTILINE).group(1)


def _package_modules():
    """Every `.py` file of the package, as archive paths (`tfp_gradest/...`)."""
    modules = set()
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.relpath(os.path.join(folder, name), ROOT)
                modules.add(path.replace(os.sep, "/"))
    return modules


def _run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} exited {result.returncode}:\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


# A tiny fit with the installed wheel; prints where the package came from.
QUICKSTART = """
import tensorflow as tf
import tensorflow_probability as tfp
import keras
import tfp_gradest as tge

tfd = tfp.distributions
q = tfd.Normal(tf.Variable(0.0), tfp.util.TransformedVariable(1.0, tfp.bijectors.Softplus()))
losses = tge.vi.fit_surrogate_posterior(
    tfd.Normal(2.0, 0.5).log_prob, q, keras.optimizers.Adam(0.1), num_steps=20,
    gradient_estimator="stl", seed=0)
assert losses.shape == (20,) and bool(tf.reduce_all(tf.math.is_finite(losses)))
print(tge.__file__)
print(tge.__version__)
"""


def test_wheel_and_sdist_build_check_and_the_wheel_runs_alone(tmp_path):
    version, url = _about("version"), _about("url")
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__", "_build", ".pytest_cache"
        ),
    )
    dist = tmp_path / "dist"
    # No isolation: the installed setuptools and wheel build it, with nothing downloaded.
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)])
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"tfp_gradest-{version}-py3-none-any.whl"]
    assert [s.name for s in sdists] == [f"tfp_gradest-{version}.tar.gz"]

    # The package index renders the long description and accepts the metadata.
    _run([sys.executable, "-m", "twine", "check", "--strict", *map(str, wheels + sdists)])

    # The wheel: the whole package, its licence, nothing from the repository around it.
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
        info = f"tfp_gradest-{version}.dist-info/"
        metadata = wheel.read(info + "METADATA").decode()
    assert _package_modules() <= set(names)
    assert all(n.startswith(("tfp_gradest/", info)) for n in names), sorted(names)
    assert any(n.startswith(info) and n.endswith("LICENSE") for n in names)
    assert "License: Apache-2.0" in metadata
    assert "Classifier: License :: OSI Approved :: Apache Software License" in metadata
    assert "Requires-Python: >=3.11" in metadata
    assert "Description-Content-Type: text/markdown" in metadata
    urls = dict(
        line.removeprefix("Project-URL: ").split(", ", 1)
        for line in metadata.splitlines()
        if line.startswith("Project-URL: ")
    )
    assert set(urls) == {"Documentation", "Source", "Issues", "Changelog"}
    assert all(link.startswith(url) for link in urls.values()), urls

    # The sdist: the package and the files describing it; not tests/, whose data
    # (benchmarks/, colabs/) is not shipped either (MANIFEST.in says why).
    with tarfile.open(sdists[0]) as sdist:
        prefix = f"tfp_gradest-{version}/"
        members = {m.name.removeprefix(prefix) for m in sdist.getmembers() if m.isfile()}
    assert _package_modules() <= members
    for name in ("LICENSE", "README.md", "CHANGELOG.md", "CITATION.cff", "setup.py"):
        assert name in members
    shipped = sorted(m for m in members if m.startswith(NOT_SHIPPED))
    assert not shipped, shipped

    # The wheel alone, in a fresh environment: TensorFlow etc. come from the system's site
    # packages (not downloaded again), the package from the wheel, not from this checkout
    # (cwd is not the checkout, and the editable install's finder comes after site-packages).
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--force-reinstall", "--no-index", "--quiet", str(wheels[0])],
        cwd=tmp_path,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["KERAS_BACKEND"] = "tensorflow"
    ran = _run([str(python), "-c", QUICKSTART], cwd=tmp_path, env=env)
    module_file, module_version = ran.stdout.split()[-2:]
    assert os.path.realpath(module_file).startswith(os.path.realpath(venv)), module_file
    assert module_version == version


def test_readme_renders_on_a_package_index():
    """The README is the long description: short, and every link and image absolute."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert len(readme.splitlines()) <= 200
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert not relative, f"relative links do not resolve on a package index: {relative}"


def test_every_address_comes_from_the_one_package_url():
    """README's Colab and repository links and the citation use `tfp_gradest.__url__`."""
    url = _about("url")
    owner_repo = url.removeprefix("https://github.com/")
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    notebooks = sorted(
        n.removesuffix(".ipynb") for n in os.listdir(os.path.join(ROOT, "colabs"))
        if n.endswith(".ipynb")
    )  # fmt: skip
    colab = "https://colab.research.google.com/github/{}/blob/main/colabs/{}.ipynb"
    for name in notebooks:
        assert colab.format(owner_repo, name) in readme, name
    assert readme.count("colab.research.google.com/github/") == len(notebooks)
    github = set(re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", readme))
    assert github <= {url}, github
    assert f"git+{url}" in readme
    with open(os.path.join(ROOT, "CITATION.cff"), encoding="utf-8") as f:
        citation = yaml.safe_load(f)
    assert citation["repository-code"] == url
    assert str(citation["version"]) == _about("version")


def test_citation_and_changelog_describe_this_version():
    version = _about("version")
    with open(os.path.join(ROOT, "CITATION.cff"), encoding="utf-8") as f:
        citation = yaml.safe_load(f)
    assert citation["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors", "type", "license"):
        assert citation[key], key
    assert citation["license"] == "Apache-2.0"
    for reference in citation["references"]:
        assert {"type", "title", "authors", "year"} <= set(reference), reference
    with open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8") as f:
        changelog = f.read()
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as f:
        assert "Apache License" in f.read(200)
