"""JAX kernels of :mod:`diffopt.sorting`: the network in a ``lax.scan``, one layer body for all layers.

:func:`transport` carries the linear transports (ranks, top-k, permutations);
:func:`network` and :func:`pull` are ``soft_sort``'s forward pass and backward
pass (:func:`diffopt.sorting._soft.sorter`). The traced program has the same
size for every ``n``: only the schedule array (one ``(stage, m)`` per layer)
grows with the number of layers.

The generic network (:mod:`diffopt.sorting._soft`) reshapes the rows
differently in every layer, so XLA compiles ``O(log^2 n)`` distinct layers
(eager JAX: every op of every layer, per new shape). Here every layer has the
same shapes: position ``i`` meets its partner ``i XOR m`` through a gather,
and the layer's ``(stage, m)`` are loop inputs, so one layer body is compiled
and run by ``lax.scan`` over the schedule, forwards for the weights, then
forwards (``M @ t``) or backwards (``M.T @ t``) for the transport. The
compare-and-swap itself is the core's (passed in as ``cswap``), so the numbers
are those of the generic loop; each pair is evaluated at both of its
positions (twice the arithmetic, no scatter).

:func:`network` and :func:`pull` instead evaluate each comparator once: one
gather brings the ``N / 2`` first inputs and then the ``N / 2`` second inputs
of the layer's comparators side by side, and one gather puts ``lo`` and ``hi``
back, so a layer keeps ``N / 2`` weights, as the generic loop does. Rows are
stored ``(N, B)`` (positions first), so that with many rows every gathered
element is a contiguous run of ``B`` values.

The torch shim does not use these; nothing here imports the core.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["transport", "network", "pull"]


def _pairing(i, m):
    """Partner index and whether ``i`` is the first input of its comparator, for distance ``m``."""
    return jnp.bitwise_xor(i, m), jnp.bitwise_and(i, m) == 0


def _orient(first, own, other):
    """``(a, b)``: the first and second input of each position's comparator."""
    return jnp.where(first, own, other), jnp.where(first, other, own)


def _weights(x, cswap, stages, dists):
    """Per layer, the ``leak`` weight of every position's comparator: ``(L, B, N)``."""
    i = jnp.arange(x.shape[1], dtype=jnp.int32)

    def layer(v, sm):
        stage, m = sm
        partner, first = _pairing(i, m)
        # descending blocks run negated (the relaxations are odd), as in the generic loop
        sign = jnp.where(jnp.bitwise_and(jnp.right_shift(i, stage + 1), 1) == 1, -1.0, 1.0).astype(v.dtype)
        y = v * sign
        a, b = _orient(first, y, jnp.take(y, partner, axis=1))
        lo, hi, w = cswap(a, b)
        return jnp.where(first, lo, hi) * sign, w

    _, ws = lax.scan(layer, x, (stages, dists))
    return ws


def transport(x, t, cswap, layers, transpose):
    """``M.T @ t`` (``transpose``) or ``M @ t`` for the network on ``x`` (see :mod:`diffopt.sorting._soft`).

    ``x`` is ``(B, N)``, ``t`` ``(B, N, C)``; ``layers`` the ``(stage, m)`` of
    :func:`diffopt.sorting._network.schedule` (natural layout).
    """
    if not layers:  # N = 1: no comparator
        return t
    stages = jnp.asarray(np.array([s for s, _ in layers], dtype=np.int32))
    dists = jnp.asarray(np.array([m for _, m in layers], dtype=np.int32))
    ws = _weights(x, cswap, stages, dists)
    i = jnp.arange(x.shape[1], dtype=jnp.int32)

    def step(u, wm):
        w, m = wm
        partner, first = _pairing(i, m)
        first = first[:, None]
        ua, ub = _orient(first, u, jnp.take(u, partner, axis=1))
        w = w[:, :, None].astype(u.dtype)
        if transpose:  # ga = w g_lo + (1 - w) g_hi, gb = g_lo + g_hi - ga
            mixed = ub + w * (ua - ub)
            return jnp.where(first, mixed, ua + ub - mixed), None
        delta = w * (ua - ub)  # lo = w ta + (1 - w) tb, hi = ta + tb - lo
        return jnp.where(first, ub + delta, ua - delta), None

    out, _ = lax.scan(step, t, (ws, dists), reverse=transpose)
    return out


def _schedule(layers):
    """The ``(stage, m)`` of ``layers`` as two ``int32`` arrays (the scanned inputs)."""
    stages = jnp.asarray(np.array([s for s, _ in layers], dtype=np.int32))
    dists = jnp.asarray(np.array([m for _, m in layers], dtype=np.int32))
    return stages, dists


def _comparators(big_n, stage, m, dtype):
    """Gather indices and stage signs of one layer of ``N = big_n`` positions, distance ``m``.

    Returns ``pairs`` (``N``: the first inputs of the ``N / 2`` comparators,
    then their second inputs), ``back`` (``N``: for each position, its entry in
    ``concatenate([lo, hi])``) and ``sign`` (``N / 2``: ``-1`` for a comparator
    of a descending block, which runs negated as in the generic loop).
    """
    j = jnp.arange(big_n // 2, dtype=jnp.int32)
    first = j + jnp.bitwise_and(j, -m)  # insert a 0 bit at m's position
    i = jnp.arange(big_n, dtype=jnp.int32)
    index = jnp.bitwise_or(jnp.bitwise_and(i, m - 1), jnp.bitwise_and(jnp.right_shift(i, 1), -m))
    back = jnp.where(jnp.bitwise_and(i, m) == 0, index, index + big_n // 2)
    descending = jnp.bitwise_and(jnp.right_shift(first, stage + 1), 1) == 1
    sign = jnp.where(descending, -1.0, 1.0).astype(dtype)[:, None]
    return jnp.concatenate([first, first + m]), back, sign


def _gather(v, index):
    return v.at[index].get(mode="promise_in_bounds")  # rows of v, indices in range by construction


def network(x, cswap, layers):
    """Run ``cswap(a, b) -> (lo, hi, w)`` over the network's layers on ``(B, N)`` rows ``x``.

    ``layers`` are the ``(stage, m)`` of :func:`diffopt.sorting._network.schedule`
    (natural layout). Returns the rows after the last layer, ``(B, N)``, and the
    ``w`` of every layer stacked (a pytree of ``(L, N / 2, B)`` arrays: comparator
    ``j`` of a layer is the one whose first input is the ``j``-th position with
    bit ``m`` clear), or ``None`` when there is no layer (``N = 1``).
    """
    if not layers:
        return x, None
    big_n, half = int(x.shape[1]), int(x.shape[1]) // 2

    def layer(v, sm):
        pairs, back, sign = _comparators(big_n, sm[0], sm[1], v.dtype)
        ab = _gather(v, pairs)
        lo, hi, w = cswap(ab[:half] * sign, ab[half:] * sign)
        return _gather(jnp.concatenate([lo * sign, hi * sign]), back), w

    out, weights = lax.scan(layer, x.T, _schedule(layers))
    return out.T, weights


def pull(t, weights, layers, dts=None):
    """``M.T @ t`` for cotangent rows ``t`` ``(B, N)`` and the ``weights`` (slopes) of :func:`network`.

    With ``dts`` (per comparator ``d spread / d T``, shaped as ``weights``) also
    the temperature's cotangent, ``sum(sign * (g_hi - g_lo) * dts)`` over all
    comparators (see :func:`diffopt.sorting._soft.pull_temperature`); else ``None``.
    Returns ``(M.T @ t, g_temperature)``.
    """
    if not layers:
        return t, (None if dts is None else jnp.zeros((), t.dtype))
    big_n, half = int(t.shape[1]), int(t.shape[1]) // 2
    stages, dists = _schedule(layers)

    def step(carry, inputs):
        g, total = carry
        w, dt, stage, m = inputs
        pairs, back, sign = _comparators(big_n, stage, m, g.dtype)
        gg = _gather(g, pairs)
        g_lo, g_hi = gg[:half], gg[half:]
        delta = w.astype(g.dtype) * (g_lo - g_hi)  # ga = w g_lo + (1 - w) g_hi, gb = g_lo + g_hi - ga
        if dt is not None:
            total = total + jnp.sum((g_hi - g_lo) * dt.astype(g.dtype) * sign)
        return (_gather(jnp.concatenate([g_hi + delta, g_lo - delta]), back), total), None

    (out, total), _ = lax.scan(step, (t.T, jnp.zeros((), t.dtype)), (weights, dts, stages, dists), reverse=True)
    return out.T, (None if dts is None else total)
