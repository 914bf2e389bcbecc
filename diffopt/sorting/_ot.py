r"""Soft sorting by entropic optimal transport (Cuturi, Teboul & Vert, NeurIPS 2019).

Each row :math:`x \in \mathbb{R}^n` is squashed into :math:`[0, 1]` (by default
:math:`\tilde x = \sigma((x - \bar x) / \operatorname{std}(x))`, as ``ott.tools.soft_sort``)
and transported onto :math:`m` increasing targets :math:`y_j = j / (m - 1)` with
weights :math:`b` (uniform by default), from uniform weights :math:`a = 1/n`, for the
cost :math:`C_{ij} = (\tilde x_i - y_j)^2` and entropy :math:`\varepsilon`:

.. math::  P = \arg\min_{P \mathbf 1 = a,\ P^\top \mathbf 1 = b}
           \langle P, C\rangle - \varepsilon H(P),
           \qquad P_{ij} = e^{(f_i + g_j - C_{ij}) / \varepsilon}.

The soft sort is :math:`(P^\top x) / b` (target ``j`` receives the mass-weighted mean of
the inputs sent to it), the soft ranks :math:`(P\, (0, \dots, m - 1)) / a`, rescaled to
:math:`[0, n - 1]`. Sinkhorn runs in the log domain on the potentials :math:`f, g`,
``O(n m)`` time and memory per iteration (never ``n x n`` unless ``m = n``), until
the target marginal is met to ``threshold`` (1-norm) or ``max_iterations``; rows that
have converged stop changing.

Gradients: automatic differentiation through the unrolled Sinkhorn loop (``ott`` uses
implicit differentiation of the optimality conditions by default). Unrolling is what
the bound namespace gives on every framework without a linear solve; it is exact for
the iterates computed, and at convergence agrees with the implicit gradient to the
solver's tolerance (the tests check it against finite differences and against ott).
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import numpy as np

from diffopt._checks import check_floating, check_int, check_positive, check_sort_axis
from diffopt._ops import constant_in, namespace
from diffopt._typing import Array
from diffopt.backends import get_backend
from diffopt.sorting._modern import _downcast, _to_rows, _upcast

__all__ = ["ot_sort", "ot_rank", "soft_quantile", "soft_median", "sinkhorn_plan"]


def _whiten_sigmoid(xp, z):
    """ott's default squashing: the sigmoid of the row-whitened values."""
    mean = xp.mean(z, axis=-1, keepdims=True)
    std = xp.sqrt(xp.mean((z - mean) ** 2, axis=-1, keepdims=True))
    return 1.0 / (1.0 + xp.exp(-(z - mean) / (std + 1e-10)))


def _lse(xp, z, axis):
    top = xp.max(z, axis=axis, keepdims=True)
    top = xp.where(xp.isfinite(top), top, xp.zeros_like(top))
    return xp.log(xp.sum(xp.exp(z - top), axis=axis)) + xp.squeeze(top, axis)


def sinkhorn_plan(xp, s, log_a, log_b, epsilon, max_iterations, threshold):
    """The entropic plan ``(B, n, m)`` from squashed rows ``s`` ``(B, n)`` to ``linspace(0, 1, m)``.

    ``log_a`` ``(1, n)`` and ``log_b`` ``(1, m)``: log weights. Log-domain Sinkhorn,
    ``g`` then ``f``; a row whose target-marginal error (1-norm) is below ``threshold``
    keeps its potentials. A Python loop that stops once every row has converged; under
    ``jax.jit`` or ``tf.function`` a framework loop of ``max_iterations`` steps.
    """
    m = int(log_b.shape[-1])
    y = constant_in(xp, np.linspace(0.0, 1.0, m)[None, None, :], s)
    cost = (s[:, :, None] - y) ** 2
    b = xp.exp(log_b)

    def step(f, g, done):
        g_new = epsilon * log_b - epsilon * _lse(xp, (f[:, :, None] - cost) / epsilon, 1)
        f_new = epsilon * log_a - epsilon * _lse(xp, (g_new[:, None, :] - cost) / epsilon, 2)
        marg = xp.sum(xp.exp((f_new[:, :, None] + g_new[:, None, :] - cost) / epsilon), axis=1)
        err = xp.sum(xp.abs(marg - b), axis=-1, keepdims=True)
        keep = done > 0.5
        f = xp.where(keep, f, f_new)
        g = xp.where(keep, g, g_new)
        return f, g, xp.where(err < threshold, xp.ones_like(done), done)

    f, g = xp.zeros_like(s), xp.zeros_like(cost[:, 0, :])
    done = xp.zeros_like(s[:, :1])
    shim = get_backend(s)
    if shim.is_symbolic(s):  # traced (jit, vmap, grad, tf.function): a fixed number of iterations
        f, g, done = shim.fori_loop(0, max_iterations, lambda i, c: step(*c), (f, g, done))
    else:
        for i in range(max_iterations):
            f, g, done = step(f, g, done)
            if i % 10 == 9 and float(xp.stop_gradient(xp.min(done))) > 0.5:
                break
    return xp.exp((f[:, :, None] + g[:, None, :] - cost) / epsilon)


# ----------------------------------------------------------- checks


def _prepare(x, axis, epsilon, max_iterations, threshold, squashing_fun):
    if not hasattr(x, "shape"):
        x = np.asarray(x, dtype=float)
    check_floating("x", x)
    check_positive("epsilon", epsilon)
    check_int("max_iterations", max_iterations)
    check_positive("threshold", threshold)
    if squashing_fun is not None and not callable(squashing_fun):
        raise TypeError(f"squashing_fun must be callable or None, got {squashing_fun!r}")
    if any(d == 0 for d in x.shape):
        raise ValueError(f"x must have no zero-length axis, got shape {tuple(x.shape)}")
    return x, check_sort_axis(x, axis)


def _weights(target_weights, num_targets, n):
    """The target weights as a float64 NumPy vector summing to 1 (checked)."""
    if target_weights is not None:
        w = np.asarray(target_weights, dtype=np.float64).ravel()
        if w.size < 1 or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError("target_weights must be a nonempty vector of finite numbers > 0")
        return w / w.sum()
    m = n if num_targets is None else check_int("num_targets", num_targets, minimum=2 if n > 1 else 1)
    return np.full(m, 1.0 / m)


def _undo(xp, x, axis, out):
    """``(B, m)`` rows back to ``x``'s shape with the sorted axis of length ``m``, at ``axis``."""
    ndim = len(x.shape)
    lead = [int(d) for i, d in enumerate(x.shape) if i != axis]
    out = xp.reshape(out, tuple(lead) + (int(out.shape[-1]),))
    if axis == ndim - 1:
        return out
    perm = list(range(axis)) + [ndim - 1] + list(range(axis, ndim - 1))
    return xp.transpose(out, perm)


def _transport(x, axis, weights, epsilon, squashing_fun, max_iterations, threshold):
    """Rows of ``x``, their undo, the plan ``(B, n, m)`` and the namespace."""
    xp = namespace(get_backend(x).NAME)
    rows, undo = _to_rows(_upcast(x, xp), axis, xp)
    n = int(rows.shape[1])
    s = _whiten_sigmoid(xp, rows) if squashing_fun is None else squashing_fun(rows)
    log_a = constant_in(xp, np.full((1, n), -np.log(n)), rows)
    log_b = constant_in(xp, np.log(weights)[None, :], rows)
    plan = sinkhorn_plan(xp, s, log_a, log_b, float(epsilon), max_iterations, float(threshold))
    return xp, rows, undo, plan




def ot_sort(x: Array, axis: int = -1, *, topk: int | None = None, num_targets: int | None = None,
            target_weights: Array | None = None, epsilon: float = 1e-2, squashing_fun: Callable[[Array], Array] | None = None, max_iterations: int = 1000,
            threshold: float = 1e-3, descending: bool = False) -> Array:
    r"""Soft sort by entropic optimal transport along ``axis`` (ascending), any framework.

    Parameters
    ----------
    x : array
        Floating array of any framework (a list is read as float64 NumPy).
    axis : int
        Axis to sort along; the others are batch axes.
    topk : int or None
        Return only the ``topk`` largest values (ascending), transporting onto ``topk + 1``
        targets, the first weighted ``(n - topk) / n``.
    num_targets : int or None
        Number ``m`` of uniformly weighted targets (default ``n``): an output of length ``m``.
    target_weights : vector or None
        Weights of the targets (normalized to sum 1); overrides ``num_targets``.
    descending : bool
        Largest first.
    epsilon : float
        Entropic regularization, in the squared units of the squashed values (in ``[0, 1]``
        by default); smaller is sharper and needs more iterations.
    squashing_fun : callable or None
        Maps the ``(B, n)`` rows to ``[0, 1]`` row by row; default the sigmoid of the
        whitened row (as ott). ``lambda z: z`` keeps the values.
    max_iterations, threshold : int, float
        Sinkhorn stops when the target marginal is met to ``threshold`` (1-norm), at most
        after ``max_iterations`` iterations.

    Returns
    -------
    array
        ``x``'s framework and dtype; the sorted axis has the targets' length.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import ot_sort
    >>> np.round(ot_sort(np.array([3.0, 1.0, 2.0]), epsilon=1e-3), 3)
    array([1., 2., 3.])
    >>> np.round(ot_sort(np.array([3.0, 1.0, 2.0, 0.0]), topk=2, epsilon=1e-3), 2)
    array([2., 3.])
    """
    x, axis = _prepare(x, axis, epsilon, max_iterations, threshold, squashing_fun)
    n = int(x.shape[axis])
    start = 0
    if topk is not None:
        topk = check_int("topk", topk)
        if topk < n:
            target_weights, start = np.concatenate([[(n - topk) / n], np.full(topk, 1.0 / n)]), 1
    weights = _weights(target_weights, num_targets, n)
    xp, rows, undo, plan = _transport(x, axis, weights, epsilon, squashing_fun, max_iterations, threshold)
    out = xp.sum(plan * rows[:, :, None], axis=1) / constant_in(xp, weights[None, :], rows)
    out = out[:, start:]
    if descending:
        out = xp.flip(out, axis=-1)
    return _downcast(_undo(xp, x, axis, out), x, xp)


def ot_rank(x: Array, axis: int = -1, *, num_targets: int | None = None, target_weights: Array | None = None,
            epsilon: float = 1e-2, squashing_fun: Callable[[Array], Array] | None = None, max_iterations: int = 1000, threshold: float = 1e-3,
            descending: bool = False) -> Array:
    r"""Soft 0-based ranks by entropic optimal transport along ``axis``, any framework.

    Parameters
    ----------
    x, axis, num_targets, target_weights
        As in :func:`ot_sort`.
    descending : bool
        The largest has rank 0.
    epsilon, squashing_fun, max_iterations, threshold
        As in :func:`ot_sort`.

    Returns
    -------
    array
        Ranks in ``[0, n - 1]``, same shape as ``x`` (as ``ott.tools.soft_sort.ranks``).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import ot_rank
    >>> np.round(ot_rank(np.array([0.3, -1.0, 2.0, 0.5]), epsilon=1e-3), 2)
    array([1., 0., 3., 2.])
    """
    x, axis = _prepare(x, axis, epsilon, max_iterations, threshold, squashing_fun)
    n = int(x.shape[axis])
    weights = _weights(target_weights, num_targets, n)
    m = weights.size
    xp, rows, undo, plan = _transport(x * (-1.0 if descending else 1.0), axis, weights, epsilon,
                                      squashing_fun, max_iterations, threshold)
    levels = constant_in(xp, np.arange(m, dtype=np.float64)[None, None, :], rows)
    out = xp.sum(plan * levels, axis=2) * float(n) * ((n - 1.0) / max(m - 1.0, 1.0))
    return _downcast(undo(out), x, xp)


def _quantile_weights(q, n, width):
    """ott's target weights for the quantiles ``q`` (sorted): fillers interleaved with quantile bins."""
    k = q.size
    ext = np.concatenate([[0.0], q, [1.0]])
    filler = np.diff(ext)
    safe = 0.5 * np.concatenate([[1.0 / k], filler])
    safe = np.concatenate([safe, [0.02, 1.5 / n] if width is None else [width]])
    w = safe.min()
    shift = -np.ones(k + 1)
    shift[0] += 0.5
    shift[k] += 0.5
    filler = filler + w * shift
    return np.stack([filler, np.full(k + 1, w)], axis=1).ravel()[:-1]


def soft_quantile(x: Array, q: float | Array, axis: int = -1, *, weight: float | None = None, epsilon: float = 1e-2,
                  squashing_fun: Callable[[Array], Array] | None = None, max_iterations: int = 1000, threshold: float = 1e-3) -> Array:
    r"""Soft quantiles ``q`` (several at once) by entropic optimal transport along ``axis``.

    Parameters
    ----------
    x, axis
        As in :func:`ot_sort`.
    q : float or sequence of floats in ``(0, 1)``
        The levels; one transport gives them all.
    weight : float or None
        The mass of each quantile's target bin (default as ott: the smallest of half the
        gaps between levels, ``0.02`` and ``1.5 / n``).
    epsilon, squashing_fun, max_iterations, threshold
        As in :func:`ot_sort`.

    Returns
    -------
    array
        The sorted axis replaced by one of length ``len(q)`` (in the order of ``q``).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import soft_quantile
    >>> x = np.linspace(0.0, 1.0, 101)
    >>> np.round(soft_quantile(x, [0.5, 0.1], epsilon=1e-3), 2)
    array([0.5, 0.1])
    """
    levels = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if levels.ndim != 1 or not np.all((levels > 0) & (levels < 1)):
        raise ValueError(f"q must be a number or a vector of numbers in (0, 1), got {q!r}")
    if weight is not None:
        check_positive("weight", weight)
    x, axis = _prepare(x, axis, epsilon, max_iterations, threshold, squashing_fun)
    order = np.argsort(levels, kind="stable")
    weights = _quantile_weights(levels[order], int(x.shape[axis]), weight)
    xp, rows, undo, plan = _transport(x, axis, weights, epsilon, squashing_fun, max_iterations, threshold)
    out = xp.sum(plan[:, :, 1::2] * rows[:, :, None], axis=1) / float(weights[1])
    if levels.size > 1:
        out = xp.take(out, _inverse_index(xp, order, rows), axis=1)
    return _downcast(_undo(xp, x, axis, out), x, xp)


def _inverse_index(xp, order, like):
    """``argsort(order)`` as an index array of ``like``'s framework."""
    from diffopt._ops import shim_in

    return shim_in(xp).from_numpy(np.argsort(order), like)


def soft_median(x: Array, axis: int = -1, **kwargs: Any) -> Array:
    """Soft median along ``axis``: :func:`soft_quantile` at ``0.5``, the axis removed.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import soft_median
    >>> round(float(soft_median(np.array([5.0, 1.0, 3.0, 2.0, 4.0]), epsilon=1e-3)), 1)
    3.0
    """
    out = soft_quantile(x, 0.5, axis, **kwargs)
    xp = namespace(get_backend(out).NAME)
    return xp.squeeze(out, axis=check_sort_axis(out, axis))
