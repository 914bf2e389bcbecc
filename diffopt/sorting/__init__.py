"""Soft sorting for every array framework: sorting networks, the permutahedron projection,
optimal transport.

Two APIs share one network:

* the ``differentiable_sorting`` drop-in (change ``from differentiable_sorting
  import ...`` to ``from diffopt.sorting import ...``): :func:`bitonic_matrices`,
  :func:`diff_sort`, :func:`diff_argsort`, :func:`vector_sort`, ... for
  power-of-two lengths, with the same numbers;
* the modern API, for any length, batch shape, axis and scale:
  :func:`soft_sort`, :func:`soft_rank`, :func:`soft_topk`,
  :func:`soft_permutation` (alias :func:`soft_argsort`);
* the projection onto the permutahedron (Blondel et al. 2020), ``O(n log n)``:
  :func:`projection_sort`, :func:`projection_rank` (``'l2'`` or ``'kl'``),
  :func:`projection_topk`;
* entropic optimal transport (as ``ott.tools.soft_sort``): :func:`ot_sort`,
  :func:`ot_rank`, :func:`soft_quantile`, :func:`soft_median`.

Drop-ins for other packages live in submodules: ``diffopt.sorting.torchsort``,
``diffopt.sorting.fast_soft_sort``, ``diffopt.sorting.diffsort``.
``diffopt.sorting.torch`` and ``diffopt.sorting.tensorflow`` mirror the
original's per-framework modules.
"""

from diffopt.sorting._dropin import (
    comparison_sort,
    dargsort,
    diff_argsort,
    diff_argsort_indexed,
    diff_sort,
    diff_sort_indexed,
    diff_sort_weave,
    logsumexp_max,
    order_matrix,
    smoothmax,
    softmax,
    softmax_smooth,
    vector_sort,
)
from diffopt.sorting._modern import soft_argsort, soft_permutation, soft_rank, soft_sort, soft_topk
from diffopt.sorting._network import (
    bitonic_indices,
    bitonic_matrices,
    bitonic_network,
    bitonic_woven_matrices,
    pretty_bitonic_network,
)
from diffopt.sorting._ot import ot_rank, ot_sort, soft_median, soft_quantile
from diffopt.sorting._projection import projection_rank, projection_sort, projection_topk
from diffopt.sorting._relax import RELAXATIONS

__all__ = [
    "bitonic_matrices",
    "bitonic_woven_matrices",
    "bitonic_indices",
    "bitonic_network",
    "pretty_bitonic_network",
    "diff_sort",
    "diff_sort_indexed",
    "diff_sort_weave",
    "diff_argsort",
    "diff_argsort_indexed",
    "order_matrix",
    "dargsort",
    "vector_sort",
    "comparison_sort",
    "logsumexp_max",
    "softmax",
    "smoothmax",
    "softmax_smooth",
    "soft_sort",
    "soft_rank",
    "soft_argsort",
    "soft_permutation",
    "soft_topk",
    "projection_sort",
    "projection_rank",
    "projection_topk",
    "ot_sort",
    "ot_rank",
    "soft_quantile",
    "soft_median",
    "RELAXATIONS",
]

