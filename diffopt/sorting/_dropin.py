"""Drop-in replacement for the ``differentiable_sorting`` functions.

Same names, defaults and numbers, for arrays of every framework (the fixed
network matrices are NumPy and are moved to the input's framework, dtype and
device on use). Differences: lengths that are not powers of two raise
``ValueError`` instead of mis-sorting, and ``softmax`` (log-sum-exp),
``smoothmax`` and the ranking kernel are computed stably, so large inputs give
finite results instead of overflowing.
"""

from __future__ import annotations

from typing import Any, Callable
import functools
import inspect
import math
import numbers

import autoray as ar
import numpy as np

from diffopt._typing import Array
from diffopt._checks import check_positive
from diffopt._ops import do, logaddexp, namespace, sigmoid
from diffopt._ops import softmax as _row_softmax
from diffopt.sorting._kernels import kernel
from diffopt.sorting._network import check_power_of_two

__all__ = [
    "softmax",
    "smoothmax",
    "softmax_smooth",
    "diff_sort",
    "diff_sort_indexed",
    "diff_sort_weave",
    "vector_sort",
    "comparison_sort",
    "order_matrix",
    "dargsort",
    "diff_argsort",
    "diff_argsort_indexed",
]


# ------------------------------------------------------------------ helpers


def _asfloat(x):
    """``x`` as an array; lists and integer arrays become float64 (as ``matrix @ x`` would)."""
    if not hasattr(x, "shape"):
        return np.asarray(x, dtype=float)
    if not ar.get_dtype_name(x).startswith(("float", "bfloat", "complex")):
        # a shim whose astype loses the gradient (HIPS autograd) promotes its own way
        promote = kernel("promote_float", namespace(x))
        return ar.astype(x, "float64") if promote is None else promote(x)
    return x


def _lift(m, like):
    """The fixed array ``m`` in ``like``'s framework, dtype and device."""
    if ar.infer_backend(m) == ar.infer_backend(like) and ar.get_dtype_name(m) == ar.get_dtype_name(like):
        return m
    if not isinstance(m, np.ndarray):
        m = ar.to_numpy(m)
    return do("from_numpy", m, like=like)


def _index(idx, like):
    """Integer index vector ``idx`` on ``like``'s framework and device."""
    return do("from_numpy", np.asarray(idx), like=like, dtype="int64")


def _mm(m, x):
    """``m @ x`` for a fixed matrix ``m`` and ``x`` of shape ``[n, ...]``."""
    return do("tensordot", _lift(m, x), x, axes=1)


def _check_length(x, n_net, what):
    n = x.shape[0]
    check_power_of_two(n, name="len(x)")
    if n != n_net:
        raise ValueError(f"len(x)={n} does not match the {what}, built for n={n_net}")


def _column(w, like):
    """Broadcast per-comparator weights ``w`` (``[n/2]``) against ``like`` (``[n/2, ...]``)."""
    return do("reshape", w, tuple(w.shape) + (1,) * (like.ndim - w.ndim))


# ------------------------------------------------------------- soft maxima


def softmax(a: Array, b: Array, alpha: float = 1, normalize: float = 0) -> tuple[Array, Array]:
    """Soft maximum ``log(exp(alpha a) + exp(alpha b) - normalize) / alpha``, computed stably.

    Parameters
    ----------
    a, b : array
        Values to compare.
    alpha : float
        Sharpness: larger is closer to ``max(a, b)``.
    normalize : float
        Subtracted inside the log; 0 (default) for any sign, 1 is more accurate for
        strictly positive inputs.

    Returns
    -------
    array
        The log-sum-exp of ``a`` and ``b`` (no overflow for large inputs).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import softmax
    >>> float(np.round(softmax(np.array(1.0), np.array(1.0)), 3))  # 1 + log 2
    1.693
    >>> float(np.round(softmax(np.array(0.0), np.array(10.0), alpha=100.0), 3))
    10.0
    """
    sa, sb = a * alpha, b * alpha
    if isinstance(normalize, numbers.Number) and normalize == 0:
        return logaddexp(sa, sb) / alpha
    top = do("maximum", sa, sb)
    inner = do("exp", sa - top) + do("exp", sb - top) - normalize * do("exp", -top)
    return (top + do("log", inner)) / alpha


def smoothmax(a: Array, b: Array, alpha: float = 1) -> tuple[Array, Array]:
    """Exponentially weighted mean ``(a e^{alpha a} + b e^{alpha b}) / (e^{alpha a} + e^{alpha b})``.

    Parameters
    ----------
    a, b : array
        Values to compare.
    alpha : float
        ``alpha -> inf`` is ``max(a, b)``, ``alpha -> 0`` the mean.

    Returns
    -------
    array
        The weighted mean, computed as ``b + sigmoid(alpha (a - b)) (a - b)`` (stable).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import smoothmax
    >>> float(smoothmax(np.array(2.0), np.array(4.0), alpha=0.0))  # the mean
    3.0
    >>> float(np.round(smoothmax(np.array(2.0), np.array(4.0), alpha=100.0), 3))
    4.0
    """
    return b + sigmoid(alpha * (a - b)) * (a - b)


def softmax_smooth(a: Array, b: Array, smooth: float = 0) -> tuple[Array, Array]:
    """Soft maximum relaxed towards the mean.

    Parameters
    ----------
    a, b : array
        As in :func:`softmax`.
    smooth : float
        0 gives :func:`softmax`, 1 the mean of ``a`` and ``b``.

    Returns
    -------
    array
        ``log(exp((1-t) a + t b) + exp((1-t) b + t a)) - log(1 + smooth)``, ``t = smooth/2``.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import softmax_smooth
    >>> float(np.round(softmax_smooth(np.array(2.0), np.array(4.0), smooth=1.0), 3))  # the mean
    3.0
    """
    t = smooth / 2.0
    return logaddexp((1 - t) * a + t * b, (1 - t) * b + t * a) - math.log1p(smooth)


# ---------------------------------------------------------------- networks


def diff_sort(matrices: list[Array], x: Array, softmax: Callable[..., Array] = softmax) -> Array:
    """Relaxed ascending sort of ``x`` with the matrices of :func:`bitonic_matrices`.

    Parameters
    ----------
    matrices : list
        ``bitonic_matrices(n)``.
    x : array
        Length ``n`` (a power of two) along the first axis.
    softmax : callable
        Soft maximum ``softmax(a, b)``; the soft minimum is ``a + b - softmax(a, b)``.

    Returns
    -------
    array
        The relaxed sort, in ``x``'s framework.

    Raises
    ------
    ValueError
        If ``len(x)`` is not a power of two or does not match ``matrices``.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import bitonic_matrices, diff_sort
    >>> matrices = bitonic_matrices(4)
    >>> y = diff_sort(matrices, np.array([3.0, 10.0, 1.0, 6.0]))     # ascending, smoothed
    >>> bool(np.all(np.diff(y) > 0)), bool(np.isclose(y.sum(), 20.0))
    (True, True)
    """
    x = _asfloat(x)
    _check_length(x, matrices[0][0].shape[1] if matrices else 1, "bitonic matrices")
    for l, r, map_l, map_r in matrices:
        a, b = _mm(l, x), _mm(r, x)
        mx = softmax(a, b)
        x = _mm(map_l, a + b - mx) + _mm(map_r, mx)
    return x


def diff_sort_indexed(indices: list[Array], x: Array, softmax: Callable[..., Array] = softmax) -> Array:
    """Relaxed sort with the index vectors of :func:`bitonic_indices` (no matrices).

    Parameters
    ----------
    indices : list
        ``bitonic_indices(n)``.
    x, softmax
        As in :func:`diff_sort`, which gives the same values.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import bitonic_indices, bitonic_matrices, diff_sort, diff_sort_indexed
    >>> x = np.array([3.0, 10.0, 1.0, 6.0])
    >>> y = diff_sort_indexed(bitonic_indices(4), x)
    >>> bool(np.allclose(y, diff_sort(bitonic_matrices(4), x)))
    True
    """
    x = _asfloat(x)
    _check_length(x, len(indices[0][0]) if indices else 1, "bitonic indices")
    half = x.shape[0] // 2
    for weave, unweave in indices:
        woven = do("take", x, _index(weave, x), axis=0)
        a, b = woven[:half], woven[half:]
        mx = softmax(a, b)
        x = do("take", do("concatenate", (a + b - mx, mx), axis=0), _index(unweave, x), axis=0)
    return x


def diff_sort_weave(fused: list[Array], x: Array, softmax: Callable[..., Array] = softmax, beta: float = 0.0) -> Array:
    """Relaxed sort with the fused matrices of :func:`bitonic_woven_matrices`.

    Parameters
    ----------
    fused : list
        ``bitonic_woven_matrices(n)``.
    x, softmax
        As in :func:`diff_sort`.
    beta : float
        Blend of each fused permutation with the identity (``beta * I + (1 - beta) * P``):
        0 is the sorting network.

    Returns
    -------
    array
        The relaxed sort (equal to :func:`diff_sort` for ``beta=0``).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import bitonic_matrices, bitonic_woven_matrices, diff_sort, diff_sort_weave
    >>> x = np.array([3.0, 10.0, 1.0, 6.0])
    >>> bool(np.allclose(diff_sort_weave(bitonic_woven_matrices(4), x), diff_sort(bitonic_matrices(4), x)))
    True
    """
    x = _asfloat(x)
    _check_length(x, fused[0].shape[1], "woven matrices")
    eye = np.eye(x.shape[0])

    def step(mat, v):
        mat = _lift(mat, v)
        if beta != 0:
            mat = beta * _lift(eye, v) + (1 - beta) * mat
        return do("tensordot", mat, v, axes=1)

    half = x.shape[0] // 2
    x = step(fused[0], x)
    for mat in fused[1:]:
        a, b = x[:half], x[half:]
        mx = softmax(a, b)
        x = step(mat, do("concatenate", (a + b - mx, mx), axis=0))
    return x


def _weighted_network(matrices, x, weight_fn):
    """Descending network where ``weight_fn(a_rows, b_rows)`` is the weight of ``a`` in the max."""
    x = _asfloat(x)
    _check_length(x, matrices[0][0].shape[1] if matrices else 1, "bitonic matrices")
    for l, r, map_l, map_r in matrices:
        a, b = _mm(l, x), _mm(r, x)
        w = weight_fn(a, b)
        w = _column(w, a) if w.ndim < a.ndim else w
        w_max = b + w * (a - b)
        x = _mm(map_l, w_max) + _mm(map_r, a + b - w_max)
    return x


def vector_sort(matrices: list[Array], X: Array, key: Callable[..., Array], alpha: float = 1) -> Array:
    """Relaxed descending sort of the rows of ``X`` by a differentiable ``key``.

    Parameters
    ----------
    matrices : list
        ``bitonic_matrices(n)``.
    X : array, shape ``[n, d]``
        The vectors to sort.
    key : callable
        Maps ``[m, d]`` rows to ``[m]`` scalars (e.g. ``lambda x: x @ [1, 0]``).
    alpha : float
        Sharpness: each comparator mixes the two rows with weights
        ``sigmoid(alpha (key(a) - key(b)))``.

    Returns
    -------
    array, shape ``[n, d]``
        ``X`` with rows in (relaxed) descending order of ``key``.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import bitonic_matrices, vector_sort
    >>> X = np.array([[1.0, 0.0], [4.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    >>> Y = vector_sort(bitonic_matrices(4), X, key=lambda r: r[:, 0], alpha=50.0)
    >>> np.round(Y[:, 0], 3)  # rows by descending first column
    array([4., 3., 2., 1.])
    """
    return _weighted_network(matrices, X, lambda a, b: sigmoid(alpha * (key(a) - key(b))))


def comparison_sort(
    matrices: list[Array],
    x: Array,
    compare_fn: Callable[..., Array],
    alpha: float = 1,
    scale: float = 250,
) -> Array:
    """Relaxed descending sort with any differentiable comparator.

    Parameters
    ----------
    matrices : list
        ``bitonic_matrices(n)``.
    x : array, shape ``[n, ...]``
        Items to sort (scalars, vectors, images, ...).
    compare_fn : callable
        ``compare_fn(a, b)`` for ``[m, ...]`` batches of items: a score (typically in
        ``[-1, 1]``) that is positive where ``a`` should come first.
    alpha, scale : float
        Each comparator mixes its two items with weights
        ``sigmoid(alpha * scale * compare_fn(a, b))``.

    Returns
    -------
    array, shape ``[n, ...]``
        The items in (relaxed) descending order of the comparator.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import bitonic_matrices, comparison_sort
    >>> x = np.array([1.0, 4.0, 2.0, 3.0])
    >>> y = comparison_sort(bitonic_matrices(4), x, compare_fn=lambda a, b: np.tanh(a - b))
    >>> np.round(y, 3)
    array([4., 3., 2., 1.])
    """
    return _weighted_network(matrices, x, lambda a, b: sigmoid((alpha * scale) * compare_fn(a, b)))


# ----------------------------------------------------------------- ranking


def order_matrix(original: Array, sortd: Array, sigma: float | Array = 0.1) -> Array:
    """Row-normalised RBF kernel between ``original`` and ``sortd``.

    Parameters
    ----------
    original, sortd : array
        Values (flattened) and their relaxed sort.
    sigma : float
        Kernel width, a finite number > 0 (``ValueError`` otherwise).

    Returns
    -------
    array, shape ``[n, n]``
        ``exp(-(original_i - sortd_j)^2 / (2 sigma^2))`` with rows summing to 1
        (computed as a stable row softmax).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import order_matrix
    >>> P = order_matrix(np.array([2.0, 0.0, 1.0]), np.array([0.0, 1.0, 2.0]), sigma=0.1)
    >>> P.shape, bool(np.allclose(P.sum(axis=1), 1.0))
    ((3, 3), True)
    >>> np.round(P, 3)
    array([[0., 0., 1.],
           [1., 0., 0.],
           [0., 1., 0.]])
    """
    if isinstance(sigma, numbers.Real):  # an array sigma is the caller's business
        check_positive("sigma", sigma)
    original, sortd = _asfloat(original), _asfloat(sortd)
    diff = do("reshape", original, (-1, 1)) - do("reshape", sortd, (1, -1))
    return _row_softmax(-(diff**2) / (2 * sigma**2), axis=1)


def dargsort(original: Array, sortd: Array, sigma: float | Array, transpose: bool = False) -> Array:
    """Approximate ranks of ``original`` given its relaxed sort ``sortd``.

    Parameters
    ----------
    original, sortd : array
        Values and their relaxed sort.
    sigma : float
        Kernel width of :func:`order_matrix`.
    transpose : bool
        False: ranks (0-based) of each element; True: approximate argsort.

    Returns
    -------
    array, shape ``[n]``

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import dargsort
    >>> x = np.array([2.0, 0.0, 1.0])
    >>> np.round(dargsort(x, np.sort(x), sigma=0.1), 3)  # 0-based ranks
    array([2., 0., 1.])
    """
    order = order_matrix(original, sortd, sigma=sigma)
    if transpose:
        order = do("transpose", order)
    pos = _lift(np.arange(order.shape[1], dtype=float), order)
    return do("sum", order * pos, axis=1)


def diff_argsort(
    matrices: list[Array],
    x: Array,
    sigma: float | Array = 0.1,
    softmax: Callable[..., Array] = softmax,
    transpose: bool = False,
) -> Array:
    """Relaxed 0-based ranks of ``x`` (or argsort with ``transpose=True``).

    Parameters
    ----------
    matrices : list
        ``bitonic_matrices(n)``.
    x : array
        Length ``n``, a power of two.
    sigma : float
        Kernel width: smaller is closer to the exact ranking.
    softmax : callable
        Soft maximum used by :func:`diff_sort`.
    transpose : bool
        As in :func:`dargsort`.

    Returns
    -------
    array, shape ``[n]``
        Relaxed ranks (or argsort) in ``x``'s framework.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import bitonic_matrices, diff_argsort
    >>> x = np.array([30.0, 0.0, 20.0, 10.0])
    >>> np.round(diff_argsort(bitonic_matrices(4), x, sigma=1.0), 3)  # ranks [3, 0, 2, 1]
    array([3., 0., 2., 1.])
    """
    x = _asfloat(x)
    return dargsort(x, diff_sort(matrices, x, softmax), sigma, transpose)


def diff_argsort_indexed(indices: list[Array], x: Array, sigma: float | Array = 0.1,
                         softmax: Callable[..., Array] = softmax, transpose: bool = False) -> Array:
    """:func:`diff_argsort` using :func:`diff_sort_indexed` (``bitonic_indices(n)``).

    Parameters
    ----------
    indices : list
        ``bitonic_indices(n)``.
    x, sigma, softmax, transpose
        As in :func:`diff_argsort`; the result too (shape ``[n]``).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import bitonic_indices, diff_argsort_indexed
    >>> x = np.array([30.0, 0.0, 20.0, 10.0])
    >>> np.round(diff_argsort_indexed(bitonic_indices(4), x, sigma=1.0), 3)
    array([3., 0., 2., 1.])
    """
    x = _asfloat(x)
    return dargsort(x, diff_sort_indexed(indices, x, softmax), sigma, transpose)


# ------------------------------------------------------ per-framework variants of the drop-in


def variant(fn: Callable[..., Any], module: str, convert: Callable[[Any], Any], note: str,
            returns: Any = inspect.Signature.empty) -> Callable[..., Any]:
    """``fn`` with its result passed through ``convert``, for a per-framework drop-in module.

    The original packages' torch/TensorFlow modules differ from the NumPy one only in
    what some functions return (``float32`` tensors, ``[n, 1]`` columns); the variant
    keeps ``fn``'s signature and numpydoc docstring, with ``note`` as its first paragraph
    (so ``help()`` and Sphinx show the whole documentation, written once).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return convert(fn(*args, **kwargs))

    summary, _, rest = inspect.getdoc(fn).partition("\n")
    wrapper.__doc__ = f"{summary}\n\n{note}\n{rest}"
    wrapper.__module__ = module
    wrapper.__signature__ = inspect.signature(fn).replace(
        return_annotation=returns if returns is not inspect.Signature.empty else inspect.signature(fn).return_annotation
    )
    return wrapper
