"""``python -m diffopt demo`` / ``info`` in a subprocess, one framework at a time.

Respects ``DIFFOPT_TEST_BACKENDS`` (the demo's ``numpy`` backend runs when
``numpy`` is selected) and skips frameworks that are not installed.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import SELECTED

DEMO_BACKENDS = ("numpy", "torch", "jax", "tensorflow")
ENV = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2")


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "diffopt", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def _params():
    out = []
    for name in DEMO_BACKENDS:
        if name not in SELECTED:
            continue
        marks = [] if importlib.util.find_spec(name) else [pytest.mark.skip(reason=f"{name} is not installed")]
        out.append(pytest.param(name, id=name, marks=marks))
    return out or [pytest.param("none", marks=pytest.mark.skip(reason="no demo backend selected"))]


@pytest.mark.parametrize("name", _params())
def test_demo_quick(name, tmp_path):
    proc = _run("demo", "--backend", name, "--quick", "--no-progress", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith(name + " ")]
    assert len(rows) >= 10, proc.stdout
    assert all(line.rstrip().endswith("PASS") for line in rows), proc.stdout
    for check in ("perturbed argmax", "perturbed OR", "shortest path", "I-MLE", "diff_sort"):
        assert any(check in line for line in rows), (check, proc.stdout)
    png = tmp_path / f"demo_{name}.png"
    assert png.exists() and png.stat().st_size > 10_000


def test_demo_rejects_unknown_backend():
    proc = _run("demo", "--backend", "mxnet", "--no-progress")
    assert proc.returncode == 2
    assert "unknown backend" in proc.stderr


def test_info_versions_only():
    proc = _run("info", "--no-devices", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("diffopt ")
    assert "numpy" in proc.stdout and "demo backends" in proc.stdout


def test_info_devices():
    wanted = [n for n in DEMO_BACKENDS if n in SELECTED and importlib.util.find_spec(n)]
    proc = _run("info", timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in wanted:
        line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith(name + " "))
        assert "devices:" in line and "cpu" in line.lower(), line


def test_import_imports_no_framework():
    code = ("import sys, diffopt, diffopt.__main__, diffopt._demo.runner, diffopt._demo.checks, "
            "diffopt._demo.figures; print(sorted(m for m in ('torch', 'jax', 'tensorflow', 'autograd') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
