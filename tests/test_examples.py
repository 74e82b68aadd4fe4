"""Every ```python block of README.md and docs/**/*.md runs, each in a fresh Python process.

A block is skipped when the line before its opening fence (blank lines aside) is
`<!-- no-test -->`: for fragments that are not meant to run alone (a class body, a
multi-worker script). Blocks run independently (each defines what it uses, data included)
in a temporary folder, so a block that writes files writes them there.

A block followed by a line ending in `prints` (or `prints:`) and a ```text block must
print that text: the same lines and words (spacing aside), and numbers of the same sign
within a factor of 10 of the ones shown (both below 1e-6 in size counts as equal: "zero
up to rounding"). Seeds are fixed, but the last digits of a float may differ between
machines; what the example claims may not.
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
    return [(line, source) for line, source, _ in blocks_with_output(text)]


def blocks_with_output(text):
    """`(line, source, expected)`: `python_blocks` with the text each block says it prints
    (the ```text block after a `prints` line), or `None`."""
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
            source = textwrap.dedent("\n".join(body)) + "\n"
            blocks.append((start + 1, source, _printed_text(lines, index)))
        previous = lines[start].strip()
    return blocks


def _printed_text(lines, index):
    """The ```text block after a `prints` line starting at `lines[index]`, or `None`."""
    rest = [line for line in lines[index : index + 4] if line.strip()]
    said = rest[0].strip().lower().rstrip(":") if rest else ""
    if len(rest) < 2 or not said.endswith("prints") or rest[1].strip() != "```text":
        return None
    start = lines.index(rest[1], index) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "```")
    return "\n".join(lines[start:end])


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def same_claim(expected, actual):
    """Whether `actual` output says what `expected` shows (module docstring's rule)."""
    expected_lines, actual_lines = expected.strip().splitlines(), actual.strip().splitlines()
    if len(expected_lines) != len(actual_lines):
        return False
    for want, got in zip(expected_lines, actual_lines):
        if "".join(_NUMBER.sub("#", want).split()) != "".join(_NUMBER.sub("#", got).split()):
            return False
        for a, b in zip(map(float, _NUMBER.findall(want)), map(float, _NUMBER.findall(got))):
            if abs(a) <= 1e-6 and abs(b) <= 1e-6:
                continue
            if a * b <= 0 or max(abs(a), abs(b)) > 10 * min(abs(a), abs(b)):
                return False
    return True


def _examples():
    params = []
    for path in markdown_files():
        with open(path, encoding="utf-8") as f:
            blocks = blocks_with_output(f.read())
        name = os.path.relpath(path, ROOT).replace(os.sep, "/")
        params += [
            pytest.param(source, expected, id=f"{name}:{line}") for line, source, expected in blocks
        ]
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


def test_printed_output_is_found_and_compared():
    text = "```python\nprint(1)\n```\nprints\n```text\nvariance 2.0e+00, stl 1.1e-13\n```\n"
    assert blocks_with_output(text) == [(1, "print(1)\n", "variance 2.0e+00, stl 1.1e-13")]
    shown = "variance 2.0e+00, stl 1.1e-13"
    assert same_claim(shown, "variance 2.4, stl 3e-15")  # the same claim, other digits
    assert not same_claim(shown, "variance 1.0e-01, stl 3e-15")  # twenty times smaller
    assert not same_claim(shown, "variance 2.0e+00, stl 0.5")  # STL's no longer zero
    assert not same_claim(shown, "variance -2.0e+00, stl 1e-13")  # the sign
    assert not same_claim(shown, "variances 2.0e+00, stl 1e-13")  # the words
    assert not same_claim(shown, shown + "\nmore")  # the lines


@pytest.mark.parametrize("source, expected", EXAMPLES)
def test_example_runs(source, expected, tmp_path):
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
    if expected is not None:
        assert same_claim(expected, result.stdout), (
            f"the example printed\n{result.stdout}\nwhere its page shows\n{expected}"
        )
