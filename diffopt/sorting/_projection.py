r"""Soft sorting and ranking by projection onto the permutahedron (Blondel et al., ICML 2020).

The permutahedron :math:`\mathcal{P}(w)` is the convex hull of the permutations of
a vector :math:`w`. With :math:`\rho = (n, n - 1, \dots, 1)` and a strength
:math:`\varepsilon > 0`,

* the soft ranks (ascending, 1-based) are the Euclidean projection of
  :math:`\theta / \varepsilon` onto :math:`\mathcal{P}(\rho)` (``'l2'``), or
  :math:`\exp` of the KL projection of :math:`\theta / \varepsilon` onto
  :math:`\mathcal{P}(\log \rho)` (``'kl'``);
* the soft sort (descending) is the projection of :math:`\rho / \varepsilon` onto
  :math:`\mathcal{P}(\theta)`.

Both reduce to one isotonic problem (:mod:`diffopt.sorting._pav`). For the
projection of :math:`z` onto :math:`\mathcal{P}(w)` (:math:`w` sorted descending),
sort :math:`z` descending into :math:`s` (permutation :math:`\sigma`), then

.. math::  P(z, w) = (s - v(s, w))_{\sigma^{-1}}, \qquad
           v(s, w) = \arg\min_{v_1 \ge \dots \ge v_n} \tfrac12 \|v - (s - w)\|^2,

and the KL case replaces the objective with
:math:`\langle e^{s - v}, 1\rangle + \langle e^{w}, v\rangle` (its projection is
:math:`s - v`, exponentiated for the ranks). Pool adjacent violators solves it in
``O(n)`` after an ``O(n log n)`` sort; its Jacobian is block diagonal (block means
for L2, block softmaxes for KL), so the backward pass is ``O(n)`` and does not
differentiate through the loop.

The isotonic solve is one primitive of the framework (the shim's ``custom_vjp``,
as :func:`diffopt.sorting.soft_sort` registers its own): its forward and backward
run on the host in NumPy (``shim.host_call``: ``jax.pure_callback`` under
``jit``/``vmap``, ``tf.numpy_function`` under ``tf.function``), with the numba
kernel ``sorting_pav`` where ``[numba]`` is installed; torch CUDA tensors and CuPy
arrays run it on their GPU instead (``sorting_pav_device``: numba.cuda, where numba's
CUDA target is installed), and JAX off the CPU traces it (``sorting_isotonic``). Everything else (the
sort's permutation, the scaling by the strength, ``exp``) is the framework's own
differentiable code, which gives the strength its gradient.

Ties: tied inputs are pooled by the projection (for any strength > 0), so their
ranks are equal, the ranks are differentiable there, and the Jacobian does not
depend on the order in which the ties were sorted. The sort places tied inputs in
their order along the row (a stable sort); each sorted position's gradient goes to
the input placed there.
"""

from __future__ import annotations

import functools
import numbers

import autoray as ar
import numpy as np

from diffopt._call import differentiable
from diffopt._checks import check_floating, check_sort_axis, check_nonnegative, check_scale
from diffopt._ops import astype_in, constant_in, namespace, nan_rows_in, stable_argsort
from diffopt._typing import Array
from diffopt.backends import get_backend
from diffopt.sorting._kernels import kernel
from diffopt.sorting._modern import _check_k, _compiled, _downcast, _is_empty, _scalar_like, _to_rows, _upcast
from diffopt.sorting._pav import packed_backward, packed_forward

__all__ = ["projection_sort", "projection_rank", "projection_topk", "REGULARIZATIONS", "isotonic"]

#: The regularizations of the projection.
REGULARIZATIONS = ("l2", "kl")


def _prepare(x, axis, strength, regularization):
    """Validate (before any work): ``x`` as an array, its axis in ``[0, ndim)``, the shim, the strength."""
    if not hasattr(x, "shape"):
        x = np.asarray(x, dtype=float)
    check_floating("x", x)
    if regularization not in REGULARIZATIONS:
        raise ValueError(f"regularization must be 'l2' or 'kl', got {regularization!r}")
    if isinstance(strength, numbers.Real) and not isinstance(strength, bool):
        strength = check_nonnegative("regularization_strength", float(strength))
    else:
        strength = check_scale("regularization_strength", strength)
    shim = get_backend(x, strength, argnames=("x", "regularization_strength"))
    return x, check_sort_axis(x, axis), shim, strength


# ----------------------------------------------------------- the isotonic primitive


def _host_forward(packed, kl):
    """:func:`~diffopt.sorting._pav.packed_forward` with the NumPy shim's ``sorting_pav`` kernel."""
    return packed_forward(packed, kl, kernel("sorting_pav", namespace("numpy")))


def _host_backward(packed, kl):
    """:func:`~diffopt.sorting._pav.packed_backward` with the NumPy shim's ``sorting_pav_vjp`` kernel."""
    return packed_backward(packed, kl, kernel("sorting_pav_vjp", namespace("numpy")))


def isotonic(shim, kl):
    """The differentiable isotonic solve ``v(a, b)`` on ``(B, n)`` rows of ``shim``'s framework.

    See :mod:`diffopt.sorting._pav`; ``kl`` picks the KL problem. The shim's
    ``sorting_isotonic`` kernel where it gives one (JAX off the CPU or without numba:
    a traced ``lax`` loop on the device; torch with numba: the compiled loops on the
    tensors' memory); else forward and backward run on the host (``shim.host_call``).
    The backward is the closed form.
    """
    traced = kernel("sorting_isotonic", namespace(shim.NAME))
    pair = None if traced is None else traced(kl)
    return _isotonic(shim, kl, pair)


def _device_kernel(name, xp, *args):
    """The shim's kernel ``name`` on ``args`` (``None`` where it has none or it does not apply)."""
    fast = kernel(name, xp)
    return None if fast is None else fast(*args)


@functools.lru_cache(maxsize=32)
def _isotonic(shim, kl, pair):
    if pair is not None:
        return differentiable(shim, *pair)
    xp = namespace(shim.NAME)
    as_op = kernel("sorting_host_isotonic", xp)  # torch: custom ops, one graph under torch.compile

    def host(stage, fn, packed):
        if as_op is not None:
            return as_op(stage, packed, kl)
        return shim.host_call(functools.partial(fn, kl=kl), packed, tuple(packed.shape[:-1]) + (2,),
                              ar.get_dtype_name(packed))

    def fwd(a, b):
        on_device = _device_kernel("sorting_pav_device", xp, a, b, kl)  # CUDA arrays: numba.cuda
        if on_device is not None:
            return on_device[0], (a, b, on_device[1])
        out = host("forward", _host_forward, xp.stack((a, b), axis=-1))
        return out[..., 0], (a, b, out[..., 1])

    def bwd(res, g):
        a, b, first = res
        on_device = _device_kernel("sorting_pav_device_vjp", xp, g, a, b, first, kl)
        if on_device is not None:
            return on_device
        out = host("backward", _host_backward, xp.stack((g, a, b, first), axis=-1))
        return out[..., 0], out[..., 1]

    return differentiable(shim, fwd, bwd)


# ----------------------------------------------------------- permutations


def _argsort_desc(xp, x):
    """Indices sorting the rows of ``x`` descending; ties keep their order along the row."""
    return stable_argsort(-x, -1, xp=xp)


def _sort_desc(xp, x, stable=True):
    """``(values, order)``: the rows of ``x`` sorted descending, differentiable in ``x``.

    ``stable``: ties keep their order along the row; else the order of ties is the
    framework's (where the result does not depend on it: the soft ranks). The shim's
    ``sorting_sort_desc`` (one sort giving both), else a stable argsort and a gather.
    """
    fast = kernel("sorting_sort_desc", xp)
    if fast is not None:
        return fast(x, stable)
    order = _argsort_desc(xp, x)
    return _gather(xp, x, order), order


def _inverse(xp, order):
    """The inverse permutations of ``order`` (the shim's ``sorting_inverse_permutation``, else an argsort)."""
    fast = kernel("sorting_inverse_permutation", xp)
    return xp.argsort(order, -1) if fast is None else fast(order)


def _unsort(xp, values, order):
    """``out[r, order[r, j]] = values[r, j]``: sorted rows back in the input's order (differentiable).

    The shim's ``sorting_unsort`` (one scatter), else a gather by the inverse permutation.
    """
    fast = kernel("sorting_unsort", xp)
    return _gather(xp, values, _inverse(xp, order)) if fast is None else fast(values, order)


def _gather(xp, x, idx):
    """``x[r, idx[r, j]]`` for ``(B, n)`` rows (differentiable in ``x``)."""
    if xp.name == "autograd":  # fancy indexing: autograd differentiates it
        return x[np.arange(idx.shape[0])[:, None], idx]
    return xp.take_along_axis(x, idx, -1)


def _descending_weights(n, rows, xp, log=False):
    """``rho = (n, ..., 1)`` (or ``log rho``) as a ``(1, n)`` array like ``rows``."""
    rho = np.arange(n, 0, -1, dtype=np.float64)[None, :]
    return constant_in(xp, np.log(rho) if log else rho, rows)


# ----------------------------------------------------------- rows


def _spread(xp, rows, relative):
    """``1``, or (``relative``) each row's range ``max - min`` as ``(B, 1)`` (``1`` for a constant row)."""
    if not relative:
        return 1.0
    r = xp.max(rows, axis=-1, keepdims=True) - xp.min(rows, axis=-1, keepdims=True)
    return xp.where(r > 0, r, xp.ones_like(r))


def _sort_rows(shim, axis, descending, regularization, exact, relative, x, strength):
    """:func:`projection_sort` of checked arguments (compiled on JAX)."""
    xp = namespace(shim.NAME)
    xc = _upcast(x, xp)
    rows, undo = _to_rows(xc, axis, xp)
    sign = 1.0 if descending else -1.0
    s, _ = _sort_desc(xp, rows * sign)
    if not exact:
        scale = _spread(xp, rows, relative) / _scalar_like(strength, rows, xp)
        y = xp.zeros_like(s) + _descending_weights(int(rows.shape[1]), rows, xp) * scale
        s = y - isotonic(shim, regularization == "kl")(y, s)  # a NaN row comes out all NaN
    else:
        s = nan_rows_in(xp, rows, s)
    return _downcast(undo(s * sign), x, xp)


def _rank_rows(shim, axis, descending, regularization, exact, relative, k, x, strength):
    """:func:`projection_rank` (``k`` None) or :func:`projection_topk` of checked arguments (compiled on JAX)."""
    xp = namespace(shim.NAME)
    xc = _upcast(x, xp)
    rows, undo = _to_rows(xc, axis, xp)
    sign = -1.0 if descending else 1.0
    n = int(rows.shape[1])
    # Soft ranks and masks pool tied inputs (any strength > 0): their values and gradients do not
    # depend on the order the sort gives the ties, so any sort will do; the exact ones need a stable one.
    sorted_rows, order = _sort_desc(xp, rows * sign, stable=exact)
    if exact:  # ranks and masks do not depend on x: a zero gradient, kept in the graph
        inverse = _inverse(xp, order)
        finite = xp.where(xp.isfinite(rows), rows, xp.zeros_like(rows))
        out = (n - 1) - inverse if k is None else inverse < k
        out = astype_in(xp, out, ar.get_dtype_name(rows)) + finite * 0.0
        return _downcast(undo(out), x, xp)
    s = sorted_rows / (_spread(xp, rows, relative) * _scalar_like(strength, rows, xp))
    kl = regularization == "kl"
    if k is None:
        w = _descending_weights(n, rows, xp, log=kl)
    else:  # the permutahedron of (1, ..., 1, 0, ..., 0): {0 <= m <= 1, sum m = k}
        w = constant_in(xp, (np.arange(n) < k).astype(np.float64)[None, :], rows)
    p = s - isotonic(shim, kl)(s, xp.zeros_like(s) + w)
    p = xp.exp(p) if kl else p
    out = _unsort(xp, p, order)  # a NaN row: all NaN (the isotonic solve)
    return _downcast(undo(out - 1.0 if k is None else out), x, xp)


# ----------------------------------------------------------- public


def _run(body, x, axis, regularization_strength, regularization, descending, relative, *extra):
    x, axis, shim, strength = _prepare(x, axis, regularization_strength, regularization)
    if not isinstance(relative, bool):
        raise TypeError(f"relative must be a bool, got {relative!r}")
    extra = tuple(check(x.shape[axis]) for check in extra)
    if _is_empty(x):
        return x * 0.0
    exact = not hasattr(strength, "shape") and strength == 0.0
    return _compiled(body, shim.NAME, shim, axis, descending, regularization, exact, relative, *extra)(x, strength)


def projection_sort(x: Array, axis: int = -1, *, regularization_strength: float | Array = 1.0,
                    regularization: str = "l2", descending: bool = False, relative: bool = False) -> Array:
    r"""Soft sort by projection onto the permutahedron, along ``axis``, any batch shape.

    Parameters
    ----------
    x : array
        Floating array of any framework (a list is read as float64 NumPy).
    axis : int
        Axis to sort along; all other axes are batch axes.
    regularization_strength : float or scalar array
        :math:`\varepsilon \ge 0` (it acts on :math:`\rho / \varepsilon`, so in the units of
        ``1 / x``): sorted neighbours closer than :math:`1 / \varepsilon` come out exactly,
        runs with wider gaps are pooled into steps of :math:`1 / \varepsilon` around their
        mean; ``0`` gives the exact sort.
        A scalar array of ``x``'s framework (> 0) is learnable: it gets a gradient.
    regularization : {'l2', 'kl'}
        Euclidean or KL projection.
    descending : bool
        Largest first.
    relative : bool
        Scale-free strength: each row's strength is ``regularization_strength`` times the
        row's range :math:`r = \max x - \min x` (``r = 1`` for a constant row), so
        ``x -> c x + b`` (``c > 0``) gives the same relaxation whatever the units and the
        size of the input: ranks and masks unchanged, the sort mapped to ``c y + b``.
        :math:`r` is part of the function: the gradient flows through it (to the row's
        largest and smallest entries).

    Returns
    -------
    array
        Same framework, dtype and shape as ``x``; for ``'l2'`` each row keeps the sum of
        the input row. A NaN makes its whole row NaN; infinities are not supported.

    Raises
    ------
    TypeError
        If ``x`` is not floating.
    ValueError
        For a bad ``axis``, ``regularization`` or a negative strength.
    TypeError
        If ``relative`` is not a bool.

    Notes
    -----
    The projection of :math:`\rho / \varepsilon`, :math:`\rho = (n, \dots, 1)`, onto the
    permutahedron of ``x`` (see :mod:`diffopt.sorting._projection`): ``O(n log n)``
    forward, ``O(n)`` backward. Tied inputs take sorted positions in their order along
    the row (stable).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import projection_sort
    >>> projection_sort(np.array([3.0, 1.0, 2.0]), regularization_strength=0.1)
    array([1., 2., 3.])
    >>> projection_sort(np.array([3.0, 1.0, 2.0]), regularization_strength=2.0)   # all pooled
    array([1.5, 2. , 2.5])
    >>> projection_sort(np.array([3.0, 1.0, 2.0]), regularization_strength=1.0, descending=True)
    array([3., 2., 1.])
    """
    return _run(_sort_rows, x, axis, regularization_strength, regularization, descending, relative)


def projection_rank(x: Array, axis: int = -1, *, regularization_strength: float | Array = 1.0,
                    regularization: str = "l2", descending: bool = False, relative: bool = False) -> Array:
    r"""Soft 0-based ranks by projection onto the permutahedron, along ``axis``, any batch shape.

    Parameters
    ----------
    x, axis, regularization, descending, relative
        As in :func:`projection_sort` (``descending=True``: the largest has rank 0).
    regularization_strength : float or scalar array
        :math:`\varepsilon \ge 0`, in the units of ``x``; ``0`` gives the exact ranks (with
        a zero gradient). A scalar array (> 0) is learnable.

    Returns
    -------
    array
        Ranks in ``[0, n - 1]``, same shape as ``x`` (``fast_soft_sort`` and ``torchsort``
        count from 1: add one). Tied inputs have equal ranks (and exchangeable gradients).
        A NaN makes its whole row NaN; infinities are not supported.

    Notes
    -----
    The projection of ``x / strength`` onto the permutahedron of ``(n, ..., 1)`` (``'kl'``:
    ``exp`` of the KL projection onto that of ``log (n, ..., 1)``), minus one.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import projection_rank
    >>> projection_rank(np.array([0.3, -1.0, 2.0, 0.5]), regularization_strength=0.01)
    array([1., 0., 3., 2.])
    >>> projection_rank(np.array([0.0, 0.1]), regularization_strength=1.0)   # pooled
    array([0.45, 0.55])
    >>> projection_rank(np.array([0.0, 100.0]), regularization_strength=1.0, relative=True)  # units: the range
    array([0., 1.])
    """
    return _run(_rank_rows, x, axis, regularization_strength, regularization, descending, relative, _no_k)


def _no_k(n):
    return None


def projection_topk(x: Array, k: int, axis: int = -1, *, regularization_strength: float | Array = 1.0,
                    largest: bool = True, relative: bool = False) -> Array:
    r"""Soft top-``k`` mask by projection onto the capped simplex, along ``axis``, any batch shape.

    The Euclidean projection of ``x / strength`` onto the permutahedron of
    :math:`(1, \dots, 1, 0, \dots, 0)` (``k`` ones), which is the capped simplex
    :math:`\{m : 0 \le m \le 1, \sum m = k\}`: one sort and one isotonic regression,
    as :func:`projection_rank`.

    Parameters
    ----------
    x : array
        Floating array of any framework (a list is read as float64 NumPy).
    k : int
        Number of elements to select, ``1 <= k <= n``.
    axis : int
        Axis to select along; all other axes are batch axes.
    regularization_strength : float or scalar array
        :math:`\varepsilon \ge 0`, in the units of ``x``; ``0`` gives the exact 0/1 mask
        (with a zero gradient). A scalar array (> 0) is learnable.
    largest : bool
        Select the ``k`` largest (default) or the ``k`` smallest.
    relative : bool
        As in :func:`projection_sort`: the strength in units of each row's range.

    Returns
    -------
    array
        Weights in ``[0, 1]``, same shape as ``x``, each row summing to ``k``. Tied
        inputs get equal weights. A NaN makes its whole row NaN.

    Raises
    ------
    ValueError
        If ``k`` is outside ``[1, n]``, for a bad ``axis`` or a negative strength.

    Notes
    -----
    Only the L2 projection: the KL projection onto this permutahedron would need
    :math:`\log 0`.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import projection_topk
    >>> projection_topk(np.array([0.3, -1.0, 2.0, 0.5]), k=2, regularization_strength=0.01)
    array([0., 0., 1., 1.])
    >>> projection_topk(np.array([0.0, 0.1, 1.0]), k=1, regularization_strength=1.0)
    array([0.  , 0.05, 0.95])
    """
    return _run(_rank_rows, x, axis, regularization_strength, "l2", not largest, relative,
                functools.partial(_check_k, k))
