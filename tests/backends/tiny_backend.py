"""A tiny shim for dask arrays: how a backend is added (one module plus its registration).

Forward only (dask has no autodiff): ``diffopt.backends.register("dask",
"tiny_backend")`` makes every diffopt op accept dask arrays.
:mod:`tests.test_backends_contract` registers it and checks it against NumPy.
"""

import dask.array as da
import numpy as np

from diffopt.backends._common import fori_loop, forward_only, map_leading, never_symbolic as is_symbolic, numpy_seed
from diffopt.backends._rng import GeneratorRng

__all__ = ["NAME", "OPS", "custom_vjp", "host_call", "make_rng", "is_symbolic", "to_numpy", "from_numpy",
           "fori_loop", "map_leading"]

NAME = "dask"
OPS = {}
custom_vjp = forward_only


class DaskRng(GeneratorRng):
    """NumPy's generator; the draws (NumPy arrays) combine with dask arrays as constants."""


def make_rng(rng, like):
    return DaskRng(numpy_seed(rng, NAME), like)


def to_numpy(x):
    return np.asarray(x.compute() if hasattr(x, "compute") else x)


def from_numpy(a, like):
    return da.from_array(np.asarray(a))


def host_call(fn, x, out_shape, out_dtype):
    return from_numpy(np.asarray(fn(to_numpy(x)), dtype=out_dtype), x)
