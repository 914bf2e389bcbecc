"""Every ```python block of the documentation pages (docs/**/*.md) runs.

A block importing ``torch``, ``jax``, ``tensorflow`` or ``autograd`` runs in
that framework's environment (``DIFFOPT_TEST_BACKENDS``), any other with the
``numpy`` backend. In a "before / after" block of the switching pages only the
lines after ``# after`` run (the original packages are not installed): the
drop-in import paths the pages promise must exist. A block whose first line is
``# not run`` (a pattern the page warns against) is skipped.
"""

import importlib.util
import pathlib
import re

import pytest

from conftest import SELECTED

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
FRAMEWORKS = ("torch", "jax", "tensorflow", "autograd")


def _blocks():
    out = []
    for page in sorted(DOCS.rglob("*.md")):
        if "_build" in page.parts:
            continue
        text = page.read_text(encoding="utf-8")
        for i, block in enumerate(re.findall(r"^```python[ \t]*\n(.*?)^```", text, flags=re.M | re.S)):
            out.append(pytest.param(block, id=f"{page.relative_to(DOCS)}[{i}]"))
    return out


def _framework(code):
    found = [f for f in FRAMEWORKS if re.search(rf"^\s*(import|from)\s+[\w\s,.]*\b{f}\b", code, flags=re.M)]
    return found[0] if found else "numpy"


BLOCKS = _blocks()


def test_the_pages_have_python_blocks():
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("block", BLOCKS)
def test_docs_python_block_runs(block):
    if block.startswith("# not run"):
        pytest.skip("a pattern the page warns against")
    code = block.split("# after\n", 1)[1] if "# after\n" in block else block
    framework = _framework(code)
    if framework not in SELECTED:
        pytest.skip(f"needs the {framework} backend (DIFFOPT_TEST_BACKENDS)")
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    exec(compile(code, "<docs block>", "exec"), {"__name__": "docs_block"})
