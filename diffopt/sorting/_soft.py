"""Reshape-based relaxed bitonic network on a ``(batch, N)`` array, ``N = 2**k``.

Layer ``m`` views the rows as ``(batch, N / 2m, 2, m)``: the two halves of the
third axis are the comparator inputs, so no index arrays or ``N x N`` matrices
are built. Descending blocks of a stage are handled by negating them before and
after the stage (the relaxations are odd: ``lo(-a, -b) = -hi(a, b)``), so every
comparator runs ascending.

Linear "transports" reuse the per-layer weights:
``push`` applies the network's mixing matrix ``M`` to columns (``M @ t``),
``pull`` applies its transpose (``M.T @ t``; the backward pass and ranks).
A stage's sign flips commute with its (block diagonal) linear map, so
transports skip them.
"""

import autoray as ar
import numpy as np

from diffopt.sorting._relax import relax_terms

__all__ = ["network", "push", "pull", "layer_sizes"]


def layer_sizes(big_n):
    """``(stage, m)`` of every layer of the network on ``big_n = 2**k`` values."""
    k = big_n.bit_length() - 1
    return [(s, 1 << (s - j)) for s in range(k) for j in range(s + 1)]


def _split(x, m):
    """View ``(B, N)`` as comparator inputs ``a, b`` of shape ``(B, N/2m, m)``."""
    b_, n_ = x.shape[0], x.shape[1]
    xr = ar.do("reshape", x, (b_, n_ // (2 * m), 2, m))
    return xr[:, :, 0], xr[:, :, 1]


def _join(lo, hi, like):
    """Inverse of :func:`_split`."""
    return ar.do("reshape", ar.do("stack", (lo, hi), axis=2), like.shape)


def _flip(x, stage):
    """Negate every other block of ``2**(stage+1)`` values (no-op for the last stage)."""
    g = 2 << stage
    if g >= x.shape[1]:
        return x
    xr = ar.do("reshape", x, (x.shape[0], x.shape[1] // (2 * g), 2, g))
    return _join(xr[:, :, 0], -xr[:, :, 1], x)


def _cswap(a, b, relaxation, temperature, want):
    """One relaxed layer: ``lo, hi`` and the requested per-comparator weight.

    ``want='slope'`` gives ``d lo / d a`` (for the backward pass); ``'leak'`` gives the
    weight of ``a`` in ``lo`` under the mixing reading (for transports); ``None`` none.
    """
    lo, hi = ar.do("minimum", a, b), ar.do("maximum", a, b)
    first = a <= b
    if relaxation is None:
        w = None if want is None else ar.astype(first, ar.get_dtype_name(a))
        return lo, hi, w
    shift, slope, leak = relax_terms(a, b, relaxation, temperature)
    shift = shift * temperature
    w = {"slope": slope, "leak": leak, None: None}[want]
    if w is not None:
        w = ar.do("where", first, 1.0 - w, w)
    return lo + shift, hi - shift, w


def network(x, relaxation, temperature, want=None):
    """Run the relaxed network on the rows of ``x``.

    Parameters
    ----------
    x : array, shape ``(B, N)``
        ``N`` a power of two.
    relaxation : str or None
        See :mod:`diffopt.sorting._relax`.
    temperature : float
        In data units.
    want : {None, 'slope', 'leak'}
        Which per-layer weights to return.

    Returns
    -------
    out : array, shape ``(B, N)``
        Rows sorted ascending (relaxed).
    weights : list of array
        One ``(B, N / 2m, m)`` array per layer (empty when ``want`` is None).
    """
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf of the padding (NumPy only)
        return _network(x, relaxation, temperature, want)


def _network(x, relaxation, temperature, want):
    weights = []
    stage_now = -1
    for stage, m in layer_sizes(x.shape[1]):
        if stage != stage_now:
            x = _flip(_flip(x, stage_now), stage) if stage_now >= 0 else _flip(x, stage)
            stage_now = stage
        a, b = _split(x, m)
        lo, hi, w = _cswap(a, b, relaxation, temperature, want)
        x = _join(lo, hi, x)
        if w is not None:
            weights.append(w)
    return (_flip(x, stage_now) if stage_now >= 0 else x), weights


def _expand(w, t):
    """Broadcast a ``(B, N/2m, m)`` weight against split transport state ``t``."""
    return ar.do("reshape", w, tuple(w.shape) + (1,) * (t.ndim - w.ndim))


def _split_t(t, m):
    """Split transport state ``(B, N, ...)`` like :func:`_split`."""
    shape = tuple(t.shape)
    tr = ar.do("reshape", t, (shape[0], shape[1] // (2 * m), 2, m) + shape[2:])
    return tr[:, :, 0], tr[:, :, 1]


def push(t, weights, big_n):
    """``M @ t`` for transport state ``t`` of shape ``(B, N, ...)``."""
    for (_, m), w in zip(layer_sizes(big_n), weights):
        ta, tb = _split_t(t, m)
        lo = tb + _expand(w, ta) * (ta - tb)
        t = _join(lo, ta + tb - lo, t)
    return t


def pull(t, weights, big_n):
    """``M.T @ t`` for transport state ``t`` of shape ``(B, N, ...)``."""
    for (_, m), w in reversed(list(zip(layer_sizes(big_n), weights))):
        g_lo, g_hi = _split_t(t, m)
        ga = g_hi + _expand(w, g_lo) * (g_lo - g_hi)
        t = _join(ga, g_lo + g_hi - ga, t)
    return t
