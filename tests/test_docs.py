"""Every ```python block of the documentation pages (docs/**/*.md) runs.

A block importing ``torch``, ``jax``, ``tensorflow`` or ``autograd`` runs in
that framework's environment (``DIFFOPT_TEST_BACKENDS``), any other with the
``numpy`` backend. In a "before / after" block of the switching pages only the
lines after ``# after`` run (the original packages are not installed): the
drop-in import paths the pages promise must exist. A block whose first line
starts with ``# not run`` (a pattern the page warns against, or code that needs a
process group or a cluster; its comment names the test that runs it) is skipped.

The pages are the documentation's source, not a copy of the README: no page
includes README.md (the README links to the pages instead).
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


def test_no_page_includes_the_readme():
    for page in sorted(DOCS.rglob("*.md")):
        if "_build" in page.parts:
            continue
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"\{include\}[^\n]*README\.md", text), f"{page.relative_to(DOCS)} includes the README"


def test_skipped_blocks_name_the_test_that_runs_them():
    for param in BLOCKS:
        block = param.values[0]
        first = block.splitlines()[0]
        if first.startswith("# not run") and first != "# not run: the pattern to avoid":
            assert re.search(r"tests/\S+\.py", first), f"{param.id}: say which test runs it ({first!r})"


@pytest.mark.parametrize("block", BLOCKS)
def test_docs_python_block_runs(block):
    if block.startswith("# not run"):
        pytest.skip("marked '# not run' on the page")
    code = block.split("# after\n", 1)[1] if "# after\n" in block else block
    framework = _framework(code)
    if framework not in SELECTED:
        pytest.skip(f"needs the {framework} backend (DIFFOPT_TEST_BACKENDS)")
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    exec(compile(code, "<docs block>", "exec"), {"__name__": "docs_block"})
