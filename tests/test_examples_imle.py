"""The I-MLE shortest-path example runs (tiny) and learns."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "imle_shortest_path.py")


@pytest.mark.parametrize("framework", ["autograd", "torch"])
def test_imle_shortest_path_example_runs_tiny_and_the_loss_falls(tmp_path, framework):
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    pytest.importorskip("matplotlib")
    cmd = [sys.executable, EXAMPLE, "--backend", framework, "--size", "8", "--steps", "30",
           "--samples", "4", "--snapshots", "3", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    png = tmp_path / f"imle_shortest_path_{framework}.png"
    assert png.exists() and png.stat().st_size > 1000
    assert summary["final_loss"] < 0.7 * summary["initial_loss"]
