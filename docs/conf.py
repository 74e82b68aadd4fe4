"""Sphinx configuration: `pip install -e ".[docs]" && sphinx-build -W docs docs/_build/html`."""

import os
import re
import sys
import textwrap

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
_TABLE = re.compile(r"^(\s*)\|.*\|\s*$")
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
        elif _TABLE.match(lines[i]):  # a Markdown table: shown as it is written
            indent = _TABLE.match(lines[i]).group(1)
            if out and out[-1].strip():
                out.append("")
            out += [f"{indent}.. code-block:: text", ""]
            while i < len(lines) and _TABLE.match(lines[i]):
                out.append(f"{indent}   {lines[i][len(indent) :]}")
                i += 1
            out.append("")
            continue
        else:
            out.append(_inline(lines[i]))
        i += 1
    return out


def _inline(line):
    """Markdown links and `code` to reStructuredText; a bare `|` (e.g. `|z|`) is literal."""
    parts = re.split(r"(`[^`]+`)", _LINK.sub(r"`\1 <\2>`__", line))
    for j, part in enumerate(parts):
        if j % 2 == 0:
            parts[j] = part.replace("|", "\\|")
    return _CODE.sub(lambda m: m[1] + ("\\ " + m[2] if m[2] else ""), "".join(parts))


_NAMED_RESULT = re.compile(r"^\s*`?\w+`?(, `?\w+`?)*( \(.*\))?: ")


def _free_text_returns(lines):
    """A `Returns:` section that is prose, not `name: description` items, as a rubric.

    Napoleon reads `Returns` as a list of named results (`napoleon_custom_sections`),
    which is what most of our docstrings write; a sentence would become a bold "name".
    """
    out, i = [], 0
    while i < len(lines):
        header = re.match(r"^(\s*)Returns:\s*$", lines[i])
        if header and i + 1 < len(lines) and not _NAMED_RESULT.match(lines[i + 1]):
            indent, body = header.group(1), []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + " ")):
                body.append(lines[i])
                i += 1
            body = textwrap.dedent("\n".join(body)).strip("\n").splitlines()
            out += [f"{indent}.. rubric:: Returns", ""] + [f"{indent}{b}" for b in body] + [""]
            continue
        out.append(lines[i])
        i += 1
    return out


def _process_docstring(app, what, name, obj, options, lines):
    lines[:] = _free_text_returns(_markdown_to_rst(lines))


def _substitute(app, docname, source):
    """`{{ url }}` and `{{ version }}` everywhere in a page, code blocks and link targets too.

    MyST's own substitutions (`myst_substitutions`, same values) do not reach inside code
    fences or link targets, where the install and clone commands need the address.
    """
    for key, value in myst_substitutions.items():
        source[0] = re.sub(r"\{\{\s*" + key + r"\s*\}\}", value, source[0])


def setup(app):
    app.connect("autodoc-process-docstring", _process_docstring, priority=400)
    app.connect("source-read", _substitute)
