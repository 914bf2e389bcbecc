r"""``fast_soft_sort.numpy_ops`` drop-in: 1-D NumPy soft sorting and ranking, and its classes.

The functions :func:`soft_rank`, :func:`soft_sort`, :func:`sort`, :func:`rank`,
:func:`isotonic_l2`, :func:`isotonic_kl`, and the classes :class:`Isotonic`,
:class:`Projection`, :class:`SoftRank`, :class:`SoftSort`, :class:`Sort` with
``compute()``, ``jvp(v)``, ``vjp(v)`` and ``jacobian()``. The classes keep their
Jacobian as a dense ``n x n`` matrix built in closed form from the pooled blocks
(:mod:`diffopt.sorting._pav`): block means for L2, block softmaxes for KL.

Example
-------
>>> import numpy as np
>>> from diffopt.sorting.fast_soft_sort import numpy_ops
>>> numpy_ops.soft_rank(np.array([0.3, -1.0, 2.0]), regularization_strength=1e-3)
array([2., 1., 3.])
"""

import numpy as np

from diffopt.sorting._pav import pav
from diffopt.sorting._projection import projection_rank, projection_sort
from diffopt.sorting.fast_soft_sort._batched import check_direction

__all__ = ["isotonic_l2", "isotonic_kl", "Isotonic", "Projection", "SoftRank", "SoftSort", "Sort",
           "soft_rank", "soft_sort", "sort", "rank"]


def _check_regularization(regularization):
    if regularization not in ("l2", "kl"):
        raise ValueError(f"'regularization' should be either 'l2' or 'kl' but got {regularization!r}.")


def _default_w(n):
    return np.arange(n, 0, -1.0)


def isotonic_l2(input_s, input_w=None):
    """``argmin_{v_1 >= ... >= v_n} 1/2 ||v - (s - w)||^2`` (``w`` default ``(n, ..., 1)``)."""
    s = np.asarray(input_s)
    w = _default_w(len(s)) if input_w is None else np.asarray(input_w)
    return pav(s[None], w[None], False)[0][0].astype(s.dtype)


def isotonic_kl(input_s, input_w=None):
    """``argmin_{v_1 >= ... >= v_n} <exp(s - v), 1> + <exp(w), v>`` (``w`` default ``(n, ..., 1)``)."""
    s = np.asarray(input_s)
    w = _default_w(len(s)) if input_w is None else np.asarray(input_w)
    return pav(s[None], w[None], True)[0][0].astype(s.dtype)


def _block_matrix(first, logits=None):
    """``M[i, j]`` for ``i, j`` in one block: ``1 / |B|``, or ``softmax(logits_B)_j``; else 0."""
    ids = np.cumsum(first).astype(np.int64) - 1
    same = ids[:, None] == ids[None, :]
    if logits is None:
        return same / np.bincount(ids)[ids][:, None]
    shifted = np.where(same, logits[None, :], -np.inf)
    e = np.exp(shifted - np.max(shifted, axis=1, keepdims=True))  # 0 outside the block
    return e / e.sum(axis=1, keepdims=True)


class _Differentiable:
    """``jvp``/``vjp``/``jacobian`` of a dense Jacobian :attr:`jacobian_` set by ``compute()``."""

    jacobian_ = None

    @property
    def size(self):
        return len(self.values)

    def _check_computed(self):
        if self.jacobian_ is None:
            raise RuntimeError("Need to run compute() first.")

    def jacobian(self):
        self._check_computed()
        return self.jacobian_.copy()

    def jvp(self, vector):
        self._check_computed()
        return self.jacobian_ @ np.asarray(vector)

    def vjp(self, vector):
        self._check_computed()
        return np.asarray(vector) @ self.jacobian_


class Isotonic(_Differentiable):
    """The isotonic problem in ``input_s`` (derivatives with respect to ``input_s``)."""

    def __init__(self, input_s, input_w, regularization="l2"):
        _check_regularization(regularization)
        self.values, self.input_w, self.regularization = np.asarray(input_s, dtype=float), np.asarray(input_w), regularization

    def compute(self):
        kl = self.regularization == "kl"
        v, first = pav(self.values[None], self.input_w[None], kl)
        self.jacobian_ = _block_matrix(first[0], self.values if kl else None)
        self.solution_ = v[0]
        return self.solution_


def _descending_order(values):
    return np.argsort(-values, kind="stable")


class Projection(_Differentiable):
    """Projection of ``input_theta`` onto the permutahedron of ``input_w`` (default ``(n, ..., 1)``)."""

    def __init__(self, input_theta, input_w=None, regularization="l2"):
        _check_regularization(regularization)
        self.values = np.asarray(input_theta, dtype=float)
        self.input_w = _default_w(len(self.values)) if input_w is None else np.asarray(input_w, dtype=float)
        self.regularization = regularization

    def compute(self):
        order = _descending_order(self.values)
        iso = Isotonic(self.values[order], self.input_w, self.regularization)
        out = np.empty_like(self.values)
        out[order] = self.values[order] - iso.compute()
        perm = np.eye(len(order))[order]  # s = perm @ theta
        self.jacobian_ = np.eye(len(order)) - perm.T @ iso.jacobian_ @ perm
        return out


class SoftRank(_Differentiable):
    """Soft ranks (1-based) of a 1-D array."""

    def __init__(self, values, direction="ASCENDING", regularization_strength=1.0, regularization="l2"):
        _check_regularization(regularization)
        self.values = np.asarray(values, dtype=float)
        self.scale = (-1.0 if check_direction(direction) else 1.0) / regularization_strength
        self.regularization = regularization

    def compute(self):
        kl = self.regularization == "kl"
        w = _default_w(len(self.values))
        proj = Projection(self.values * self.scale, np.log(w) if kl else w, self.regularization)
        out = proj.compute()
        out = np.exp(out) if kl else out
        self.jacobian_ = (out[:, None] if kl else 1.0) * proj.jacobian_ * self.scale
        return out


class SoftSort(_Differentiable):
    """Soft sort of a 1-D array."""

    def __init__(self, values, direction="ASCENDING", regularization_strength=1.0, regularization="l2"):
        _check_regularization(regularization)
        self.values = np.asarray(values, dtype=float)
        self.sign = 1.0 if check_direction(direction) else -1.0
        self.regularization_strength, self.regularization = regularization_strength, regularization

    def compute(self):
        kl = self.regularization == "kl"
        order = _descending_order(self.sign * self.values)
        s = self.sign * self.values[order]
        y = _default_w(len(s)) / self.regularization_strength
        v, first = pav(y[None], s[None], kl)
        # d out / d s = sign * (block means, or block softmax of s); d s / d values = sign * perm
        self.jacobian_ = _block_matrix(first[0], s if kl else None) @ np.eye(len(order))[order]
        return self.sign * (y - v[0])


class Sort(_Differentiable):
    """Hard sort of a 1-D array."""

    def __init__(self, values, direction="ASCENDING"):
        self.values = np.asarray(values)
        self.sign = 1.0 if check_direction(direction) else -1.0

    def compute(self):
        order = _descending_order(self.sign * self.values)
        self.jacobian_ = np.eye(len(order))[order]
        return self.values[order]


def _as_float(values):
    """A list or an integer array as float64; anything else (an autograd box too) as it is."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f" or not isinstance(values, (list, tuple, np.ndarray)):
        return values
    return np.asarray(values, dtype=float)


def soft_rank(values, direction="ASCENDING", regularization_strength=1.0, regularization="l2"):
    """Soft ranks (1-based) of the 1-D ``values`` (see :func:`diffopt.sorting.projection_rank`)."""
    return projection_rank(_as_float(values), regularization_strength=regularization_strength,
                           regularization=regularization, descending=check_direction(direction)) + 1.0


def soft_sort(values, direction="ASCENDING", regularization_strength=1.0, regularization="l2"):
    """Soft sort of the 1-D ``values`` (see :func:`diffopt.sorting.projection_sort`)."""
    return projection_sort(_as_float(values), regularization_strength=regularization_strength,
                           regularization=regularization, descending=check_direction(direction))


def sort(values, direction="ASCENDING"):
    """Hard sort of the 1-D ``values``."""
    return Sort(values, direction).compute()


def rank(values, direction="ASCENDING"):
    """Hard ranks (1-based) of the 1-D ``values``."""
    order = np.argsort(np.asarray(values), kind="stable")
    order = order[::-1] if check_direction(direction) else order
    out = np.empty(len(order), dtype=int)
    out[order] = np.arange(1, len(order) + 1)
    return out
