"""The ``sorting_pav`` and ``sorting_pav_vjp`` kernels: :mod:`diffopt.sorting._pav`'s loops compiled by numba (optional).

The same sources as the pure-Python loops (:func:`~diffopt.sorting._pav.pav_rows`,
:func:`~diffopt.sorting._pav.pav_vjp_rows`), compiled once per process and dtype
(lazily, at the first call). Switched off like the fused sorting kernel
(``DIFFOPT_NUMBA=0``, see :mod:`diffopt.backends.numpy._fused`); without numba the
kernels return ``None`` and :mod:`diffopt.sorting._projection` runs the loop
uncompiled (forward) or NumPy's ``reduceat`` (backward).

:func:`compiled` gives the two compiled loops themselves, for a shim that calls them on
its own arrays' memory (torch's ``sorting_isotonic``).
"""

import functools
import importlib

import numpy as np

from diffopt.backends.numpy import _fused

__all__ = ["numpy_pav", "numpy_pav_vjp", "compiled"]


@functools.lru_cache(maxsize=1)
def _compile():
    try:
        numba = importlib.import_module("numba")
    except ImportError:  # numba (or llvmlite) not installed
        return None
    from diffopt.sorting._pav import pav_rows, pav_vjp_rows

    jit = numba.njit(cache=False, nogil=True)
    return jit(pav_rows), jit(pav_vjp_rows)


def compiled():
    """``(pav_rows, pav_vjp_rows)`` compiled, or ``None`` where the kernels are off or numba is missing."""
    return None if _fused.kernels() is None else _compile()


def numpy_pav(a, b, kl):
    """``(v, first)`` of :func:`diffopt.sorting._pav.pav` for NumPy rows ``a, b``, compiled; ``None``
    where the kernel is off (``DIFFOPT_NUMBA``) or numba is missing."""
    loops = compiled()
    if loops is None:
        return None
    from diffopt.sorting._pav import pav

    return pav(a, b, kl, loops[0])


def numpy_pav_vjp(g, a, b, first, kl):
    """``(g_a, g_b)`` of :func:`diffopt.sorting._pav.pav_vjp` for NumPy rows (float64), compiled;
    ``None`` where the kernel is off or numba is missing."""
    loops = compiled()
    if loops is None:
        return None
    g, a, b, first = (np.ascontiguousarray(t, dtype=np.float64) for t in (g, a, b, first))
    ga, gb = np.empty_like(g), np.empty_like(g)
    loops[1](g, a, b, first, bool(kl), ga, gb)
    return ga, gb
