"""The README's install lines resolve to this project: ``pip install "pydiffopt[...]"`` picks the
wheel built from this checkout, with the extra it names (the index's ``diffopt`` is another project).

Offline: the wheel is built from a copy of the checkout's sources without build isolation (the
running setuptools), and pip resolves against that wheel alone (``--no-index``). Runs where the
``numpy`` backend is selected (once per test matrix), from a checkout (it needs ``pyproject.toml``).
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from conftest import SELECTED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: What ``pip wheel`` needs of the checkout.
SOURCES = ("pyproject.toml", "setup.py", "setup.cfg", "README.md", "LICENSE", "diffopt")

pytestmark = [
    pytest.mark.skipif("numpy" not in SELECTED, reason="runs once, with the numpy backend"),
    pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "pyproject.toml")), reason="needs the checkout"),
    pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools to build"),
]


def _pip(*args, **kw):
    env = dict(os.environ, PIP_CONSTRAINT="", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env,
                          timeout=180, **kw)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """A folder holding the one wheel built from this checkout's sources."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            os.makedirs(src, exist_ok=True)
            shutil.copy(path, src / name)
    dist = tmp / "dist"
    proc = _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist), str(src))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dist


def _project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _checkout_version():
    spec = importlib.util.spec_from_file_location("_version_probe", os.path.join(ROOT, "diffopt", "__init__.py"))
    with open(spec.origin, encoding="utf-8") as f:
        line = next(ln for ln in f if ln.startswith("__version__"))
    return line.split("=", 1)[1].strip().strip("\"'")


@pytest.mark.parametrize("requirement", ["pydiffopt", "pydiffopt[torch]", "pydiffopt[jax]", "pydiffopt[all]"])
def test_install_line_resolves_to_this_project(wheelhouse, tmp_path, requirement):
    report = tmp_path / "report.json"
    proc = _pip("install", "--dry-run", "--no-index", "--find-links", str(wheelhouse), "--ignore-installed",
                "--no-deps", "--report", str(report), requirement)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "does not provide the extra" not in proc.stderr, proc.stderr
    (item,) = json.loads(report.read_text())["install"]
    meta = item["metadata"]
    assert (meta["name"], meta["version"]) == ("pydiffopt", _checkout_version())
    assert meta["summary"] == _project()["description"]
    assert item["download_info"]["url"].startswith("file://") and str(wheelhouse) in item["download_info"]["url"]
    extras = item.get("requested_extras") or []
    assert extras == requirement.partition("[")[2].rstrip("]").split(",") if "[" in requirement else not extras
    for extra in extras:  # the extra exists and brings its framework
        assert extra in meta["provides_extra"]
        assert any(req.endswith(f'extra == "{extra}"') for req in meta["requires_dist"])


def test_installed_wheel_imports_as_diffopt_and_says_so(wheelhouse, tmp_path):
    """The wheel installed alone (``--no-deps`` into a folder): ``import diffopt`` comes from it and
    ``python -m diffopt info`` names the distribution pydiffopt."""
    target = tmp_path / "site"
    proc = _pip("install", "--no-index", "--no-deps", "--find-links", str(wheelhouse), "--target", str(target),
                "-q", "pydiffopt")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "diffopt" / "__init__.py").is_file() and not (target / "pydiffopt").exists()
    env = dict(os.environ, PYTHONPATH=str(target))
    code = ("import diffopt, importlib.metadata as m; "
            "print(diffopt.__file__); print(m.version('pydiffopt')); print(m.packages_distributions()['diffopt'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    path, version, providers = out.stdout.splitlines()
    assert path.startswith(str(target)) and version == _checkout_version()
    assert "pydiffopt" in providers
    info = subprocess.run([sys.executable, "-m", "diffopt", "info", "--no-devices"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert info.returncode == 0, info.stderr
    assert info.stdout.splitlines()[1].startswith(f"distribution: pydiffopt {version}"), info.stdout
