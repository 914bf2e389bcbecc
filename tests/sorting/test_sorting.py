"""Soft sorting: the ``differentiable_sorting`` drop-in and the modern API, on every backend."""

import functools

import autoray as ar
import numpy as np
import pytest

from diffopt import sorting as ds
from diffopt._ops import do
from diffopt.sorting._soft import pad as _pad
from diffopt.sorting._soft import bit_reverse, network, pull
from references import ref_sorting  # the NumPy reference network (Python scalars, HIPS-autograd differentiable)

X8 = [5.0, -1.0, 9.5, 13.2, 16.2, 20.5, 42.0, 18.0]
SORTED8 = [-1.0075, 4.9958, 9.4394, 13.2117, 15.948, 18.2103, 20.6023, 42.0]
RANK8 = [1.0, 2.0, 3.0, 4.0, 8.0, 7.0, 6.0, 4.0]
RELAXATIONS = ["logsumexp", "logistic", "cauchy", "reciprocal", "optimal", None]
MONOTONE = ["logsumexp", "cauchy", "reciprocal", "optimal", None]


def _sum(y):
    return do("sum", y)  # diffopt's table: autoray's torch sum does not compile


def _close(actual, desired, atol=0.0, rtol=1e-7):
    """``assert_allclose``, loosened for float32 results (e.g. JAX without x64)."""
    actual, desired = np.asarray(actual), np.asarray(desired, dtype=float)
    if actual.dtype == np.float32:
        finite = np.abs(desired[np.isfinite(desired)])
        atol = max(atol, 5e-5 * max(1.0, finite.max() if finite.size else 1.0))
        rtol = max(rtol, 1e-5)
    np.testing.assert_allclose(actual, desired, atol=atol, rtol=rtol)


# ------------------------------------------------------------- README numbers


def test_readme_diff_sort_all_forms(backend):
    x = backend.asarray(X8)
    for out in (
        ds.diff_sort(ds.bitonic_matrices(8), x),
        ds.diff_sort_indexed(ds.bitonic_indices(8), x),
        ds.diff_sort_weave(ds.bitonic_woven_matrices(8), x),
        ds.diff_sort(ds.bitonic_matrices(8), x, lambda a, b: ds.softmax_smooth(a, b, 0.0)),
    ):
        assert type(out) is type(x)
        _close(backend.to_numpy(out), SORTED8, atol=1e-3)


def test_readme_softmax_smooth(backend):
    x, m = backend.asarray(X8), ds.bitonic_matrices(8)
    smoothed = ds.diff_sort(m, x, lambda a, b: ds.softmax_smooth(a, b, 0.05))
    _close(
        backend.to_numpy(smoothed), [1.242, 5.333, 9.607, 12.446, 16.845, 18.995, 20.932, 37.999], atol=1e-3
    )
    mean = ds.diff_sort(m, x, lambda a, b: ds.softmax_smooth(a, b, 1.0))
    _close(backend.to_numpy(mean), np.full(8, 15.425), atol=1e-3)


def test_readme_diff_argsort(backend):
    x, m = backend.asarray(RANK8), ds.bitonic_matrices(8)
    _close(backend.to_numpy(ds.diff_argsort(m, x)), [0, 1, 2, 3, 7, 6, 5, 3], atol=1e-3)
    smooth = backend.to_numpy(ds.diff_argsort(m, x, sigma=0.25))
    _close(smooth, [0.13, 1.09, 2.0, 3.11, 6.99, 6.0, 5.0, 3.11], atol=6e-3)
    indexed = ds.diff_argsort_indexed(ds.bitonic_indices(8), x, sigma=0.25)
    _close(backend.to_numpy(indexed), smooth, atol=1e-6)


def test_readme_python_lists_and_ints():
    _close(ds.diff_sort(ds.bitonic_matrices(8), X8), SORTED8, atol=1e-3)
    ranks = ds.diff_argsort(ds.bitonic_matrices(8), [1, 2, 3, 4, 8, 7, 6, 4])
    _close(ranks, [0, 1, 2, 3, 7, 6, 5, 3], atol=1e-3)


def test_readme_vector_sort(backend):
    X = backend.asarray(np.array([[1, 5], [30, 30], [6, 9], [80, -2]], dtype=float))
    m = ds.bitonic_matrices(4)
    col0 = backend.asarray(np.array([1.0, 0.0]))
    col1 = backend.asarray(np.array([0.0, 1.0]))
    by0 = ds.vector_sort(m, X, lambda x: ar.do("tensordot", x, col0, axes=1), alpha=1.0)
    _close(backend.to_numpy(by0), [[80, -2], [30, 30], [5.97, 8.97], [1.03, 5.03]], atol=6e-3)
    by1 = ds.vector_sort(m, X, lambda x: ar.do("tensordot", x, col1, axes=1))
    _close(
        backend.to_numpy(by1), [[30, 30], [5.91, 8.93], [1.16, 5.07], [79.93, -1.99]], atol=6e-3
    )


def test_readme_vector_sort_integer_matrix():
    X = np.array([[1, 5], [30, 30], [6, 9], [80, -2]])
    out = ds.vector_sort(ds.bitonic_matrices(4), X, lambda x: x @ [1, 0], alpha=1.0)
    _close(out, [[80, -2], [30, 30], [5.97, 8.97], [1.03, 5.03]], atol=6e-3)


def test_readme_comparison_sort(backend):
    x = np.random.RandomState(31).normal(0, 100, 8)
    _close(x, [-41.48, -33.34, 8.11, -79.1, -21.86, -76.32, -77.71, 184.94], atol=6e-3)
    out = ds.comparison_sort(ds.bitonic_matrices(8), backend.asarray(x), lambda a, b: ar.do("tanh", a**2 - b**2))
    expect = [184.94, -79.1, -77.71, -76.32, -41.48, -33.34, -21.86, 8.11]
    _close(backend.to_numpy(out), expect, atol=6e-3)


def test_comparison_sort_items_are_vectors(backend):
    rs = np.random.RandomState(0)
    x = rs.randn(8, 3) + rs.permutation(8)[:, None]  # row sums at least ~1 apart
    out = ds.comparison_sort(
        ds.bitonic_matrices(8), backend.asarray(x), lambda a, b: ar.do("tanh", ar.do("sum", a - b, axis=1))
    )
    _close(backend.to_numpy(out), x[np.argsort(-x.sum(1))], atol=1e-3)


def test_readme_gradient_of_first_output(grad_backend):
    b = grad_backend
    x = b.asarray(np.array(X8, dtype=np.float32))
    g = b.to_numpy(b.grad(lambda v: ds.diff_sort(ds.bitonic_matrices(8), v)[0], x))
    expect = [7.3447e-03, 9.9257e-01, 8.1266e-05, 3.9275e-06, 3.4427e-08, 1.4447e-09, 0.0, 9.5952e-09]
    _close(g, expect, rtol=2e-3, atol=1e-7)


def test_readme_jacobian_of_diff_argsort(grad_backend):
    b = grad_backend
    x, m = b.asarray(np.array(RANK8)), ds.bitonic_matrices(8)
    rows = [b.to_numpy(b.grad(lambda v, i=i: ds.diff_argsort(m, v, 0.25)[i], x)) for i in range(8)]
    expect = [
        [2.162, -1.059, -0.523, -0.287, -0.01, -0.018, -0.056, -0.21],
        [-0.066, 0.562, -0.186, -0.155, -0.005, -0.011, -0.035, -0.105],
        [-0.012, -0.013, 0.041, -0.005, -0.0, -0.001, -0.002, -0.008],
        [-0.012, -0.025, -0.108, 0.564, -0.05, -0.086, -0.141, -0.14],
        [-0.001, -0.001, -0.003, -0.005, 0.104, -0.058, -0.028, -0.008],
        [-0.0, -0.001, -0.002, -0.004, -0.001, 0.028, -0.012, -0.007],
        [-0.0, -0.0, -0.001, -0.002, -0.016, -0.018, 0.038, -0.001],
        [-0.012, -0.025, -0.108, -0.209, -0.05, -0.086, -0.141, 0.633],
    ]
    _close(np.stack(rows), expect, atol=6e-4)


def test_autograd_jacobian_as_in_readme():
    autograd = pytest.importorskip("autograd")
    jac = autograd.jacobian(ds.diff_argsort, argnum=1)(ds.bitonic_matrices(8), np.array(RANK8), 0.25)
    assert jac.shape == (8, 8)
    _close(jac[0, :3], [2.162, -1.059, -0.523], atol=6e-4)


def test_per_framework_modules():
    torch = pytest.importorskip("torch")
    import diffopt.sorting.torch as dst

    mats = dst.bitonic_matrices(8)
    assert mats[0][0].dtype == torch.float32
    x = torch.tensor(X8, requires_grad=True)
    _close(dst.diff_sort(mats, x).detach().numpy(), SORTED8, atol=1e-3)


def test_tensorflow_module_columns():
    """``diffopt.sorting.tensorflow``: the original's ``[n, 1]`` argsort columns, same numbers as the modern API."""
    tf = pytest.importorskip("tensorflow")
    import diffopt.sorting.tensorflow as dstf

    xt = tf.reshape(tf.constant(X8, dtype=tf.float64), (-1, 1))
    _close(tf.reshape(dstf.diff_sort(dstf.bitonic_matrices(8), xt), (-1,)), SORTED8, atol=1e-3)
    rank = tf.constant(RANK8, dtype=tf.float64)
    col = dstf.diff_argsort(dstf.bitonic_matrices(8), rank)
    assert col.shape == (8, 1)
    _close(tf.reshape(col, (-1,)), [0, 1, 2, 3, 7, 6, 5, 3], atol=1e-3)  # the README's numbers
    flat = ds.diff_argsort(ds.bitonic_matrices(8), rank)
    _close(tf.reshape(col, (-1,)), flat, atol=1e-12)
    back = dstf.diff_argsort(dstf.bitonic_matrices(8), rank, transpose=True)
    _close(tf.reshape(back, (-1,)), ds.diff_argsort(ds.bitonic_matrices(8), rank, transpose=True), atol=1e-12)
    srt = dstf.diff_sort(dstf.bitonic_matrices(8), rank)
    _close(tf.reshape(dstf.dargsort(rank, srt, 0.1), (-1,)), ds.dargsort(rank, srt, 0.1), atol=1e-12)


# ------------------------------------------------------------- drop-in network


@pytest.mark.parametrize("n", [1, 2, 4, 16, 64])
def test_hard_network_equals_np_sort(backend, n):
    x = np.random.RandomState(n).randn(n)
    hard = lambda a, b: ar.do("maximum", a, b)  # noqa: E731
    xb = backend.asarray(x)
    for out in (
        ds.diff_sort(ds.bitonic_matrices(n), xb, hard),
        ds.diff_sort_indexed(ds.bitonic_indices(n), xb, hard),
        ds.diff_sort_weave(ds.bitonic_woven_matrices(n), xb, hard),
    ):
        _close(backend.to_numpy(out), np.sort(x), atol=1e-12)


def test_forms_agree_and_weave_beta(backend):
    x = backend.asarray(np.random.RandomState(1).randn(16) * 3)
    a = backend.to_numpy(ds.diff_sort(ds.bitonic_matrices(16), x))
    _close(backend.to_numpy(ds.diff_sort_indexed(ds.bitonic_indices(16), x)), a, atol=1e-10)
    _close(backend.to_numpy(ds.diff_sort_weave(ds.bitonic_woven_matrices(16), x)), a, atol=1e-10)
    blended = backend.to_numpy(ds.diff_sort_weave(ds.bitonic_woven_matrices(16), x, beta=0.5))
    assert np.abs(blended - a).max() > 1e-3
    _close(blended.sum(), a.sum(), atol=1e-9)  # permutations and identity keep the sum


def test_stable_softmax_no_overflow(backend):
    a, b = backend.asarray(np.array([1000.0, -1000.0], dtype=np.float32)), backend.asarray(
        np.array([999.0, -1001.0], dtype=np.float32)
    )
    _close(backend.to_numpy(ds.softmax(a, b)), [1000 + np.log1p(np.exp(-1)), -1000 + np.log1p(np.exp(-1))], rtol=1e-6)
    _close(backend.to_numpy(ds.smoothmax(a, b)), [1000 - 1 / (1 + np.e), -1000 - 1 / (1 + np.e)], rtol=1e-6)
    big = backend.asarray(np.array([300.0, 120.0, 90.0, 500.0], dtype=np.float32))
    out = backend.to_numpy(ds.diff_sort(ds.bitonic_matrices(4), big))
    _close(out, [90, 120, 300, 500], rtol=1e-6)


def test_softmax_normalize_matches_formula():
    a, b = np.array([1.0, 2.0]), np.array([0.5, 3.0])
    _close(ds.softmax(a, b, alpha=2.0, normalize=1), np.log(np.exp(2 * a) + np.exp(2 * b) - 1) / 2)


@pytest.mark.parametrize("n", [3, 6, 12, 0])
def test_dropin_rejects_non_power_of_two(n):
    with pytest.raises(ValueError, match="power of two"):
        ds.bitonic_matrices(n)
    with pytest.raises(ValueError, match="power of two"):
        ds.bitonic_indices(n)
    if n:
        with pytest.raises(ValueError, match="power of two"):
            ds.diff_sort(ds.bitonic_matrices(8), np.arange(float(n)))


def test_pretty_printers(capsys):
    ds.pretty_bitonic_network(8)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == " 0  1  2  3  4  5  6  7 "
    assert lines[1] == " ╭──╯  │  │  │  │  │  │ "
    assert lines[2] == " │  │  ╰──╮  │  │  │  │ "
    assert len(lines) == 1 + 6 * 4
    ds.bitonic_network(4)
    assert capsys.readouterr().out.splitlines()[0] == " 0>1\t 2<3\t"


# ------------------------------------------------------------------ modern API


@pytest.mark.parametrize("n", [1, 5, 100, 1000])
def test_small_temperature_is_hard_sort(backend, n):
    x = np.random.RandomState(n).permutation(n) * 1.0 + np.random.RandomState(0).rand(n) * 0.1
    xb = backend.asarray(x)
    for relaxation in RELAXATIONS if n <= 100 else ["logsumexp", None]:
        heavy_tail = relaxation in ("cauchy", "reciprocal", "optimal")  # shift ~T per comparator
        out = backend.to_numpy(ds.soft_sort(xb, temperature=1e-5 if heavy_tail else 1e-3, relaxation=relaxation))
        _close(out, np.sort(x), atol=1e-3 if heavy_tail else 1e-6)
    ranks = backend.to_numpy(ds.soft_rank(xb, temperature=1e-3))
    _close(ranks, np.argsort(np.argsort(x)), atol=1e-6)


def test_batch_axis_and_descending(backend):
    x = np.random.RandomState(2).randn(3, 7, 4)
    xb = backend.asarray(x)
    out = ds.soft_sort(xb, axis=1, relaxation=None)
    assert tuple(out.shape) == x.shape
    _close(backend.to_numpy(out), np.sort(x, axis=1), atol=1e-12)
    down = ds.soft_sort(xb, axis=0, descending=True, relaxation=None)
    _close(backend.to_numpy(down), -np.sort(-x, axis=0), atol=1e-12)
    soft = backend.to_numpy(ds.soft_sort(xb, axis=-2, temperature=0.3))
    _close(soft.sum(1), x.sum(1), atol=1e-9)
    rows = np.stack([backend.to_numpy(ds.soft_sort(backend.asarray(x[i, :, j]), temperature=0.3)) for i, j in [(0, 0), (2, 3)]])
    _close(rows, soft[[0, 2], :, [0, 3]], atol=1e-12)


def test_power_of_two_matches_dropin_network(backend):
    x = backend.asarray(np.array(X8) / 7.0)
    modern = ds.soft_sort(x * 7.0, temperature=7.0)
    dropin = ds.diff_sort(ds.bitonic_matrices(8), x) * 7.0
    _close(backend.to_numpy(modern), backend.to_numpy(dropin), atol=1e-9)


@functools.lru_cache(maxsize=None)
def _ref_row_at_unit_temperature(scale, relaxation):
    x = (np.random.RandomState(3).randn(4, 300) * scale).astype(np.float32)
    return ref_sorting(x[0].astype(np.float64), relaxation, 1.0, "sort")


@pytest.mark.parametrize("scale", [1e-4, 1e-2, 1.0, 1e2, 1e4])
def test_float32_every_scale(backend, scale):
    x = (np.random.RandomState(3).randn(4, 300) * scale).astype(np.float32)
    xb = backend.asarray(x)
    for relaxation in RELAXATIONS:
        out = backend.to_numpy(ds.soft_sort(xb, temperature=0.1 * scale, relaxation=relaxation))
        assert out.dtype == np.float32
        # float32 equals the float64 computation to float32 rounding of the data's scale
        wide = backend.to_numpy(ds.soft_sort(backend.asarray(x.astype(np.float64) if backend.supports("float64")
                                                             else x), temperature=0.1 * scale, relaxation=relaxation))
        np.testing.assert_allclose(out, wide, rtol=0, atol=2e-5 * scale * np.abs(x / scale).max())
        _close(out.sum(1), x.sum(1), atol=1e-4 * scale * 300)
        # temperature is in data units: the result scales with the data
        unit = backend.to_numpy(ds.soft_sort(backend.asarray(x / scale), temperature=0.1, relaxation=relaxation))
        _close(out / scale, unit, atol=2e-3)
    for relaxation in ("logsumexp", "cauchy"):  # fixed temperature, far from the data's scale
        out = backend.to_numpy(ds.soft_sort(xb[:1], relaxation=relaxation))
        want = _ref_row_at_unit_temperature(scale, relaxation)  # the NumPy network, float64
        np.testing.assert_allclose(out[0], want, rtol=0, atol=3e-6 * max(np.abs(want).max(), 1.0))


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_sorted_output_when_gaps_exceed_temperature(backend, scale):
    # Gaps are >= 10 T: a comparator moves each value by at most h(10)·T (logsumexp: log(1 + e^-10);
    # logistic: 10/(1 + e^10); optimal: its 1/(16 v) tail, 1/16), and a value meets depth = 21
    # comparators (bitonic network on 64): |out - sort(x)| <= 21 h T, plus float32 rounding.
    # (optimal reaches its bound exactly: the extremes take a 1/16 T step at every layer.)
    x = np.random.RandomState(4).permutation(64).astype(np.float32) * scale
    shift = {"logsumexp": np.log1p(np.exp(-10.0)), "logistic": 10.0 / (1.0 + np.exp(10.0)), "optimal": 1 / 16, None: 0}
    for relaxation in ["logsumexp", "logistic", "optimal", None]:
        out = backend.to_numpy(ds.soft_sort(backend.asarray(x), temperature=0.1 * scale, relaxation=relaxation))
        assert (np.diff(out) > 0).all()
        bound = 21 * shift[relaxation] * 0.1 * scale + 64 * 2.0**-23 * 64 * scale
        assert np.abs(out - np.sort(x)).max() <= bound, relaxation


def test_inf_and_nan_propagate(backend):
    x = backend.asarray(np.array([3.0, np.inf, -1.0, -np.inf, 2.0]))
    _close(backend.to_numpy(ds.soft_sort(x, temperature=1e-3)), [-np.inf, -1, 2, 3, np.inf], atol=1e-9)
    nan = backend.to_numpy(ds.soft_sort(backend.asarray(np.array([[1.0, np.nan, 0.0], [1.0, 2.0, 0.0]])),
                                        temperature=0.5))
    assert np.isnan(nan[0]).all()  # a NaN makes its instance's result NaN, and only that instance's
    _close(nan[1], ref_sorting(np.array([1.0, 2.0, 0.0]), "logsumexp", 0.5, "sort"), atol=1e-12)


def test_ranks_topk_permutation(backend):
    x = np.random.RandomState(5).randn(2, 11)
    xb = backend.asarray(x)
    exact = np.argsort(np.argsort(x, axis=1), axis=1)
    _close(backend.to_numpy(ds.soft_rank(xb, relaxation=None)), exact)
    _close(backend.to_numpy(ds.soft_rank(xb, relaxation=None, descending=True)), 10 - exact)
    soft = backend.to_numpy(ds.soft_rank(xb, temperature=0.5))
    _close(soft.sum(1), [55, 55], atol=1e-9)
    _close(soft, [ref_sorting(row, "logsumexp", 0.5, "rank") for row in x], atol=1e-9)  # NumPy network
    mask = backend.to_numpy(ds.soft_topk(xb, 3, relaxation=None))
    _close(mask, (exact >= 8).astype(float))
    smallest = backend.to_numpy(ds.soft_topk(xb, 4, relaxation=None, largest=False))
    _close(smallest, (exact < 4).astype(float))
    soft_mask = backend.to_numpy(ds.soft_topk(xb, 3, temperature=0.5))
    _close(soft_mask.sum(1), [3, 3], atol=1e-9)
    _close(soft_mask, [ref_sorting(row, "logsumexp", 0.5, "topk", k=3) for row in x], atol=1e-9)
    for relaxation in ["logistic", "optimal", None]:
        p = backend.to_numpy(ds.soft_permutation(xb, temperature=0.5, relaxation=relaxation))
        assert p.shape == (2, 11, 11)
        if relaxation is not None:
            _close(p, [ref_sorting(row, relaxation, 0.5, "perm") for row in x], atol=1e-9)
        _close(p.sum(-1), 1, atol=1e-9)
        _close(p.sum(-2), 1, atol=1e-9)
        sorted_ = backend.to_numpy(ds.soft_sort(xb, temperature=0.5, relaxation=relaxation))
        _close(np.einsum("bji,bi->bj", p, x).astype(sorted_.dtype), sorted_, atol=1e-9)
    assert ds.soft_argsort is ds.soft_permutation


# ------------------------------------------------------------------- gradients


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_gradient_is_soft_permutation_of_weights(grad_backend, relaxation):
    b = grad_backend
    rs = np.random.RandomState(6)
    x, w = rs.randn(3, 13), rs.rand(3, 13)
    wb = b.asarray(w)
    g = b.to_numpy(b.grad(lambda v: _sum(wb * ds.soft_sort(v, temperature=0.4, relaxation=relaxation)), b.asarray(x)))
    _close(g.sum(1), w.sum(1), atol=1e-9)
    if relaxation in MONOTONE:
        assert (g >= -1e-12).all()
    if relaxation is None:
        order = np.argsort(x, axis=1)
        _close(np.take_along_axis(g, order, axis=1), w)


@pytest.mark.parametrize("relaxation", RELAXATIONS[:-1])
def test_gradient_matches_finite_differences(grad_backend, relaxation):
    b = grad_backend
    rs = np.random.RandomState(7)
    x, w = rs.randn(2, 6), rs.randn(2, 6)

    def value(v):
        return float(np.sum(w * ds.soft_sort(v, temperature=0.7, relaxation=relaxation)))

    eps = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        d = np.zeros_like(x)
        d[idx] = eps
        fd[idx] = (value(x + d) - value(x - d)) / (2 * eps)
    wb = b.asarray(w)
    g = b.to_numpy(b.grad(lambda v: _sum(wb * ds.soft_sort(v, temperature=0.7, relaxation=relaxation)), b.asarray(x)))
    _close(g, fd, atol=1e-6)


@pytest.mark.parametrize("relaxation", RELAXATIONS[:-1])
def test_backward_matches_autodiff_of_plain_forward(grad_backend, relaxation):
    b = grad_backend
    rs = np.random.RandomState(8)
    x, w = rs.randn(2, 16), rs.randn(2, 16)
    wb = b.asarray(w)
    custom = b.grad(lambda v: _sum(wb * ds.soft_sort(v, temperature=0.5, relaxation=relaxation)), b.asarray(x))
    plain = b.grad(lambda v: _sum(wb * network(v, relaxation, 0.5)[0]), b.asarray(x))
    _close(b.to_numpy(custom), b.to_numpy(plain), atol=1e-10)


def test_rank_and_topk_gradients_with_padding(grad_backend):
    """Rows of 5 (padded to 8): gradients equal HIPS autograd's of the NumPy reference network."""
    import autograd

    b = grad_backend
    x_np = np.random.RandomState(9).randn(2, 5)
    x = b.asarray(x_np)
    cases = [(lambda v: ds.soft_rank(v, temperature=0.5), lambda r: ref_sorting(r, "logsumexp", 0.5, "rank")),
             (lambda v: ds.soft_topk(v, 2, temperature=0.5), lambda r: ref_sorting(r, "logsumexp", 0.5, "topk"))]
    for f, ref in cases:
        g = b.to_numpy(b.grad(lambda v: _sum(f(v) * f(v)), x))
        want = np.stack([autograd.grad(lambda r: (ref(r) ** 2).sum())(row) for row in x_np])
        assert np.abs(want).max() > 0.1
        _close(g, want, atol=1e-9)
    g = b.to_numpy(b.grad(lambda v: _sum(ds.soft_permutation(v, temperature=0.5)[:, 0, :] * v), x))
    want = np.stack([autograd.grad(lambda r: (ref_sorting(r, "logsumexp", 0.5, "perm")[0] * r).sum())(row)
                     for row in x_np])
    _close(g, want, atol=1e-9)


def test_padding_rows_never_leak(backend):
    x = backend.asarray(np.random.RandomState(10).randn(3, 9) * 5)
    padded = backend.to_numpy(network(_pad(x, 16), "cauchy", 1.0)[0])
    assert np.isinf(padded[:, 9:]).all() and np.isfinite(padded[:, :9]).all()
    want = [ref_sorting(row, "cauchy", 1.0, "sort") for row in backend.to_numpy(x)]  # +inf padding, NumPy
    _close(padded[:, :9], want, atol=1e-9)


@pytest.mark.parametrize("relaxation", ["logsumexp", "cauchy", None])
def test_bit_reversed_layout_is_a_permutation(backend, relaxation):
    x = backend.asarray(np.random.RandomState(14).randn(3, 16))
    t = backend.asarray(np.random.RandomState(15).randn(3, 16, 2))
    out, w = network(x, relaxation, 0.5, want="leak")
    out_r, w_r = network(bit_reverse(x), relaxation, 0.5, want="leak", reverse=True)
    _close(backend.to_numpy(bit_reverse(out_r)), backend.to_numpy(out), atol=1e-12)
    back = bit_reverse(pull(bit_reverse(t), w_r, 16, reverse=True))
    _close(backend.to_numpy(back), backend.to_numpy(pull(t, w, 16)), atol=1e-12)


def test_slope_fast_path_matches_generic_with_infinities(backend):
    # 'slope' runs on clipped (finite) values; 'leak' (= slope for logsumexp) on the raw ones
    x = np.random.RandomState(16).randn(2, 11)
    x[0, [2, 5]], x[0, 7], x[1, [1, 4]] = np.inf, -np.inf, -np.inf
    padded = _pad(backend.asarray(x), 16)
    fast, w_fast = network(padded, "logsumexp", 0.3, want="slope")
    ref, w_ref = network(padded, "logsumexp", 0.3, want="leak")
    fast, ref = backend.to_numpy(fast), backend.to_numpy(ref)
    assert np.array_equal(np.isinf(fast), np.isinf(ref)) and np.isinf(fast[:, 11:]).all()
    _close(fast[np.isfinite(ref)], ref[np.isfinite(ref)], atol=1e-12)
    for a, b in zip(w_fast, w_ref):
        a, b = backend.to_numpy(a), backend.to_numpy(b)
        exact = (b == 0) | (b == 1)  # ties of equal infinities may split the weight
        _close(a[~exact], b[~exact], atol=1e-12)


def test_gradient_with_infinities_and_padding(grad_backend):
    b = grad_backend
    x = np.array([[3.0, np.inf, -1.0, -np.inf, 2.0], [0.5, 0.25, -np.inf, np.inf, np.inf]])
    w = np.random.RandomState(17).rand(2, 5)
    wb = b.asarray(w)
    g = b.to_numpy(b.grad(lambda v: _sum(wb * ds.soft_sort(v, temperature=1e-3)), b.asarray(x)))
    finite = np.isfinite(x)
    assert np.isfinite(g).all()
    exact = np.take_along_axis(w, np.argsort(np.argsort(x, axis=1), axis=1), axis=1)  # w at each rank
    _close(g[finite], exact[finite], atol=1e-9)
    _close(g.sum(1), w.sum(1), atol=1e-9)


@pytest.mark.parametrize("relaxation", ["logsumexp", "cauchy"])
def test_many_rows_layout_matches_row_by_row(grad_backend, relaxation):
    # >= 8 rows run as one batch-innermost block; single rows run as (1, N): same numbers
    b = grad_backend
    rs = np.random.RandomState(18)
    x, w = rs.randn(9, 13) * 3, rs.randn(9, 13)
    x[4, 2], x[7, [0, 5]] = np.inf, -np.inf
    wb = b.asarray(w)

    def loss(v):
        return _sum(wb * ds.soft_sort(v, temperature=0.5, relaxation=relaxation))

    whole = b.to_numpy(ds.soft_sort(b.asarray(x), temperature=0.5, relaxation=relaxation))
    g = b.to_numpy(b.grad(loss, b.asarray(x)))
    for i in range(len(x)):
        row = b.to_numpy(ds.soft_sort(b.asarray(x[i : i + 1]), temperature=0.5, relaxation=relaxation))
        np.testing.assert_array_equal(np.isinf(whole[i]), np.isinf(row[0]))
        _close(whole[i][np.isfinite(row[0])], row[0][np.isfinite(row[0])], atol=1e-12)
        wi = b.asarray(w[i : i + 1])
        gi = b.grad(lambda v: _sum(wi * ds.soft_sort(v, temperature=0.5, relaxation=relaxation)), b.asarray(x[i : i + 1]))
        _close(g[i], b.to_numpy(gi)[0], atol=1e-12)
    finite_rows = np.isfinite(x).all(1)
    _close(g.sum(1)[finite_rows], w.sum(1)[finite_rows], atol=1e-9)


# ------------------------------------------------------------------ compilation


def test_jax_vmap():
    jax = pytest.importorskip("jax")
    x = jax.numpy.asarray(np.random.RandomState(12).randn(5, 7))
    out = jax.vmap(lambda v: ds.soft_sort(v, temperature=0.2))(x)
    _close(np.asarray(out), np.asarray(ds.soft_sort(x, temperature=0.2)), atol=1e-6)
    g = jax.vmap(jax.grad(lambda v: ds.soft_sort(v, temperature=0.2)[0]))(x)
    rows = [jax.grad(lambda v: ds.soft_sort(v, temperature=0.2)[0])(v) for v in x]
    _close(np.asarray(g), np.stack([np.asarray(r) for r in rows]), atol=1e-6)
    _close(np.asarray(g).sum(1), np.ones(5), atol=1e-6)


def test_jax_second_derivatives_match_finite_differences():
    # JAX differentiates soft_sort's forward and backward (smooth code) for a Hessian;
    # the other frameworks raise instead (tests/backends/test_backends.py)
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    rs = np.random.RandomState(20)
    for n in (6, 8):  # padded and not
        x, c = rs.randn(2, n).astype(np.float32), rs.randn(2, n).astype(np.float32)

        def loss(v):
            return jnp.sum(ds.soft_sort(v, temperature=0.7) ** 2 * c)

        hess = np.asarray(jax.hessian(loss)(jnp.asarray(x))).reshape(2 * n, 2 * n)
        grad = jax.jit(jax.grad(loss))
        eps = 1e-2  # float32: central differences with error O(eps^2) + O(1e-7 / eps)
        basis = np.eye(2 * n, dtype=np.float32).reshape(2 * n, 2, n)
        fd = np.stack([np.asarray(grad(x + eps * e) - grad(x - eps * e)).ravel() / (2 * eps) for e in basis], 1)
        _close(hess, fd, atol=2e-3 * max(1.0, np.abs(fd).max()))


def test_torch_vmap():
    torch = pytest.importorskip("torch")
    x = torch.randn(5, 7, dtype=torch.float64)
    out = torch.func.vmap(lambda v: ds.soft_sort(v, temperature=0.2))(x)
    _close(out.numpy(), ds.soft_sort(x, temperature=0.2).numpy(), atol=1e-12)


@pytest.mark.parametrize(
    "shape, reverse, temperature, special",
    [((1, 16, 5), True, 1.0, None), ((3, 32), True, 0.3, np.inf), ((2, 64, 2, 3), False, 2.0, -np.inf),
     ((2, 8), True, 1.0, np.nan)],
)
def test_torch_loops_match_generic_loops(shape, reverse, temperature, special):
    # eager torch runs soft_sort's forward and backward with in-place kernels of its own
    torch = pytest.importorskip("torch")
    from diffopt.backends import load
    from diffopt.backends.torch import _sorting as _torch_sorting
    from diffopt.sorting import _soft
    from diffopt.sorting._network import schedule

    assert load("torch").KERNELS["sorting_lse_network"] is _torch_sorting.lse_network  # what soft_sort looks up

    rs = np.random.RandomState(19)
    x, t = torch.from_numpy(rs.randn(*shape) * 3), torch.from_numpy(rs.randn(*shape))
    if special is not None:
        x[0, 1] = x[-1, 3] = special
    x_before, t_before = x.clone(), t.clone()
    layers = schedule(shape[1], reverse)
    out, w = _torch_sorting.lse_network(x, temperature, layers, reverse, _soft.finite_range(x))
    ref, w_ref = _soft._lse_network(x, temperature, reverse)
    np.testing.assert_array_equal(out.isnan().numpy(), ref.isnan().numpy())
    np.testing.assert_array_equal(out.isinf().numpy(), ref.isinf().numpy())
    finite = ref.isfinite()
    _close(out[finite].numpy(), ref[finite].numpy(), atol=1e-12)
    assert [a.shape for a in w] == [b.shape for b in w_ref]
    for a, b in zip(w, w_ref):
        _close(a.nan_to_num(-1.0).numpy(), b.nan_to_num(-1.0).numpy(), atol=1e-12)
    back = _torch_sorting.pull(t, w, layers)
    _close(back.nan_to_num(-1.0).numpy(), _soft._pull(t, w_ref, shape[1], reverse).nan_to_num(-1.0).numpy(), atol=1e-12)
    # the loops write only their own buffers: inputs untouched (NaN compared as NaN)
    assert torch.equal(x.isnan(), x_before.isnan()) and torch.equal(x.nan_to_num(0.0), x_before.nan_to_num(0.0))
    assert torch.equal(t, t_before)


def test_torch_func_transforms_of_soft_sort():
    # torch.func wraps tensors, which the in-place loops cannot take: they hand back to the generic ones
    torch = pytest.importorskip("torch")
    x = torch.randn(3, 11, dtype=torch.float64)
    w = torch.randn(3, 11, dtype=torch.float64)
    jac = torch.func.jacrev(lambda v: ds.soft_sort(v, temperature=0.5))(x[0])
    ref = torch.autograd.functional.jacobian(lambda v: ds.soft_sort(v, temperature=0.5), x[0])
    _close(jac.numpy(), ref.numpy(), atol=1e-12)
    _close(jac.sum(0).numpy(), np.ones(11), atol=1e-12)  # a soft permutation: columns sum to 1
    g = torch.func.grad(lambda v: (w * ds.soft_sort(v, temperature=0.5)).sum())(x)
    _close(g.sum(1).numpy(), w.sum(1).numpy(), atol=1e-12)


# ----------------------------------------------------------------------- errors


def test_errors_raised_before_work(backend):
    x = backend.asarray(np.random.RandomState(13).randn(6))
    with pytest.raises(ValueError, match="k must"):
        ds.soft_topk(x, 0)
    with pytest.raises(ValueError, match="k must"):
        ds.soft_topk(x, 7)
    with pytest.raises(ValueError, match="relaxation"):
        ds.soft_sort(x, relaxation="bogus")
    with pytest.raises(ValueError, match="temperature"):
        ds.soft_rank(x, temperature=0.0)
    with pytest.raises(ValueError, match="axis"):
        ds.soft_sort(x, axis=1)
    with pytest.raises(TypeError, match="floating"):
        ds.soft_sort(backend.asarray(np.arange(6)))
