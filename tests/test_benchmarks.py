"""The benchmark harness runs end to end (``--quick --tiny``) and writes well-formed output.

No timing is asserted: the test only checks that the harness runs, that every
row has a status, that the diffopt side of each tiny case ran wherever its
framework is installed (peers missing here are reported as skipped rows, not
failures), and that the JSON and the Markdown table are well formed.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = [m for m in ("torch", "jax") if importlib.util.find_spec(m) is not None]

pytestmark = pytest.mark.skipif(
    not FRAMEWORKS or not os.path.isdir(os.path.join(ROOT, "benchmarks")),
    reason="the benchmark harness needs torch or jax (and the benchmarks/ folder of a source checkout)",
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "benchmarks", "--suite", "all", "--quick", "--tiny", "--threads", "1",
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"harness failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    with open(out / "results.json") as fh:
        results = json.load(fh)
    return out, results, proc.stdout


def _module_ok(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def test_json_is_well_formed(tiny_run):
    _, results, _ = tiny_run
    meta = results["meta"]
    assert meta["mode"] == "tiny" and meta["threads"] == 1
    assert meta["env"]["OMP_NUM_THREADS"] == "1"
    assert "versions" in meta and meta["versions"].get("numpy")
    suites = {c["suite"] for c in results["cases"]}
    assert suites == {"sorting", "perturbations", "imle"}
    for case in results["cases"]:
        assert case["rows"], case["case"]
        for row in case["rows"]:
            assert row["status"] in ("ok", "skipped", "error"), row
            assert row["role"] in ("diffopt", "peer")
            if row["status"] == "ok" and "times_s" in row:  # memory-only rows have no times
                t = row["times_s"]
                assert 0 < t["min"] <= t["median"] <= t["max"]
                assert t["q1"] <= t["median"] <= t["q3"]
            else:
                assert row["reason"], row
        for cmp in case["comparisons"]:
            assert {"diffopt", "peer", "ratio"} <= set(cmp)
            if cmp["ratio"] is not None:
                assert cmp["ratio"] > 0 and cmp["ratio_q1"] <= cmp["ratio_q3"]
            else:
                assert cmp["reason"]


@pytest.mark.parametrize("suite, module", [
    ("sorting", "diffopt.sorting"),
    ("perturbations", "diffopt.perturbations"),
    ("imle", "diffopt.imle"),
])
def test_diffopt_side_runs(tiny_run, suite, module):
    _, results, stdout = tiny_run
    if not _module_ok(module):
        pytest.skip(f"{module} is not in this checkout")
    rows = [r for c in results["cases"] if c["suite"] == suite for r in c["rows"] if r["role"] == "diffopt"]
    runnable = [r for r in rows if r["framework"] in FRAMEWORKS]
    if not any(r["framework"] in FRAMEWORKS for c in results["cases"] if c["suite"] == suite for r in c["rows"]):
        pytest.skip(f"the {suite} suite has no case for {FRAMEWORKS} (its peers are in other frameworks)")
    assert runnable, f"no diffopt row of the {suite} suite runs in {FRAMEWORKS}"
    for row in runnable:
        assert row["status"] == "ok", f"{row['label']}: {row.get('reason')}\n{stdout[-2000:]}"
        mem = row.get("memory")
        if mem is not None:  # measured in a fresh subprocess
            assert mem["status"] == "ok", f"{row['label']}: memory {mem}"
            assert mem["peak_rss_delta_mb"] >= 0
    assert any(r.get("memory") for r in runnable), f"no memory measured for the {suite} suite"


def test_markdown_table(tiny_run):
    out, results, _ = tiny_run
    text = (out / "README_table.md").read_text()
    assert text.startswith("## Benchmarks")
    assert "Threads: 1" in text and "Versions:" in text and "Machine:" in text
    for title in ("### Sorting", "### Perturbations", "### Implicit MLE"):
        assert title in text
    tables = [line for line in text.splitlines() if line.startswith("|")]
    assert tables
    for line in tables:  # every table row is closed and has a consistent number of cells per table
        assert line.endswith("|"), line
    n_rows = sum(len(c["rows"]) for c in results["cases"])
    body = [line for line in tables if not line.startswith("|---") and not line.startswith("| case |")]
    assert len(body) >= n_rows


def test_report_regenerates_from_json(tiny_run, tmp_path):
    out, _, _ = tiny_run
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- benchmarks:start -->\nold\n<!-- benchmarks:end -->\nrest\n")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.report", str(out / "results.json"), "--out",
                           str(tmp_path), "--no-plots", "--readme", str(readme)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    new = readme.read_text()
    assert new.startswith("intro\n<!-- benchmarks:start -->\n## Benchmarks") and new.endswith("<!-- benchmarks:end -->\nrest\n")
    assert "old" not in new
    placeholder = tmp_path / "README2.md"
    placeholder.write_text("## Benchmarks\n\ntext\n\n<!-- BENCHMARK TABLE -->\n\n## Next\n")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.report", str(out / "results.json"), "--out",
                           str(tmp_path / "compact"), "--no-plots", "--readme", str(placeholder), "--compact"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = placeholder.read_text()
    assert text.count("## Benchmarks") == 1 and "<!-- BENCHMARK TABLE -->" not in text
    assert "<!-- benchmarks:start -->\nMachine:" in text and text.endswith("<!-- benchmarks:end -->\n\n## Next\n")
    # same JSON, same table: the table is generated, never typed
    assert (tmp_path / "README_table.md").read_text() == (out / "README_table.md").read_text()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None or importlib.util.find_spec("matplotlib") is None,
                    reason="the relaxations figure times torch and draws with matplotlib")
def test_relaxations_figure_script(tmp_path):
    """``benchmarks/relaxations_figure.py --quick`` (the figure of docs/guide/relaxations.md) writes
    its figure, and its error panel says what the page says: at a small strength the KL projection
    is closer to the exact ranks than the network's logsumexp."""
    png = tmp_path / "relaxations.png"
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "relaxations_figure.py"), "--quick",
                           "--out", str(png)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert png.exists() and png.stat().st_size > 5_000
    small = {line.split(" error")[0].strip(): float(line.split(": ")[1].split(",")[0])
             for line in proc.stdout.splitlines() if " error at strength " in line}
    assert set(small) == {"network logsumexp", "network cauchy", "projection L2", "projection KL"}
    assert small["projection KL"] < small["network logsumexp"]


def test_compare_revisions_arguments(capsys):
    """``benchmarks.compare_revisions`` checks its command line before any checkout."""
    sys.path.insert(0, ROOT)
    try:
        from benchmarks.compare_revisions import parse_args, table
    finally:
        sys.path.remove(ROOT)
    args = parse_args(["--old", "c0e5e34", "--frameworks", "numpy,torch", "--rounds", "2"])
    assert (args.old, args.new, args.frameworks, args.rounds) == ("c0e5e34", "HEAD", ("numpy", "torch"), 2)
    for bad, word in ((["--frameworks", "numpy,cupy"], "--frameworks"), (["--rounds", "0"], "--rounds"),
                      (["--budget", "-1"], "--budget"), ([], "--old")):
        with pytest.raises(SystemExit):
            parse_args((["--old", "x"] if word != "--old" else []) + bad)
        assert word in capsys.readouterr().err
    rows = table({"f (numpy)": [0.002, 0.001]}, {"f (numpy)": [0.003, 0.0015], "g (torch)": "failed"}, "a", "b")
    assert "| f (numpy) | 1.00 | 1.50 | **1.50** |" in rows and "| g (torch) | None | failed | n/a |" in rows
