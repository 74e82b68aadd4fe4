"""Docstring examples written as doctests (`>>>`) run here, so they cannot rot.

Every module of the package is searched; examples must be cheap (no training).
Examples that need a model or data are written as ```python blocks instead and
are exercised by the notebooks and the tests of their modules.
"""

import doctest
import importlib
import pkgutil

import pytest

import tfp_gradest

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(tfp_gradest.__path__, prefix="tfp_gradest.")
    if m.name != "tfp_gradest.__main__"
)


def _doctests(name):
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder().find(module) if t.examples]


def test_some_modules_have_doctests():
    # Guards the search below: if it found nothing, every test would pass vacuously.
    assert sum(len(_doctests(name)) for name in MODULES) >= 2


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _doctests(name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {name}"
