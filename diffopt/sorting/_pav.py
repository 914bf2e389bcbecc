"""Pool adjacent violators on the host (NumPy): the isotonic problems of the projection family.

For rows ``a, b`` of shape ``(B, n)`` and each row, :func:`pav_rows` solves

* ``'l2'``: ``argmin_{v_1 >= ... >= v_n} 1/2 ||v - (a - b)||^2``;
* ``'kl'``: ``argmin_{v_1 >= ... >= v_n} <exp(a - v), 1> + <exp(b), v>``.

The solution is constant on consecutive blocks ``B`` of indices, where it equals the
minimiser of the block's own terms: ``mean(a_B - b_B)`` (L2) or
``logsumexp(a_B) - logsumexp(b_B)`` (KL). Pool adjacent violators scans the row once,
pushing each index as a block and merging the last two blocks while they violate
the order (``v_prev <= v_last``, so equal neighbours are pooled too): ``O(n)`` per row.

The Jacobian is block diagonal (:func:`pav_vjp`): within a block ``B``,
``dv/da = 1/|B|`` (L2) or ``softmax(a_B)`` (KL), and ``dv/db = -dv/da`` (L2) or
``-softmax(b_B)`` (KL), every row of the block the same.

:func:`pav_rows` is plain Python over NumPy arrays so that numba can compile the
same source (:mod:`diffopt.backends.numpy._numba_pav`, the ``sorting_pav`` kernel);
without numba it runs as it is (slow for long rows: a Python loop per element).

Examples
--------
>>> import numpy as np
>>> v, first = pav(np.array([[3.0, 1.0, 2.0]]), np.zeros((1, 3)), False)
>>> v, first
(array([[3. , 1.5, 1.5]]), array([[1., 1., 0.]]))
"""

import math

import numpy as np

__all__ = ["pav_rows", "pav", "pav_vjp"]


def pav_rows(a, b, kl, v, first):
    """Solve the rows of ``a, b`` (float64, ``(B, n)``) into ``v``; ``first[r, i] = 1`` where a block starts.

    Plain loops (numba compiles this very function); ``kl`` selects the KL problem.
    """
    rows, n = a.shape
    start = np.zeros(n, dtype=np.int64)
    num = np.zeros(n)  # L2: sum of a - b; KL: logsumexp of a
    den = np.zeros(n)  # L2: count;        KL: logsumexp of b
    val = np.zeros(n)
    for r in range(rows):
        top = -1
        for i in range(n):
            top += 1
            start[top] = i
            num[top] = a[r, i] if kl else a[r, i] - b[r, i]
            den[top] = b[r, i] if kl else 1.0
            val[top] = num[top] - den[top] if kl else num[top]
            while top > 0 and val[top - 1] <= val[top]:
                if kl:  # logaddexp, both ways
                    hi, lo = max(num[top - 1], num[top]), min(num[top - 1], num[top])
                    num[top - 1] = hi + math.log1p(math.exp(lo - hi))
                    hi, lo = max(den[top - 1], den[top]), min(den[top - 1], den[top])
                    den[top - 1] = hi + math.log1p(math.exp(lo - hi))
                    val[top - 1] = num[top - 1] - den[top - 1]
                else:
                    num[top - 1] += num[top]
                    den[top - 1] += den[top]
                    val[top - 1] = num[top - 1] / den[top - 1]
                top -= 1
        for k in range(top + 1):
            end = start[k + 1] if k < top else n
            for i in range(start[k], end):
                v[r, i] = val[k]
                first[r, i] = 1.0 if i == start[k] else 0.0


def pav(a, b, kl, compiled=None):
    """``(v, first)`` of :func:`pav_rows` for NumPy rows ``a, b`` (computed in float64).

    ``compiled`` is a compiled :func:`pav_rows` (the ``sorting_pav`` kernel) or ``None``.
    """
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    v, first = np.empty_like(a), np.empty_like(a)
    (pav_rows if compiled is None else compiled)(a, b, bool(kl), v, first)
    return v, first


def _block_softmax(x, starts, ids):
    """``exp(x_i) / sum_{j in block(i)} exp(x_j)`` for the flat ``x``, stable (block maxima)."""
    peak = np.maximum.reduceat(x, starts)[ids]
    peak = np.where(np.isfinite(peak), peak, 0.0)
    e = np.exp(x - peak)
    return e / np.add.reduceat(e, starts)[ids]


def pav_vjp(g, a, b, first, kl):
    """``(g_a, g_b)``: the cotangent ``g`` of :func:`pav`'s ``v`` pulled back to ``a`` and ``b``.

    ``first`` marks the blocks (from :func:`pav`); all ``(B, n)``, computed in float64.
    """
    shape = np.shape(g)
    flags = np.asarray(first, dtype=bool).ravel()
    flags[:: shape[1]] = True  # each row starts a block (also where first is all zeros: n = 0)
    starts = np.flatnonzero(flags)
    ids = np.cumsum(flags) - 1
    g = np.asarray(g, dtype=np.float64).ravel()
    total = np.add.reduceat(g, starts)[ids]
    if kl:
        ga = _block_softmax(np.asarray(a, dtype=np.float64).ravel(), starts, ids) * total
        gb = -_block_softmax(np.asarray(b, dtype=np.float64).ravel(), starts, ids) * total
    else:
        ga = total / np.bincount(ids)[ids]
        gb = -ga
    return ga.reshape(shape), gb.reshape(shape)
