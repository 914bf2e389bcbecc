"""Drop-in for ``differentiable_sorting.torch``.

The functions are the framework-independent ones of :mod:`diffopt.sorting`
(they take torch tensors as they are); only :func:`bitonic_matrices` differs,
returning ``float32`` torch tensors as the original does (a variant of the
core function, see :func:`diffopt.sorting._dropin.variant`; the tensors are
made by the torch shim: this module imports no framework itself).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffopt._ops import do
from diffopt.sorting import *  # noqa: F401,F403  (the same functions, re-exported)
from diffopt.sorting import __all__ as _ALL
from diffopt.sorting import _network
from diffopt.sorting._dropin import variant

__all__ = list(_ALL)


def _float32_tensors(layers):
    return [[do("from_numpy", m.astype(np.float32), like="torch") for m in layer] for layer in layers]


bitonic_matrices = variant(
    _network.bitonic_matrices, __name__, _float32_tensors,
    "As in ``differentiable_sorting.torch``, the matrices are ``float32`` torch tensors "
    "(a list of ``[l, r, map_l, map_r]`` per layer).",
    returns=list[list[Any]],
)
