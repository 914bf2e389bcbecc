"""The ``sorting_pav`` kernel: :func:`diffopt.sorting._pav.pav_rows` compiled by numba (optional).

The same source as the pure-Python loop, compiled once per process (lazily, at the
first call). Switched off like the fused sorting kernel (``DIFFOPT_NUMBA=0``, see
:mod:`diffopt.backends.numpy._fused`); without numba the kernel returns ``None``
and :mod:`diffopt.sorting._projection` runs the loop uncompiled.
"""

import functools
import importlib

from diffopt.backends.numpy import _fused

__all__ = ["numpy_pav"]


@functools.lru_cache(maxsize=1)
def _compiled():
    try:
        numba = importlib.import_module("numba")
    except ImportError:  # numba (or llvmlite) not installed
        return None
    from diffopt.sorting._pav import pav_rows

    return numba.njit(cache=False, nogil=True)(pav_rows)


def numpy_pav(a, b, kl):
    """``(v, first)`` of :func:`diffopt.sorting._pav.pav` for NumPy rows ``a, b``, compiled; ``None``
    where the kernel is off (``DIFFOPT_NUMBA``) or numba is missing."""
    compiled = None if _fused.kernels() is None else _compiled()
    if compiled is None:
        return None
    from diffopt.sorting._pav import pav

    return pav(a, b, kl, compiled)
