"""Sphinx configuration: `pip install -e ".[docs]" && sphinx-build -W docs docs/_build/html`."""

import os
import re
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, DOCS)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # autodoc imports TensorFlow
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import _generate_results  # noqa: E402

import tfp_gradest  # noqa: E402

# The Results page is generated from benchmarks/results/ at every build.
_generate_results.generate(DOCS)

project = "tfp_gradest"
author = "The tfp_gradest authors"
copyright = "2026, The tfp_gradest authors"
release = tfp_gradest.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_generated", "README.md"]
templates_path = ["_templates"]

# Markdown pages: `{{ url }}` is the repository address, read from the package (one source).
myst_enable_extensions = ["substitution", "dollarmath", "colon_fence", "deflist"]
myst_substitutions = {"url": tfp_gradest.__url__, "version": tfp_gradest.__version__}
myst_heading_anchors = 3

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # Keras's own docstrings are not ours to render
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Our docstrings list several named results under `Returns:` and class attributes under
# `Class attributes:`; both read as argument lists.
napoleon_custom_sections = [("Returns", "params_style"), ("Class attributes", "params_style")]

html_theme = "furo"
html_title = f"tfp_gradest {release}"
html_static_path = []

# The docstrings are written as TensorFlow Probability writes its own: Google style with
# Markdown inside (``` fences, `#### Examples` headings, `code` in single backticks).
# Turn those Markdown pieces into reStructuredText before napoleon reads the docstring.
default_role = "code"

_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
_HEADING = re.compile(r"^(\s*)#{2,6}\s+(.*\S)\s*$")
_CODE = re.compile(r"(`[^`]+`)([A-Za-z0-9])?")  # `int`s: Markdown allows it, RST needs "\\ "
_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")


def _markdown_to_rst(lines):
    out, i = [], 0
    while i < len(lines):
        fence, heading = _FENCE.match(lines[i]), _HEADING.match(lines[i])
        if fence:
            indent, language = fence.group(1), fence.group(2) or "text"
            language = "text" if language in ("none", "") else language
            if out and out[-1].strip():
                out.append("")
            out += [f"{indent}.. code-block:: {language}", ""]
            i += 1
            while i < len(lines) and not _FENCE.match(lines[i]):
                body = lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i]
                out.append(f"{indent}   {body}" if body.strip() else "")
                i += 1
            out.append("")
        elif heading:
            out += [f"{heading.group(1)}.. rubric:: {heading.group(2)}", ""]
        else:
            line = _LINK.sub(r"`\1 <\2>`__", lines[i])
            out.append(_CODE.sub(lambda m: m[1] + ("\\ " + m[2] if m[2] else ""), line))
        i += 1
    return out


def _process_docstring(app, what, name, obj, options, lines):
    lines[:] = _markdown_to_rst(lines)


def setup(app):
    app.connect("autodoc-process-docstring", _process_docstring, priority=400)
