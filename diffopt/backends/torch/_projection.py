"""Torch kernels of the projection family: the stable descending sort, the inverse of a
permutation by one scatter, and the isotonic solve on the tensors' own memory.

* ``sorting_sort_desc``: ``torch.sort`` gives the sorted values and their order in one
  call (the generic code argsorts, then gathers).
* ``sorting_inverse_permutation``: :func:`diffopt.sorting.projection_rank` needs
  ``inverse[r, order[r, j]] = j``; the generic code argsorts ``order`` again
  (``O(n log n)``), while a scatter is ``O(n)``.
* ``sorting_unsort``: the sorted rows put back in the input's order by one scatter.
* ``sorting_isotonic``: the numba loops of :mod:`diffopt.sorting._pav` called on
  ``tensor.numpy()`` views (no copy, no stacking, the tensors' own dtype; blocks
  accumulated in float64 as on the host path, so the numbers are the same). Tensors off
  the CPU are copied to the host and back. ``None`` without numba (the generic host call
  runs).
"""

import functools

import numpy as np
import torch

from diffopt.backends.numpy import _numba_pav

__all__ = ["sort_desc", "inverse_permutation", "unsort", "isotonic"]


def sort_desc(x, stable):
    """``(values, order)`` of the rows of ``x`` sorted descending (``stable``: ties in their order along the row)."""
    return torch.sort(x, dim=-1, descending=True, stable=stable)


def inverse_permutation(order):
    """``inverse`` with ``inverse[..., order[..., j]] = j`` along the last axis (integer tensors)."""
    positions = torch.arange(order.shape[-1], device=order.device, dtype=order.dtype).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def unsort(values, order):
    """``out`` with ``out[..., order[..., j]] = values[..., j]``: one scatter, differentiable in ``values``
    (the generic gather by the inverse permutation needs that inverse first, and torch's
    ``take_along_dim`` wraps every index with a ``remainder``)."""
    return torch.empty_like(values).scatter(-1, order, values)


def isotonic(kl):
    """The ``(fwd, bwd)`` pair of :func:`diffopt.sorting._projection.isotonic` on ``(B, n)`` tensors,
    or ``None`` where the numba kernels are off or missing (read at each call)."""
    loops = _numba_pav.compiled()
    return None if loops is None else _pair(bool(kl), loops)


def _host(t):
    """A contiguous NumPy view of ``t`` (a copy only off the CPU or where ``t`` is not contiguous)."""
    return t.detach().cpu().contiguous().numpy()


@functools.lru_cache(maxsize=4)
def _pair(kl, loops):
    forward, backward = loops

    def fwd(a, b):
        an, bn = _host(a), _host(b)
        v, first = np.empty_like(an), np.empty(an.shape, dtype=np.uint8)
        forward(an, bn, kl, v, first)
        return torch.from_numpy(v).to(a.device), (a, b, torch.from_numpy(first).to(a.device))

    def bwd(res, g):
        a, b, first = res
        gn = _host(g)
        ga, gb = np.empty_like(gn), np.empty_like(gn)
        backward(gn, _host(a), _host(b), _host(first), kl, ga, gb)
        return torch.from_numpy(ga).to(g.device), torch.from_numpy(gb).to(g.device)

    return fwd, bwd
