"""Torch kernels of the projection family: the inverse of a permutation, and PAV on CUDA tensors.

:func:`diffopt.sorting.projection_rank` needs ``inverse[r, order[r, j]] = j``; the generic
code argsorts ``order`` again (``O(n log n)``, the slowest op of an eager CPU call), while a
scatter is ``O(n)``. Registered as ``sorting_inverse_permutation`` in the torch shim's ``KERNELS``.

On CUDA tensors, the isotonic solve and its backward run on the GPU by numba.cuda
(:mod:`diffopt.backends._cuda_pav`, on torch's current stream, no host copy):
``sorting_pav_device`` and ``sorting_pav_device_vjp``. Where numba's CUDA target is
missing they return ``None`` and the tensor takes the host path.
"""

import torch

__all__ = ["inverse_permutation", "cuda_pav", "cuda_pav_vjp"]


def inverse_permutation(order):
    """``inverse`` with ``inverse[..., order[..., j]] = j`` along the last axis (integer tensors)."""
    positions = torch.arange(order.shape[-1], device=order.device, dtype=order.dtype).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


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
