"""Turn ``results.json`` into the Markdown table (and the scaling PNGs).

    python -m benchmarks.report [results.json] [--out DIR] [--readme README.md]

Every number in the table comes from the JSON. With ``--readme``, the table
replaces the text between ``<!-- benchmarks:start -->`` and
``<!-- benchmarks:end -->`` in that file, or a ``<!-- BENCHMARK TABLE -->``
placeholder (which becomes those two markers); nothing else is touched.
"""

import argparse
import json
import os
import sys

START = "<!-- benchmarks:start -->"
END = "<!-- benchmarks:end -->"
PLACEHOLDER = "<!-- BENCHMARK TABLE -->"
SUITE_TITLES = {"sorting": "Sorting", "perturbations": "Perturbations", "imle": "Implicit MLE"}


def _ms(seconds):
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def _ratio(r):
    if r is None:
        return "-"
    if r >= 10:
        return f"{r:.0f}"
    if r >= 0.1:
        return f"{r:.2f}"
    return f"{r:.3f}"


def _speed(r):
    """A ratio in words: 0.05 -> '20x faster', 2.0 -> '2.0x slower'."""
    if r is None:
        return ""
    if r <= 0:
        return ""
    v = 1 / r if r <= 1 else r
    text = f"{v:.2f}" if v < 2 else f"{v:.1f}"
    return f"{text}x faster" if r <= 1 else f"{text}x slower"


def _median(case, label):
    for row in case["rows"]:
        if row["label"] == label and row.get("times_s"):
            return row["times_s"]["median"]
    return None


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _status(row):
    st = row.get("status")
    if st == "ok":
        return "ok"
    reason = row.get("reason") or st
    return f"{st}: {reason}" if not str(reason).startswith(str(st)) else str(reason)


def _memory(row):
    mem = row.get("memory")
    if not mem:
        return "-"
    if mem.get("status") != "ok":
        return "failed"
    return f"{mem['peak_rss_delta_mb']:.0f}"


def _info(row):
    info = row.get("info") or {}
    parts = []
    if "solver_calls_per_step" in info:
        parts.append(f"{info['solver_calls_per_step']} solver calls / {info['instances_solved_per_step']} "
                     "instances per step")
    if info.get("note"):
        parts.append(info["note"])
    return "; ".join(parts)


def _load_line(meta):
    start, end = meta.get("load_average_start"), meta.get("load_average_end")
    if not start:
        return ""
    busy = max(start[0], (end or start)[0]) > (meta.get("cores") or 1)
    return (f"Load average (1 min) at start/end: {start[0]}/{(end or start)[0]}"
            + (" - the machine was shared with other work, so absolute times are noisy; the alternating "
               "repetitions keep the ratios comparable." if busy else "."))


def header(meta):
    v = meta.get("versions", {})
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    missing = ", ".join(k for k, val in v.items() if not val)
    failed = meta.get("failed_suites")
    lines = [
        f"Machine: {meta.get('cpu') or '?'}, {meta.get('cores')} cores, {meta.get('memory_gb')} GB RAM, "
        f"{meta.get('platform')}, Python {meta.get('python')}.",
        f"Threads: {meta.get('threads')} (OMP/MKL_NUM_THREADS={meta.get('env', {}).get('OMP_NUM_THREADS')}"
        + "".join(f", {k}={v}" for k, v in (meta.get("framework_threads") or {}).items())
        + ").",
        f"Versions: {vers}." + (f" Not installed: {missing}." if missing else "")
        + (f" diffopt checkout: {meta['git']}." if meta.get("git") else ""),
        _load_line(meta),
        (f"Suites that failed to finish (see the log): {', '.join(str(f['suite']) for f in failed)}." if failed else ""),
        f"Run: `{meta.get('command')}` ({meta.get('mode')} mode, {meta.get('date')}, {meta.get('wall_s')} s).",
        "Times: median of repetitions run alternately in one process after warm-up (IQR in brackets); "
        "ratio = diffopt median / peer median, with the IQR of the per-repetition paired ratios. "
        "Peak MB: peak RSS increase during one step, in a fresh process, after set-up and compilation.",
    ]
    return lines


def markdown(results, compact=False):
    """The Markdown table; ``compact`` keeps the header and the targets only."""
    meta = results.get("meta", {})
    out = ["## Benchmarks", "", *[f"{line}  " for line in header(meta) if line], ""]
    suites = []
    for c in results.get("cases", []):
        if c["suite"] not in suites:
            suites.append(c["suite"])
    targets = []
    for suite in suites:
        cases = [c for c in results["cases"] if c["suite"] == suite]
        out += [f"### {SUITE_TITLES.get(suite, suite)}", ""]
        out += ["| case | contender | median ms [IQR] | peak MB | notes |", "|---|---|---|---|---|"]
        for c in cases:
            for row in c["rows"]:
                t = row.get("times_s")
                tm = f"{_ms(t['median'])} [{_ms(t['q1'])}-{_ms(t['q3'])}]" if t else "-"
                notes = "; ".join(x for x in (_info(row), "" if row.get("status") == "ok" else _status(row)) if x)
                out.append(f"| {_cell(c['case'])} | {_cell(row['label'])} | {tm} | {_memory(row)} | {_cell(notes)} |")
        out += ["", "| case | contender | peer | ratio contender/peer [paired IQR] | target | met |",
                "|---|---|---|---|---|---|"]
        shown = 0
        for c in cases:
            for cmp in c.get("comparisons", []):
                if cmp.get("ratio") is None and cmp.get("target") is None:
                    continue
                shown += 1
                if cmp.get("ratio") is None:
                    ratio = "not measured"
                else:
                    ratio = (f"**{_ratio(cmp['ratio'])}** [{_ratio(cmp['ratio_q1'])}-{_ratio(cmp['ratio_q3'])}]"
                             f" ({_speed(cmp['ratio'])})")
                met = {True: "yes", False: "**no**", None: "-"}[cmp.get("met")]
                out.append(f"| {_cell(c['case'])} | {_cell(cmp['diffopt'])} | {_cell(cmp['peer'])} | {ratio} | "
                           f"{_cell(cmp.get('target_text') or '')} | {met if cmp.get('target') is not None else ''} |")
                if cmp.get("target") is not None:
                    targets.append((c["case"], f"{cmp['diffopt']} vs {cmp['peer']}: {cmp.get('target_text')}",
                                    f"{_ratio(cmp['ratio'])} ({_speed(cmp['ratio'])}; "
                                    f"{_ms(_median(c, cmp['diffopt']))} vs {_ms(_median(c, cmp['peer']))} ms)"
                                    if cmp.get("ratio") is not None
                                    else cmp.get("reason", "not measured"), met))
            for m in c.get("memory_checks", []):
                val = m.get("peak_rss_delta_mb")
                met = {True: "yes", False: "**no**", None: "-"}[m.get("met")]
                targets.append((c["case"], f"{m['label']}: peak RSS delta < {m['target_mb']} MB",
                                f"{val:.0f} MB" if val is not None else m.get("reason"), met))
        if not shown:
            out = out[:-2] + ["(no ratio: no peer of this suite ran here)"]
        out.append("")
    if compact:
        out = out[:out.index("") + 1 + len([x for x in header(meta) if x])] + [""]
    if targets:
        out += ["### Targets", "", "| case | target | measured (ratio diffopt/peer; medians) | met |", "|---|---|---|---|"]
        for case, text, measured, met in targets:
            out.append(f"| {_cell(case)} | {_cell(text)} | {_cell(measured)} | {met} |")
        out.append("")
    if meta.get("plots"):
        out += ["Scaling: " + ", ".join(f"`{p}`" for p in meta["plots"]), ""]
    if compact:
        out += ["Every case, contender, time, memory and ratio: `benchmarks/results/README_table.md`.", ""]
    return "\n".join(out)


def draw_plots(results, out_dir):
    """Time vs problem size on log axes, one PNG per suite with a ``scaling`` axis."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    by_suite = {}
    for c in results.get("cases", []):
        if c.get("scaling"):
            by_suite.setdefault(c["suite"], []).append(c)
    for suite, cases in by_suite.items():
        axis = cases[0]["scaling"][0]
        series = {}
        for c in cases:
            x = c["scaling"][1]
            for row in c["rows"]:
                if row.get("times_s"):
                    series.setdefault(row["label"], []).append((x, row["times_s"]))
        if not series or len({c["scaling"][1] for c in cases}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for label, pts in sorted(series.items()):
            pts.sort()
            xs = [p[0] for p in pts]
            med = [p[1]["median"] * 1e3 for p in pts]
            lo = [p[1]["q1"] * 1e3 for p in pts]
            hi = [p[1]["q3"] * 1e3 for p in pts]
            style = "-" if label.startswith("diffopt") else "--"
            ax.plot(xs, med, style, marker="o", label=label)
            ax.fill_between(xs, lo, hi, alpha=0.2)
        ax.set_xscale("log", base=2 if axis == "n" else 10)
        ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("forward+backward time per step [ms]")
        params = {k: v for k, v in cases[0]["params"].items() if k != axis}
        ax.set_title(f"{SUITE_TITLES.get(suite, suite)}: time vs {axis} ({', '.join(f'{k}={v}' for k, v in params.items())})",
                     fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, f"scaling_{suite}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def update_readme(readme, table):
    """Put ``table`` between the markers of ``readme`` (or in place of ``<!-- BENCHMARK TABLE -->``)."""
    with open(readme) as fh:
        text = fh.read()
    if START not in text and PLACEHOLDER in text:
        text = text.replace(PLACEHOLDER, START + "\n" + END, 1)
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no '{START}' ... '{END}' markers (nor '{PLACEHOLDER}'); "
                         "add them where the table goes")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    if table.startswith("## Benchmarks\n") and "## Benchmarks" in head:  # the README has its own heading
        table = table[len("## Benchmarks\n"):].lstrip("\n")
    with open(readme, "w") as fh:
        fh.write(head + START + "\n" + table.rstrip() + "\n" + END + tail)


def write_all(json_path, out_dir, plots=True, readme=None, compact=False):
    """Write ``README_table.md`` (and the PNGs) into ``out_dir``; return the paths."""
    with open(json_path) as fh:
        results = json.load(fh)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    if plots:
        pngs = draw_plots(results, out_dir)
        results.setdefault("meta", {})["plots"] = [os.path.basename(p) for p in pngs]
        written += pngs
    table = markdown(results)
    md = os.path.join(out_dir, "README_table.md")
    with open(md, "w") as fh:
        fh.write(table + "\n")
    written.append(md)
    if readme:
        update_readme(readme, markdown(results, compact=True) if compact else table)
        written.append(readme)
    return written


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.splitlines()[0])
    p.add_argument("json", nargs="?", default=os.path.join(here, "results", "results.json"))
    p.add_argument("--out", default=None, help="folder for README_table.md and PNGs (default: beside the JSON)")
    p.add_argument("--readme", default=None, help="also splice the table into this README between the markers")
    p.add_argument("--compact", action="store_true",
                   help="with --readme: splice only the header and the targets (the full table stays in --out)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    out = args.out or os.path.dirname(os.path.abspath(args.json))
    for path in write_all(args.json, out, plots=not args.no_plots, readme=args.readme, compact=args.compact):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
