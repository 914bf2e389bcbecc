"""``python -m diffopt demo`` / ``info`` in a subprocess, one framework at a time.

Respects ``DIFFOPT_TEST_BACKENDS`` (the demo's ``numpy`` backend runs when
``numpy`` is selected) and skips frameworks that are not installed. The
subprocesses run without ``TF_CPP_MIN_LOG_LEVEL`` and with stderr captured (not
a terminal): the command itself must keep stderr free of framework log lines
and progress-bar escapes.
"""

import importlib.util
import io
import os
import re
import subprocess
import sys

import pytest

from conftest import SELECTED
from diffopt._demo import checks, runner

DEMO_BACKENDS = ("numpy", "torch", "jax", "tensorflow")
ENV = {k: v for k, v in dict(os.environ, MPLBACKEND="Agg").items() if k != "TF_CPP_MIN_LOG_LEVEL"}
#: Lines the frameworks log at start-up (absl/TF C++: "I0000 00:00:... port.cc:153] oneDNN ...") and tqdm's output.
NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cuda drivers|cuInit|\x1b\[|it/s\]", re.M)


def _run(*args, timeout=600, hide=()):
    """``python -m diffopt ARGS``; ``hide``: modules made unimportable first (``sys.modules[name] = None``)."""
    code = ("import sys\nfor m in %r: sys.modules[m] = None\nfrom diffopt.__main__ import main\n"
            "sys.exit(main(sys.argv[1:]))" % (tuple(hide),))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
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
    proc = _run("demo", "--backend", name, "--quick", "--out", str(tmp_path))  # progress on, stderr not a TTY
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith(name + " ")]
    assert len(rows) >= 14, proc.stdout
    assert all(line.rstrip().endswith("PASS") for line in rows), proc.stdout
    for check in ("perturbed argmax", "perturbed OR", "shortest path", "I-MLE", "diff_sort", "SPO+ loss",
                  "SPO+ training"):
        assert any(check in line for line in rows), (check, proc.stdout)
    assert f"{len(rows)}/{len(rows)} checks passed" in proc.stdout and "skipped" not in proc.stdout
    assert not NOISE.search(proc.stderr), proc.stderr[:2000]  # no framework start-up log, no progress bars
    png = tmp_path / f"demo_{name}.png"
    assert png.exists() and png.stat().st_size > 10_000


#: What a bare install lacks: the frameworks and every optional package of the demo.
BARE = ("autograd", "scipy", "matplotlib", "tqdm", "torch", "jax", "tensorflow")


def test_demo_skips_what_is_not_installed(tmp_path):
    """A bare install: every check needing a missing package is SKIP with its pip line; exit 0."""
    if "numpy" not in SELECTED:
        pytest.skip("the numpy backend is not selected")
    proc = _run("demo", "--backend", "all", "--quick", "--out", str(tmp_path), hide=BARE, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.rstrip() for line in proc.stdout.splitlines() if re.match(r"(numpy|torch|jax|tensorflow) ", line)]
    skips = [line for line in rows if line.endswith("SKIP")]
    assert not [line for line in rows if line.endswith(("FAIL", "ERROR")) or "ERROR" in line], proc.stdout
    assert all(line.endswith(("PASS", "SKIP")) for line in rows), proc.stdout
    hints = {'needs autograd (pip install "pydiffopt[autograd]")', 'needs scipy (pip install "pydiffopt[scipy]")',
             'needs matplotlib (pip install "pydiffopt[examples]")', 'needs torch (pip install "pydiffopt[torch]")',
             'needs jax (pip install "pydiffopt[jax]")', 'needs tensorflow (pip install "pydiffopt[tensorflow]")'}
    assert {h for h in hints if any(h in line for line in skips)} == hints, proc.stdout
    assert all("skipped: needs" in line for line in skips)  # a skipped row never says PASS
    passed = [line for line in rows if line.endswith("PASS")]
    assert len(passed) >= 8 and all(line.startswith("numpy ") for line in passed), proc.stdout  # forward checks ran
    assert f"{len(passed)}/{len(passed)} checks passed, {len(skips)} skipped" in proc.stdout
    assert ('to run the skipped checks: pip install "pydiffopt[autograd,examples,jax,scipy,tensorflow,torch]"'
            in proc.stdout)
    assert not list(tmp_path.iterdir())  # no figure without matplotlib
    assert not NOISE.search(proc.stderr), proc.stderr


def test_demo_without_scipy_skips_only_imle(tmp_path):
    """The issue's case: a framework but no SciPy; I-MLE is SKIP, everything else runs and passes."""
    if "numpy" not in SELECTED or not importlib.util.find_spec("autograd"):
        pytest.skip("needs the numpy backend with autograd")
    proc = _run("demo", "--backend", "numpy", "--quick", "--no-figures", "--out", str(tmp_path), hide=("scipy",))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.rstrip() for line in proc.stdout.splitlines() if line.startswith("numpy ")]
    skips = [re.split(r"\s{2,}", line) for line in rows if line.endswith("SKIP")]
    assert skips == [["numpy", "I-MLE", 'skipped: needs scipy (pip install "pydiffopt[scipy]")', "SKIP"]], proc.stdout
    assert sum(line.endswith("PASS") for line in rows) == len(rows) - 1


def _fake_check(row):
    return lambda backend, settings: checks.Result([checks.Row(backend, *row)])


@pytest.mark.parametrize("rows, status", [
    ([("ok", "1", True)], 0),
    ([("ok", "1", True), ("bad", "2", False)], 1),
    ([("ok", "1", True), ("later", "skipped: needs scipy", False, "scipy")], 0),
    ([("later", "skipped: needs scipy", False, "scipy")], 0),  # nothing ran, nothing failed
])
def test_exit_status_counts_the_checks_that_ran(monkeypatch, rows, status):
    monkeypatch.setattr(checks, "CHECKS", {f"c{i}": _fake_check(r) for i, r in enumerate(rows)})
    out = io.StringIO()
    assert runner.run_demo("numpy", progress=False, figures=False, stream=out) == status
    ran = [r for r in rows if len(r) == 3]
    assert f"{sum(r[2] for r in ran)}/{len(ran)} checks passed" in out.getvalue()
    table = out.getvalue().splitlines()
    assert ("FAIL" in " ".join(table)) == (status == 1)
    assert sum(line.endswith("SKIP") for line in table) == len(rows) - len(ran)


def test_run_check_skips_a_missing_optional_module_and_reports_others(monkeypatch):
    def needs(module):
        def check(backend, settings):
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
        return check

    monkeypatch.setattr(checks, "CHECKS", {"imle": needs("matplotlib.pyplot"), "or": needs("mystery")})
    (row,) = checks.run_check("imle", "numpy", checks.Settings.quick()).rows
    assert (row.check, row.status, row.skip) == ("I-MLE", "SKIP", "examples")
    assert row.value == 'skipped: needs matplotlib (pip install "pydiffopt[examples]")'
    (row,) = checks.run_check("or", "numpy", checks.Settings.quick()).rows  # not an optional package: a bug
    assert row.status == "FAIL" and row.value.startswith("ERROR ModuleNotFoundError")


def test_progress_bars_only_on_a_terminal(monkeypatch):
    pytest.importorskip("tqdm")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert runner._progress(True) is None
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert runner._progress(False) is None
    bar = runner._progress(True)
    assert list(bar(range(3), desc="x")) == [0, 1, 2] and "\rx:   0%" in sys.stderr.getvalue()  # a bar was drawn


def test_demo_rejects_unknown_backend():
    proc = _run("demo", "--backend", "mxnet", "--no-progress")
    assert proc.returncode == 2
    assert "unknown backend" in proc.stderr


def test_info_versions_only():
    proc = _run("info", "--no-devices", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("diffopt ")
    assert proc.stdout.splitlines()[1].startswith("distribution: ")
    assert "numpy" in proc.stdout and "demo backends" in proc.stdout


def test_info_devices():
    wanted = [n for n in DEMO_BACKENDS if n in SELECTED and importlib.util.find_spec(n)]
    proc = _run("info", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not NOISE.search(proc.stderr), proc.stderr[:2000]
    for name in wanted:
        line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith(name + " "))
        assert "devices:" in line and "cpu" in line.lower(), line


def test_import_imports_no_framework():
    code = ("import sys, diffopt, diffopt.__main__, diffopt._demo.runner, diffopt._demo.checks, "
            "diffopt._demo.figures; print(sorted(m for m in ('torch', 'jax', 'tensorflow', 'autograd') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
