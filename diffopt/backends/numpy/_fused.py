"""The optional fused sorting kernel (numba): whether it is on, and its NumPy entry.

:func:`diffopt.sorting.soft_sort` asks the shim's kernel table (``KERNELS``) for
``sorting_fused(rows, temperature, relaxation)``; a shim that has one returns a
pair ``(fwd, bwd)`` for ``custom_vjp`` (the whole network in one compiled
loop, :mod:`diffopt.backends.numpy._numba_sorting`), or ``None`` where it does not
apply, and ``soft_sort`` then runs its generic loops as before.

It is on when numba can be imported (``pip install "pydiffopt[numba]"``) and the
environment variable ``DIFFOPT_NUMBA`` is not ``0``/``false``/``off``/``no``
(read at every call, so it may be switched while a program runs).
"""

import functools
import importlib
import os

__all__ = ["ENV", "kernels", "numpy_fused"]

#: Environment variable that turns the accelerator off (``0``, ``false``, ``off``, ``no``).
ENV = "DIFFOPT_NUMBA"
_OFF = ("0", "false", "off", "no")


def kernels():
    """The numba kernel module, or ``None`` (switched off by :data:`ENV`, or numba missing)."""
    if os.environ.get(ENV, "1").strip().lower() in _OFF:
        return None
    return _load()


@functools.lru_cache(maxsize=1)
def _load():
    try:
        return importlib.import_module("diffopt.backends.numpy._numba_sorting")
    except ImportError:  # numba (or llvmlite) not installed: the generic loops run
        return None


def applies(kern, dtype_name, relaxation):
    """Whether ``kern`` (from :func:`kernels`) runs rows of this dtype and relaxation."""
    return kern is not None and dtype_name in ("float32", "float64") and relaxation in kern.RELAXATIONS


@functools.lru_cache(maxsize=16)
def numpy_pair(relaxation):
    """``(fwd, bwd)`` on NumPy rows (``custom_vjp`` of the NumPy and autograd shims)."""
    import numpy as np

    kern = _load()

    def fwd(rows, temperature):
        out, slab = kern.forward(np.ascontiguousarray(rows), float(temperature), relaxation)
        return out, (slab,)

    def bwd(res, g):
        return kern.backward(res[0], np.ascontiguousarray(g)), None

    return fwd, bwd


def numpy_fused(rows, temperature, relaxation):
    """``sorting_fused`` of the NumPy and autograd shims; ``None`` for a traced (boxed) temperature."""
    import autoray as ar
    import numpy as np

    kern = kernels()
    if not isinstance(temperature, (int, float, np.ndarray, np.generic)):
        return None
    return numpy_pair(relaxation) if applies(kern, ar.get_dtype_name(rows), relaxation) else None
