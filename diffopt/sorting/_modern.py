"""Modern soft-sorting API: any length, any batch shape, any axis.

This module validates the arguments and brings the sorted axis last, as
``(B, n)`` rows (and back); everything on the rows themselves (padding to a
power of two, the network's layout, the network and its transports) is
:mod:`diffopt.sorting._soft`: the rows go in once and come out once.
:func:`soft_sort` has a hand-written backward that keeps one weight per
comparator (``n/2`` per layer); ranks, top-k masks and permutation matrices
are linear transports with the same weights and are differentiated by the
framework's own autodiff.

A call resolves its framework once (:func:`_prepare`: the shim and the namespace
``xp`` of :func:`diffopt._ops.namespace`) and passes ``xp`` down to the network,
so its cost in backend look-ups does not grow with ``n``.
"""

from __future__ import annotations

import functools
import math
import numbers

import autoray as ar
import numpy as np

from diffopt._typing import Array
from diffopt._checks import check_floating, check_sort_axis, check_scale
from diffopt._dtypes import compute_dtype
from diffopt._ops import astype_in, namespace, nan_rows_in
from diffopt.backends import get_backend
from diffopt.sorting._kernels import kernel
from diffopt.sorting._relax import check_relaxation
from diffopt.sorting._relaxed_perm import METHODS
from diffopt._arrays import reshape_target
from diffopt.sorting._soft import next_pow2, soft_sort_function, transport

__all__ = ["soft_sort", "soft_rank", "soft_argsort", "soft_permutation", "soft_topk"]


# ----------------------------------------------------------------- arguments


def _prepare(x, axis, temperature, relaxation):
    """Validate arguments (before any work) and return ``x`` as an array, its axis and the shim.

    ``temperature`` is a number > 0 (a NumPy scalar or a ``float`` subclass is a
    number: every framework reads it as a Python float) or a scalar array > 0 of
    ``x``'s framework (learnable: it gets a gradient). Returns ``x``, the axis,
    the shim and the temperature.
    """
    if not hasattr(x, "shape"):
        x = np.asarray(x, dtype=float)
    check_floating("x", x)
    check_relaxation(relaxation)
    if isinstance(temperature, numbers.Real) and not isinstance(temperature, bool):
        temperature = float(temperature)
    temperature = check_scale("temperature", temperature)
    shim = get_backend(x, temperature, argnames=("x", "temperature"))
    return x, check_sort_axis(x, axis), shim, temperature


def _is_empty(x):
    """Whether ``x`` has no entries (a zero-length axis, known before running)."""
    return any(d == 0 for d in x.shape)


def _check_k(k, n):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, n] = [1, {n}] (n = length of the sorted axis), got k={k!r}")
    return int(k)


def _upcast(x, xp):
    """Half-precision data runs through the network in float32 (see :mod:`diffopt._dtypes`)."""
    dtype = ar.get_dtype_name(x)
    return x if compute_dtype(dtype) == dtype else astype_in(xp, x, compute_dtype(dtype))


def _downcast(out, x, xp):
    """``out`` in ``x``'s dtype."""
    dtype = ar.get_dtype_name(x)
    return out if ar.get_dtype_name(out) == dtype else astype_in(xp, out, dtype)


# ------------------------------------------------------------ row reshaping


def _to_rows(x, axis, xp):
    """``x`` as ``(B, n)`` rows along ``axis``, and a function undoing it."""
    ndim = len(x.shape)
    perm = [i for i in range(ndim) if i != axis] + [axis]
    xm = x if axis == ndim - 1 else xp.transpose(x, perm)
    moved = tuple(xm.shape)
    lead = moved[:-1]
    # Python ints, not NumPy: torch.compile would trace NumPy as tensor ops (and a graph break)
    count = -1 if any(d is None for d in lead) else math.prod(lead)
    rows = xp.reshape(xm, (count, moved[-1]))  # not -1: a (2, 0) array has no inferable rows
    inverse = sorted(range(ndim), key=perm.__getitem__)

    def undo(y, matrix=False):
        extra = tuple(y.shape[2:])
        y = xp.reshape(y, reshape_target(moved + extra))
        if axis == ndim - 1 or matrix:
            return y
        return xp.transpose(y, inverse + list(range(ndim, ndim + len(extra))))

    return rows, undo


# ------------------------------------------------------------------ soft_sort


def _scalar_like(value, rows, xp):
    """``value`` (a number or a scalar array) as a 0-d array of ``rows``' framework, dtype and device.

    A number makes no host copy; an array is cast to ``rows``' dtype (its gradient flows).
    """
    if hasattr(value, "shape"):
        dtype = ar.get_dtype_name(rows)
        return value if ar.get_dtype_name(value) == dtype else astype_in(xp, value, dtype)
    return xp.sum(xp.zeros_like(rows[:, :1])) + float(value)  # no slice of the batch axis (sharded)


def soft_sort(x: Array, axis: int = -1, *, temperature: float | Array = 1.0, descending: bool = False,
              relaxation: str | None = "logsumexp") -> Array:
    """Differentiable sort along ``axis``, for any length and batch shape.

    Parameters
    ----------
    x : array
        Floating array of any framework (a list is read as float64 NumPy).
    axis : int
        Axis to sort along; all other axes are batch axes, sorted in one pass.
    temperature : float or scalar array
        Sharpness of the relaxation, in the units of ``x``: pairs much further apart
        than ``temperature`` are swapped (almost) exactly. A scalar array of ``x``'s
        framework is learnable: the result is differentiable in it (every framework;
        traced under ``jax.jit`` without a recompile per value). A NumPy scalar
        (``np.float64(0.5)``) is a number, on every framework.
    descending : bool
        Sort largest first.
    relaxation : str or None
        ``'logsumexp'`` (default; the ``differentiable_sorting`` compare-and-swap),
        ``'logistic'``, ``'cauchy'``, ``'reciprocal'``, ``'optimal'`` (sigmoid
        mixings of Petersen et al.), or ``None`` for the exact sort.

    Returns
    -------
    array
        Same framework, dtype and shape as ``x``. Each row sums to the input row's
        sum (every compare-and-swap preserves ``a + b``). ``+-inf`` sort exactly;
        NaN propagates.

    Raises
    ------
    TypeError
        If ``x`` is not floating.
    ValueError
        For a bad ``axis``, ``temperature <= 0`` (or an array temperature that is not
        a scalar) or an unknown ``relaxation``.

    Notes
    -----
    ``O(n log^2 n)`` work per row, no ``n x n`` matrix; the gradient is hand-written
    and keeps one weight per comparator instead of autodiff's tape. The temperature's
    gradient is ``sum((g_hi - g_lo) dspread/dT)`` over the comparators (see
    :func:`diffopt.sorting._soft.pull_temperature`).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import soft_sort
    >>> x = np.array([3.0, 1.0, 2.0, 10.0, 0.0])
    >>> np.round(soft_sort(x, temperature=0.01), 6) + 0.0   # sharp: the sorted values
    array([ 0.,  1.,  2.,  3., 10.])
    >>> bool(np.isclose(soft_sort(x, temperature=1.0).sum(), x.sum()))   # sums are kept exactly
    True
    """
    x, axis, shim, temperature = _prepare(x, axis, temperature, relaxation)
    if _is_empty(x):
        return x
    body = _compiled(_soft_sort_rows, shim.NAME, shim, axis, descending, relaxation, hasattr(temperature, "shape"))
    return body(x, temperature)


def _soft_sort_rows(shim, axis, descending, relaxation, learnable, x, temperature):
    """:func:`soft_sort` of checked arguments (run compiled on JAX, see :func:`_compiled`)."""
    xp = namespace(shim.NAME)
    xc = _upcast(x, xp)
    rows, undo = _to_rows(-xc if descending else xc, axis, xp)
    f = soft_sort_function(shim, xp, rows, temperature, relaxation, learnable)
    out = undo(f(rows, _scalar_like(temperature, rows, xp)))
    return _downcast(-out if descending else out, x, xp)


@functools.lru_cache(maxsize=512)
def _compiled(body, backend, *static):
    """``body(*static, x, temperature)`` as a function of ``(x, temperature)``, compiled where the
    shim says so (JAX: ``jax.jit``, once per configuration and shape; a Python-number
    temperature becomes a traced input, so a new value compiles nothing, and no eager
    op runs outside the compiled function)."""
    fn = functools.partial(body, *static)
    compile_ = kernel("jit", namespace(backend))
    return fn if compile_ is None else compile_(fn)


# ------------------------------------------------------------- transports


def _transport_rows(backend, kind, axis, descending, relaxation, k, x, temperature):
    """Ranks, top-``k`` mask or permutation (``kind``) of checked arguments (compiled on JAX).

    Differentiated by the framework's own autodiff (the temperature too).
    """
    xp = namespace(backend)
    xc = _upcast(x, xp)
    rows, undo = _to_rows(-xc if descending else xc, axis, xp)
    n = rows.shape[1]
    big_n = next_pow2(n)
    if kind == "rank":
        columns, transpose = np.arange(big_n, dtype=float)[:, None], True
    elif kind == "topk":
        columns, transpose = (np.arange(big_n) < k).astype(float)[:, None], True
    else:
        columns, transpose = np.eye(big_n, n), False
    t = _scalar_like(temperature, rows, xp)
    out = transport(rows, columns, relaxation, t, transpose, xp)
    out = out if kind == "perm" else out[:, :, 0]
    if relaxation is None or n == 1:  # a constant of x (and T): keep it in the graph, with a zero gradient
        out = out + _zero_link(rows, t, xp, out)
    out = nan_rows_in(xp, rows, out)
    return _downcast(undo(out, matrix=kind == "perm"), x, xp)


def _zero_link(rows, temperature, xp, out):
    """Zeros shaped to broadcast against ``out`` that depend on ``rows`` and ``temperature``.

    Exact ranks, masks and permutations (and any of one element) do not depend on the
    data: added to them, this keeps the result in the framework's graph, so its gradient
    is zero, as for ``round``, rather than missing (torch: "does not require grad";
    TensorFlow: ``None``). Infinities and NaN are replaced first (``0 * inf`` is NaN).
    """
    finite = xp.where(xp.isfinite(rows), rows, xp.zeros_like(rows))
    link = finite * 0.0 + temperature * 0.0
    return link[:, None, :] if len(out.shape) == 3 else link


def _transport(kind, x, axis, temperature, relaxation, descending, shim, k=None):
    """Run :func:`_transport_rows` (compiled once per configuration on JAX)."""
    return _compiled(_transport_rows, shim.NAME, shim.NAME, kind, axis, descending, relaxation, k)(x, temperature)


def soft_rank(x: Array, axis: int = -1, *, temperature: float | Array = 1.0, descending: bool = False,
              relaxation: str | None = "logsumexp") -> Array:
    """Differentiable 0-based ranks along ``axis``.

    The rank of ``x[i]`` is its expected position under the network's relaxed
    permutation (``sum_j j * P[j, i]``), computed without forming ``P``.

    Parameters
    ----------
    x, axis, temperature, descending, relaxation
        As in :func:`soft_sort` (an array ``temperature`` gets a gradient). With
        ``descending=True`` the largest has rank 0.

    Returns
    -------
    array
        Ranks in ``[0, n - 1]``, same shape as ``x``; exact integers for
        ``relaxation=None``. Each row sums to ``n (n - 1) / 2`` (``+inf`` ranks last,
        inside the row, at any length). Exact ranks (``relaxation=None``, or ``n = 1``)
        have a zero gradient, as ``round`` does.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import soft_rank
    >>> np.round(soft_rank(np.array([0.3, -1.0, 2.0, 0.5]), temperature=0.001), 6)
    array([1., 0., 3., 2.])
    """
    x, axis, shim, temperature = _prepare(x, axis, temperature, relaxation)
    if _is_empty(x):
        return x * 0.0
    return _transport("rank", x, axis, temperature, relaxation, descending, shim)


def soft_topk(x: Array, k: int, axis: int = -1, *, temperature: float | Array = 1.0, largest: bool = True,
              relaxation: str | None = "logsumexp") -> Array:
    """Differentiable top-``k`` mask along ``axis``.

    Parameters
    ----------
    x : array
        Floating array.
    k : int
        Number of elements to select, ``1 <= k <= n``.
    axis, temperature, relaxation
        As in :func:`soft_sort` (an array ``temperature`` gets a gradient);
        ``relaxation='projection'`` is :func:`diffopt.sorting.projection_topk` with
        ``regularization_strength=temperature`` (one sort instead of the network).
    largest : bool
        Select the ``k`` largest (default) or the ``k`` smallest.

    Returns
    -------
    array
        Weights in ``[0, 1]`` (for the monotone relaxations and ``'logsumexp'``),
        same shape as ``x``, each row summing to ``k``; the exact 0/1 mask for
        ``relaxation=None``.

    Raises
    ------
    ValueError
        If ``k`` is outside ``[1, n]``.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import soft_topk
    >>> np.round(soft_topk(np.array([0.3, -1.0, 2.0, 0.5]), k=2, temperature=0.001), 6)
    array([0., 0., 1., 1.])
    >>> soft_topk(np.array([0.3, -1.0, 2.0, 0.5]), k=2, temperature=0.01, relaxation="projection")
    array([0., 0., 1., 1.])
    """
    if isinstance(relaxation, str) and relaxation == "projection":
        from diffopt.sorting._projection import projection_topk  # it builds on this module

        return projection_topk(x, k, axis, regularization_strength=temperature, largest=largest)
    x, axis, shim, temperature = _prepare(x, axis, temperature, relaxation)
    n = x.shape[axis]
    k = _check_k(k, n)
    if _is_empty(x):
        return x * 0.0
    return _transport("topk", x, axis, temperature, relaxation, largest, shim, k=k)


def soft_permutation(x: Array, axis: int = -1, *, temperature: float | Array = 1.0, descending: bool = False,
                     relaxation: str | None = "logsumexp", method: str = "network",
                     straight_through: bool = False) -> Array:
    """The network's relaxed permutation matrix (``n x n`` per row: only when asked for).

    Parameters
    ----------
    x, axis, temperature, descending, relaxation
        As in :func:`soft_sort` (an array ``temperature`` gets a gradient).
    method : {'network', 'softsort', 'neuralsort'}
        ``'network'`` (default): the sorting network's doubly stochastic matrix.
        ``'softsort'`` (Prillo & Eisenschlos 2020) and ``'neuralsort'`` (Grover et
        al. 2019): row-stochastic softmax relaxations (``relaxation`` is not used);
        see :mod:`diffopt.sorting._relaxed_perm`.
    straight_through : bool
        Return the exact permutation matrix in the forward pass with the
        gradient of the relaxed one (``hard + soft - stop_gradient(soft)``).

    Returns
    -------
    array, shape ``batch + (n, n)``
        ``P[..., j, i]``: weight of input ``i`` in sorted position ``j``; the batch
        axes are those of ``x`` without ``axis``. ``P`` is doubly stochastic,
        ``P @ x`` is the relaxed sort (exactly so for the mixing relaxations), and
        ``relaxation=None`` gives the exact permutation matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import soft_permutation
    >>> x = np.array([2.0, 0.0, 1.0])
    >>> p = soft_permutation(x, temperature=0.001)
    >>> np.round(p @ x, 6)                                   # P applied to x sorts it
    array([0., 1., 2.])
    >>> q = soft_permutation(x, temperature=0.5, method="softsort")
    >>> np.round(q.sum(axis=-1), 6)                          # rows are softmaxes
    array([1., 1., 1.])
    """
    if method not in ("network", *METHODS):
        raise ValueError(f"method must be one of {['network', *METHODS]}, got method={method!r}")
    x, axis, shim, temperature = _prepare(x, axis, temperature, relaxation)
    if _is_empty(x):
        rows, undo = _to_rows(x, axis, namespace(shim.NAME))
        return undo(rows[:, :, None] * rows[:, None, :] * 0.0, matrix=True)
    soft = (_transport("perm", x, axis, temperature, relaxation, descending, shim) if method == "network"
            else _unimodal(method, x, axis, temperature, descending, shim))
    if not straight_through:
        return soft
    xp = namespace(shim.NAME)
    return _transport("perm", x, axis, temperature, None, descending, shim) + (soft - xp.stop_gradient(soft))


def _unimodal(method, x, axis, temperature, descending, shim):
    """SoftSort or NeuralSort matrices (:mod:`diffopt.sorting._relaxed_perm`) of checked arguments."""
    xp = namespace(shim.NAME)
    xc = _upcast(x, xp)
    rows, undo = _to_rows(-xc if descending else xc, axis, xp)
    p = METHODS[method](rows, _scalar_like(temperature, rows, xp), xp)
    return _downcast(undo(p, matrix=True), x, xp)


soft_argsort = soft_permutation
