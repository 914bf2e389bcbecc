"""JAX kernel for the linear transports of :mod:`diffopt.sorting` (ranks, top-k, permutations).

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

The torch shim does not use it; nothing here imports the core.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["transport"]


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
