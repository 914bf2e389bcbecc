"""Each example script, tiny sizes, in a subprocess: it runs, writes its figure, prints a sane number.

Respects ``DIFFOPT_TEST_BACKENDS`` and skips frameworks that are not installed.
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from conftest import SELECTED

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
ENV = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2")
BACKENDS = ("numpy", "torch", "jax", "tensorflow")

pytestmark = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")


def _backends():
    out = []
    for name in BACKENDS:
        if name not in SELECTED:
            continue
        missing = importlib.util.find_spec(name) is None or (
            name == "numpy" and importlib.util.find_spec("autograd") is None)
        marks = [pytest.mark.skip(reason=f"{name} (or autograd) is not installed")] if missing else []
        out.append(pytest.param(name, id=name, marks=marks))
    return out or [pytest.param("none", marks=pytest.mark.skip(reason="no backend selected"))]


def _run(script, backend, out, *args):
    cmd = [sys.executable, os.path.join(EXAMPLES, script), "--backend", backend, "--out", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _number(pattern, text):
    match = re.search(pattern, text)
    assert match, (pattern, text)
    return float(match.group(1))


def _figure(out, name):
    png = out / f"{name}.png"
    assert png.exists() and png.stat().st_size > 5_000
    return png


@pytest.mark.parametrize("backend", _backends())
def test_perturbed_or(backend, tmp_path):
    text = _run("perturbed_or.py", backend, tmp_path, "--size", "7", "--num-samples", "4000")
    assert _number(r"max \|value - closed form\| = ([\d.]+)", text) < 0.1
    _figure(tmp_path, "perturbed_or")


@pytest.mark.parametrize("backend", _backends())
def test_shortest_path(backend, tmp_path):
    text = _run("shortest_path.py", backend, tmp_path, "--num-samples", "4000")
    assert _number(r"-> ([\d.]+) after 30 steps", text) > 0.9
    _figure(tmp_path, "shortest_path")


@pytest.mark.parametrize("backend", _backends())
def test_warcraft_like(backend, tmp_path):
    # The example's claim: both methods learn path costs from pixels. The untrained model (same
    # initial weights) is the baseline a zero or wrong-signed gradient cannot beat; numpy at these
    # sizes measured regret 24% -> 4.6% (FY) and 7.3% (I-MLE), accuracy 28% -> 66% and 50%.
    text = _run("warcraft_like.py", backend, tmp_path, "--train", "64", "--test", "32", "--size", "6",
                "--epochs", "6", "--num-samples", "4")
    base_acc = _number(r"untrained model: test path accuracy ([\d.]+)%", text)
    base_regret = _number(r"untrained model: .*regret ([\d.]+)%", text)
    for method in ("Fenchel-Young", "I-MLE"):
        acc = _number(rf"final {method}: test path accuracy ([\d.]+)%", text)
        regret = _number(rf"final {method}: .*regret ([\d.]+)%", text)
        assert regret < 0.5 * base_regret, (method, regret, base_regret)
        assert acc >= base_acc + 10.0, (method, acc, base_acc)  # 10 points = 3 more of 32 test maps
    assert "epoch  6" in text
    _figure(tmp_path, "warcraft_like")


@pytest.mark.parametrize("backend", _backends())
def test_learning_to_rank(backend, tmp_path):
    text = _run("learning_to_rank.py", backend, tmp_path, "--queries", "64", "--n", "12", "--epochs", "2")
    assert _number(r"final: test Spearman ([\d.-]+)", text) > 0.5
    _figure(tmp_path, "learning_to_rank")


@pytest.mark.parametrize("backend", _backends())
def test_sorting_error(backend, tmp_path):
    text = _run("sorting_error.py", backend, tmp_path, "--max-log2-n", "5", "--reps", "2")
    plain = re.search(r"plain log-sum-exp .* finite: (\d+)%", text)
    ours = re.search(r"diffopt logsumexp .* finite: (\d+)%", text)
    assert plain and ours, text
    assert int(plain.group(1)) < 100 and int(ours.group(1)) == 100
    _figure(tmp_path, "sorting_error")


@pytest.mark.parametrize("backend", _backends())
def test_predict_then_optimize(backend, tmp_path):
    text = _run("predict_then_optimize.py", backend, tmp_path, "--train", "128", "--test", "64", "--epochs", "3",
                "--lr", "0.05")
    for method in ("SPO+", "DBB", "NID", "PFYL"):
        match = re.search(rf"final {re.escape(method)}: normalised regret ([\d.]+) \(from ([\d.]+)", text)
        assert match, text
        assert float(match.group(1)) < 0.5 * float(match.group(2))
    _figure(tmp_path, "predict_then_optimize")


@pytest.mark.parametrize("backend", _backends())
def test_spearman(backend, tmp_path):
    text = _run("spearman.py", backend, tmp_path, "--groups", "128", "--epochs", "3")
    start = _number(r"start ([\d.-]+)\)", text)
    final = _number(r"final: test Spearman ([\d.-]+)", text)
    assert final > 0.8 and final > start + 0.3, text  # the soft Spearman loss learned the order
    _figure(tmp_path, "spearman")
