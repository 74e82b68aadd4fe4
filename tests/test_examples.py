"""Every ```python block of README.md and docs/**/*.md runs, each in a fresh Python process.

A block is skipped when the line before its opening fence (blank lines aside) is
`<!-- no-test -->`: for fragments that are not meant to run alone (a class body, a
multi-worker script). Blocks run independently (each defines what it uses, data included)
in a temporary folder, so a block that writes files writes them there.
"""

import glob
import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
NO_TEST = "<!-- no-test -->"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


def markdown_files():
    """README.md and the docs' Markdown pages (not a built site under docs/_build)."""
    docs = glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
    docs = [p for p in docs if "_build" not in os.path.relpath(p, ROOT).split(os.sep)]
    return [os.path.join(ROOT, "README.md"), *sorted(docs)]


def python_blocks(text):
    """`(line, source)` of each ```python block in Markdown `text` that is to be run.

    `line` is the 1-based line of the opening fence. Blocks nested in a list item are
    dedented; the block ends at a closing fence of the same kind and at least its length.
    """
    lines = text.splitlines()
    blocks, previous, index = [], "", 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            if lines[index].strip():
                previous = lines[index].strip()
            index += 1
            continue
        fence, language = match["fence"], match["info"].strip().split(" ")[0].lower()
        start, body, index = index, [], index + 1
        while index < len(lines):
            closing = _FENCE.match(lines[index])
            if (
                closing
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            body.append(lines[index])
            index += 1
        index += 1  # past the closing fence
        if language in ("python", "py") and previous != NO_TEST:
            blocks.append((start + 1, textwrap.dedent("\n".join(body)) + "\n"))
        previous = lines[start].strip()
    return blocks


def _examples():
    params = []
    for path in markdown_files():
        with open(path, encoding="utf-8") as f:
            blocks = python_blocks(f.read())
        name = os.path.relpath(path, ROOT).replace(os.sep, "/")
        params += [pytest.param(source, id=f"{name}:{line}") for line, source in blocks]
    return params


EXAMPLES = _examples()


def test_the_readme_has_examples_to_run():
    assert any(p.id.startswith("README.md:") for p in EXAMPLES)


def test_blocks_are_found_and_no_test_blocks_skipped():
    text = (
        "Intro.\n\n```python\nx = 1\n```\n\n<!-- no-test -->\n\n```python\nnot run\n```\n"
        "\n* item\n\n  ```python\n  y = 2\n  ```\n\n```bash\necho no\n```\n"
        "````markdown\n```python\ninside another block\n```\n````\n"
    )
    assert python_blocks(text) == [(3, "x = 1\n"), (15, "y = 2\n")]


@pytest.mark.parametrize("source", EXAMPLES)
def test_example_runs(source, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(source, encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"the example exited {result.returncode}:\n{source}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    )
