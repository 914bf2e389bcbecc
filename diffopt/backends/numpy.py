"""NumPy shim: forward only (use HIPS autograd for gradients of NumPy code)."""

import numpy as np

from diffopt.backends._common import fori_loop, map_leading, forward_only, numpy_seed
from diffopt.random import SeededRng

NAME = "numpy"

custom_vjp = forward_only


class NumpyRng(SeededRng):
    """Stream backed by ``numpy.random.default_rng(key)``."""

    def _generator(self):
        return np.random.default_rng(self.key)

    def _normal(self, shape, dtype):
        return self.generator.standard_normal(shape, dtype=np.dtype(dtype))

    def _uniform(self, shape, dtype):
        return self.generator.random(shape, dtype=np.dtype(dtype))

    def _gamma(self, shape, alpha, dtype):
        return self.generator.standard_gamma(alpha, shape, dtype=np.dtype(dtype))


def make_rng(rng, like):
    """See :mod:`diffopt.backends`."""
    return NumpyRng(numpy_seed(rng, NAME), like)


def is_symbolic(x):
    """NumPy arrays are always concrete."""
    return False


def to_numpy(x):
    """``x`` as a NumPy array."""
    return np.asarray(x)


def host_call(fn, x, out_shape, out_dtype):
    """Call ``fn`` directly: NumPy is already the host."""
    return np.asarray(fn(np.asarray(x)), dtype=out_dtype)
