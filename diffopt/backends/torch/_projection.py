"""Torch kernels of the projection family: the sort, the inverse of a permutation, and the
isotonic solve on the tensors' own memory (CPU: numba; CUDA: numba.cuda).

* ``sorting_sort_desc``: ``torch.sort`` gives the sorted values and their order in one
  call (the generic code argsorts, then gathers).
* ``sorting_inverse_permutation``: :func:`diffopt.sorting.projection_rank` needs
  ``inverse[r, order[r, j]] = j``; the generic code argsorts ``order`` again
  (``O(n log n)``), while a scatter is ``O(n)``.
* ``sorting_unsort``: the sorted rows put back in the input's order by one scatter.
* ``sorting_isotonic``: the numba loops of :mod:`diffopt.sorting._pav` called on
  ``tensor.numpy()`` views (no copy, no stacking, the tensors' own dtype; blocks
  accumulated in float64 as on the host path, so the numbers are the same). ``None``
  without numba (the generic host call runs).
* ``sorting_pav_device`` / ``sorting_pav_device_vjp``: on CUDA tensors, the isotonic solve
  and its backward run on the GPU by numba.cuda (:mod:`diffopt.backends._cuda_pav`, on
  torch's current stream, no host copy); where numba's CUDA target is missing they return
  ``None`` and the tensor takes the host path (also inside ``sorting_isotonic``).
"""

import functools

import numpy as np
import torch

from diffopt.backends.numpy import _numba_pav

__all__ = ["sort_desc", "inverse_permutation", "unsort", "isotonic", "cuda_pav", "cuda_pav_vjp"]


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
    or ``None`` where the numba kernels are off or missing (read at each call), and while
    ``torch.compile`` traces (the generic path's custom ops keep the graph whole)."""
    if torch.compiler.is_compiling():
        return None
    loops = _numba_pav.compiled()
    return None if loops is None else _pair(bool(kl), loops)


def _host(t):
    """A contiguous NumPy view of ``t`` (a copy only off the CPU or where ``t`` is not contiguous)."""
    return t.detach().cpu().contiguous().numpy()


@functools.lru_cache(maxsize=4)
def _pair(kl, loops):
    forward, backward = loops

    def fwd(a, b):
        on_gpu = cuda_pav(a, b, kl)
        if on_gpu is not None:
            return on_gpu[0], (a, b, on_gpu[1])
        an, bn = _host(a), _host(b)
        v, first = np.empty_like(an), np.empty(an.shape, dtype=np.uint8)
        forward(an, bn, kl, v, first)
        return torch.from_numpy(v).to(a.device), (a, b, torch.from_numpy(first).to(a.device))

    def bwd(res, g):
        a, b, first = res
        on_gpu = cuda_pav_vjp(g, a, b, first, kl)
        if on_gpu is not None:
            return on_gpu
        gn = _host(g)
        ga, gb = np.empty_like(gn), np.empty_like(gn)
        backward(gn, _host(a), _host(b), _host(first), kl, ga, gb)
        return torch.from_numpy(ga).to(g.device), torch.from_numpy(gb).to(g.device)

    return fwd, bwd


def _cuda_pav():
    """:mod:`diffopt.backends._cuda_pav` if it can run (imported only once a CUDA tensor arrives)."""
    from diffopt.backends import _cuda_pav

    return _cuda_pav if _cuda_pav.available() else None


def _on_gpu(*tensors):
    """The numba.cuda kernel module where it applies to ``tensors`` (eager CUDA tensors), else ``None``."""
    if not tensors[0].is_cuda or torch.compiler.is_compiling():
        return None
    return _cuda_pav()


def _launch_args(like):
    """``(empty, device, stream)`` for the kernels: new tensors like ``like``, its GPU, torch's current stream."""
    def empty(dtype_name):
        return torch.empty(like.shape, dtype=getattr(torch, dtype_name), device=like.device)

    index = like.device.index if like.device.index is not None else torch.cuda.current_device()
    return empty, index, torch.cuda.current_stream(like.device).cuda_stream


def _float64(*tensors):
    """Detached float64 C-contiguous copies (views where already so) of ``tensors``."""
    return [t.detach().to(torch.float64).contiguous() for t in tensors]


def cuda_pav(a, b, kl):
    """``(v, first)`` of :func:`diffopt.sorting._pav.pav` for CUDA tensors (numba.cuda, on the device), in
    ``a``'s dtype; ``None`` on the CPU, under ``torch.compile`` or without numba's CUDA target."""
    kernels = _on_gpu(a, b)
    if kernels is None:
        return None
    v, first = kernels.pav_arrays(*_float64(a, b), kl, *_launch_args(a))
    return v.to(a.dtype), first.to(a.dtype)


def cuda_pav_vjp(g, a, b, first, kl):
    """``(g_a, g_b)`` of :func:`diffopt.sorting._pav.pav_vjp` for CUDA tensors (as :func:`cuda_pav`)."""
    kernels = _on_gpu(g, a, b, first)
    if kernels is None:
        return None
    ga, gb = kernels.pav_vjp_arrays(*_float64(g, a, b, first), kl, *_launch_args(a))
    return ga.to(a.dtype), gb.to(a.dtype)
