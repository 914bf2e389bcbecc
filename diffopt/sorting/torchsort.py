"""``torchsort`` drop-in: ``import torchsort`` -> ``from diffopt.sorting import torchsort``.

:func:`soft_rank` and :func:`soft_sort` with torchsort's signature and defaults
(ascending; ranks count from 1), on :func:`diffopt.sorting.projection_rank` and
:func:`diffopt.sorting.projection_sort`: no C++/CUDA build, every framework (not
only torch), any shape (torchsort takes 2-D ``(batch, n)`` only: the last axis is
sorted here too), and a tensor ``regularization_strength`` is learnable.

Differences from torchsort, where torchsort is wrong: its KL gradient overflows
to ``inf``/``NaN`` once ``|values / regularization_strength|`` passes about 709
(torchsort issue #63); here it is computed with block-wise log-sum-exp and stays
finite. Tied values get equal ranks here whatever order the sort put them in.
For example:

>>> import numpy as np
>>> from diffopt.sorting import torchsort
>>> torchsort.soft_rank(np.array([[8.0, 0.0, 5.0, 3.0, 2.0, 1.0, 6.0, 7.0, 9.0, 4.0]]),
...                     regularization_strength=1e-3)
array([[ 9.,  1.,  6.,  4.,  3.,  2.,  7.,  8., 10.,  5.]])
"""

from diffopt.sorting._projection import projection_rank, projection_sort

__all__ = ["soft_rank", "soft_sort"]


def _check(regularization):
    if regularization not in ("l2", "kl"):
        raise ValueError(f"'regularization' should be a 'l2' or 'kl', got {regularization!r}")


def soft_rank(values, regularization="l2", regularization_strength=1.0):
    """Soft ranks (1-based, ascending) along the last axis; see :func:`diffopt.sorting.projection_rank`."""
    _check(regularization)
    return projection_rank(values, -1, regularization_strength=regularization_strength,
                           regularization=regularization) + 1.0


def soft_sort(values, regularization="l2", regularization_strength=1.0):
    """Soft sort (ascending) along the last axis; see :func:`diffopt.sorting.projection_sort`."""
    _check(regularization)
    return projection_sort(values, -1, regularization_strength=regularization_strength, regularization=regularization)
