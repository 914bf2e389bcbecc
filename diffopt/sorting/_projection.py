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
from diffopt.sorting._modern import _compiled, _downcast, _is_empty, _scalar_like, _to_rows, _upcast
from diffopt.sorting._pav import pav, pav_vjp

__all__ = ["projection_sort", "projection_rank", "REGULARIZATIONS", "isotonic"]

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
    """``(B, n, 2)`` rows ``(a, b)`` -> ``(B, n, 2)``: the solution ``v`` and the block-start flags."""
    a, b = packed[..., 0], packed[..., 1]
    fast = kernel("sorting_pav", namespace("numpy"))
    out = None if fast is None else fast(a, b, kl)
    return np.stack(pav(a, b, kl) if out is None else out, axis=-1)


def _host_backward(packed, kl):
    """``(B, n, 4)`` rows ``(g, a, b, first)`` -> ``(B, n, 2)``: the cotangents of ``a`` and ``b``."""
    args = (packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3], kl)
    fast = kernel("sorting_pav_vjp", namespace("numpy"))
    out = None if fast is None else fast(*args)
    return np.stack(pav_vjp(*args) if out is None else out, axis=-1)


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

    def fwd(a, b):
        on_device = _device_kernel("sorting_pav_device", xp, a, b, kl)  # CUDA arrays: numba.cuda
        if on_device is not None:
            return on_device[0], (a, b, on_device[1])
        shape, dtype = tuple(a.shape), ar.get_dtype_name(a)
        out = shim.host_call(functools.partial(_host_forward, kl=kl), xp.stack((a, b), axis=-1), shape + (2,), dtype)
        return out[..., 0], (a, b, out[..., 1])

    def bwd(res, g):
        a, b, first = res
        on_device = _device_kernel("sorting_pav_device_vjp", xp, g, a, b, first, kl)
        if on_device is not None:
            return on_device
        packed = xp.stack((g, a, b, first), axis=-1)
        out = shim.host_call(functools.partial(_host_backward, kl=kl), packed, tuple(a.shape) + (2,),
                             ar.get_dtype_name(a))
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


def _sort_rows(shim, axis, descending, regularization, exact, x, strength):
    """:func:`projection_sort` of checked arguments (compiled on JAX)."""
    xp = namespace(shim.NAME)
    xc = _upcast(x, xp)
    rows, undo = _to_rows(xc, axis, xp)
    sign = 1.0 if descending else -1.0
    s, _ = _sort_desc(xp, rows * sign)
    if not exact:
        y = xp.zeros_like(s) + _descending_weights(int(rows.shape[1]), rows, xp) / _scalar_like(strength, rows, xp)
        s = y - isotonic(shim, regularization == "kl")(y, s)  # a NaN row comes out all NaN
    else:
        s = nan_rows_in(xp, rows, s)
    return _downcast(undo(s * sign), x, xp)


def _rank_rows(shim, axis, descending, regularization, exact, x, strength):
    """:func:`projection_rank` of checked arguments (compiled on JAX)."""
    xp = namespace(shim.NAME)
    xc = _upcast(x, xp)
    rows, undo = _to_rows(xc, axis, xp)
    sign = -1.0 if descending else 1.0
    # Soft ranks pool tied inputs (any strength > 0): their values and gradients do not depend
    # on the order the sort gives the ties, so any sort will do; the exact ranks need a stable one.
    sorted_rows, order = _sort_desc(xp, rows * sign, stable=exact)
    if exact:  # ranks do not depend on x: a zero gradient, kept in the graph
        inverse = _inverse(xp, order)
        finite = xp.where(xp.isfinite(rows), rows, xp.zeros_like(rows))
        out = astype_in(xp, (rows.shape[1] - 1) - inverse, ar.get_dtype_name(rows)) + finite * 0.0
        return _downcast(undo(out), x, xp)
    s = sorted_rows / _scalar_like(strength, rows, xp)
    kl = regularization == "kl"
    w = xp.zeros_like(s) + _descending_weights(int(rows.shape[1]), rows, xp, log=kl)
    p = s - isotonic(shim, kl)(s, w)
    p = xp.exp(p) if kl else p
    return _downcast(undo(_unsort(xp, p, order) - 1.0), x, xp)  # a NaN row: all NaN (the isotonic solve)


# ----------------------------------------------------------- public


def _run(body, x, axis, regularization_strength, regularization, descending):
    x, axis, shim, strength = _prepare(x, axis, regularization_strength, regularization)
    if _is_empty(x):
        return x * 0.0
    exact = not hasattr(strength, "shape") and strength == 0.0
    return _compiled(body, shim.NAME, shim, axis, descending, regularization, exact)(x, strength)


def projection_sort(x: Array, axis: int = -1, *, regularization_strength: float | Array = 1.0,
                    regularization: str = "l2", descending: bool = False) -> Array:
    r"""Soft sort by projection onto the permutahedron, along ``axis``, any batch shape.

    Parameters
    ----------
    x : array
        Floating array of any framework (a list is read as float64 NumPy).
    axis : int
        Axis to sort along; all other axes are batch axes.
    regularization_strength : float or scalar array
        :math:`\varepsilon \ge 0`, in the units of ``x``: values further apart than about
        :math:`\varepsilon` come out (almost) sorted exactly; ``0`` gives the exact sort.
        A scalar array of ``x``'s framework (> 0) is learnable: it gets a gradient.
    regularization : {'l2', 'kl'}
        Euclidean or KL projection.
    descending : bool
        Largest first.

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
    return _run(_sort_rows, x, axis, regularization_strength, regularization, descending)


def projection_rank(x: Array, axis: int = -1, *, regularization_strength: float | Array = 1.0,
                    regularization: str = "l2", descending: bool = False) -> Array:
    r"""Soft 0-based ranks by projection onto the permutahedron, along ``axis``, any batch shape.

    Parameters
    ----------
    x, axis, regularization, descending
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
    """
    return _run(_rank_rows, x, axis, regularization_strength, regularization, descending)
