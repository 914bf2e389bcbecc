"""CuPy shim: forward only, same code as NumPy on the GPU."""

import numbers

import cupy

from diffopt.backends._common import check_int_seed, fori_loop, forward_only, map_leading, numpy_seed
from diffopt.backends._common import never_symbolic as is_symbolic
from diffopt.backends._rng import GeneratorRng

NAME = "cupy"
OPS = {}  # autoray's CuPy translations serve as they are
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
