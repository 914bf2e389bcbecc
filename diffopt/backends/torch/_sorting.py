"""Eager-torch kernels for :func:`diffopt.sorting.soft_sort`'s default path.

The same network, weights and values as the generic
:func:`diffopt.sorting._soft.lse_network` and :func:`~diffopt.sorting._soft.pull`
(up to rounding), written for eager PyTorch, where every kernel launch costs a
few microseconds of dispatch whatever its size:

* every layer writes into two ping-pong buffers and one weight slab allocated
  per call, through ``out=`` and in-place kernels (9 per layer forward, 2
  backward), so no layer allocates and nothing is ``stack``-ed;
* a stage's sign flips are in-place negations of a strided view, not a product
  with a constant array, so no constant crosses from host to device;
* on the CPU, rows without an infinity or NaN (checked with one ``aminmax``)
  skip the clip-and-restore of infinities, whose boolean masks are slow there.

The torch shim puts them in its kernel table (``KERNELS``) as ``sorting_lse_network`` and
``sorting_pull``, where :mod:`diffopt.sorting._soft` looks them up; the core
passes the network's layers and the dtype's finite range, so nothing here
imports the core. Only for code that torch does not differentiate
(``soft_sort``'s ``autograd.Function``): each kernel returns ``None`` (use the
generic loop) where it does not apply, e.g. :func:`pull` when a gradient is
being recorded (double backward, ranks).
"""

import functools

import torch

from diffopt.backends.numpy import _fused

__all__ = ["lse_network", "pull", "fused"]


def _rows3(t):
    """``(B, N, ...)`` as a contiguous ``(B, N, T)`` copy the loop may overwrite."""
    return t.reshape(t.shape[0], t.shape[1], -1).clone(memory_format=torch.contiguous_format)


def _halves(t, m):
    """The comparator inputs of distance ``m``: views ``(B, N/2m, m, T)`` of ``t`` (``(B, N, T)``)."""
    b0, big_n, tail = t.shape
    return t.view(b0, big_n // (2 * m), 2, m, tail).unbind(2)


def _negate_descending(t, stage, reverse):
    """Negate, in place, the positions of ``t`` that ``stage`` sorts descending.

    Those are the logical positions with bit ``stage + 1`` set (none in the last
    stage); stored bit-reversed, that is bit ``k - 2 - stage`` of the storage index.
    """
    b0, big_n, tail = t.shape
    k = big_n.bit_length() - 1
    if stage < 0 or stage > k - 2:
        return
    d = k - 2 - stage if reverse else stage + 1
    t.view(b0, big_n >> (d + 1), 2, 1 << d, tail)[:, :, 1].neg_()


def _all_finite(t, big, below):
    """Whether ``t`` holds no infinity, NaN or sentinel (``>= below`` or ``<= -big``, see
    :func:`diffopt.sorting._soft.to_sentinels`); ``False`` (unknown) off the CPU, to avoid a sync."""
    if t.device.type != "cpu":  # pragma: no cover gpu
        return False
    lo, hi = torch.aminmax(t)
    return bool(hi < below) and bool(lo > -big)  # NaN: False


def lse_network(x, temperature, layers, reverse, finite):
    """Torch version of :func:`diffopt.sorting._soft.lse_network`.

    ``layers`` are the network's ``(stage, m)`` in storage order
    (:func:`diffopt.sorting._network.schedule`), ``finite`` the dtype's
    ``(big, below)`` (:func:`diffopt.sorting._soft.finite_range`); the result
    is ``(out, weights)`` as there.

    With every value finite (CPU), nothing is clipped: finite values just below
    the dtype's maximum stay finite, where the generic path turns them into ``+inf``.
    ``None`` (use the generic loop) under ``torch.compile`` and for a tensor wrapped
    by a ``torch.func`` transform (no ``out=`` there).
    """
    if not _plain(x):
        return None
    cur = _rows3(x)
    big, below = finite
    if _all_finite(cur, big, below):
        return _lse_layers(cur, temperature, layers, reverse, tuple(x.shape))
    out, weights = _lse_layers(cur.clamp_(-big, big), temperature, layers, reverse, tuple(x.shape))
    out.masked_fill_(out >= below, float("inf"))
    return out.masked_fill_(out <= -big, float("-inf")), weights


def _lse_layers(cur, temperature, sizes, reverse, shape):
    """The layers on ``cur`` (``(B, N, T)``, overwritten); the result has ``shape``."""
    nxt = torch.empty_like(cur)
    b0, big_n, tail = cur.shape
    spread = torch.empty((b0, big_n // 2, tail), dtype=cur.dtype, device=cur.device)
    slab = torch.empty((len(sizes), b0, big_n // 2, tail), dtype=cur.dtype, device=cur.device)
    scale = 1.0 / temperature  # a Python number or a 0-d tensor (never compared on the host)
    unit = isinstance(temperature, (int, float)) and temperature == 1.0
    one = torch.ones((), dtype=cur.dtype, device=cur.device)  # a Python 1.0 would be converted per call
    weights = []
    stage_now = -1
    for i, (stage, m) in enumerate(sizes):
        if stage != stage_now:  # undo the last stage's flips, do this one's
            _negate_descending(cur, stage_now, reverse)
            _negate_descending(cur, stage, reverse)
            stage_now = stage
        a, b = _halves(cur, m)
        lo, hi = _halves(nxt, m)
        s = spread.view(b0, big_n // (2 * m), m, tail)
        w = slab[i].view(b0, big_n // (2 * m), m, tail)
        torch.minimum(a, b, out=lo)
        torch.maximum(a, b, out=hi)
        # w = d lo / d a = sigmoid((b - a) / T)
        torch.sub(b, a, out=w)
        if not unit:
            w.mul_(scale)
        w.sigmoid_()
        # -spread = -T log(1 + exp(-|a - b| / T)) = T log(max(w, 1 - w))
        torch.sub(one, w, out=s)
        torch.maximum(s, w, out=s).log_()
        if not unit:
            s.mul_(temperature)
        lo.add_(s)
        hi.sub_(s)
        weights.append(w if len(shape) == 3 else w.view((b0, big_n // (2 * m), m) + shape[2:]))
        cur, nxt = nxt, cur
    _negate_descending(cur, stage_now, reverse)
    return cur.view(shape), weights


_is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)


def _plain(t):
    """Whether ``t`` is an ordinary eager tensor: not traced by ``torch.compile`` (whose
    compiler fuses the generic loops itself), not wrapped by a ``torch.func`` transform."""
    if _is_wrapped is None or torch.compiler.is_compiling():
        return False
    return not _is_wrapped(t)


def _fast_pull_applies(t, weights):
    """Whether :func:`pull` may run in place: plain tensors, nothing recorded for autograd."""
    if not weights or not _plain(t) or not _plain(weights[0]):
        return False
    if torch.is_grad_enabled() and (t.requires_grad or any(w.requires_grad for w in weights)):
        return False
    w_tail = weights[0][0, 0, 0].numel()
    return t.ndim >= 2 and w_tail in (1, t[0, 0].numel())


def pull(t, weights, layers):
    """Torch version of :func:`diffopt.sorting._soft.pull`; ``None`` where it does not apply.

    ``layers`` as in :func:`lse_network`.

    It does not apply under ``torch.compile``, to tensors wrapped by ``torch.func``
    (``jacrev`` of ``soft_sort`` vmaps this backward), nor where autograd records
    (double backward, ranks).
    """
    if not _fast_pull_applies(t, weights):
        return None
    shape = tuple(t.shape)
    cur = _rows3(t)
    nxt = torch.empty_like(cur)
    b0, big_n = cur.shape[:2]
    for (_, m), w in reversed(list(zip(layers, weights))):
        g_lo, g_hi = _halves(cur, m)
        ga, gb = _halves(nxt, m)
        w = w.reshape(b0, big_n // (2 * m), m, -1)
        torch.lerp(g_hi, g_lo, w, out=ga)  # w * g_lo + (1 - w) * g_hi
        torch.lerp(g_lo, g_hi, w, out=gb)  # (1 - w) * g_lo + w * g_hi
        cur, nxt = nxt, cur
    return cur.view(shape)


@functools.lru_cache(maxsize=16)
def _fused_pair(relaxation):
    """``(fwd, bwd)`` of :func:`fused`: the numba kernels on zero-copy NumPy views of CPU tensors."""
    kern = _fused._load()

    def fwd(rows, temperature):
        x = rows.detach().contiguous()
        out = torch.empty_like(x)
        slab = torch.empty(kern.slab_shape(*x.shape), dtype=x.dtype)
        kern.forward(x.numpy(), float(temperature), relaxation, out=out.numpy(), slab=slab.numpy())
        return out, (slab,)

    def bwd(res, g):
        g = g.detach().contiguous()
        grad = torch.empty_like(g)
        kern.backward(res[0].numpy(), g.numpy(), out=grad.numpy())
        return grad, None

    return fwd, bwd


def fused(rows, temperature, relaxation):
    """``(fwd, bwd)`` running :func:`diffopt.sorting.soft_sort`'s whole network in one numba loop, or ``None``.

    See :mod:`diffopt.backends.numpy._fused`. It applies to plain CPU tensors of
    float32/float64 (not under ``torch.compile`` or a ``torch.func`` transform),
    and not when ``temperature`` is a tensor that requires a gradient (the
    kernel gives none: the generic loops run).
    """
    if rows.device.type != "cpu" or not _plain(rows):  # first: torch.compile must not trace numba's import
        return None
    kern = _fused.kernels()
    if not _fused.applies(kern, str(rows.dtype).replace("torch.", ""), relaxation):
        return None
    if isinstance(temperature, torch.Tensor) and (temperature.requires_grad or not _plain(temperature)):
        return None
    return _fused_pair(relaxation)
