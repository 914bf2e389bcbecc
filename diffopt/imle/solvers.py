"""Drop-in for ``torch-adaptive-imle``'s ``imle.solvers``: top-k selections for every framework."""

import numbers

import autoray as ar

from diffopt._ops import do
from diffopt.solvers import top_k_mask

__all__ = ["select_k", "mathias_select_k"]


def select_k(logits, k):
    """Indicator of exactly ``k`` largest entries of each row (last axis), in ``logits``' dtype.

    Ties at the ``k``-th value are broken by position.
    """
    return top_k_mask(logits, k, axis=-1)


def mathias_select_k(logits, k):
    """Indicator of the entries at least as large as each row's ``k``-th largest (ties all kept)."""
    n = logits.shape[-1]
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, {n}] (the size of the last axis), got k={k!r}")
    threshold = do("sort", logits, axis=-1)[..., n - k:n - k + 1]
    return ar.astype(logits >= threshold, ar.get_dtype_name(logits))
