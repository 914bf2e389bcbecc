"""Reshape-based relaxed bitonic network on a ``(batch, N, ...)`` array, ``N = 2**k``.

Layer ``m`` views the rows as ``(batch, N / 2m, 2, m, ...)``: the two halves of
the third axis are the comparator inputs, so no index arrays or ``N x N``
matrices are built. Trailing axes are carried along: ``soft_sort`` runs many
rows as one ``(1, N, B)`` block, batch innermost, so that every read and write
is a run of at least ``B`` contiguous values. Descending blocks of a stage are
handled by negating them before and after the stage (the relaxations are odd:
``lo(-a, -b) = -hi(a, b)``), so every comparator runs ascending.

Linear "transports" reuse the per-layer weights:
``push`` applies the network's mixing matrix ``M`` to columns (``M @ t``),
``pull`` applies its transpose (``M.T @ t``; the backward pass and ranks).
A stage's sign flips commute with its (block diagonal) linear map, so
transports skip them.

Bit-reversed layout (``reverse=True``): the rows are stored with the bits of
the position reversed (:func:`bit_reverse`), so logical partner distance ``m``
becomes ``N / 2m``. The network compares at ``m = 1`` in every stage, which in
the natural layout means stride-2 (slow, unvectorised) reads and interleaved
writes; reversed, the frequent small distances become large contiguous
halves and only the last stage's first layer works at stride 2 (times the
trailing size). The values and weights are the same, permuted.

The entry points on ``(B, n)`` rows of any length (what
:mod:`diffopt.sorting._modern` calls; padding and layout stay here, next to
the network): :func:`soft_sort_function` (``soft_sort``'s differentiable function: the one
choice among its fused, looped, generic and in-place implementations),
:func:`transport` (ranks, top-k masks, permutations).
Rows are padded with ``+inf`` to the next power of two (``+inf`` is compared
exactly, so padding never leaks into the data) and cut back.

Every function takes the namespace ``xp`` of its arrays' framework
(:func:`diffopt._ops.namespace`), resolved once by the public call: the network
makes no backend look-up per layer. Called without it (tests, the REPL), a
function finds it from its first array.
"""

import functools

import autoray as ar
import numpy as np

from diffopt._arrays import reshape_target
from diffopt._call import differentiable
from diffopt._ops import astype_in, constant_in, namespace, quiet_numpy_in, where_fill_in
from diffopt.sorting._kernels import kernel
from diffopt.sorting._network import schedule
from diffopt.sorting._relax import logsumexp_slope, relax_terms, spread_derivative

__all__ = ["network", "lse_network", "push", "pull", "pull_temperature", "network_transport", "bit_reverse",
           "bit_reversal", "finite_range", "to_sentinels", "next_pow2", "pad", "soft_sort_function", "sorter",
           "transport"]


@functools.lru_cache(maxsize=64)
def bit_reversal(big_n):
    """The permutation of ``range(big_n)`` reversing the bits of each index (an involution).

    ``int32`` whatever the platform's default: the array is cached, and JAX
    (0.10) keeps the dtype it first gave a cached NumPy operand, so an ``int64``
    array first met outside ``jax.enable_x64`` (as ``int32``) failed to lower
    inside it ("operand type mismatch ... i64 ... i32").
    """
    k = big_n.bit_length() - 1
    return np.arange(big_n, dtype=np.int32).reshape((2,) * k).transpose(tuple(range(k))[::-1]).reshape(big_n)


def bit_reverse(x, n=None, axis=1, xp=None):
    """``x`` in bit-reversed order along ``axis`` (of length ``N``); the first ``n`` only if given."""
    xp = namespace(x) if xp is None else xp
    idx = bit_reversal(x.shape[axis])
    return xp.take(x, idx if n is None else idx[:n], axis=axis)


def _split(x, m, xp):
    """View ``(B, N, ...)`` as comparator inputs ``a, b`` of shape ``(B, N/2m, m, ...)``."""
    shape = reshape_target(x.shape)
    xr = xp.reshape(x, (shape[0], shape[1] // (2 * m), 2, m) + shape[2:])
    return xr[:, :, 0], xr[:, :, 1]


def _join(lo, hi, like, xp):
    """Inverse of :func:`_split`."""
    return xp.reshape(xp.stack((lo, hi), axis=2), reshape_target(like.shape))


@functools.lru_cache(maxsize=256)
def _flip_signs(big_n, stages, reverse):
    """``+-1`` per stored position: the product of the sign flips of ``stages``.

    Stage ``s`` negates every other block of ``2**(s+1)`` values (none for the last
    stage). ``None`` when nothing is negated.
    """
    flipped = [s for s in stages if (2 << s) < big_n]
    if not flipped:  # decided on Python ints: under torch.compile the NumPy below is traced
        return None
    pos = bit_reversal(big_n) if reverse else np.arange(big_n)
    signs = np.ones(big_n)
    for s in flipped:
        signs = signs * np.where(pos & (2 << s), -1.0, 1.0)
    return signs


def _flip(x, stages, reverse, xp):
    """Apply the sign flips of ``stages`` to ``(B, N, ...)`` rows (one multiplication)."""
    signs = _flip_signs(x.shape[1], tuple(stages), reverse)
    if signs is None:
        return x
    signs = signs.reshape((-1,) + (1,) * (len(x.shape) - 2))
    return x * constant_in(xp, signs, x)


def _cswap(a, b, relaxation, temperature, want, xp):
    """One relaxed layer: ``lo, hi`` and the requested per-comparator weight.

    ``want='slope'`` gives ``d lo / d a`` (for the backward pass); ``'leak'`` gives the
    weight of ``a`` in ``lo`` under the mixing reading (for transports); ``None`` none.
    """
    lo, hi = xp.minimum(a, b), xp.maximum(a, b)
    if relaxation is None:
        w = None if want is None else astype_in(xp, a <= b, ar.get_dtype_name(a))
        return lo, hi, w
    spread, w = relax_terms(a, b, lo, hi, relaxation, temperature, want, xp)
    return lo - spread, hi + spread, w


def network(x, relaxation, temperature, want=None, reverse=False, xp=None):
    """Run the relaxed network on the rows of ``x``.

    Parameters
    ----------
    x : array, shape ``(B, N, ...)``
        ``N`` a power of two; trailing axes are more independent rows.
    relaxation : str or None
        See :mod:`diffopt.sorting._relax`.
    temperature : float
        In data units.
    want : {None, 'slope', 'leak', 'slope_dt'}
        Which per-layer weights to return (see :func:`~diffopt.sorting._relax.relax_terms`).
    reverse : bool
        ``x`` (and the result) are in the bit-reversed layout (:func:`bit_reverse`).
    xp : diffopt._ops.Namespace, optional
        The namespace of ``x``'s framework (found from ``x`` if not given).

    Returns
    -------
    out : array, shape ``(B, N, ...)``
        Rows sorted ascending (relaxed) along axis 1.
    weights : list of array
        One ``(B, N / 2m, m, ...)`` array per layer (empty when ``want`` is None).
    """
    xp = namespace(x) if xp is None else xp
    with quiet_numpy_in(xp, x):  # inf - inf, 1 / 0 (NumPy only)
        if relaxation == "logsumexp" and want == "slope":
            return lse_network(x, temperature, reverse, xp)
        return _layers(x, lambda a, b: _cswap(a, b, relaxation, temperature, want, xp), reverse, xp)


def _layers(x, cswap, reverse, xp):
    """Run ``cswap(a, b) -> (lo, hi, w)`` over the layers; return ``x`` and the ``w``."""
    weights = []
    stage_now = -1
    for stage, m in schedule(int(x.shape[1]), reverse):
        if stage != stage_now:  # undo the last stage's flips, do this one's
            x = _flip(x, (stage_now, stage) if stage_now >= 0 else (stage,), reverse, xp)
            stage_now = stage
        a, b = _split(x, m, xp)
        lo, hi, w = cswap(a, b)
        x = _join(lo, hi, x, xp)
        if w is not None:
            weights.append(w)
    return (_flip(x, (stage_now,), reverse, xp) if stage_now >= 0 else x), weights


def _finite_triple(name):
    """The largest finite value of dtype ``name`` and the two floats below it, as Python floats."""
    big = np.finfo(name).max
    below = np.nextafter(big, big.dtype.type(0))
    return float(big), float(below), float(np.nextafter(below, big.dtype.type(0)))


# Per floating dtype: ``(big, below, under)``, the largest finite value and the two floats
# below it. Filled at import for the common dtypes, so that reading them under
# ``torch.compile`` traces no NumPy (bfloat16 is not a NumPy dtype: its values are written out).
_FINITE_RANGE = {name: _finite_triple(name) for name in ("float16", "float32", "float64")}
_FINITE_RANGE["bfloat16"] = (3.3895313892515355e38, 3.3762378350964675e38, 3.362946829335837e38)


def _finite_constants(x):
    name = ar.get_dtype_name(x)
    if name not in _FINITE_RANGE:
        _FINITE_RANGE[name] = _finite_triple(name)
    return _FINITE_RANGE[name]


def finite_range(x):
    """``(big, below)``: the largest finite value of ``x``'s dtype and the next one down."""
    return _finite_constants(x)[:2]


def to_sentinels(x, xp=None):
    """``x`` with its infinities moved onto the sentinels of :func:`lse_network`.

    ``+inf`` becomes ``below`` and ``-inf`` becomes ``-big`` (see
    :func:`finite_range`); finite values are clipped to ``[-below, under]``,
    ``under`` the float below ``below``, so that the dtype's largest finite values
    are not read as infinities and stay finite. NaN passes through.
    """
    xp = namespace(x) if xp is None else xp
    big, below, under = _finite_constants(x)
    out = where_fill_in(xp, x == float("inf"), below, xp.clip(x, -below, under))
    return where_fill_in(xp, x == float("-inf"), -big, out)


def lse_network(x, temperature, reverse=False, xp=None):
    """``network(x, 'logsumexp', temperature, 'slope', reverse)`` without per-layer inf/NaN checks.

    The hot loop of :func:`diffopt.sorting.soft_sort`. Infinities are clipped
    once to the largest finite value ``+-big`` of the dtype, so every layer can
    use :func:`~diffopt.sorting._relax.logsumexp_slope`, and restored at the
    end: ``big`` stays ``big`` through the network (``big - T log 2`` rounds
    back to ``big`` for any sane ``T``), and ``exp(-(big - x) / T)`` underflows
    to an exact 0, so a clipped value never mixes with the data. NaN propagates
    through the clip. Values from ``below`` (the float under ``big``) up come out
    as ``+inf``. Two equal clipped values are a tie (weight 1/2):
    :func:`diffopt.sorting.soft_sort` clips the user's ``+inf`` to ``below``
    before padding with ``+inf``, so that the padding (``big``) is compared
    exactly with them and takes none of their gradient.

    A shim may provide a faster kernel ``sorting_lse_network(x, temperature,
    layers, reverse, finite)`` in its ``KERNELS`` (eager torch:
    :func:`diffopt.backends.torch._sorting.lse_network`); it returns ``None``
    where it does not apply.
    """
    xp = namespace(x) if xp is None else xp
    fast = kernel("sorting_lse_network", xp)
    if fast is not None:
        out = fast(x, temperature, schedule(int(x.shape[1]), reverse), reverse, finite_range(x))
        if out is not None:
            return out
    return _lse_network(x, temperature, reverse, xp)


def _lse_network(x, temperature, reverse, xp=None):
    xp = namespace(x) if xp is None else xp
    big, below = finite_range(x)
    out, weights = _layers(xp.clip(x, -big, big), lambda a, b: logsumexp_slope(a, b, temperature, xp), reverse, xp)
    out = where_fill_in(xp, out >= below, float("inf"), out)
    return where_fill_in(xp, out <= -big, float("-inf"), out), weights


def _expand(w, t, xp):
    """Broadcast a ``(B, N/2m, m)`` weight against split transport state ``t``."""
    return xp.reshape(w, reshape_target(tuple(w.shape) + (1,) * (len(t.shape) - len(w.shape))))


def push(t, weights, big_n, reverse=False, xp=None):
    """``M @ t`` for transport state ``t`` of shape ``(B, N, ...)`` (layout as in :func:`network`)."""
    xp = namespace(t) if xp is None else xp
    for (_, m), w in zip(schedule(int(big_n), reverse), weights):
        ta, tb = _split(t, m, xp)
        delta = _expand(w, ta, xp) * (ta - tb)  # lo = w * ta + (1 - w) * tb, hi = ta + tb - lo
        t = _join(tb + delta, ta - delta, t, xp)
    return t


def pull(t, weights, big_n, reverse=False, xp=None):
    """``M.T @ t`` for transport state ``t`` of shape ``(B, N, ...)`` (layout as in :func:`network`).

    A shim may provide ``sorting_pull(t, weights, layers)`` in its ``KERNELS``
    (eager torch, where torch records no gradient:
    :func:`diffopt.backends.torch._sorting.pull`); ``None`` means it does not apply.
    """
    xp = namespace(t) if xp is None else xp
    fast = kernel("sorting_pull", xp)
    if fast is not None:
        out = fast(t, weights, schedule(int(big_n), reverse))
        if out is not None:
            return out
    return _pull(t, weights, big_n, reverse, xp)


def _pull(t, weights, big_n, reverse, xp=None):
    xp = namespace(t) if xp is None else xp
    for (_, m), w in reversed(list(zip(schedule(int(big_n), reverse), weights))):
        g_lo, g_hi = _split(t, m, xp)
        delta = _expand(w, g_lo, xp) * (g_lo - g_hi)  # ga = w * g_lo + (1 - w) * g_hi, gb = g_lo + g_hi - ga
        t = _join(g_hi + delta, g_lo - delta, t, xp)
    return t


def pull_temperature(t, weights, dts, big_n, reverse, xp):
    """:func:`pull` of the cotangent ``t`` and the cotangent of the temperature.

    Each comparator's output is ``(lo - spread, hi + spread)``, so a layer adds
    ``sum(sign * (g_hi - g_lo) * dspread/dT)`` to the temperature's cotangent,
    ``g_lo, g_hi`` the cotangents of the layer's outputs and ``sign`` the stage's
    flip of the pair (the network runs descending blocks negated). ``dts`` are
    the per-layer ``dspread/dT`` (``'slope_dt'``), or ``None`` for
    ``'logsumexp'``, whose derivative follows from the slopes
    (:func:`~diffopt.sorting._relax.spread_derivative`).

    Returns
    -------
    t : array
        ``M.T @ t``, as :func:`pull`.
    g_temperature : array, shape ``()``
    """
    layers = list(zip(schedule(int(big_n), reverse), weights, dts if dts is not None else [None] * len(weights)))
    total = None
    for (stage, m), w, dt in reversed(layers):
        g_lo, g_hi = _split(t, m, xp)
        part = (g_hi - g_lo) * _expand(spread_derivative(w, xp) if dt is None else dt, g_lo, xp)
        signs = _flip_signs(int(big_n), (stage,), reverse)
        if signs is not None:
            half = signs.reshape(big_n // (2 * m), 2, m)[:, 0]
            part = part * constant_in(xp, half.reshape((1,) + half.shape + (1,) * (len(part.shape) - 3)), part)
        total = xp.sum(part) if total is None else total + xp.sum(part)
        delta = _expand(w, g_lo, xp) * (g_lo - g_hi)
        t = _join(g_hi + delta, g_lo - delta, t, xp)
    return t, total


def network_transport(x, t, relaxation, temperature, transpose, xp):
    """``M.T @ t`` (``transpose``) or ``M @ t``, ``M`` the mixing matrix of the network on ``x``.

    ``x`` is ``(B, N)`` in the natural layout (padded), ``t`` ``(B, N, C)``;
    ``temperature`` a number or a 0-d array (differentiated by the framework's
    autodiff). A shim may provide ``sorting_transport(x, t, cswap, layers,
    transpose)`` in its ``KERNELS`` (JAX: one compiled layer body in a loop, see
    :func:`diffopt.backends.jax._sorting.transport`), given the relaxed
    compare-and-swap ``cswap(a, b) -> (lo, hi, leak)`` of this module.
    """
    cswap = functools.partial(_cswap, relaxation=relaxation, temperature=temperature, want="leak", xp=xp)
    big_n = int(x.shape[1])
    fast = kernel("sorting_transport", xp)
    if fast is not None:
        return fast(x, t, cswap, schedule(big_n), transpose)
    with quiet_numpy_in(xp, x):  # inf - inf, 1 / 0 (NumPy only)
        _, weights = _layers(x, cswap, False, xp)
    return pull(t, weights, big_n, xp=xp) if transpose else push(t, weights, big_n, xp=xp)


# ------------------------------------------------------- rows of any length (padding, layout)


def next_pow2(n):
    """The smallest power of two ``>= n`` (1 for ``n <= 1``)."""
    return 1 << max(n - 1, 0).bit_length()


def pad(rows, big_n, xp=None):
    """Append ``+inf`` columns up to width ``big_n`` (``big_n < 2 n``)."""
    n = rows.shape[1]
    if big_n == n:
        return rows
    xp = namespace(rows) if xp is None else xp
    fill = xp.ones_like(rows[:, : big_n - n]) * float("inf")
    return xp.concatenate((rows, fill), axis=1)


def _zero_pad(g, big_n, xp):
    """Append zero columns to a cotangent up to width ``big_n``."""
    n = g.shape[1]
    if big_n == n:
        return g
    return xp.concatenate((g, xp.zeros_like(g[:, : big_n - n])), axis=1)


# From this many rows up, soft_sort's network keeps the batch innermost.
_BATCH_LAST_ROWS = 8


def _to_network(rows, xp):
    """``(B, N)`` rows in the layout :func:`sorter` runs the network on.

    Positions are bit-reversed (:func:`bit_reverse`). For ``B >= 8`` the rows
    become one ``(1, N, B)`` block with the batch innermost, so that every
    comparator reads and writes runs of at least ``B`` contiguous values; fewer
    rows stay ``(B, N)``.
    """
    if rows.shape[0] is None or rows.shape[0] < _BATCH_LAST_ROWS:  # None: unknown (traced) batch
        return bit_reverse(rows, xp=xp)
    block = bit_reverse(xp.transpose(rows), axis=0, xp=xp)
    return xp.reshape(block, (1,) + tuple(block.shape))


def _from_network(x, n, xp):
    """Inverse of :func:`_to_network`, keeping the first ``n`` positions."""
    if len(x.shape) == 2:
        return bit_reverse(x, n, xp=xp)
    return xp.transpose(bit_reverse(x[0], n, axis=0, xp=xp))


def soft_sort_function(shim, xp, rows, temperature, relaxation, learnable):
    """``soft_sort``'s differentiable ``f(rows (B, n), temperature ()) -> (B, n)``: the one place
    where its implementation is chosen.

    In order, the first that applies:

    1. **fused** (the shim's ``sorting_fused`` kernel: numba, for NumPy, HIPS autograd
       and eager CPU torch, float32/float64): the whole network in one compiled loop;
       not for a learnable temperature (it gives the temperature no gradient);
    2. **looped** (``sorting_network`` and ``sorting_network_pull``: JAX): one compiled
       layer body in a ``lax.scan`` (:func:`_looped_sorter`);
    3. **generic** (:func:`sorter`): this module's reshape-based network, whose
       ``'logsumexp'`` forward pass and backward pass run
    4. **in place** where the shim's ``sorting_lse_network`` / ``sorting_pull``
       kernels apply (eager torch: :func:`lse_network`, :func:`pull`; they decline
       under ``torch.compile``, ``torch.func`` and where autograd records).

    All four compute the same comparators (:mod:`diffopt.sorting._relax`), so the
    numbers agree up to rounding.
    """
    if not learnable:
        make = kernel("sorting_fused", xp)
        pair = None if make is None else make(rows, temperature, relaxation)
        if pair is not None:
            return _fused_vjp(shim, *pair)
    run = kernel("sorting_network", xp)
    if run is not None:
        return _looped_sorter(shim, run, kernel("sorting_network_pull", xp), int(rows.shape[1]), relaxation,
                              learnable)
    return sorter(shim, int(rows.shape[1]), relaxation, learnable)


@functools.lru_cache(maxsize=256)
def sorter(shim, n, relaxation, learnable=False):
    """The generic relaxed sort ``f(rows (B, n), temperature ()) -> (B, n)`` for ``shim``
    (see :func:`soft_sort_function`).

    The temperature is an input array, not a constant of the function: JAX compiles
    ``f`` once per shape and relaxation, not once per temperature value. It gets a
    gradient when ``learnable`` (the caller passed an array), else none.
    """
    big_n = next_pow2(n)
    want = _want(relaxation, learnable)
    xp = namespace(shim.NAME)

    # One gather into the network's layout and one out per pass (_to_network).
    def fwd(rows, temperature):
        if relaxation == "logsumexp":  # keep +inf apart from the padding, finite values finite
            rows = to_sentinels(rows, xp)
        out, weights = network(_to_network(pad(rows, big_n, xp), xp), relaxation, temperature, want=want,
                               reverse=True, xp=xp)
        if want == "slope_dt":
            weights = [w for w, _ in weights] + [dt for _, dt in weights]
        return _from_network(out, n, xp), (temperature,) + tuple(weights)

    def bwd(res, g):
        temperature, weights = res[0], res[1:]
        t = _to_network(_zero_pad(g, big_n, xp), xp)
        if not learnable:
            return (_from_network(pull(t, weights, big_n, reverse=True, xp=xp), n, xp), None)
        if relaxation is None:  # the exact sort does not depend on the temperature
            return (_from_network(pull(t, weights, big_n, reverse=True, xp=xp), n, xp), xp.zeros_like(temperature))
        dts = None
        if want == "slope_dt":
            weights, dts = weights[: len(weights) // 2], weights[len(weights) // 2:]
        t, g_temperature = pull_temperature(t, weights, dts, big_n, True, xp)
        if g_temperature is None:  # n = 1: no comparator
            g_temperature = xp.zeros_like(temperature)
        return (_from_network(t, n, xp), xp.reshape(g_temperature, ()))

    # fwd and bwd are smooth JAX code: JAX's own autodiff of them gives correct second derivatives
    return differentiable(shim, fwd, bwd, jit=True, second_order=True)


def _want(relaxation, learnable):
    """The per-comparator weights soft_sort keeps: ``'logsumexp'`` derives ``d spread / dT`` from
    its slopes; the others keep it per comparator when the temperature is learnable."""
    return "slope_dt" if learnable and relaxation not in (None, "logsumexp") else "slope"


@functools.lru_cache(maxsize=256)
def _looped_sorter(shim, run, pull_, n, relaxation, learnable):
    """:func:`sorter` on a shim's looped network (JAX: one compiled layer body, see
    :func:`diffopt.backends.jax._sorting.network`): a program whose size does not grow with
    the number of layers.

    ``run(x, cswap, layers) -> (out, weights)`` runs this module's compare-and-swap
    over the layers of ``(B, N)`` rows in the natural layout; ``pull_(t, weights,
    layers, dts) -> (M.T @ t, g_temperature)`` is the backward pass. The arithmetic
    of every comparator is the generic loop's, so the values are the same.
    """
    big_n = next_pow2(n)
    layers = schedule(big_n)
    want = _want(relaxation, learnable)
    xp = namespace(shim.NAME)

    def fwd(rows, temperature):
        if relaxation == "logsumexp":  # as lse_network: sentinels, clip, one slope per comparator
            big, below = finite_range(rows)
            x = xp.clip(pad(to_sentinels(rows, xp), big_n, xp), -big, big)
            out, weights = run(x, lambda a, b: logsumexp_slope(a, b, temperature, xp), layers)
            out = where_fill_in(xp, out >= below, float("inf"), out)
            out = where_fill_in(xp, out <= -big, float("-inf"), out)
        else:
            out, weights = run(pad(rows, big_n, xp), functools.partial(
                _cswap, relaxation=relaxation, temperature=temperature, want=want, xp=xp), layers)
        return out[:, :n], (temperature, weights)

    def bwd(res, g):
        temperature, weights = res
        dts = None
        if learnable and relaxation is not None and weights is not None:  # None: n = 1, no comparator
            weights, dts = weights if want == "slope_dt" else (weights, spread_derivative(weights, xp))
        t, g_temperature = pull_(_zero_pad(g, big_n, xp), weights, layers, dts)
        if not learnable:
            return (t[:, :n], None)
        if g_temperature is None:  # the exact sort does not depend on the temperature
            g_temperature = xp.zeros_like(temperature)
        return (t[:, :n], xp.reshape(g_temperature, ()))

    return differentiable(shim, fwd, bwd, jit=True, second_order=True)


@functools.lru_cache(maxsize=64)
def _fused_vjp(shim, fwd, bwd):
    return differentiable(shim, fwd, bwd)


def transport(rows, columns, relaxation, temperature, transpose, xp):
    """The NumPy ``columns`` ``(N, c)`` carried through the network of ``rows`` ``(B, n)``.

    The same columns for every row, in ``rows``' framework, dtype and device:
    ``M.T @ columns`` (:func:`pull`) if ``transpose`` else ``M @ columns``
    (:func:`push`), ``M`` the mixing matrix of the network on the padded rows
    (:func:`network_transport`; ``temperature`` a number or a 0-d array, which
    gets the framework's gradient); the first ``n`` positions, ``(B, n, c)``.

    Rows whose length is not a power of two are padded with ``+inf``, and their
    own ``+inf`` become the dtype's largest finite value first, so that they sort
    before the padding (a tie of two equal infinities keeps its order, so an
    ``+inf`` could otherwise end past the row's end: a rank of ``n``). Two such
    values tie as equal finite values do.
    """
    big_n, n = next_pow2(rows.shape[1]), rows.shape[1]
    if big_n != n:  # the user's +inf sorts before the +inf padding: the largest finite value instead
        rows = where_fill_in(xp, rows == float("inf"), finite_range(rows)[0], rows)
    padded = pad(rows, big_n, xp)
    state = xp.zeros_like(padded)[:, :, None] + constant_in(xp, np.asarray(columns), rows)
    return network_transport(padded, state, relaxation, temperature, transpose, xp)[:, :n, :]
