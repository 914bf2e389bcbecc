"""Explicit, reproducible randomness for every backend.

Every stochastic call in diffopt takes ``rng=``: ``None`` (the framework's
global generator), an ``int`` seed, the framework's own generator or key
(``numpy.random.Generator``, ``torch.Generator``, ``tf.random.Generator``, a
JAX key), or an :class:`Rng` made by :func:`make_rng`. Each backend turns it
into an :class:`Rng`, a stream that draws in the dtype and on the device of a
reference array and can be replayed from its :attr:`Rng.key`. The stream
classes live in :mod:`diffopt.backends._rng`, below the shims that subclass them.
"""

from __future__ import annotations

from typing import Any

from diffopt._typing import Array, RngLike
from diffopt.backends import get_backend
from diffopt.backends._rng import Rng, SeededRng, rng_type_error, sample_dtype

__all__ = ["Rng", "SeededRng", "make_rng", "sample_dtype"]


def make_rng(rng: RngLike, like: Array, shim: Any = None) -> Rng:
    """Normalise ``rng=`` into an :class:`Rng` for ``like``'s framework.

    Parameters
    ----------
    rng : None, int, framework generator or key, or Rng
        See the module docstring.
    like : array
        Reference array (framework, dtype, device).
    shim : module, optional
        ``like``'s shim, when the caller has already resolved it.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import make_rng
    >>> a = make_rng(7, np.zeros(1)).normal((3,))
    >>> b = make_rng(7, np.zeros(1)).normal((3,))
    >>> bool(np.array_equal(a, b))                          # the same seed, the same draws
    True
    """
    if isinstance(rng, Rng):
        return rng
    shim = get_backend(like) if shim is None else shim
    if isinstance(rng, bool) or (rng is not None and isinstance(rng, float)):  # not an int seed: True == 1
        raise rng_type_error(shim.NAME, rng)
    return shim.make_rng(rng, like)
