"""``diffopt demo`` and ``diffopt info``: run the checks, print the table, list the frameworks."""

import importlib.metadata
import importlib.util
import os
import sys
import time

from diffopt._demo import checks, frameworks

__all__ = ["run_demo", "format_table", "summary", "info_lines", "distribution_lines", "providers", "versions", "devices"]


def _progress(enabled):
    """A ``tqdm`` wrapper for step loops, or ``None`` (disabled, tqdm missing, or stderr not a terminal).

    The bars (one per backend, one per step loop below it) go to stderr; in a log
    file their cursor-up escapes would be noise, so they are drawn on a terminal only.
    """
    if not (enabled and sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None

    def wrap(iterable, **kw):
        return tqdm(iterable, leave=False, file=sys.stderr, **kw)

    return wrap


def run_backend(backend, settings, progress=None):
    """Every check on one backend.

    Returns
    -------
    results : dict
        Check name → :class:`checks.Result`.
    seconds : float
    """
    start, results = time.perf_counter(), {}
    names = list(checks.CHECKS)
    for name in (progress(names, desc=f"{backend}") if progress else names):
        results[name] = checks.run_check(name, backend, settings)
    return results, time.perf_counter() - start


def format_table(rows):
    """The rows as an aligned text table (backend, check, value, pass).

    Parameters
    ----------
    rows : list of checks.Row

    Returns
    -------
    str
    """
    head = ("backend", "check", "value", "pass")
    cells = [head] + [(r.backend, r.check, r.value, r.status) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(4)).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_demo(backend="all", out=None, quick=False, progress=True, figures=True, stream=None, quiet=False):
    """Run the demo: checks on each backend, the table, one figure per backend.

    Parameters
    ----------
    backend : str
        ``'all'``, a name or a comma list (see :func:`frameworks.resolve_backends`).
    out : str, optional
        Folder for the PNGs (default: ``./diffopt-demo``).
    quick : bool
        Small sample counts (the test mode).
    progress : bool
        tqdm progress bars on stderr.
    figures : bool
        Write the PNGs.
    stream : file, optional
        Where the table goes (default stdout).
    quiet : bool
        Start the frameworks without their start-up log lines
        (:func:`frameworks.load_quietly`: the ``diffopt`` command's own process only).

    Returns
    -------
    int
        0 if every check that ran passed (skipped ones aside), 1 otherwise.
    """
    stream = stream or sys.stdout
    names = frameworks.resolve_backends(backend)
    (frameworks.load_quietly if quiet else frameworks.prepare)(names)
    wrap = _progress(progress)
    settings = (checks.Settings.quick if quick else checks.Settings)(progress=_step_progress(wrap))
    out = out or os.path.join(os.getcwd(), "diffopt-demo")
    rows, timings, written = [], {}, []
    for name in names:
        results, seconds = run_backend(name, settings, wrap)
        timings[name] = seconds
        rows += [row for r in results.values() for row in r.rows]
        if figures:
            written.append(_figure(name, results, out, rows))
    if backend == "all":
        rows += [checks.skipped(n, "all checks", n) for n in frameworks.BACKENDS if n not in names]
    print(format_table(rows), file=stream)
    print("time: " + ", ".join(f"{n} {t:.1f}s" for n, t in timings.items()), file=stream)
    for path in filter(None, written):
        print(f"figure: {path}", file=stream)
    print(summary(rows), file=stream)
    return 1 if any(r.status == "FAIL" for r in rows) else 0


def summary(rows):
    """The last lines of the demo: passed/ran, and what to install for the skipped checks.

    Parameters
    ----------
    rows : list of checks.Row

    Returns
    -------
    str
    """
    ran = [r for r in rows if not r.skip]
    line = f"{sum(r.passed for r in ran)}/{len(ran)} checks passed"
    extras = [r.skip for r in rows if r.skip]
    if extras:
        line += (f", {len(extras)} skipped (optional packages not installed)\n"
                 f"to run the skipped checks: {checks.install_hint(extras)}")
    return line


def _step_progress(wrap):
    if wrap is None:
        return None
    return lambda it: wrap(it, desc="  steps")


def _figure(name, results, out, rows):
    """Draw the backend's figure; without matplotlib a skipped row, a plotting problem a failed one."""
    if importlib.util.find_spec("matplotlib") is None:
        rows.append(checks.skipped(name, "figure", "matplotlib"))
        return None
    try:
        from diffopt._demo import figures

        return figures.demo_figure(name, results, os.path.join(out, f"demo_{name}.png"))
    except Exception as exc:
        rows.append(checks.Row(name, "figure", f"ERROR {type(exc).__name__}: {exc}"[:200], False))
        return None


# -------------------------------------------------------------------- info

#: Distribution names whose versions ``info`` reports, per framework.
DISTRIBUTIONS = {
    "numpy": ("numpy",), "autograd": ("autograd",), "torch": ("torch",), "jax": ("jax", "jaxlib"),
    "tensorflow": ("tensorflow", "tensorflow-cpu"), "cupy": ("cupy", "cupy-cuda12x", "cupy-cuda11x"),
}
EXTRAS = ("autoray", "scipy", "matplotlib", "tqdm")


def versions(names):
    """Installed versions of the distributions in ``names`` (``None`` when absent), no imports.

    Parameters
    ----------
    names : iterable of str

    Returns
    -------
    dict
    """
    found = {}
    for dist in names:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    return found


def devices(framework):
    """Device names of ``framework`` (this imports it).

    Parameters
    ----------
    framework : str

    Returns
    -------
    list of str
    """
    try:
        return _DEVICES.get(framework, lambda: ["cpu"])()
    except Exception as exc:  # a broken driver must not break `info`
        return [f"error: {type(exc).__name__}: {exc}"[:120]]


def _torch_devices():
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():  # pragma: no cover gpu
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():  # pragma: no cover gpu
        found.append("mps")
    return found


def _jax_devices():
    import jax

    return [f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()]


def _tf_devices():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return [d.name.replace("/physical_device:", "") for d in tf.config.list_physical_devices()]


def _cupy_devices():  # pragma: no cover gpu
    import cupy

    count = cupy.cuda.runtime.getDeviceCount()
    return [f"cuda:{i}" for i in range(count)] or ["none"]


_DEVICES = {"torch": _torch_devices, "jax": _jax_devices, "tensorflow": _tf_devices, "cupy": _cupy_devices}


#: This project's distribution name (pyproject.toml); its import name is ``diffopt``.
DISTRIBUTION = "pydiffopt"
#: How this project's summary starts: a distribution named ``diffopt`` with it is this project
#: installed under its former distribution name, any other is the unrelated project of that name.
SUMMARY_START = "Differentiable discrete solvers"


def _normalise(name):
    return name.lower().replace("_", "-").replace(".", "-")


def providers():
    """The installed distributions that provide the import name ``diffopt``.

    Those that :func:`importlib.metadata.packages_distributions` maps ``diffopt`` to, plus
    any distribution named ``pydiffopt`` or ``diffopt`` (an editable install may list no files).

    Returns
    -------
    list of tuple
        ``(name, version, ours)``, ``pydiffopt`` first; ``ours`` is False for another project.
    """
    names = set(importlib.metadata.packages_distributions().get("diffopt", []))
    found = {}
    for name in sorted(names | {DISTRIBUTION, "diffopt"}):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        real = _normalise(dist.metadata["Name"] or name)
        summary = dist.metadata["Summary"] or ""
        found[real] = (real, dist.version, real == DISTRIBUTION or summary.startswith(SUMMARY_START))
    return sorted(found.values(), key=lambda d: (d[0] != DISTRIBUTION, d[0]))


def distribution_lines():
    """``info``'s lines on the distribution behind ``import diffopt``, with a warning for a clash.

    Returns
    -------
    list of str
    """
    import diffopt

    found = providers()
    ours = [f"{n} {v}" + ("" if n == DISTRIBUTION else f" (this project's former name: reinstall as {DISTRIBUTION})")
            for n, v, mine in found if mine]
    where = os.path.dirname(diffopt.__file__)
    lines = [f"distribution: {', '.join(ours)}" if ours else f"distribution: none ({DISTRIBUTION} is not installed; "
             f"diffopt imported from {where})"]
    for name, version, mine in found:
        if not mine:
            lines.append(f"WARNING: the distribution {name!r} {version} is installed too: an unrelated project that "
                         f"also installs the import name 'diffopt', so the two overwrite each other's files. Fix: "
                         f"pip uninstall {name} {DISTRIBUTION}; pip install {DISTRIBUTION}")
    if len(ours) > 1:
        lines.append(f"WARNING: this project is installed twice, as {' and '.join(n for n, _, m in found if m)}, "
                     f"into the one folder diffopt/; keep one: pip uninstall diffopt")
    return lines


def info_lines(list_devices=True, quiet=False):
    """Lines of ``diffopt info``: diffopt, each installed framework (version, devices), tools.

    Parameters
    ----------
    list_devices : bool
        Import each installed framework to list its devices.
    quiet : bool
        Start them without their start-up log lines (the ``diffopt`` command's process only).

    Returns
    -------
    list of str
    """
    import diffopt
    from diffopt import backends

    installed = backends.available()
    if list_devices:
        (frameworks.load_quietly if quiet else frameworks.prepare)(installed)
    lines = [f"diffopt {diffopt.__version__}  (python {sys.version.split()[0]})", *distribution_lines(), "frameworks:"]
    for name, dists in DISTRIBUTIONS.items():
        if name not in installed:
            lines.append(f"  {name:<11} not installed")
            continue
        found = {d: v for d, v in versions(dists).items() if v}
        line = f"  {name:<11} " + ", ".join(f"{d} {v}" for d, v in found.items())
        if list_devices:
            line += "  devices: " + ", ".join(devices(name))
        lines.append(line)
    extra = versions(EXTRAS)
    lines.append("tools: " + ", ".join(f"{d} {v or 'not installed'}" for d, v in extra.items()))
    demo = [n for n in frameworks.BACKENDS if n in installed]
    lines.append(f"demo backends: {', '.join(demo)}  (run: python -m diffopt demo --backend all)")
    return lines
