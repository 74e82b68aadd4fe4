"""Installs `tfp_gradest`: lower-variance gradient estimators for TFP variational inference."""

import pathlib
import re

import setuptools

HERE = pathlib.Path(__file__).parent


def _about(field):
    """`__version__`/`__url__` from tfp_gradest/__init__.py, read as text (nothing is imported)."""
    text = (HERE / "tfp_gradest" / "__init__.py").read_text(encoding="utf-8")
    return re.search(rf'^__{field}__ = "([^"]+)"', text, re.MULTILINE).group(1)


URL = _about("url")  # the one repository address: every link below is derived from it

# The two substrates: `pip install "tfp_gradest[tf]"` or `pip install "tfp_gradest[jax]"`.
# Neither is in install_requires, so a JAX user installs no TensorFlow (as TFP and Keras
# leave the backend to the user); the `extras`, `test` and `docs` extras include TensorFlow.
TENSORFLOW = ["tensorflow>=2.16", "tensorflow-probability[tf]>=0.24"]
# TFP 0.25's JAX substrate imports and fits with jax 0.4.35 to 0.6.2 and fails to import
# with jax 0.7 and later (`jax.interpreters.xla.pytype_aval_mappings` is gone), so jax is
# pinned below 0.7 until a TFP release supports it: docs/guides/jax.md has the measurements.
JAX = ["jax>=0.4.35,<0.7", "tensorflow-probability>=0.25", "optax"]


setuptools.setup(
    name="tfp_gradest",
    version=_about("version"),
    url=URL,
    project_urls={
        "Documentation": f"{URL}/tree/main/docs",
        "Source": URL,
        "Issues": f"{URL}/issues",
        "Changelog": f"{URL}/blob/main/CHANGELOG.md",
    },
    description=(
        "Lower-variance gradient estimators (STL, DReG, R2-G2, I-SAG, ...) as drop-in "
        "surrogate losses for TensorFlow Probability and Keras 3."
    ),
    # The README is short and links by absolute URL, so a package index renders it.
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    keywords=[
        "variational inference",
        "gradient estimators",
        "variance reduction",
        "tensorflow probability",
        "keras",
        "bayesian neural networks",
        "importance weighted autoencoder",
        "DReG",
        "R2-G2",
    ],
    classifiers=[
        "Development Status :: 4 - Beta",
        "Intended Audience :: Science/Research",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: Apache Software License",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Mathematics",
    ],
    packages=setuptools.find_packages(include=["tfp_gradest", "tfp_gradest.*"]),
    python_requires=">=3.11",  # what CI runs and ruff targets (pyproject.toml: py311)
    install_requires=[
        "tensorflow-probability>=0.24",
        "keras>=3",
        "numpy",
    ],
    extras_require={
        "tf": TENSORFLOW,
        "jax": JAX,
        # What the comparison command, the benchmarks and the notebooks need beyond the core.
        # inference-gym: benchmarks/vi_structured.py's targets (never imported by the package).
        "extras": [*TENSORFLOW, "scikit-learn", "matplotlib", "inference-gym"],
        # The documentation site: sphinx-build -W docs docs/_build/html (autodoc imports
        # the TensorFlow and the JAX modules).
        "docs": [*TENSORFLOW, *JAX, "sphinx", "furo", "myst-parser"],
        "test": [
            *TENSORFLOW,
            *JAX,
            "pytest",
            "pytest-xdist",  # -n 2: the test command runs over both cores
            "scikit-learn",
            "matplotlib",
            "inference-gym",  # tests/test_benchmarks_smoke.py: benchmarks/vi_structured.py --small
            "ruff",
            "tensorboard",  # the monitor's TensorBoard scalars
            "nbclient",  # the notebooks run in CI
            "nbformat",
            "ipykernel",
            # The second test run (KERAS_BACKEND=jax) and the JAX-substrate tests: CI pins the
            # JAX the whole suite was run on (0.4.35-0.4.38); the [jax] extra allows up to 0.6.2.
            "jax[cpu]>=0.4.35,<0.5",
            "sphinx",  # the docs build and the README/guide examples (the docs extra)
            "furo",
            "myst-parser",
            "build",  # tests/test_release.py: wheel and sdist (no isolation: setuptools, wheel)
            "wheel",
            "twine",
        ],
    },
    entry_points={"console_scripts": ["tfp-gradest=tfp_gradest.cli:main"]},
)
