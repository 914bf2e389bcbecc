"""``differentiable_sorting`` (johnhw), on ``diffopt.sorting``'s drop-in.

The cases of its ``tests/test_differentiable_sort.py``, ``test_autograd.py``,
``test_network.py`` and ``test_torch.py`` (``test_tensorflow.py`` is TF1-only
and fails on the original too), with ``differentiable_sorting`` changed to
``diffopt.sorting``; smaller loops, and each "runs without error" case made
to assert a property of the result.
"""

import numpy as np
import pytest
from scipy.stats import rankdata

from diffopt.sorting import (
    bitonic_indices,
    bitonic_matrices,
    bitonic_network,
    bitonic_woven_matrices,
    diff_argsort,
    diff_argsort_indexed,
    diff_sort,
    diff_sort_indexed,
    diff_sort_weave,
    pretty_bitonic_network,
    smoothmax,
    softmax,
    softmax_smooth,
    vector_sort,
)

MAXES = [np.maximum, softmax, smoothmax, softmax_smooth]
SIZES = [2, 4, 8, 16, 32, 64, 128]


def test_vector_sort(numpy_like_backend):
    rs = np.random.RandomState(2019)
    x = np.array([[-10, 2, 30, 4, 5, 6, 7, 80], [5, 6, 7, 8, 9, 10, 11, 1]]).T
    out = vector_sort(bitonic_matrices(8), x, lambda v: v @ [1, 0], alpha=1.0)
    # descending by the key (first column); rows move together
    np.testing.assert_allclose(out[:, 0], np.sort(x[:, 0])[::-1], atol=1.0)
    np.testing.assert_allclose(out[0], [80, 1], atol=1.0)
    for n in [2, 4, 16, 64]:
        for d in [1, 3, 8]:
            for alpha in [0.01, 1.0, 10.0]:
                x = rs.uniform(-100, 100, (n, d))
                assert vector_sort(bitonic_matrices(n), x, lambda v: v @ rs.uniform(0, 1, d), alpha=alpha).shape == (n, d)


def test_network_exact_with_maximum(numpy_like_backend):
    rs = np.random.RandomState(2019)
    for n in SIZES:
        matrices = bitonic_matrices(n)
        for r in [0.01, 1, 10, 100, 1000]:
            vec = rs.uniform(-r, r, n)
            np.testing.assert_allclose(diff_sort(matrices, vec, np.maximum), np.sort(vec))


def test_argsort_nonnegative(numpy_like_backend):
    rs = np.random.RandomState(2019)
    for n in [2, 8, 32, 128]:
        matrices = bitonic_matrices(n)
        for dtype in [np.float32, np.float64]:
            vec = rs.uniform(-200, 200, n).astype(dtype)
            for sigma in [1e-1, 1, 10]:
                for max_fn in MAXES:
                    for transpose in (False, True):
                        ranks = diff_argsort(matrices, vec, sigma, softmax=max_fn, transpose=transpose)
                        assert ranks.shape == (n,) and np.all(ranks >= 0)


def test_sort_error_bounded(numpy_like_backend):
    rs = np.random.RandomState(2019)
    for n in SIZES:
        matrices = bitonic_matrices(n)
        for dtype in [np.float32, np.float64]:
            for r in [10, 200, 250]:
                vec = rs.uniform(-r, r, n).astype(dtype)
                for max_fn in MAXES:
                    assert np.max(np.abs(np.sort(vec) - diff_sort(matrices, vec, max_fn))) < r / 2


def test_softmax_is_max(numpy_like_backend):
    rs = np.random.RandomState(2019)
    for dtype in [np.float32, np.float64]:
        for r in [1e-2, 1, 10, 100]:
            a, b = rs.uniform(-r, r, 32).astype(dtype), rs.uniform(-r, r, 32).astype(dtype)
            hi = softmax(a, b)
            assert np.all(hi > a + b - hi)


def test_matrices(numpy_like_backend):
    for n in SIZES + [256, 512]:
        matrices = bitonic_matrices(n)
        assert all(len(m) == 4 for m in matrices)
        for left, right, left_inv, right_inv in matrices:
            assert left.shape == right.shape == (n // 2, n)
            assert left_inv.shape == right_inv.shape == (n, n // 2)
            for m in (left, right, left_inv, right_inv):
                assert np.sum(m) == n // 2
        for m in bitonic_woven_matrices(n):
            assert m.shape == (n, n) and np.sum(m) == n
            np.testing.assert_allclose(m.sum(axis=0), 1.0)
            np.testing.assert_allclose(m.sum(axis=1), 1.0)


def test_ranking_and_forms(numpy_like_backend):
    rs = np.random.RandomState(2019)
    for n in SIZES + [256]:
        woven, indices, matrices = bitonic_woven_matrices(n), bitonic_indices(n), bitonic_matrices(n)
        for _ in range(3):
            test = rs.randint(-200, 200, n)  # integer input, as the original
            true_rank = rankdata(test) - 1
            np.testing.assert_allclose(diff_argsort(matrices, test, sigma=0.001, softmax=np.maximum), true_rank)
            np.testing.assert_allclose(diff_argsort_indexed(indices, test, sigma=0.001, softmax=np.maximum), true_rank)
            truth = np.sort(test)
            assert np.all(diff_sort(matrices, truth, np.maximum) == truth)
            assert np.all(diff_sort_weave(woven, truth, np.maximum) == truth)
            assert np.all(diff_sort_indexed(indices, truth, np.maximum) == truth)


def test_networks(numpy_like_backend, capsys):
    for n in [2, 4, 8, 16, 32]:
        bitonic_network(n)  # prints one line per layer, a dashed line after each stage
        lines = capsys.readouterr().out.strip().splitlines()
        k = int(np.log2(n))
        assert sum(not line.startswith("-") for line in lines) == k * (k + 1) // 2
        pretty_bitonic_network(n)
        assert capsys.readouterr().out.strip()


# ---------------------------------------------------------------- autograd (test_autograd.py)

def test_autograd_jacobians(autograd_backend):
    from autograd import jacobian

    rs = np.random.RandomState(2019)
    for n in [2, 4, 8, 16]:
        matrices = bitonic_matrices(n)
        vec = rs.uniform(-200, 200, n)
        for max_fn in [softmax, smoothmax, softmax_smooth]:
            jac = jacobian(diff_sort, argnum=1)(matrices, vec, max_fn)
            # every compare-and-swap keeps a + b: the sorted values sum to the inputs' sum
            np.testing.assert_allclose(jac.sum(axis=0), 1.0, atol=1e-9)
            jac_r = jacobian(diff_argsort, argnum=1)(matrices, vec, softmax=max_fn, sigma=0.1)
            assert jac_r.shape == (n, n) and np.all(np.isfinite(jac_r))
        X = rs.uniform(-100, 100, (n, 2))
        jac_v = jacobian(vector_sort, argnum=1)(matrices, X, lambda x: x @ np.array([0.3, 0.7]))
        assert jac_v.shape == (n, 2, n, 2) and np.all(np.isfinite(jac_v))


def test_autograd_gradient_of_integer_input_is_float(autograd_backend):
    import autograd.numpy as anp
    from autograd import grad

    matrices = bitonic_matrices(8)
    ints = anp.array([5, -1, 9, 13, 16, 20, 42, 18])
    g_int = grad(lambda v: diff_sort(matrices, v)[0])(ints)
    g_float = grad(lambda v: diff_sort(matrices, v)[0])(ints.astype(float))
    assert g_int.dtype.kind == "f"
    np.testing.assert_allclose(g_int, g_float)
    # the smallest input (-1, position 1) carries almost all of the minimum's weight
    assert g_int[1] > 0.9 and abs(g_int.sum() - 1.0) < 1e-9


# ---------------------------------------------------------------- torch module (test_torch.py)

def test_torch_module(backend):
    if backend.name != "torch":
        pytest.skip("differentiable_sorting.torch is a torch module")
    import torch

    from diffopt.sorting import torch as ds_torch

    rs = np.random.RandomState(2019)
    matrices = ds_torch.bitonic_matrices(8)
    for max_fn in [ds_torch.softmax, ds_torch.smoothmax, ds_torch.softmax_smooth]:
        x = torch.tensor(rs.randint(-200, 200, 8), dtype=torch.float32, requires_grad=True)
        result = ds_torch.diff_sort(matrices, x, softmax=max_fn)
        jac = torch.stack([torch.autograd.grad(result[i], x, retain_graph=True)[0] for i in range(8)])
        np.testing.assert_allclose(jac.sum(0).numpy(), 1.0, atol=1e-5)
        for transpose in (False, True):
            ranks = ds_torch.diff_argsort(matrices, x, transpose=transpose, softmax=max_fn)
            assert ranks.shape == (8,) and bool(torch.all(torch.isfinite(ranks)))
            jac_r = torch.stack([torch.autograd.grad(ranks[i], x, retain_graph=True)[0] for i in range(8)])
            assert bool(torch.all(torch.isfinite(jac_r)))


def test_readme_numbers(numpy_like_backend):
    x = np.array([5.0, -1.0, 9.5, 13.2, 16.2, 20.5, 42.0, 18.0])
    m = bitonic_matrices(8)
    np.testing.assert_allclose(diff_sort(m, x), [-1.007, 4.996, 9.439, 13.212, 15.948, 18.21, 20.602, 42.0], atol=1e-3)
    np.testing.assert_allclose(diff_sort(m, x, lambda a, b: softmax_smooth(a, b, 1.0)), np.mean(x), atol=1e-3)
    ranks_x = [1, 2, 3, 4, 8, 7, 6, 4]  # the README's ranking example: an integer list
    np.testing.assert_allclose(diff_argsort(m, ranks_x), [0, 1, 2, 3, 7, 6, 5, 3], atol=1e-2)
    np.testing.assert_allclose(diff_argsort(m, ranks_x, sigma=0.25), [0.13, 1.09, 2.0, 3.11, 6.99, 6.0, 5.0, 3.11],
                               atol=1e-2)


def test_readme_rank_jacobian_of_integer_array(autograd_backend):
    from autograd import jacobian

    jac = jacobian(diff_argsort, argnum=1)(bitonic_matrices(8), np.array([1, 2, 3, 4, 8, 7, 6, 4]), 0.25)
    np.testing.assert_allclose(jac[:3], [[2.162, -1.059, -0.523, -0.287, -0.01, -0.018, -0.056, -0.21],
                                         [-0.066, 0.562, -0.186, -0.155, -0.005, -0.011, -0.035, -0.105],
                                         [-0.012, -0.013, 0.041, -0.005, 0.0, -0.001, -0.002, -0.008]], atol=1e-3)
