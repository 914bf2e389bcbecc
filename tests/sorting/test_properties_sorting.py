"""Property-based tests (hypothesis) of the soft-sorting family's invariants, on every backend.

Each property is derived from the math of :mod:`diffopt.sorting._relax` and the
docstrings of :mod:`diffopt.sorting._modern`, not from the code's output:

* every relaxed compare-and-swap is the exact one moved by at most ``T * s``
  (``s = sup |shift|`` of the relaxation) and the exact one is 1-Lipschitz in
  the sup norm, so ``|soft_sort(x) - sort(x)| <= depth * T * s`` for a bitonic
  network of ``depth`` layers: the output is sorted up to that bound and
  converges to the sorted row as ``T -> 0``;
* each comparator keeps ``a + b``: rows keep their sum, and the gradient of a
  row's sum is all ones; the mixing relaxations keep each row in ``[min, max]``;
* the permutation matrix is a product of doubly stochastic 2x2 mixings: ``P`` is
  doubly stochastic, ranks are ``sum_j j P[j, i]`` in ``[0, n - 1]`` summing to
  ``n (n - 1) / 2``, top-k weights are in ``[0, 1]`` summing to ``k``.

Examples: see ``tests/_properties.py``.
"""

import math

import autoray as ar
import numpy as np
import pytest

from _properties import EPS, HALF, check, dtypes, st
from diffopt.sorting import soft_permutation, soft_rank, soft_sort, soft_topk

MIXING = ("logistic", "cauchy", "reciprocal", "optimal")
RELAXATIONS = ("logsumexp",) + MIXING
# sup over v >= 0 of |shift(v)| (see diffopt.sorting._relax): log 2 at v = 0 for logsumexp;
# v * sigmoid(-v) peaks below 0.2785; v * arctan(1/v) / pi -> 1/pi; v / (2 (1 + v)) -> 1/2; 1/16.
SHIFT_SUP = {"logsumexp": math.log(2.0), "logistic": 0.2785, "cauchy": 1 / math.pi, "reciprocal": 0.5,
             "optimal": 1 / 16}
# the largest mixing weight of the smaller input into ``hi`` at gap ``v`` (decreasing in v)
LEAK = {"logsumexp": lambda v: 1 / (1 + math.exp(min(v, 700.0))),
        "logistic": lambda v: 1 / (1 + math.exp(min(v, 700.0))),
        "cauchy": lambda v: math.atan2(1.0, v) / math.pi,
        "reciprocal": lambda v: 0.5 / (1 + v),
        "optimal": lambda v: 0.5 - v if v <= 0.25 else 1 / (16 * v)}


def depth(n):
    """Layers of the bitonic network on ``n`` entries padded to a power of two."""
    k = max(n - 1, 0).bit_length()
    return k * (k + 1) // 2


@st.composite
def rows(draw, dtype, max_n=9, min_n=1, batch=(1, 3), scales=None):
    """``(B, n)`` float64 data: small integers (ties), fractions, at a magnitude the dtype holds."""
    n = draw(st.integers(min_n, max_n))
    b = draw(st.integers(*batch))
    scale = draw(st.sampled_from(scales or ([1.0, 30.0] if dtype in HALF else [1.0, 1e3, 1e6])))
    entry = st.one_of(st.integers(-4, 4).map(float), st.floats(-4.0, 4.0, allow_nan=False, width=16))
    vals = draw(st.lists(st.lists(entry, min_size=n, max_size=n), min_size=b, max_size=b))
    return np.asarray(vals, dtype=np.float64) * scale


def rounded(x, dtype):
    """``x`` as the backend will hold it (rounded to ``dtype``), in float64."""
    if dtype == "bfloat16":  # the top 16 bits of float32, rounded to nearest even (finite x)
        bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.astype(np.uint32).view(np.float32).astype(np.float64)
    return x.astype(dtype).astype(np.float64)


def fp_tol(dtype, mag, n):
    """Round-off allowance: the network runs in float32 for half input, then rounds once."""
    work = EPS["float32"] if dtype in HALF else EPS[dtype]
    return 16 * (depth(n) + 1) * work * mag + (2 * EPS[dtype] * mag if dtype in HALF else 0.0)


def run(backend, dtype, fn, x):
    """``fn(x as a backend array of dtype)`` as float64 NumPy (JAX's float64 scoped)."""
    with backend.float64():
        return np.asarray(backend.to_numpy(fn(backend.asarray(x, dtype))), dtype=np.float64)


# ------------------------------------------------------------------------------------------ soft_sort


def test_soft_sort_is_within_the_network_bound_of_the_sort(backend):
    def body(data, relaxation, temperature, descending):
        dtype = data.draw(st.sampled_from(dtypes(backend)), label="dtype")
        x = rounded(data.draw(rows(dtype), label="x"), dtype)
        n = x.shape[-1]
        y = run(backend, dtype, lambda a: soft_sort(a, temperature=temperature, descending=descending,
                                                    relaxation=relaxation), x)
        hard = np.sort(x, axis=-1)[:, ::-1] if descending else np.sort(x, axis=-1)
        mag = np.abs(x).max() + temperature * depth(n)
        bound = depth(n) * temperature * SHIFT_SUP[relaxation] + fp_tol(dtype, mag, n)
        assert y.shape == x.shape
        assert np.all(np.abs(y - hard) <= bound), (y, hard, bound)
        # sorted up to twice the bound, and every compare-and-swap keeps a + b: rows keep their sum
        step = -np.diff(y, axis=-1) if descending else np.diff(y, axis=-1)
        assert np.all(step >= -2 * bound)
        assert np.allclose(y.sum(-1), x.sum(-1), rtol=0, atol=n * fp_tol(dtype, mag, n) + n * EPS[dtype] * mag)
        if relaxation in MIXING:  # convex combinations: inside the row's range
            slack = fp_tol(dtype, mag, n)
            assert np.all(y >= x.min(-1, keepdims=True) - slack) and np.all(y <= x.max(-1, keepdims=True) + slack)

    check(backend, 25, dict(data=st.data(), relaxation=st.sampled_from(RELAXATIONS),
        temperature=st.sampled_from([1e-3, 0.3, 1.0, 10.0]), descending=st.booleans()), body)


def test_soft_sort_converges_to_the_sort_as_temperature_vanishes(backend):
    def body(data, relaxation):
        x = data.draw(rows("float64"), label="x")
        hard = np.sort(x, axis=-1)
        errors = [np.abs(run(backend, "float32", lambda a: soft_sort(a, temperature=t, relaxation=relaxation), x)
                         - rounded(hard, "float32")).max() for t in (1.0, 1e-2, 1e-4)]
        mag = np.abs(x).max()
        assert errors[-1] <= depth(x.shape[-1]) * 1e-4 * SHIFT_SUP[relaxation] + fp_tol("float32", mag + 1, x.shape[-1])
        assert errors[-1] <= errors[0] + fp_tol("float32", mag + 1, x.shape[-1])

    check(backend, 12, dict(data=st.data(), relaxation=st.sampled_from(RELAXATIONS)), body)


def test_soft_sort_along_any_axis_is_the_last_axis_sort_moved(backend):
    def body(data, relaxation):
        shape = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), label="shape")
        axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
        x = data.draw(st.lists(st.integers(-3, 3), min_size=math.prod(shape), max_size=math.prod(shape)), label="x")
        x = np.asarray(x, dtype=np.float64).reshape(shape) / 2
        y = run(backend, "float32", lambda a: soft_sort(a, axis=axis, relaxation=relaxation, temperature=0.5), x)
        moved = np.moveaxis(x, axis, -1)
        ref = run(backend, "float32", lambda a: soft_sort(a, relaxation=relaxation, temperature=0.5),
                  moved.reshape(-1, shape[axis]))
        assert np.allclose(y, np.moveaxis(ref.reshape(moved.shape), -1, axis), atol=1e-5)
        if relaxation is None:
            assert np.array_equal(y, np.sort(x, axis=axis))

    check(backend, 25, dict(data=st.data(), relaxation=st.sampled_from(RELAXATIONS + (None,))), body)


def test_soft_sort_gradient_is_finite_and_its_row_sum_gradient_is_one(grad_backend):
    def body(data, relaxation):
        backend = grad_backend
        x = data.draw(rows("float64", max_n=7, scales=[0.1, 1.0, 30.0]), label="x")
        w = data.draw(st.lists(st.floats(-1, 1, width=16), min_size=x.shape[-1], max_size=x.shape[-1]), label="w")
        w = np.asarray(w)
        with backend.float64():
            xa = backend.asarray(x, "float64")
            wa = backend.asarray(w, "float64")
            g_sum = backend.to_numpy(backend.grad(lambda a: ar.do("sum", soft_sort(a, relaxation=relaxation)), xa))
            g_w = backend.to_numpy(backend.grad(lambda a: ar.do("sum", soft_sort(a, relaxation=relaxation) * wa), xa))
        assert np.allclose(g_sum, 1.0, atol=1e-9)  # sum(soft_sort(x)) == sum(x)
        assert np.all(np.isfinite(g_w))
        # the directional derivative agrees with central differences of the forward pass
        v = np.cos(np.arange(x.size).reshape(x.shape))
        h = 1e-6  # well below the temperature (1), where the curvature lives

        def f(z):
            return float((run(backend, "float64", lambda a: soft_sort(a, relaxation=relaxation), z) * w).sum())

        fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
        assert abs(fd - float((g_w * v).sum())) <= 1e-5 * (1 + np.abs(g_w).sum()) + 1e-15 * x.size * np.abs(x).max() / h

    check(grad_backend, 12, dict(data=st.data(), relaxation=st.sampled_from(RELAXATIONS)), body)


def test_learnable_temperature_gradient_agrees_with_finite_differences(grad_backend):
    backend = grad_backend
    ops = {"soft_sort": soft_sort, "soft_rank": soft_rank, "soft_topk": lambda a, **kw: soft_topk(a, 1, **kw)}

    def body(data, relaxation, name, t0):
        # n >= 2: with n == 1 torch and TensorFlow cut the temperature from the graph (issue 30, see below)
        x = data.draw(rows("float64", max_n=7, min_n=2, scales=[1.0]), label="x")
        w = np.cos(np.arange(x.size)).reshape(x.shape)
        with backend.float64():
            xa, wa = backend.asarray(x, "float64"), backend.asarray(w, "float64")

            def f(t):
                return ar.do("sum", ops[name](xa, temperature=t, relaxation=relaxation) * wa)

            g = float(backend.to_numpy(backend.grad(f, backend.asarray(np.array(t0), "float64"))))
            h = 1e-6
            fd = (float(backend.to_numpy(f(t0 + h))) - float(backend.to_numpy(f(t0 - h)))) / (2 * h)
        assert np.isfinite(g) and abs(g - fd) <= 1e-5 * (1 + abs(fd))

    check(backend, 12, dict(data=st.data(), relaxation=st.sampled_from(RELAXATIONS), name=st.sampled_from(sorted(ops)),
                            t0=st.sampled_from([0.3, 1.0, 3.0])), body)


# --------------------------------------------------------------------- permutations, ranks and top-k


def test_permutation_is_doubly_stochastic_and_ranks_and_topk_are_its_transports(backend):
    def body(data, relaxation, temperature, descending):
        dtype = data.draw(st.sampled_from(dtypes(backend)), label="dtype")
        x = rounded(data.draw(rows(dtype, max_n=8), label="x"), dtype)
        n = x.shape[-1]
        k = data.draw(st.integers(1, n), label="k")
        kw = dict(temperature=temperature, relaxation=relaxation)
        p = run(backend, dtype, lambda a: soft_permutation(a, descending=descending, **kw), x)
        r = run(backend, dtype, lambda a: soft_rank(a, descending=descending, **kw), x)
        top = run(backend, dtype, lambda a: soft_topk(a, k, largest=descending, **kw), x)
        tol = 64 * (depth(n) + 1) * (EPS["float32"] if dtype in HALF else EPS[dtype]) * n + 2 * EPS[dtype] * n
        assert p.shape == x.shape + (n,) and r.shape == x.shape and top.shape == x.shape
        assert np.all(p >= -tol) and np.all(p <= 1 + tol)
        assert np.allclose(p.sum(-1), 1, atol=tol) and np.allclose(p.sum(-2), 1, atol=tol)
        assert np.all(r >= -tol * n) and np.all(r <= n - 1 + tol * n)
        assert np.allclose(r.sum(-1), n * (n - 1) / 2, atol=tol * n * n)
        assert np.allclose(r, np.einsum("j,bji->bi", np.arange(n), p), atol=tol * n * n)
        assert np.all(top >= -tol) and np.all(top <= 1 + tol)
        assert np.allclose(top.sum(-1), k, atol=tol * n)
        assert np.allclose(top, p[:, :k, :].sum(-2), atol=tol * n)  # largest=True ranks descending
        if relaxation in MIXING and dtype not in HALF:  # P @ x is the soft sort (mixings)
            y = run(backend, dtype, lambda a: soft_sort(a, descending=descending, **kw), x)
            mag = np.abs(x).max() + 1
            assert np.allclose(np.einsum("bji,bi->bj", p, x), y, atol=n * fp_tol(dtype, mag, n) * 4)
        if relaxation is None:  # exact: a permutation that sorts x
            assert np.array_equal(p, np.round(p))
            assert np.array_equal(np.sort(r, -1), np.broadcast_to(np.arange(n), r.shape))
            order = np.argsort(r, axis=-1)
            s = np.take_along_axis(x, order, -1)
            assert np.all((np.diff(s, axis=-1) <= 0) if descending else (np.diff(s, axis=-1) >= 0))

    check(backend, 25, dict(data=st.data(), relaxation=st.sampled_from(RELAXATIONS + (None,)),
        temperature=st.sampled_from([0.01, 1.0, 5.0]), descending=st.booleans()), body)


def test_ranks_and_topk_converge_to_the_hard_ones_as_temperature_vanishes(backend):
    def body(data, relaxation):
        n = data.draw(st.integers(2, 8), label="n")
        x = np.asarray(data.draw(st.permutations(range(n)), label="x"), dtype=np.float64)[None] * 2.0 - 3.0
        k = data.draw(st.integers(1, n), label="k")
        t = 1e-3  # gaps >= 2, so v >= 2000 at every comparator of the exact network's values
        r = run(backend, "float64", lambda a: soft_rank(a, temperature=t, relaxation=relaxation), x)
        top = run(backend, "float64", lambda a: soft_topk(a, k, temperature=t, relaxation=relaxation), x)
        hard_rank = np.argsort(np.argsort(x, axis=-1), axis=-1)
        # each of depth(n) layers moves at most 2 * leak of a column's mass, each unit of mass by <= n - 1 ranks
        slack = 2 * depth(n) * LEAK[relaxation](2.0 / t - 2 * depth(n) * SHIFT_SUP[relaxation]) + 1e-6
        assert np.abs(r - hard_rank).max() <= (n - 1) * slack
        assert np.abs(top - (hard_rank >= n - k)).max() <= slack

    check(backend, 12, dict(data=st.data(), relaxation=st.sampled_from(RELAXATIONS)), body)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
@pytest.mark.parametrize("position", ["first", "last", "middle"])
def test_infinities_are_ranked_exactly_on_power_of_two_rows(backend, n, position):
    _check_infinity(backend, n, position)


@pytest.mark.parametrize("n", [3, 5, 6, 7])
@pytest.mark.parametrize("position", ["first", "middle"])
def test_infinities_are_ranked_exactly_on_other_rows(backend, n, position):
    _check_infinity(backend, n, position)


def _check_infinity(backend, n, position):
    x = np.arange(1.0, n + 1.0)
    i = {"first": 0, "last": n - 1, "middle": n // 2}[position]
    x[i] = np.inf  # the largest: rank n - 1, in the top-1, last row of P
    r = run(backend, "float32", soft_rank, x[None])[0]
    assert np.isclose(r[i], n - 1, atol=1e-5 * n) and np.isclose(r.sum(), n * (n - 1) / 2, atol=1e-4 * n)
    assert np.isclose(run(backend, "float32", lambda a: soft_topk(a, 1), x[None])[0, i], 1.0)
    p = run(backend, "float32", soft_permutation, x[None])[0]
    assert np.isclose(p[n - 1, i], 1.0, atol=1e-6) and np.allclose(p.sum(0), 1, atol=1e-5)


def test_soft_sort_sorts_infinities_exactly(backend):
    def body(data, relaxation, descending):
        x = data.draw(rows("float32", max_n=9, scales=[1.0]), label="x")
        infs = data.draw(st.lists(st.sampled_from([np.inf, -np.inf, None]), min_size=x.size, max_size=x.size),
                         label="infinities")
        keep = np.reshape([v is None for v in infs], x.shape)
        x = np.where(keep, x, np.reshape([0.0 if v is None else v for v in infs], x.shape))
        y = run(backend, "float32", lambda a: soft_sort(a, descending=descending, relaxation=relaxation), x)
        hard = np.sort(x, axis=-1)[:, ::-1] if descending else np.sort(x, axis=-1)
        n = x.shape[-1]
        finite = np.isfinite(hard)
        assert np.array_equal(np.isfinite(y), finite) and np.array_equal(y[~finite], hard[~finite])
        bound = depth(n) * SHIFT_SUP[relaxation] + fp_tol("float32", np.abs(x[np.isfinite(x)]).max(initial=0) + 9, n)
        assert np.all(np.abs(y[finite] - hard[finite]) <= bound)
        assert np.allclose(np.where(finite, y, 0).sum(-1), np.where(finite, hard, 0).sum(-1), atol=n * bound / 10)

    check(backend, 25, dict(data=st.data(), relaxation=st.sampled_from(RELAXATIONS), descending=st.booleans()), body)


# ------------------------------------------------------------------------------------------ errors


BAD_AXIS = st.one_of(st.integers(2, 5), st.integers(-6, -3), st.just(True), st.just(0.0), st.just("0"))
BAD_T = st.one_of(st.floats(max_value=0.0), st.just(float("inf")), st.just(float("nan")))


def test_bad_arguments_raise_errors_naming_them(backend):
    def body(axis, bad_t, k, name):
        fn = {"soft_sort": soft_sort, "soft_rank": soft_rank, "soft_permutation": soft_permutation,
              "soft_topk": lambda a, **kw: soft_topk(a, 2, **kw)}[name]
        x = backend.asarray(np.zeros((2, 3)), "float32")
        with pytest.raises(ValueError, match="axis"):
            fn(x, axis=axis)
        with pytest.raises(ValueError, match="temperature"):
            fn(x, temperature=bad_t)
        with pytest.raises(ValueError, match="relaxation"):
            fn(x, relaxation="bitonic")
        with pytest.raises(TypeError, match="temperature"):
            fn(x, temperature="1")
        with pytest.raises(TypeError, match="x"):
            fn(backend.asarray(np.zeros((2, 3), dtype=np.int32)))
        with pytest.raises(ValueError, match="k"):
            soft_topk(x, k)

    check(backend, 12, dict(axis=BAD_AXIS, bad_t=BAD_T,
        k=st.one_of(st.integers(max_value=0), st.integers(4, 99), st.just(2.0)),
        name=st.sampled_from(["soft_sort", "soft_rank", "soft_permutation", "soft_topk"])), body)


# ----------------------------------------------- gradients where the op is (locally) constant


FLAT = {"soft_rank": soft_rank, "soft_topk": lambda a, **kw: soft_topk(a, 1, **kw),
        "soft_permutation": lambda a, **kw: soft_permutation(a, **kw)[..., 0, :]}
@pytest.mark.parametrize("name", sorted(FLAT))
@pytest.mark.parametrize("n, relaxation", [(1, "logsumexp"), (3, None)])
def test_piecewise_constant_cases_have_a_zero_gradient(grad_backend, name, n, relaxation):
    x = grad_backend.asarray(np.linspace(-1.0, 1.0, n)[None], "float32")
    w = grad_backend.asarray(1.0 + 0.5 * np.arange(n, dtype=np.float32))  # a weighted sum: not constant in general
    g = grad_backend.grad(lambda a: ar.do("sum", FLAT[name](a, relaxation=relaxation) * w), x)
    assert g is not None
    assert np.array_equal(grad_backend.to_numpy(g), np.zeros((1, n), dtype=np.float32))


@pytest.mark.parametrize("name", sorted(FLAT))
def test_a_one_entry_row_has_a_zero_temperature_gradient(grad_backend, name):
    x = grad_backend.asarray(np.array([[0.5], [2.0]]), "float32")
    g = grad_backend.grad(lambda t: ar.do("sum", FLAT[name](x, temperature=t, relaxation="logsumexp")),
                          grad_backend.asarray(np.array(0.7), "float32"))
    assert g is not None and float(grad_backend.to_numpy(g)) == 0.0


@pytest.mark.parametrize("n, relaxation", [(1, "logsumexp"), (3, None)])
def test_soft_sort_piecewise_linear_cases_have_the_permutation_gradient(grad_backend, n, relaxation):
    x = np.array([[0.5, -1.0, 2.0][:n]])
    w = np.arange(1.0, n + 1.0)
    wa = grad_backend.asarray(w, "float32")
    g = grad_backend.grad(lambda a: ar.do("sum", soft_sort(a, relaxation=relaxation) * wa),
                          grad_backend.asarray(x, "float32"))
    expect = w[np.argsort(np.argsort(x[0]))][None]  # d/dx_i of sum_j w_j x_(j) is w at x_i's rank
    assert np.array_equal(grad_backend.to_numpy(g), expect.astype(np.float32))


@pytest.mark.parametrize("name", ["soft_sort", "soft_rank", "soft_topk", "soft_permutation"])
def test_a_numpy_scalar_temperature_is_a_number(backend, name):
    fn = {"soft_sort": soft_sort, "soft_rank": soft_rank, "soft_topk": lambda a, **kw: soft_topk(a, 2, **kw),
          "soft_permutation": soft_permutation}[name]
    x = backend.asarray(np.array([[3.0, 1.0, 2.0, 0.0]]), "float32")
    got = backend.to_numpy(fn(x, temperature=np.float64(0.5)))
    assert np.allclose(got, backend.to_numpy(fn(x, temperature=0.5)), atol=1e-6)  # the same up to round-off
