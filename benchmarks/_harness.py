"""Timing and memory machinery shared by every suite.

A *case* is one problem (fixed sizes, fixed inputs) solved by several
*contenders* (diffopt variants and peers). Each contender is a factory that
does its imports and set-up (including jit compilation) and returns ``step``,
a zero-argument callable that runs one forward+backward pass and returns only
when the work is done.

Timing: all contenders of a case run in the same process, after warm-up, in
alternating (rotated) order for several repetitions; medians, quartiles and
min/max are reported, and the headline figure is the ratio diffopt/peer of
the medians (plus the spread of the per-repetition paired ratios).

Memory: each contender is run once more in a fresh subprocess, where the
peak resident-set size during one step, minus the RSS just before it, is the
figure reported (set-up and jit compilation are done before the baseline).
"""

import gc
import os
import resource
import statistics
import sys
import threading
import time

__all__ = ["Unavailable", "Contender", "Comparison", "Case", "time_case", "measure_memory"]


class Unavailable(Exception):
    """Raised by a contender factory when it cannot run here (the row says why)."""


class Contender:
    """One implementation in a case.

    Parameters
    ----------
    label : str
        Row label, e.g. ``"diffopt soft_sort (torch)"``.
    role : {"diffopt", "peer"}
    make : callable
        ``make() -> step``; may raise :class:`Unavailable`.
    framework : str
        The framework the contender runs in (informational).
    skip : str, optional
        If given, the contender is not run and the row shows this reason.
    memory : bool
        Whether to measure peak memory for it.
    info : dict
        Extra facts reported with the row (e.g. solver calls per step).
    """

    def __init__(self, label, role, make, framework, skip=None, memory=True, info=None):
        if role not in ("diffopt", "peer"):
            raise ValueError(f"role must be 'diffopt' or 'peer', got {role!r}")
        self.label = label
        self.role = role
        self.make = make
        self.framework = framework
        self.skip = skip
        self.memory = memory
        self.info = dict(info or {})


class Comparison:
    """A headline ratio ``diffopt / peer`` (time or memory) and, optionally, its target.

    ``target`` is the largest acceptable ratio (e.g. ``1/20`` for "20x faster",
    ``1.1`` for "within 10%"); ``target_text`` says it in words.
    """

    def __init__(self, diffopt, peer, target=None, target_text=None):
        self.diffopt = diffopt
        self.peer = peer
        self.target = target
        self.target_text = target_text


class Case:
    """A benchmark problem and its contenders.

    ``memory_targets`` maps a diffopt label to a peak-memory bound in MB.
    ``tiny`` marks the case the harness test runs.
    """

    def __init__(self, suite, name, params, contenders, comparisons=(), memory_targets=None,
                 tiny=False, time_it=True, scaling=None):
        self.suite = suite
        self.name = name
        self.params = dict(params)
        self.contenders = list(contenders)
        self.comparisons = list(comparisons)
        self.memory_targets = dict(memory_targets or {})
        self.tiny = tiny
        self.time_it = time_it
        self.scaling = scaling  # (series name, x value) for the scaling plots

    def contender(self, label):
        for c in self.contenders:
            if c.label == label:
                return c
        raise KeyError(label)


# ------------------------------------------------------------------- timing


def _summary(values):
    values = sorted(values)
    if not values:
        return None
    if len(values) >= 4:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1, q3 = values[0], values[-1]
    return {
        "median": statistics.median(values),
        "q1": q1,
        "q3": q3,
        "min": values[0],
        "max": values[-1],
        "n": len(values),
    }


def _error_text(exc):
    text = f"{type(exc).__name__}: {exc}".strip()
    text = " ".join(text.split())
    return text[:300]


def time_case(case, warmup=2, min_reps=5, max_reps=25, budget_s=20.0, log=print):
    """Time every runnable contender of ``case``, alternating them.

    Returns ``{label: row}`` with ``status`` ('ok', 'skipped', 'error'),
    ``reason``, ``times_s`` (summary) and the raw per-repetition times.
    """
    rows = {}
    steps = {}
    for c in case.contenders:
        row = {"label": c.label, "role": c.role, "framework": c.framework, "info": dict(c.info)}
        rows[c.label] = row
        if c.skip:
            row.update(status="skipped", reason=c.skip)
            continue
        try:
            steps[c.label] = c.make()
            row["info"].update(c.info)  # facts a factory found (e.g. solver calls per step)
        except Unavailable as exc:
            row.update(status="skipped", reason=str(exc))
        except Exception as exc:  # a contender that breaks must not stop the run
            row.update(status="error", reason=_error_text(exc))
    # warm-up (also estimates the cost of one step)
    one = {}
    for label, step in list(steps.items()):
        try:
            for _ in range(warmup):
                t0 = time.perf_counter()
                step()
                one[label] = time.perf_counter() - t0
        except Exception as exc:
            rows[label].update(status="error", reason=_error_text(exc))
            del steps[label]
    if not steps:
        return rows
    per_round = sum(one.values()) or 1e-9
    reps = int(max(min_reps, min(max_reps, budget_s // per_round)))
    labels = list(steps)
    raw = {label: [] for label in labels}
    for rep in range(reps):
        k = rep % len(labels)
        for label in labels[k:] + labels[:k]:  # rotate the order every repetition
            if label not in steps:
                continue
            try:
                t0 = time.perf_counter()
                steps[label]()
                raw[label].append(time.perf_counter() - t0)
            except Exception as exc:
                rows[label].update(status="error", reason=_error_text(exc))
                del steps[label]
    for label in labels:
        if label in steps and raw[label]:
            rows[label].update(status="ok", reason=None, times_s=_summary(raw[label]), raw_s=raw[label])
            t = rows[label]["times_s"]
            log(f"    {label:<48s} median {t['median'] * 1e3:10.3f} ms  "
                f"[IQR {t['q1'] * 1e3:.3f}-{t['q3'] * 1e3:.3f}]  n={t['n']}")
        elif rows[label].get("status") != "error":
            rows[label].update(status="error", reason="no repetition completed")
        if rows[label]["status"] != "ok":
            log(f"    {label:<48s} {rows[label]['status']}: {rows[label]['reason']}")
    steps.clear()
    gc.collect()
    return rows


def compare(case, rows, kind="time"):
    """Headline ratios for ``case`` from its timed rows."""
    out = []
    for cmp in case.comparisons:
        a, b = rows.get(cmp.diffopt, {}), rows.get(cmp.peer, {})
        entry = {"diffopt": cmp.diffopt, "peer": cmp.peer, "target": cmp.target,
                 "target_text": cmp.target_text}
        if a.get("status") == "ok" and b.get("status") == "ok":
            ratio = a["times_s"]["median"] / b["times_s"]["median"]
            paired = sorted(x / y for x, y in zip(a["raw_s"], b["raw_s"]))
            s = _summary(paired)
            entry.update(ratio=ratio, ratio_q1=s["q1"], ratio_q3=s["q3"], ratio_min=s["min"],
                         ratio_max=s["max"])
            if cmp.target is not None:
                entry["met"] = bool(ratio <= cmp.target)
        else:
            missing = [x for x, r in ((cmp.diffopt, a), (cmp.peer, b)) if r.get("status") != "ok"]
            entry.update(ratio=None, met=None,
                         reason="not measured: " + "; ".join(
                             f"{m}: {rows.get(m, {}).get('reason') or rows.get(m, {}).get('status')}"
                             for m in missing))
        out.append(entry)
    return out


# ------------------------------------------------------------------- memory


def _rss_bytes():
    """Current resident set size of this process, in bytes."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return psutil.Process().memory_info().rss
        except ImportError:
            return _maxrss_bytes()


def _maxrss_bytes():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


class _Sampler(threading.Thread):
    def __init__(self, interval=0.0005):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = _rss_bytes()
        self._done = threading.Event()

    def run(self):
        while not self._done.is_set():
            rss = _rss_bytes()
            if rss > self.peak:
                self.peak = rss
            time.sleep(self.interval)

    def stop(self):
        self._done.set()
        self.join()


def measure_memory(contender, after_make=None):
    """Peak RSS delta (bytes) of one step of ``contender``, in this (fresh) process.

    The step is made (imports, inputs, compilation) first; then the RSS is
    read, one step runs while a thread samples the RSS, and the peak (also
    checked against ``ru_maxrss``) minus the baseline is returned.
    """
    step = contender.make()
    if after_make is not None:
        after_make()
    gc.collect()
    base = _rss_bytes()
    max_before = _maxrss_bytes()
    sampler = _Sampler()
    sampler.start()
    try:
        step()
    finally:
        sampler.stop()
    peak = sampler.peak
    max_after = _maxrss_bytes()
    if max_after > max_before:  # the process-lifetime peak happened during the step
        peak = max(peak, max_after)
    return {"peak_rss_delta_bytes": max(0, peak - base), "baseline_rss_bytes": base}
