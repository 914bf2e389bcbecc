"""Entry point: ``python -m benchmarks [--suite sorting|perturbations|imle|all|dfl] [--quick]``.

Runs diffopt and the peer packages side by side (see ``benchmarks/README.md``),
writes ``results.json`` and ``README_table.md`` (and the scaling PNGs) into
``--out`` (default ``benchmarks/results``).

The thread count is fixed before any framework is imported: the environment
variables ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``
are set and ``torch.set_num_threads`` is called; both are recorded.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

SUITES = ("sorting", "perturbations", "imle")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="all", choices=SUITES + ("all", "dfl"),
                   help="'all' runs the timing suites; 'dfl' (decision-focused learning against PyEPO, "
                        "training runs) only runs when named")
    p.add_argument("--quick", action="store_true", help="small sizes and few repetitions (< 3 min on 2 cores)")
    p.add_argument("--tiny", action="store_true",
                   help="only the smallest case of each suite, 2 repetitions (used by the test)")
    p.add_argument("--case", default=None, help="only cases whose name contains this text")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads for every framework (default 1: reproducible, and immune to "
                        "oversubscription on a shared machine)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-case memory subprocesses")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="output folder")
    p.add_argument("--no-plots", action="store_true", help="do not draw the scaling PNGs")
    p.add_argument("--jobs", type=int, default=1,
                   help="dfl only: worker processes, one (problem, degree, seed) group each (default 1)")
    p.add_argument("--resume", action="store_true",
                   help="dfl only: keep the runs already recorded in <out>/dfl_cells_<mode>.jsonl, run the rest")
    p.add_argument("--estimate", action="store_true",
                   help="dfl only: time the OR-tools solvers and print the run's solver time, then stop")
    p.add_argument("--memory-child", nargs=3, metavar=("SUITE", "CASE", "LABEL"), help=argparse.SUPPRESS)
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)
    return p


def _set_threads(n):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(n)
    if n == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1").strip()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _apply_torch_threads(n):
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def load_suite(name):
    import importlib

    return importlib.import_module(f"benchmarks.suite_{name}")


def build_cases(suite, quick, tiny):
    cases = load_suite(suite).cases(quick=quick or tiny)
    if tiny:
        cases = [c for c in cases if c.tiny]
    return cases


def _version(dist):
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


PACKAGES = ("diffopt", "numpy", "scipy", "autoray", "torch", "jax", "jaxlib", "differentiable-sorting",
            "diffsort", "torchsort", "optax", "pyepo", "numba")


def machine_info(threads):
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem / 2**30, 1) if mem else None,
        "threads": threads,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")},
        "versions": {p: _version(p) for p in PACKAGES},
        "git": _git_describe(),
    }


def _git_describe():
    """Commit of the diffopt checkout (with '+changes' when the tree differs from it), if known."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "diffopt"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _memory_child(args, threads):
    from benchmarks._harness import measure_memory

    suite, case_name, label = args.memory_child
    case = next(c for c in build_cases(suite, args.quick, args.tiny) if c.name == case_name)
    result = measure_memory(case.contender(label), after_make=lambda: _apply_torch_threads(threads))
    print("MEMORY-RESULT " + json.dumps(result), flush=True)


def _run_memory(suite, case, label, args, timeout):
    cmd = [sys.executable, "-m", "benchmarks", "--suite", suite, "--memory-child", suite, case.name, label,
           "--threads", str(args.threads)]
    if args.quick:
        cmd.append("--quick")
    if args.tiny:
        cmd.append("--tiny")
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"memory run timed out after {timeout} s"}
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("MEMORY-RESULT "):
            res = json.loads(line[len("MEMORY-RESULT "):])
            return {"status": "ok", "peak_rss_delta_mb": res["peak_rss_delta_bytes"] / 2**20,
                    "baseline_rss_mb": res["baseline_rss_bytes"] / 2**20}
    tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-1:])[-300:]
    return {"status": "error", "reason": f"memory run failed (rc={proc.returncode}): {tail}"}


def _framework_threads():
    """Thread counts the frameworks report in this process (only those imported)."""
    out = {}
    if "torch" in sys.modules:
        out["torch.get_num_threads"] = sys.modules["torch"].get_num_threads()
    if "jax" in sys.modules:
        out["XLA_FLAGS"] = os.environ.get("XLA_FLAGS") or "(XLA default: all cores)"
    return out


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _run_suites(suites, args, timing):
    from benchmarks._harness import compare, time_case

    threads = args.threads
    all_cases = []
    for suite in suites:
        cases = build_cases(suite, args.quick, args.tiny)
        if args.case:
            cases = [c for c in cases if args.case in c.name]
        print(f"== suite {suite}: {len(cases)} case(s)", flush=True)
        for case in cases:
            print(f"  -- {case.name}  {case.params}", flush=True)
            _apply_torch_threads(threads)
            if case.time_it:
                rows = time_case(case, **timing)
            else:
                rows = {c.label: {"label": c.label, "role": c.role, "framework": c.framework,
                                  "info": dict(c.info), "status": "skipped" if c.skip else "not timed",
                                  "reason": c.skip} for c in case.contenders}
            _apply_torch_threads(threads)
            if not args.no_memory:
                for c in case.contenders:
                    row = rows[c.label]
                    if not c.memory or c.skip or row.get("status") in ("error", "skipped"):
                        continue
                    if args.tiny and c.role != "diffopt":
                        continue
                    if args.quick and case.time_it and case is not cases[-1] and not case.memory_targets:
                        continue  # quick runs: memory of the largest timed case and the memory cases only
                    mem = _run_memory(suite, case, c.label, args, timeout=300 if not args.quick else 120)
                    row["memory"] = mem
                    if mem["status"] == "ok":
                        print(f"    {c.label:<48s} peak RSS delta {mem['peak_rss_delta_mb']:9.1f} MB", flush=True)
                        if row.get("status") == "not timed":
                            row["status"] = "ok"
                    else:
                        print(f"    {c.label:<48s} memory: {mem['reason']}", flush=True)
                        if row.get("status") == "not timed":
                            row.update(status="error", reason=mem["reason"])
            memory_checks = []
            for label, bound in case.memory_targets.items():
                mem = rows.get(label, {}).get("memory") or {}
                val = mem.get("peak_rss_delta_mb")
                memory_checks.append({"label": label, "target_mb": bound, "peak_rss_delta_mb": val,
                                      "met": None if val is None else bool(val < bound),
                                      "reason": None if val is not None else
                                      (mem.get("reason") or rows.get(label, {}).get("reason") or "not measured")})
            all_cases.append({
                "suite": suite,
                "case": case.name,
                "params": case.params,
                "scaling": case.scaling,
                "rows": list(rows.values()),
                "comparisons": compare(case, rows),
                "memory_checks": memory_checks,
            })
    return all_cases


def _run_suites_in_children(suites, args, child_threads):
    import tempfile

    cases, failed = [], []
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        for suite in suites:
            part = os.path.join(tmp, f"{suite}.json")
            cmd = [sys.executable, "-m", "benchmarks", "--suite", suite, "--threads", str(args.threads),
                   "--part", part, "--out", args.out]
            cmd += [flag for flag, on in (("--quick", args.quick), ("--tiny", args.tiny),
                                          ("--no-memory", args.no_memory)) if on]
            if args.case:
                cmd += ["--case", args.case]
            try:
                proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=3600)
            except subprocess.TimeoutExpired:
                print(f"!! suite {suite} timed out after 3600 s; the others go on", flush=True)
                failed.append({"suite": suite, "returncode": "timeout"})
                continue
            if proc.returncode != 0 or not os.path.exists(part):
                print(f"!! suite {suite} failed (rc={proc.returncode}); the others go on", flush=True)
                failed.append({"suite": suite, "returncode": proc.returncode})
                continue
            with open(part) as fh:
                data = json.load(fh)
            cases += data["cases"]
            child_threads.update(data.get("meta", {}).get("framework_threads", {}))
    return cases, failed


def main(argv=None):
    args = _parser().parse_args(argv)
    threads = args.threads or 1
    args.threads = threads
    _set_threads(threads)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    if args.memory_child:
        return _memory_child(args, threads)

    if args.suite == "dfl":
        from benchmarks import suite_dfl

        return suite_dfl.run(args)

    from benchmarks import report

    suites = SUITES if args.suite == "all" else (args.suite,)
    mode = "tiny" if args.tiny else ("quick" if args.quick else "full")
    if args.tiny:
        timing = dict(warmup=1, min_reps=2, max_reps=2, budget_s=0.0)
    elif args.quick:
        timing = dict(warmup=1, min_reps=3, max_reps=7, budget_s=3.0)
    else:
        timing = dict(warmup=2, min_reps=7, max_reps=25, budget_s=15.0)
    started = time.time()
    load_start = _loadavg()
    results = {"meta": {}, "cases": []}
    if not args.part:
        print(f"diffopt benchmarks: suites={','.join(suites)} mode={mode} threads={threads}", flush=True)
    child_threads = {}
    if args.part or len(suites) == 1:
        results["cases"] = _run_suites(suites, args, timing)
        child_threads = _framework_threads()
    else:
        # one fresh process per suite, so that suites cannot pollute each other (threads, caches, forks)
        results["cases"], failed = _run_suites_in_children(suites, args, child_threads)
        if failed:
            results["failed_suites"] = failed
    if args.part:
        results["meta"] = {"framework_threads": child_threads}
        with open(args.part, "w") as fh:
            json.dump(results, fh)
        return 0
    results["meta"] = machine_info(threads)
    results["meta"]["framework_threads"] = child_threads
    if results.get("failed_suites"):
        results["meta"]["failed_suites"] = results["failed_suites"]
    results["meta"].update(
        mode=mode,
        suites=list(suites),
        command=" ".join(["python -m benchmarks"] + list(argv if argv is not None else sys.argv[1:])),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        wall_s=round(time.time() - started, 1),
        load_average_start=load_start,
        load_average_end=_loadavg(),
        timing=timing,
    )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1, sort_keys=False)
    written = report.write_all(path, args.out, plots=not args.no_plots)
    print(f"wrote {path}" + "".join(f"\nwrote {w}" for w in written), flush=True)
    print(f"done in {time.time() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
