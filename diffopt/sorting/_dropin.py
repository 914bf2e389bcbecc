"""Drop-in replacement for the ``differentiable_sorting`` functions.

Same names, defaults and numbers, for arrays of every framework (the fixed
network matrices are NumPy and are moved to the input's framework, dtype and
device on use). Differences: lengths that are not powers of two raise
``ValueError`` instead of mis-sorting, complex input raises ``TypeError``, and
``softmax`` (log-sum-exp), ``smoothmax`` and the ranking kernel are computed
stably, so large inputs give finite results instead of overflowing.

Names: the original's ``softmax(a, b)`` is not the row softmax of
:func:`diffopt._ops.softmax` but a smooth *maximum* of two numbers; its clear
name here is :func:`logsumexp_max`, and ``softmax`` is kept as an alias of it
(the drop-in's public name, and the default ``softmax=`` argument of the networks).

Each public function resolves the framework of its input once
(:func:`diffopt._ops.namespace`) and runs every layer in that namespace ``xp``.
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
from diffopt._ops import astype_in, constant_in, namespace, shim_in
from diffopt.sorting._kernels import kernel
from diffopt.sorting._network import check_power_of_two
from diffopt.sorting._relax import _sigmoid

__all__ = [
    "logsumexp_max",
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


def _asfloat(x, name="x"):
    """``x`` as an array and its namespace; lists and integer arrays become float64 (as
    ``matrix @ x`` would). Complex input is a ``TypeError`` naming ``name``."""
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    dtype = ar.get_dtype_name(x)
    if dtype.startswith("complex"):
        raise TypeError(f"{name} must be real (floating or integer), got an array of dtype {dtype}: "
                        "sorting orders real numbers")
    if isinstance(x, np.ndarray) and not dtype.startswith(("float", "bfloat")):
        return np.asarray(x, dtype=float), namespace("numpy")
    xp = namespace(x)
    if not dtype.startswith(("float", "bfloat")):
        # a shim whose astype loses the gradient (HIPS autograd) promotes its own way
        promote = kernel("promote_float", xp)
        return (astype_in(xp, x, "float64") if promote is None else promote(x)), xp
    return x, xp


_CLASS_BACKEND = {}


def _backend_of(m):
    """The autoray backend of ``m``, looked up once per class (a warm call makes no look-up)."""
    name = _CLASS_BACKEND.get(type(m))
    if name is None:
        name = _CLASS_BACKEND[type(m)] = ar.infer_backend(m)
    return name


def _lift(m, like, xp):
    """The fixed array ``m`` in ``like``'s framework (namespace ``xp``), dtype and device."""
    if _backend_of(m) == xp.name and ar.get_dtype_name(m) == ar.get_dtype_name(like):
        return m
    return constant_in(xp, m if isinstance(m, np.ndarray) else ar.to_numpy(m), like)


def _index(idx, like, xp):
    """Integer index vector ``idx`` on ``like``'s framework (namespace ``xp``) and device."""
    return shim_in(xp).from_numpy(np.asarray(idx, dtype=np.int64), like)


def _mm(m, x, xp):
    """``m @ x`` for a fixed matrix ``m`` and ``x`` of shape ``[n, ...]``."""
    return xp.tensordot(_lift(m, x, xp), x, axes=1)


def _check_length(x, n_net, what):
    n = x.shape[0]
    check_power_of_two(n, name="len(x)")
    if n != n_net:
        raise ValueError(f"len(x)={n} does not match the {what}, built for n={n_net}")


def _column(w, like, xp):
    """Broadcast per-comparator weights ``w`` (``[n/2]``) against ``like`` (``[n/2, ...]``)."""
    return xp.reshape(w, tuple(w.shape) + (1,) * (like.ndim - w.ndim))


def _logaddexp(a, b, xp):
    """``log(exp(a) + exp(b))``, stable (as :func:`diffopt._ops.logaddexp`)."""
    d = -xp.abs(a - b)
    return xp.maximum(a, b) + (xp.maximum(d, 0.0 * d) + xp.log1p(xp.exp(-xp.abs(d))))


def _maximum_in(softmax, xp):
    """The two-argument maximum ``softmax`` of a network, bound to ``xp`` when it is the default."""
    if softmax is logsumexp_max:
        return lambda a, b: _logsumexp_max(a, b, 1, 0, xp)
    return softmax


# ------------------------------------------------------------- soft maxima


def logsumexp_max(a: Array, b: Array, alpha: float = 1, normalize: float = 0) -> tuple[Array, Array]:
    """Smooth maximum of two numbers ``log(exp(alpha a) + exp(alpha b) - normalize) / alpha``, computed stably.

    ``differentiable_sorting`` calls it ``softmax``; :func:`softmax` is this function
    (an alias kept for the drop-in). It is not the row softmax ``exp(x) / sum(exp(x))``.

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
    >>> from diffopt.sorting import logsumexp_max, softmax
    >>> float(np.round(logsumexp_max(np.array(1.0), np.array(1.0)), 3))  # 1 + log 2
    1.693
    >>> float(np.round(softmax(np.array(0.0), np.array(10.0), alpha=100.0), 3))  # the drop-in's name
    10.0
    """
    return _logsumexp_max(a, b, alpha, normalize, namespace(a))


def _logsumexp_max(a, b, alpha, normalize, xp):
    sa, sb = a * alpha, b * alpha
    if isinstance(normalize, numbers.Number) and normalize == 0:
        return _logaddexp(sa, sb, xp) / alpha
    top = xp.maximum(sa, sb)
    inner = xp.exp(sa - top) + xp.exp(sb - top) - normalize * xp.exp(-top)
    return (top + xp.log(inner)) / alpha


#: The ``differentiable_sorting`` name of :func:`logsumexp_max` (a smooth maximum of two
#: numbers, not a row softmax), kept for the drop-in.
softmax = logsumexp_max


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
    return b + _sigmoid(alpha * (a - b), namespace(a)) * (a - b)


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
    return _logaddexp((1 - t) * a + t * b, (1 - t) * b + t * a, namespace(a)) - math.log1p(smooth)


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
    x, xp = _asfloat(x)
    _check_length(x, matrices[0][0].shape[1] if matrices else 1, "bitonic matrices")
    maximum = _maximum_in(softmax, xp)
    for l, r, map_l, map_r in matrices:
        a, b = _mm(l, x, xp), _mm(r, x, xp)
        mx = maximum(a, b)
        x = _mm(map_l, a + b - mx, xp) + _mm(map_r, mx, xp)
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
    x, xp = _asfloat(x)
    _check_length(x, len(indices[0][0]) if indices else 1, "bitonic indices")
    maximum = _maximum_in(softmax, xp)
    half = x.shape[0] // 2
    for weave, unweave in indices:
        woven = xp.take(x, _index(weave, x, xp), axis=0)
        a, b = woven[:half], woven[half:]
        mx = maximum(a, b)
        x = xp.take(xp.concatenate((a + b - mx, mx), axis=0), _index(unweave, x, xp), axis=0)
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
    x, xp = _asfloat(x)
    _check_length(x, fused[0].shape[1], "woven matrices")
    maximum = _maximum_in(softmax, xp)
    eye = np.eye(x.shape[0])

    def step(mat, v):
        mat = _lift(mat, v, xp)
        if beta != 0:
            mat = beta * _lift(eye, v, xp) + (1 - beta) * mat
        return xp.tensordot(mat, v, axes=1)

    half = x.shape[0] // 2
    x = step(fused[0], x)
    for mat in fused[1:]:
        a, b = x[:half], x[half:]
        mx = maximum(a, b)
        x = step(mat, xp.concatenate((a + b - mx, mx), axis=0))
    return x


def _weighted_network(matrices, x, weight_fn, name):
    """Descending network where ``weight_fn(a_rows, b_rows, xp)`` is the weight of ``a`` in the max."""
    x, xp = _asfloat(x, name)
    _check_length(x, matrices[0][0].shape[1] if matrices else 1, "bitonic matrices")
    for l, r, map_l, map_r in matrices:
        a, b = _mm(l, x, xp), _mm(r, x, xp)
        w = weight_fn(a, b, xp)
        w = _column(w, a, xp) if w.ndim < a.ndim else w
        w_max = b + w * (a - b)
        x = _mm(map_l, w_max, xp) + _mm(map_r, a + b - w_max, xp)
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
    return _weighted_network(matrices, X, lambda a, b, xp: _sigmoid(alpha * (key(a) - key(b)), xp), "X")


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
    return _weighted_network(matrices, x, lambda a, b, xp: _sigmoid((alpha * scale) * compare_fn(a, b), xp), "x")


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
    (original, _), (sortd, xp) = _asfloat(original, "original"), _asfloat(sortd, "sortd")
    return _order_matrix(original, sortd, sigma, xp)


def _order_matrix(original, sortd, sigma, xp):
    diff = xp.reshape(original, (-1, 1)) - xp.reshape(sortd, (1, -1))
    z = -(diff**2) / (2 * sigma**2)
    # the row softmax of diffopt._ops.softmax (a stable log-sum-exp), in xp
    m = xp.max(z, axis=1, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    return xp.exp(z - (xp.log(xp.sum(xp.exp(z - m), axis=1, keepdims=True)) + m))


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
    if isinstance(sigma, numbers.Real):  # an array sigma is the caller's business
        check_positive("sigma", sigma)
    (original, _), (sortd, xp) = _asfloat(original, "original"), _asfloat(sortd, "sortd")
    return _dargsort(original, sortd, sigma, transpose, xp)


def _dargsort(original, sortd, sigma, transpose, xp):
    order = _order_matrix(original, sortd, sigma, xp)
    if transpose:
        order = xp.transpose(order)
    pos = _lift(np.arange(order.shape[1], dtype=float), order, xp)
    return xp.sum(order * pos, axis=1)


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
    if isinstance(sigma, numbers.Real):
        check_positive("sigma", sigma)
    x, xp = _asfloat(x)
    return _dargsort(x, diff_sort(matrices, x, softmax), sigma, transpose, xp)


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
    if isinstance(sigma, numbers.Real):
        check_positive("sigma", sigma)
    x, xp = _asfloat(x)
    return _dargsort(x, diff_sort_indexed(indices, x, softmax), sigma, transpose, xp)


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
