"""Fused soft-sorting network for NumPy arrays on the CPU, compiled by numba (optional).

The whole relaxed bitonic network of :func:`diffopt.sorting.soft_sort` runs in
one compiled loop over a tile of ``LANES`` rows: a ``(N, LANES)`` buffer
(``N = 2**k``, rows side by side, so every compare-and-swap is one fixed-length
loop over contiguous lanes that LLVM vectorises) that stays in the CPU's cache.
Each row is read once (padded; for ``'logsumexp'`` its infinities moved onto the
sentinels of :func:`diffopt.sorting._soft.to_sentinels`), every layer's relaxed
compare-and-swap is done in place, and the result is written once. The backward
pass replays the layers in reverse on the cotangent rows with the saved
per-comparator weights (``q = d first output / d first input``; the
comparator's Jacobian is ``[[q, 1 - q], [1 - q, q]]``). The values are those
of the generic loops of :mod:`diffopt.sorting._soft` up to rounding.

``'logsumexp'`` computes ``exp`` and ``log(1 + e)`` as polynomials (range-reduced
``exp``; the ``atanh`` series for ``log`` on ``[1, 2]``), accurate to about an ulp
of the dtype, so its loop vectorises without a vector math library (SVML). The
other relaxations use ``math`` functions.

Only :mod:`diffopt.backends.numpy._fused` imports this module (which imports numba),
when the accelerator is on. Each kernel compiles on first use per relaxation and
dtype (a few seconds) and is cached on disk (``cache=True``). No CUDA kernel
(not written: no GPU to test it on); CUDA tensors run the generic loops.
"""

import math
import types as pytypes

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

__all__ = ["forward", "backward", "slab_shape", "layer_count", "RELAXATIONS", "LANES"]


def layer_count(big_n):
    """Number of layers of the network on ``big_n = 2**k`` values: ``k (k + 1) / 2``."""
    k = big_n.bit_length() - 1
    return k * (k + 1) // 2


# ------------------------------------------------------------------ scalar math


@intrinsic
def _bits_to_float(typingctx, bits):
    """Reinterpret an int32 (int64) as a float32 (float64)."""
    target = {types.int32: types.float32, types.int64: types.float64}.get(bits)
    if target is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(target))

    return target(bits), codegen


def _exp_neg(v):
    """``exp(-v)`` for ``v >= 0`` (0 from where it underflows, NaN for NaN)."""
    raise NotImplementedError  # pragma: no cover - compiled through the overload below


def _log1p_unit(e):
    """``log(1 + e)`` for ``e`` in ``[0, 1]``."""
    raise NotImplementedError  # pragma: no cover


def _make_math(dtype):
    """``exp_neg`` and ``log1p_unit`` in ``dtype`` arithmetic (float constants of that dtype)."""
    f = np.dtype(dtype).type
    single = np.dtype(dtype) == np.float32
    itype = np.int32 if single else np.int64
    bias, shift = (127, 23) if single else (1023, 52)
    cutoff = f(87.0 if single else 708.0)  # exp(-cutoff) is still a normal number
    # ln 2 = ln2_hi + ln2_lo, ln2_hi with few mantissa bits so that k * ln2_hi is exact
    log2e, ln2_hi, ln2_lo = f(1.4426950408889634), f(0.693359375), f(math.log(2.0) - 0.693359375)
    half, two, zero = f(0.5), f(2.0), f(0.0)
    # exp(r) = sum r^j / j! on |r| <= ln2 / 2: 7 terms (float32) or 14 (float64) reach the ulp
    exp_coefs = tuple(f(1.0 / math.factorial(j)) for j in range(7 if single else 14))
    # log(1 + e) = 2 atanh(t), t = e / (2 + e) <= 1/3: sum t^(2j+1) / (2j+1)
    log_coefs = tuple(f(1.0 / (2 * j + 1)) for j in range(8 if single else 17))
    ec = exp_coefs[::-1]
    lc = log_coefs[::-1]

    def exp_neg(v):
        x = -(v if v < cutoff else cutoff)
        k = np.floor(x * log2e + half)
        r = (x - k * ln2_hi) - k * ln2_lo
        p = zero
        for c in numba.literal_unroll(ec):
            p = p * r + c
        e = p * _bits_to_float(itype((np.int64(k) + bias) << shift))
        e = e if v < cutoff else zero
        return e if v == v else v

    def log1p_unit(e):
        t = e / (two + e)
        t2 = t * t
        s = zero
        for c in numba.literal_unroll(lc):
            s = s * t2 + c
        return two * t * s

    return exp_neg, log1p_unit


_MATH = {np.dtype(d): _make_math(d) for d in (np.float32, np.float64)}
_NUMBA_DTYPES = {types.float32: np.dtype(np.float32), types.float64: np.dtype(np.float64)}


@overload(_exp_neg)
def _exp_neg_impl(v):
    if v in _NUMBA_DTYPES:
        return _MATH[_NUMBA_DTYPES[v]][0]
    return None


@overload(_log1p_unit)
def _log1p_unit_impl(e):
    if e in _NUMBA_DTYPES:
        return _MATH[_NUMBA_DTYPES[e]][1]
    return None


def _as(like, value):
    """``value`` in the float type of ``like`` (folded to a constant by LLVM)."""
    raise NotImplementedError  # pragma: no cover


@overload(_as)
def _as_impl(like, value):
    if isinstance(like, types.Array):
        like = like.dtype
    if like == types.float32:
        return lambda like, value: np.float32(value)
    if like == types.float64:
        return lambda like, value: np.float64(value)
    return None


@numba.njit(inline="always", error_model="numpy")
def _log2(big_n):
    k = 0
    while (1 << k) < big_n:
        k += 1
    return k


# ------------------------------------------------------------ compare-and-swap
# Each returns the outputs at the comparator's first and second position and the
# weight q = d(first output) / d(first input), for inputs a (first), b (second);
# desc: the comparator puts the larger value first. Temperature t, its inverse inv_t.


@numba.njit(inline="always", error_model="numpy")
def _lse(a, b, t, inv_t, desc):
    one = _as(a, 1.0)
    u = a - b
    e = _exp_neg(abs(u) * inv_t)
    spread = _log1p_unit(e) * t
    r = one / (one + e)
    q = e * r if (u > 0) != desc else r
    lo, hi = min(a, b) - spread, max(a, b) + spread
    return (hi, lo, q) if desc else (lo, hi, q)


@numba.njit(inline="always", error_model="numpy")
def _exact(a, b, t, inv_t, desc):
    one, zero = _as(a, 1.0), _as(a, 0.0)
    if a != a or b != b:
        nan = a + b
        return nan, nan, zero
    lo, hi = min(a, b), max(a, b)
    if desc:
        return hi, lo, one if a >= b else zero
    return lo, hi, one if a <= b else zero


def _mixing(terms):
    """A comparator from ``terms(v) -> (shift, slope)`` of a finite gap ``v >= 0``."""

    @numba.njit(inline="always", error_model="numpy")
    def cswap(a, b, t, inv_t, desc):
        zero, one = _as(a, 0.0), _as(a, 1.0)
        v = (max(a, b) - min(a, b)) * inv_t
        if v < np.inf:  # NaN and infinite gaps compare exactly
            shift, slope = terms(v)
        else:
            shift, slope = zero, zero
        if a != a or b != b:
            lo = hi = a + b
        else:
            lo, hi = min(a, b) + shift * t, max(a, b) - shift * t
        bigger_first = (b < a) if not desc else (a < b)
        q = slope if bigger_first else one - slope
        return (hi, lo, q) if desc else (lo, hi, q)

    return cswap


@numba.njit(inline="always", error_model="numpy")
def _logistic(v):
    one = _as(v, 1.0)
    e = math.exp(-abs(v))
    leak = e / (one + e) if v >= 0 else one / (one + e)
    return v * leak, leak - v * leak * (one - leak)


@numba.njit(inline="always", error_model="numpy")
def _cauchy(v):
    one, pi = _as(v, 1.0), _as(v, math.pi)
    leak = math.atan2(one, v) / pi
    return v * leak, leak - v / (pi * (one + v * v))


@numba.njit(inline="always", error_model="numpy")
def _reciprocal(v):
    one, half, two = _as(v, 1.0), _as(v, 0.5), _as(v, 2.0)
    leak = half / (one + v)
    return v * leak, two * leak * leak


@numba.njit(inline="always", error_model="numpy")
def _optimal(v):
    quarter, half, two, c16 = _as(v, 0.25), _as(v, 0.5), _as(v, 2.0), _as(v, 0.0625)
    c = min(v, quarter)
    return c16 - (c - quarter) * (c - quarter), half - two * c




# -------------------------------------------------------------------- kernels


#: Rows run side by side: position ``p`` of the network holds ``LANES`` rows' values,
#: contiguous, so every compare-and-swap is one vectorised loop of fixed length.
LANES = 16

# The comparator and whether to use sentinels: replaced in each compiled copy of _forward_rows.
CSWAP, SENTINELS = _lse, True


def _forward_rows(x, t, big, below, under, out, slab):
    """Run the network on every row of ``x`` with the comparator ``CSWAP`` (a global).

    Compiled once per relaxation by :func:`_specialize`. ``SENTINELS`` (a global):
    move infinities onto the dtype's largest finite values before the network and
    back after it (``'logsumexp'``, whose comparator needs finite inputs). ``slab``
    has shape ``(tiles, L, N/2, LANES)``.
    """
    rows, n = x.shape
    k = _log2(n)
    big_n = 1 << k
    inf = _as(t, np.inf)
    inv_t = _as(t, 1.0) / t
    pad = big if SENTINELS else inf
    tile = np.empty((big_n, LANES), x.dtype)
    for first_row in range(0, rows, LANES):
        lanes = min(LANES, rows - first_row)
        for p in range(big_n):
            for lane in range(LANES):
                v = pad
                if p < n and lane < lanes:
                    v = x[first_row + lane, p]
                    if SENTINELS:
                        if v == inf:
                            v = below
                        elif v == -inf:
                            v = -big
                        elif v > under:
                            v = under
                        elif v < -below:
                            v = -below
                elif lane >= lanes:
                    v = _as(t, 0.0)
                tile[p, lane] = v
        weights = slab[first_row // LANES]
        layer = 0
        for stage in range(k):
            for j in range(stage + 1):
                m = 1 << (stage - j)
                w = weights[layer]
                for start in range(0, big_n, 2 * m):
                    desc = (start >> (stage + 1)) & 1 == 1  # every other block of 2**(stage+1) descends
                    for i in range(start, start + m):
                        ta, tb, tw = tile[i], tile[i + m], w[(start >> 1) + i - start]
                        for lane in range(LANES):
                            ta[lane], tb[lane], tw[lane] = CSWAP(ta[lane], tb[lane], t, inv_t, desc)
                layer += 1
        for lane in range(lanes):
            for p in range(n):
                v = tile[p, lane]
                if SENTINELS:
                    if v >= below:
                        v = inf
                    elif v <= -big:
                        v = -inf
                out[first_row + lane, p] = v


@numba.njit(cache=True, error_model="numpy")
def _backward_rows(slab, g, out):
    """Replay the layers in reverse on the cotangent rows ``g`` with the weights ``slab``."""
    rows, n = g.shape
    k = _log2(n)
    big_n = 1 << k
    tile = np.zeros((big_n, LANES), g.dtype)
    for first_row in range(0, rows, LANES):
        lanes = min(LANES, rows - first_row)
        for p in range(n):
            for lane in range(lanes):
                tile[p, lane] = g[first_row + lane, p]
        weights = slab[first_row // LANES]
        layer = slab.shape[1] - 1
        for stage in range(k - 1, -1, -1):
            for j in range(stage, -1, -1):
                m = 1 << (stage - j)
                w = weights[layer]
                for start in range(0, big_n, 2 * m):
                    for i in range(start, start + m):
                        ta, tb, tw = tile[i], tile[i + m], w[(start >> 1) + i - start]
                        for lane in range(LANES):
                            ga, gb = ta[lane], tb[lane]
                            delta = tw[lane] * (ga - gb)
                            ta[lane] = gb + delta
                            tb[lane] = ga - delta
                layer -= 1
        for lane in range(lanes):
            for p in range(n):
                out[first_row + lane, p] = tile[p, lane]
        tile[n:] = 0.0  # padding positions start at 0 again for the next tile


def _specialize(fn, name, **constants):
    """A cached compiled copy of ``fn`` named ``name``, reading ``constants`` as globals.

    numba freezes globals as compile-time constants, so each copy gets its own
    comparator inlined; a distinct name gives each its own disk-cache entry
    (closures and function arguments would not be cached).
    """
    scope = dict(fn.__globals__, **constants)
    names = {"co_name": name, "co_qualname": name} if hasattr(fn.__code__, "co_qualname") else {"co_name": name}
    code = fn.__code__.replace(**names)
    copy = pytypes.FunctionType(code, scope, name, fn.__defaults__)
    copy.__qualname__ = name
    copy.__module__ = fn.__module__
    return numba.njit(cache=True, error_model="numpy", fastmath={"contract"})(copy)


_FORWARD = {
    relaxation: _specialize(_forward_rows, f"_forward_{relaxation or 'exact'}", CSWAP=cswap, SENTINELS=sentinels)
    for relaxation, cswap, sentinels in (
        ("logsumexp", _lse, True),
        (None, _exact, False),
        ("logistic", _mixing(_logistic), False),
        ("cauchy", _mixing(_cauchy), False),
        ("reciprocal", _mixing(_reciprocal), False),
        ("optimal", _mixing(_optimal), False),
    )
}

#: The relaxations this module runs (every one of :mod:`diffopt.sorting._relax`, and None).
RELAXATIONS = tuple(_FORWARD)


def slab_shape(rows, n):
    """Shape of the weights :func:`forward` keeps for ``rows`` rows of length ``n``."""
    big_n = 1 << max(n - 1, 0).bit_length()
    return (-(-rows // LANES), layer_count(big_n), max(big_n // 2, 1), LANES)


def forward(x, temperature, relaxation, out=None, slab=None):
    """Relaxed sort of the rows of ``x`` (``(B, n)``, C-contiguous float32/float64).

    Returns ``out`` (``(B, n)``) and the weight slab (:func:`slab_shape`) for :func:`backward`.
    """
    rows, n = x.shape
    dtype = x.dtype
    if out is None:
        out = np.empty((rows, n), dtype)
    if slab is None:
        slab = np.empty(slab_shape(rows, n), dtype)
    big = dtype.type(np.finfo(dtype).max)
    below = np.nextafter(big, dtype.type(0))
    under = np.nextafter(below, dtype.type(0))
    _FORWARD[relaxation](x, dtype.type(temperature), big, below, under, out, slab)
    return out, slab


def backward(slab, g, out=None):
    """Cotangent of :func:`forward`'s input rows from its ``slab`` and the output cotangent ``g``."""
    if out is None:
        out = np.empty(g.shape, g.dtype)
    _backward_rows(slab, g, out)
    return out
