"""Installs `tfp_gradest`: lower-variance gradient estimators for TFP variational inference."""

import setuptools

setuptools.setup(
    name="tfp_gradest",
    version="0.1.0",
    description=(
        "Lower-variance gradient estimators (STL, DReG, R2-G2, I-SAG, ...) as drop-in "
        "surrogate losses for TensorFlow Probability and Keras 3."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["tfp_gradest", "tfp_gradest.*"]),
    python_requires=">=3.10",
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
        ],
    },
    entry_points={"console_scripts": ["tfp-gradest=tfp_gradest.cli:main"]},
)
