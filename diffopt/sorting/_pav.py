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
:func:`pav_vjp_rows` is the backward as such a loop (compiled: ``sorting_pav_vjp``);
without numba :func:`pav_vjp` computes the same block sums with NumPy's ``reduceat``.

Examples
--------
>>> import numpy as np
>>> v, first = pav(np.array([[3.0, 1.0, 2.0]]), np.zeros((1, 3)), False)
>>> v, first
(array([[3. , 1.5, 1.5]]), array([[1., 1., 0.]]))
"""

import math

import numpy as np

__all__ = ["pav_rows", "pav_vjp_rows", "pav", "pav_vjp", "packed_forward", "packed_backward"]


def pav_rows(a, b, kl, v, first):
    """Solve the rows of ``a, b`` (``(B, n)``) into ``v``; ``first[r, i] = 1`` where a block starts.

    Plain loops (numba compiles this very function); ``kl`` selects the KL problem. The
    blocks are accumulated in float64 whatever the dtype of ``a, b`` and ``v``. A row where
    ``a - b`` has a NaN is all NaN, with every index a block of its own.
    """
    rows, n = a.shape
    start = np.zeros(n, dtype=np.int64)
    num = np.zeros(n)  # L2: sum of a - b; KL: logsumexp of a
    den = np.zeros(n)  # L2: count;        KL: logsumexp of b
    val = np.zeros(n)
    for r in range(rows):
        top = -1
        bad = False
        for i in range(n):
            top += 1
            start[top] = i
            num[top] = a[r, i] if kl else a[r, i] - b[r, i]
            den[top] = b[r, i] if kl else 1.0
            val[top] = num[top] - den[top] if kl else num[top]
            bad = bad or val[top] != val[top]
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
        if bad:
            for i in range(n):
                v[r, i] = math.nan
                first[r, i] = 1
            continue
        for k in range(top + 1):
            end = start[k + 1] if k < top else n
            for i in range(start[k], end):
                v[r, i] = val[k]
                first[r, i] = 1 if i == start[k] else 0


def pav_vjp_rows(g, a, b, first, kl, ga, gb):
    """:func:`pav_vjp` as plain loops (numba compiles this very function): ``ga, gb`` filled in place.

    Each row's blocks start where ``first`` is nonzero (and at its first index); sums
    in float64 whatever the dtype of the arrays.
    """
    rows, n = g.shape
    for r in range(rows):
        i = 0
        while i < n:
            j = i + 1
            while j < n and first[r, j] == 0:
                j += 1
            total = 0.0
            for k in range(i, j):
                total += g[r, k]
            if kl:  # block softmaxes of a and b, each shifted by its block's maximum
                pa, pb = -math.inf, -math.inf
                for k in range(i, j):
                    pa, pb = max(pa, a[r, k]), max(pb, b[r, k])
                pa, pb = (pa if math.isfinite(pa) else 0.0), (pb if math.isfinite(pb) else 0.0)
                sa, sb = 0.0, 0.0
                for k in range(i, j):
                    sa, sb = sa + math.exp(a[r, k] - pa), sb + math.exp(b[r, k] - pb)
                for k in range(i, j):
                    ga[r, k] = math.exp(a[r, k] - pa) / sa * total
                    gb[r, k] = -(math.exp(b[r, k] - pb) / sb * total)
            else:
                mean = total / (j - i)
                for k in range(i, j):
                    ga[r, k] = mean
                    gb[r, k] = -mean
            i = j


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


def packed_forward(packed, kl, fast=None):
    """``(B, n, 2)`` rows ``(a, b)`` -> ``(B, n, 2)``: :func:`pav`'s ``v`` and block-start flags.

    ``fast`` is a compiled ``(a, b, kl) -> (v, first)`` (the ``sorting_pav`` kernel, which may
    return ``None``) or ``None``. The packed layout is that of the host calls of
    :mod:`diffopt.sorting._projection` (one array in, one out).
    """
    a, b = packed[..., 0], packed[..., 1]
    out = None if fast is None else fast(a, b, kl)
    return np.stack(pav(a, b, kl) if out is None else out, axis=-1)


def packed_backward(packed, kl, fast=None):
    """``(B, n, 4)`` rows ``(g, a, b, first)`` -> ``(B, n, 2)``: :func:`pav_vjp`'s cotangents of ``a, b``.

    ``fast``: the ``sorting_pav_vjp`` kernel (may return ``None``) or ``None``.
    """
    args = (packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3], kl)
    out = None if fast is None else fast(*args)
    return np.stack(pav_vjp(*args) if out is None else out, axis=-1)
