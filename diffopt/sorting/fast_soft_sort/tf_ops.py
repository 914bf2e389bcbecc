"""``fast_soft_sort.tf_ops`` drop-in: ``soft_rank`` and ``soft_sort`` (see :mod:`diffopt.sorting.fast_soft_sort`)."""

from diffopt.sorting.fast_soft_sort._batched import soft_rank, soft_sort

__all__ = ["soft_rank", "soft_sort"]
