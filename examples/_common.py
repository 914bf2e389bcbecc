"""Shared plumbing of the example scripts: command line, backend choice, figure paths.

The helpers that move data between NumPy and a framework and take gradients
with the framework's own autodiff live in :mod:`diffopt._demo.frameworks`
(``to_backend``, ``to_numpy``, ``value_and_grad``); they are re-exported here.
"""

import argparse
import os
import time

from diffopt._demo.figures import pyplot, save  # noqa: F401  (re-exported)
from diffopt._demo.frameworks import (  # noqa: F401  (re-exported)
    BACKENDS,
    grad,
    installed_backends,
    prepare,
    resolve_backends,
    to_backend,
    to_numpy,
    value_and_grad,
)

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures")
#: ``--backend auto`` picks the first installed of these.
PREFERENCE = ("torch", "jax", "tensorflow", "numpy")


def parser(description):
    """An ``argparse`` parser with ``--backend``, ``--out`` and ``--seed``.

    Parameters
    ----------
    description : str

    Returns
    -------
    argparse.ArgumentParser
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--backend", default="auto", help="numpy | torch | jax | tensorflow | auto (default)")
    p.add_argument("--out", default=FIGURES, help="folder for the figure (default: examples/figures)")
    p.add_argument("--seed", type=int, default=0)
    return p


def backend_of(args):
    """The backend named by ``args.backend`` (``auto``: first installed in :data:`PREFERENCE`).

    Returns
    -------
    str
    """
    if args.backend == "auto":
        found = installed_backends()
        name = next(n for n in PREFERENCE if n in found)
    else:
        (name,) = resolve_backends(args.backend)
    prepare([name])
    return name


def progress(iterable, **kw):
    """``tqdm`` over ``iterable`` when installed, else the iterable itself."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, leave=False, **kw)


def figure_path(args, name):
    """``<out>/<name>.png``."""
    return os.path.join(args.out, f"{name}.png")


class Timer:
    """Wall-clock seconds since creation (``str`` gives ``'12.3s'``)."""

    def __init__(self):
        self.start = time.perf_counter()

    def __str__(self):
        return f"{time.perf_counter() - self.start:.1f}s"
