"""Torch kernel of the projection family: the inverse of a permutation by one scatter.

:func:`diffopt.sorting.projection_rank` needs ``inverse[r, order[r, j]] = j``; the generic
code argsorts ``order`` again (``O(n log n)``, the slowest op of an eager CPU call), while a
scatter is ``O(n)``. Registered as ``sorting_inverse_permutation`` in the torch shim's ``KERNELS``.
"""

import torch

__all__ = ["inverse_permutation"]


def inverse_permutation(order):
    """``inverse`` with ``inverse[..., order[..., j]] = j`` along the last axis (integer tensors)."""
    positions = torch.arange(order.shape[-1], device=order.device, dtype=order.dtype).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)
