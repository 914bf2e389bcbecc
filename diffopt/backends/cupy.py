"""CuPy shim: forward only, same code as NumPy on the GPU."""

import numbers

import cupy

from diffopt.backends._common import fori_loop, map_leading, check_int_seed, forward_only, numpy_seed
from diffopt.random import SeededRng

NAME = "cupy"

custom_vjp = forward_only


class CupyRng(SeededRng):
    """Stream backed by ``cupy.random.default_rng(key)`` on the current device."""

    def _generator(self):
        return cupy.random.default_rng(self.key)

    def _normal(self, shape, dtype):
        return self.generator.standard_normal(shape, dtype=dtype)

    def _uniform(self, shape, dtype):
        return self.generator.random(shape, dtype=dtype)

    def _gamma(self, shape, alpha, dtype):
        return self.generator.standard_gamma(alpha, size=shape, dtype=dtype)


def make_rng(rng, like):
    """See :mod:`diffopt.backends`."""
    if isinstance(rng, numbers.Integral):
        return CupyRng(check_int_seed(rng), like)
    if isinstance(rng, cupy.random.Generator):
        return CupyRng(int(rng.integers(2**62)), like)
    return CupyRng(numpy_seed(rng, NAME), like)


def is_symbolic(x):
    """CuPy arrays are always concrete."""
    return False


def to_numpy(x):
    """A host copy of ``x``."""
    return cupy.asnumpy(x)


def host_call(fn, x, out_shape, out_dtype):
    """Run ``fn`` on a host copy of ``x``; the result goes back to the GPU."""
    return cupy.asarray(fn(to_numpy(x)), dtype=out_dtype)
