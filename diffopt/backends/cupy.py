"""CuPy shim: forward only, same code as NumPy on the GPU.

The projection family's isotonic solve runs on the GPU by numba.cuda
(:mod:`diffopt.backends._cuda_pav`, on CuPy's current stream, no host copy) where
numba's CUDA target is installed, else on the host (``host_call``).
"""

import importlib
import numbers

import cupy

from diffopt.backends._common import check_int_seed, fori_loop, forward_only, map_leading, numpy_seed
from diffopt.backends._common import never_symbolic as is_symbolic
from diffopt.backends._rng import GeneratorRng

NAME = "cupy"
# autoray's CuPy translations serve, plus the core's ``xp.stop_gradient`` and ``xp.erf``
OPS = {"stop_gradient": lambda x: x, "erf": lambda x: importlib.import_module("cupyx.scipy.special").erf(x)}
custom_vjp = forward_only  # CuPy has no autodiff


class CupyRng(GeneratorRng):
    """Stream backed by ``cupy.random.default_rng(key)`` on the current device."""

    xp = cupy


def make_rng(rng, like):
    """See :mod:`diffopt.backends`."""
    if isinstance(rng, numbers.Integral):
        return CupyRng(check_int_seed(rng), like)
    if isinstance(rng, cupy.random.Generator):
        return CupyRng(int(rng.integers(2**62)), like)
    return CupyRng(numpy_seed(rng, NAME), like)


def on_device(x):
    """CuPy arrays live on a GPU: reading a value would synchronise."""
    return True


def to_numpy(x):
    """A host copy of ``x``."""
    return cupy.asnumpy(x)


def host_call(fn, x, out_shape, out_dtype):
    """Run ``fn`` on a host copy of ``x``; the result goes back to the GPU."""
    return cupy.asarray(fn(to_numpy(x)), dtype=out_dtype)


def from_numpy(a, like):
    """``a`` (NumPy) on ``like``'s GPU."""
    with like.device:
        return cupy.asarray(a)


def _pav_device(a, b, kl):
    """``(v, first)`` of :func:`diffopt.sorting._pav.pav` on the GPU (numba.cuda), in ``a``'s dtype;
    ``None`` without numba's CUDA target (the projection then copies to the host)."""
    from diffopt.backends import _cuda_pav

    if not _cuda_pav.available():
        return None
    a64, b64 = (cupy.ascontiguousarray(x, dtype=cupy.float64) for x in (a, b))
    v, first = _cuda_pav.pav_arrays(a64, b64, kl, lambda dtype: cupy.empty(a64.shape, dtype=dtype),
                                    a.device.id, cupy.cuda.get_current_stream().ptr)
    return v.astype(a.dtype, copy=False), first.astype(a.dtype, copy=False)


# Kernels under the names their families declare (diffopt.sorting._kernels); CuPy has no
# autodiff, so the projection needs no backward kernel.
KERNELS = {"sorting_pav_device": _pav_device}
