"""Unimodal row-stochastic relaxations of the sorting permutation: SoftSort and NeuralSort.

For a row ``x`` of length ``n`` and temperature ``T`` (data units), both give a
matrix ``P`` with ``P[j, i]`` the weight of input ``i`` in sorted (ascending)
position ``j``; every row is a softmax, so rows sum to 1 (columns only
approximately), and ``T -> 0`` gives the exact permutation matrix (distinct
values).

SoftSort (Prillo & Eisenschlos, ICML 2020), ``s = sort(x)``::

    P[j, :] = softmax(-|s_j - x| / T)

NeuralSort (Grover et al., ICLR 2019), written for ascending order (the paper's
descending NeuralSort of ``-x``), ``A[i] = sum_k |x_i - x_k|``::

    P[j, :] = softmax(((2 (j + 1) - n - 1) x - A) / T)        (j = 0 .. n-1)

``O(n^2)`` per row in time and memory (``P`` itself), differentiated by the
framework's own autodiff.
"""

from __future__ import annotations

import numpy as np

from diffopt._ops import softmax

__all__ = ["METHODS", "softsort_rows", "neuralsort_rows"]


def softsort_rows(rows, temperature, xp):
    """SoftSort's ``P`` for ``(B, n)`` rows: ``(B, n, n)``."""
    if xp.name == "autograd":  # autograd's sort has no gradient for 2-D arrays: gather by the order instead
        s = rows[np.arange(rows.shape[0])[:, None], np.argsort(xp.stop_gradient(rows), axis=-1)]
    else:
        s = xp.sort(rows, axis=-1)
    return softmax(-xp.abs(s[:, :, None] - rows[:, None, :]) / temperature, axis=-1)


def neuralsort_rows(rows, temperature, xp):
    """NeuralSort's ``P`` for ``(B, n)`` rows (ascending): ``(B, n, n)``."""
    n = rows.shape[-1]
    a = xp.sum(xp.abs(rows[:, :, None] - rows[:, None, :]), axis=-1)  # (B, n)
    ones = xp.ones_like(xp.stop_gradient(rows[:1, :]))  # a constant of rows' dtype and device
    c = xp.reshape(2.0 * xp.cumsum(ones, axis=-1) - (n + 1.0), (1, n, 1))  # 2 (j + 1) - n - 1
    return softmax((rows[:, None, :] * c - a[:, None, :]) / temperature, axis=-1)


#: The ``method`` names of :func:`diffopt.sorting.soft_permutation` besides ``'network'``.
METHODS = {"softsort": softsort_rows, "neuralsort": neuralsort_rows}
