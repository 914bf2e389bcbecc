"""NumPy shim: forward only (use HIPS autograd for gradients of NumPy code)."""

import importlib

import numpy as np

from diffopt.backends.numpy import _fused, _numba_pav
from diffopt.backends._common import fori_loop, forward_only, map_leading, numpy_seed, stable_argsort_of
from diffopt.backends._common import never_symbolic as is_symbolic
from diffopt.backends._rng import GeneratorRng

NAME = "numpy"
# autoray's NumPy translations serve, plus two names autoray lacks for NumPy (the core's
# ``xp.stop_gradient``/``xp.erf``; SciPy imported at the first ``erf``)
OPS = {"stop_gradient": lambda x: x, "erf": lambda x: importlib.import_module("scipy.special").erf(x)}
# declared by diffopt.sorting._kernels and diffopt._kernels
KERNELS = {"sorting_fused": _fused.numpy_fused, "sorting_pav": _numba_pav.numpy_pav,
           "sorting_pav_vjp": _numba_pav.numpy_pav_vjp, "stable_argsort": stable_argsort_of("numpy")}

custom_vjp = forward_only


class NumpyRng(GeneratorRng):
    """Stream backed by ``numpy.random.default_rng(key)``."""

    xp = np


def make_rng(rng, like):
    """See :mod:`diffopt.backends`."""
    return NumpyRng(numpy_seed(rng, NAME), like)


def to_numpy(x):
    """``x`` as a NumPy array."""
    return np.asarray(x)


def host_call(fn, x, out_shape, out_dtype):
    """Call ``fn`` directly: NumPy is already the host."""
    return np.asarray(fn(np.asarray(x)), dtype=out_dtype)


def from_numpy(a, like):
    """``a`` (NumPy) as an array of ``like``'s framework: ``a`` itself."""
    return np.asarray(a)
