"""Installs `tfp_gradest`: lower-variance gradient estimators for TFP variational inference."""

import pathlib
import re

import setuptools

HERE = pathlib.Path(__file__).parent


def _about(field):
    """`__version__`/`__url__` from tfp_gradest/__init__.py, read as text (nothing is imported)."""
    text = (HERE / "tfp_gradest" / "__init__.py").read_text(encoding="utf-8")
    return re.search(rf'^__{field}__ = "([^"]+)"', text, re.MULTILINE).group(1)


setuptools.setup(
    name="tfp_gradest",
    version=_about("version"),
    url=_about("url"),
    description=(
        "Lower-variance gradient estimators (STL, DReG, R2-G2, I-SAG, ...) as drop-in "
        "surrogate losses for TensorFlow Probability and Keras 3."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["tfp_gradest", "tfp_gradest.*"]),
    python_requires=">=3.11",  # what CI runs and ruff targets (pyproject.toml: py311)
    install_requires=[
        "tensorflow>=2.16",
        "tensorflow-probability[tf]>=0.24",
        "keras>=3",
        "numpy",
    ],
    extras_require={
        # What the comparison command, the benchmarks and the notebooks need beyond the core.
        "extras": ["scikit-learn", "matplotlib"],
        "test": [
            "pytest",
            "scikit-learn",
            "matplotlib",
            "ruff",
            "tensorboard",  # the monitor's TensorBoard scalars
            "nbclient",  # the notebooks run in CI
            "nbformat",
            "ipykernel",
            "jax[cpu]",  # the second test run, KERAS_BACKEND=jax (README: Tests)
        ],
    },
    entry_points={"console_scripts": ["tfp-gradest=tfp_gradest.cli:main"]},
)
