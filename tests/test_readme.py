"""Every ```python block of README.md runs, and the results it states hold.

Blocks are found anew at each run, so edits to the README are picked up.
A block that imports ``torch``, ``jax``, ``tensorflow`` or ``autograd`` runs
in the environment of that framework (``DIFFOPT_TEST_BACKENDS``); a block with
none of them runs with the ``numpy`` backend. Bash blocks are not run.

Stated results are checked from the comments of assignment lines:

- ``y = expr   # ≈ other``: after the block, ``y`` is within 0.05 of ``other``
  (both evaluated as NumPy; ``softmax`` is available). 0.05 is 5 standard
  deviations of a Monte-Carlo mean of 0/1 outcomes over the README's 10,000
  samples (``sqrt(0.25 / 10_000) = 0.005``), with room for the Gumbel example's
  Jacobian-free values.
- ``y = expr   # [d0, d1]`` (a shape, Python expressions allowed): ``y.shape``.

To exclude a block on purpose, put the comment ``# readme-test: skip`` in it
(none is excluded today).

The README is a front page: at most 250 lines; its install lines name the
distribution ``pydiffopt`` (the name ``diffopt`` on PyPI is an unrelated
project), its test command is CI's (``.ci/run``), and every relative link
points at a file of the repository (the detail lives in ``docs/``).
"""

import pathlib
import re

import numpy as np
import pytest

from conftest import SELECTED

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FRAMEWORKS = ("torch", "jax", "tensorflow", "autograd")
TOLERANCE = 0.05


def python_blocks():
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```", text, flags=re.M | re.S)
    return blocks


def _framework(block):
    found = [f for f in FRAMEWORKS if re.search(rf"^\s*(import|from)\s+[\w\s,.]*\b{f}\b", block, flags=re.M)]
    return found[0] if found else "numpy"


def _to_numpy(x):
    if not hasattr(x, "shape") or isinstance(x, type):
        return x
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        try:
            return np.asarray(x.numpy())
        except Exception:  # noqa: BLE001 - e.g. a jax array has no .numpy but converts below
            pass
    try:
        return np.asarray(x)
    except Exception:  # noqa: BLE001 - not an array (a module, a function): left as is
        return x


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def claims(block):
    """``(name, kind, expression)`` for every checkable comment of the block."""
    out = []
    for line in block.splitlines():
        m = re.match(r"^(\w+)\s*=[^=].*#\s*(≈|\[)(.*)$", line)
        if not m:
            continue
        name, kind, rest = m.groups()
        if kind == "≈":
            out.append((name, "approx", rest.split(";")[0].strip()))
        else:
            out.append((name, "shape", "[" + rest.split("]")[0] + "]"))
    return out


BLOCKS = python_blocks()


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 3, f"README.md has {len(BLOCKS)} python blocks"
    assert any(claims(b) for b in BLOCKS), "no block states a checkable result any more"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block(index, tmp_path, monkeypatch):
    block = BLOCKS[index]
    if "# readme-test: skip" in block:
        pytest.skip("block marked '# readme-test: skip'")
    framework = _framework(block)
    if framework not in SELECTED:
        pytest.skip(f"block uses {framework}, not among DIFFOPT_TEST_BACKENDS")
    pytest.importorskip(framework)
    monkeypatch.chdir(tmp_path)  # anything the block writes stays out of the repository
    namespace = {"__name__": f"readme_block_{index}"}
    exec(compile(block, f"README.md python block {index}", "exec"), namespace)  # noqa: S102 - the README is ours
    for name, kind, expression in claims(block):
        value = _to_numpy(namespace[name])
        if kind == "shape":
            assert tuple(value.shape) == tuple(eval(expression)), (name, expression)  # noqa: S307
        else:
            env = {k: _to_numpy(v) for k, v in namespace.items() if not k.startswith("__")}
            env.update(softmax=_softmax, np=np)
            want = np.asarray(eval(expression, env))  # noqa: S307
            np.testing.assert_allclose(value, want, rtol=0, atol=TOLERANCE, err_msg=f"{name} ≈ {expression}")


def test_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines (at most 250: the detail belongs in docs/)"


def test_install_lines_name_the_distribution_not_the_stranger():
    text = README.read_text(encoding="utf-8")
    installs = re.findall(r"pip install (?:-e )?\"([^\"]+)\"", text)
    assert installs, "no quoted pip install line"
    for target in installs:
        name = target.split("[")[0]
        assert name in (".", "pydiffopt"), f"pip install {target!r}: install from the checkout or as pydiffopt"
    assert any(t.startswith("pydiffopt[") for t in installs)
    commands = "\n".join(re.findall(r"^```bash[ \t]*\n(.*?)^```", text, flags=re.M | re.S))
    assert not re.search(r"pip install \"?diffopt\b", commands), "a command installs the unrelated PyPI project"
    assert "pip uninstall diffopt" in text  # the README says how to remove the stranger


def test_install_lines_name_pyprojects_distribution_and_its_extras():
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("no pyproject.toml in this tree")
    import tomllib

    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = set(project["optional-dependencies"])
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"pip install (?:-e )?\"([^\"]+)\"", text):
        name, _, rest = target.partition("[")
        assert name in (".", project["name"]), f"pip install {target!r} names neither the checkout nor {project['name']}"
        for extra in filter(None, rest.rstrip("]").split(",")):
            assert extra.strip() in extras, f"pip install {target!r}: no extra {extra!r} in pyproject.toml"


def test_readme_test_command_is_cis():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8") if (ROOT / ".ci" / "run").is_file() else None
    if ci is None:
        pytest.skip("no .ci/run in this tree (an installed sdist without it)")
    command = "python3 -m pip install tox && python3 -m tox -p auto"
    assert command in README.read_text(encoding="utf-8") and command in ci


def test_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t and not t.startswith("#")]
    assert len(links) >= 10, links
    missing = [t for t in links if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, missing
