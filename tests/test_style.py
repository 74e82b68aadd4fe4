"""The code stays `ruff check` clean and imports no Keras 2 (tf_keras) or private modules."""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is installed by the [test] extra")
def test_ruff_check_is_clean():
    result = subprocess.run(["ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_package_never_imports_tf_keras_or_private_modules():
    for path in (ROOT / "tfp_gradest").rglob("*.py"):
        text = path.read_text()
        for forbidden in ("import tf_keras", "keras.src", "tensorflow_probability.python.internal"):
            assert forbidden not in text, f"{path.relative_to(ROOT)} uses {forbidden}"
