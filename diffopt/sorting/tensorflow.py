"""Drop-in for ``differentiable_sorting.tensorflow``.

The functions are the framework-independent ones of :mod:`diffopt.sorting`
(the NumPy network matrices are moved to the tensors' dtype on use). As in the
original, :func:`dargsort` and :func:`diff_argsort` return a column ``[n, 1]``.
This module imports no framework: the reshape is the core's portable one.
"""

from __future__ import annotations

from typing import Callable

from diffopt._ops import do
from diffopt._typing import Array
from diffopt.sorting import *  # noqa: F401,F403  (the same functions, re-exported)
from diffopt.sorting import __all__ as _ALL
from diffopt.sorting import dargsort as _dargsort
from diffopt.sorting import diff_sort as _diff_sort
from diffopt.sorting import softmax as _softmax

__all__ = list(_ALL)


def dargsort(original: Array, sortd: Array, sigma: float | Array, transpose: bool = False) -> Array:
    """:func:`diffopt.sorting.dargsort` as a ``[n, 1]`` column.

    Parameters
    ----------
    original, sortd : tf.Tensor
        Values and their relaxed sort (any shape with ``n`` elements).
    sigma : float
        Kernel width.
    transpose : bool
        Return the approximate argsort instead of ranks.

    Returns
    -------
    tf.Tensor, shape ``[n, 1]``
    """
    return do("reshape", _dargsort(original, sortd, sigma, transpose), (-1, 1))


def diff_argsort(
    matrices: list[Array],
    x: Array,
    sigma: float | Array = 0.1,
    softmax: Callable[..., Array] = _softmax,
    transpose: bool = False,
) -> Array:
    """:func:`diffopt.sorting.diff_argsort` as a ``[n, 1]`` column.

    Parameters
    ----------
    matrices : list
        ``bitonic_matrices(n)``.
    x : tf.Tensor
        ``n`` values, shape ``[n]`` or ``[n, 1]``.
    sigma, softmax, transpose
        As in :func:`diffopt.sorting.diff_argsort`.

    Returns
    -------
    tf.Tensor, shape ``[n, 1]``
    """
    return dargsort(x, _diff_sort(matrices, x, softmax), sigma, transpose)
