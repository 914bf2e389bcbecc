"""Resolve once: a warm call of a sorting op makes at most 5 framework look-ups, whatever ``n``.

A look-up is a call of :func:`autoray.infer_backend` (what :func:`diffopt._ops.do` makes per
op). The public call resolves its framework once (:func:`diffopt._ops.namespace`) and passes
the namespace down the network; before, ``soft_rank`` made 195 look-ups at ``n = 16`` and 972
at ``n = 1024`` (two rows, NumPy), growing with the network's depth.
"""

import numpy as np
import pytest

from diffopt import sorting

from references import LIMIT, LookupCounter as _Counter

OPS = {
    "soft_sort": lambda x: sorting.soft_sort(x, temperature=0.5),
    "soft_sort_cauchy": lambda x: sorting.soft_sort(x, temperature=0.5, relaxation="cauchy", descending=True),
    "soft_rank": lambda x: sorting.soft_rank(x, temperature=0.5),
    "soft_rank_exact": lambda x: sorting.soft_rank(x, relaxation=None),
    "soft_topk": lambda x: sorting.soft_topk(x, 3, temperature=0.5, relaxation="logistic"),
    "soft_permutation": lambda x: sorting.soft_permutation(x, temperature=0.5),
    "soft_argsort": lambda x: sorting.soft_argsort(x, temperature=0.5, relaxation="optimal"),
}

# the drop-in runs on one vector (its matrices are n x n per layer: n = 16 and 64 here)
DROPIN = {
    "diff_sort": lambda m, i, x: sorting.diff_sort(m, x),
    "diff_sort_indexed": lambda m, i, x: sorting.diff_sort_indexed(i, x),
    "diff_argsort": lambda m, i, x: sorting.diff_argsort(m, x, sigma=0.5),
    "vector_sort": lambda m, i, x: sorting.vector_sort(m, x[:, None] * x[None, :4], lambda r: r[:, 0], alpha=2.0),
}


def _data(backend, shape):
    x = np.random.default_rng(sum(shape)).normal(size=shape)
    return backend.asarray(x, "float32")


@pytest.mark.parametrize("op", list(OPS))
def test_sorting_ops_look_up_the_framework_a_few_times_whatever_n(backend, op):
    counter = _Counter()
    counts = {n: counter.count(lambda n=n: OPS[op](_data(backend, (2, n)))) for n in (16, 1024)}
    # the count is the same for both sizes (nothing per layer) and small
    assert counts[16] == counts[1024] <= LIMIT, counts
    assert counts[16] >= 1  # the counter does see the call's own look-up


@pytest.mark.parametrize("op", list(DROPIN))
def test_dropin_looks_up_the_framework_a_few_times_whatever_n(backend, op):
    counter = _Counter()
    counts = {}
    for n in (16, 64):
        m, i = sorting.bitonic_matrices(n), sorting.bitonic_indices(n)
        counts[n] = counter.count(lambda m=m, i=i, n=n: DROPIN[op](m, i, _data(backend, (n,))))
    assert counts[16] == counts[64] <= LIMIT, counts


def test_the_counter_sees_per_op_look_ups():
    """The counter is not blind: the op-by-op ``do`` path (what sorting used before) counts one per op."""
    from diffopt._ops import do

    counter = _Counter()
    x = np.ones(3)
    assert counter.count(lambda: [do("exp", x) for _ in range(10)]) == 10
