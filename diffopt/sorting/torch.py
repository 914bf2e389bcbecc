"""Drop-in for ``differentiable_sorting.torch``.

The functions are the framework-independent ones of :mod:`diffopt.sorting`
(they take torch tensors as they are); only :func:`bitonic_matrices` differs,
returning ``float32`` torch tensors as the original does (made by the torch
shim's ``from_numpy``: this module imports no framework itself).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffopt._ops import do
from diffopt.sorting import *  # noqa: F401,F403  (the same functions, re-exported)
from diffopt.sorting import __all__ as _ALL
from diffopt.sorting._network import bitonic_matrices as _np_bitonic_matrices

__all__ = list(_ALL)


def bitonic_matrices(n: int) -> list[list[Any]]:
    """:func:`diffopt.sorting.bitonic_matrices` as ``float32`` torch tensors.

    Parameters
    ----------
    n : int
        A power of two.

    Returns
    -------
    list of list of torch.Tensor
        ``[l, r, map_l, map_r]`` per layer.
    """
    return [[do("from_numpy", m.astype(np.float32), like="torch") for m in layer] for layer in _np_bitonic_matrices(n)]
