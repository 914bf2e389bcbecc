"""Drop-in for ``differentiable_sorting.tensorflow``.

The functions are the framework-independent ones of :mod:`diffopt.sorting`
(the NumPy network matrices are moved to the tensors' dtype on use). As in the
original, :func:`dargsort` and :func:`diff_argsort` return a column ``[n, 1]``
(variants of the core functions, see :func:`diffopt.sorting._dropin.variant`).
This module imports no framework: the reshape is the core's portable one.
"""

from __future__ import annotations

from diffopt._ops import do
from diffopt.sorting import *  # noqa: F401,F403  (the same functions, re-exported)
from diffopt.sorting import __all__ as _ALL
from diffopt.sorting import _dropin

__all__ = list(_ALL)

_COLUMN = "As in ``differentiable_sorting.tensorflow``, the result is a column ``[n, 1]``."


def _column(x):
    return do("reshape", x, (-1, 1))


dargsort = _dropin.variant(_dropin.dargsort, __name__, _column, _COLUMN)
diff_argsort = _dropin.variant(_dropin.diff_argsort, __name__, _column, _COLUMN)
