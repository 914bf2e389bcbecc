"""Soft sort and rank by projection onto the permutahedron (issue 27, items 1 and 2).

References, all independent of the code under test:

* the projection itself, solved by SciPy (SLSQP) over the permutahedron written as its
  ``2^n - 2`` inequalities (n <= 4), for the L2 and the KL projections;
* the isotonic problems by their min-max formula ``v_i = min_{k<=i} max_{l>=i} m(k..l)``
  (``m`` the block minimiser: a mean for L2, ``logsumexp(a) - logsumexp(b)`` for KL), O(n^3);
* gradients (inputs and strength) by central finite differences of the NumPy forward, float64.
"""

import itertools

import autoray as ar
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp

import diffopt.sorting as ds
from diffopt.sorting._pav import pav, pav_vjp

RNG = np.random.default_rng(27)
X = RNG.standard_normal((3, 6)) * 1.5
W = RNG.standard_normal((3, 6))
H = 1e-6

OPS = {"sort": ds.projection_sort, "rank": ds.projection_rank}
CASES = list(itertools.product(("sort", "rank"), ("l2", "kl"), (False, True)))


def _run(op, x, strength, reg, descending, axis=-1):
    return OPS[op](x, axis, regularization_strength=strength, regularization=reg, descending=descending)


# ------------------------------------------------------------------ references


def _permutahedron(w):
    """SLSQP constraints of the permutahedron of ``w``: one equality, every proper subset bounded."""
    n, top = len(w), np.cumsum(np.sort(w)[::-1])
    cons = [{"type": "eq", "fun": lambda m: np.sum(m) - top[-1]}]
    for size in range(1, n):
        for subset in itertools.combinations(range(n), size):
            cons.append({"type": "ineq", "fun": lambda m, s=list(subset), b=top[size - 1]: b - np.sum(m[s])})
    return cons


def _project(z, w, kl):
    """argmin over the permutahedron of ``w`` of 1/2 ||m - z||^2 (L2) or KL(m, exp z) (KL)."""
    if kl:
        fun = lambda m: np.sum(m * np.log(m) - m * (1.0 + z))
        jac = lambda m: np.log(m) - z
        start, bounds = np.full(len(z), np.mean(w)), [(1e-12, None)] * len(z)
    else:
        fun = lambda m: 0.5 * np.sum((m - z) ** 2)
        jac = lambda m: m - z
        start, bounds = np.full(len(z), np.mean(w)), None
    cons = _permutahedron(w)
    res = minimize(fun, start, jac=jac, constraints=cons, bounds=bounds, method="SLSQP",
                   options={"ftol": 1e-13, "maxiter": 500})
    # SLSQP may stop at the optimum with "positive directional derivative": check feasibility instead
    assert all(c["fun"](res.x) > -1e-8 if c["type"] == "ineq" else abs(c["fun"](res.x)) < 1e-8 for c in cons)
    return res.x


def _reference(op, x, strength, reg, descending):
    """The op on one row by the projection's definition (Blondel et al. 2020)."""
    n, kl = len(x), reg == "kl"
    rho = np.arange(n, 0, -1.0)
    if op == "rank":
        z = (-x if descending else x) / strength
        return _project(z, rho, kl) - 1.0  # KL: exp of the log-space projection is the KL projection
    sign = 1.0 if descending else -1.0
    s = np.sort(sign * x)[::-1]
    if kl:  # log of the KL projection of exp(rho / eps) onto the permutahedron of exp(s)
        return sign * np.log(_project(rho / strength, np.exp(s), True))
    return sign * _project(rho / strength, s, False)


def _block_value(a, b, kl):
    return logsumexp(a) - logsumexp(b) if kl else np.mean(a - b)


def _minmax_isotonic(a, b, kl):
    n = len(a)
    return np.array([min(max(_block_value(a[k:l + 1], b[k:l + 1], kl) for l in range(i, n)) for k in range(i + 1))
                     for i in range(n)])


# ------------------------------------------------------------------ the isotonic solver


@pytest.mark.parametrize("kl", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_pav_matches_min_max_formula(kl, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((3, 9)) * 2.0 - np.arange(9.0) * 0.4 * seed  # more pooled for small seeds
    b = np.sort(rng.standard_normal((3, 9)))[:, ::-1]
    v, first = pav(a, b, kl)
    for r in range(3):
        np.testing.assert_allclose(v[r], _minmax_isotonic(a[r], b[r], kl), rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(v, axis=1) <= 1e-12)
    assert np.all(first[:, 0] == 1.0)
    assert 0 < first[:, 1:].sum() < first[:, 1:].size  # some pooled, some not: both branches ran


@pytest.mark.parametrize("kl", [False, True])
def test_pav_vjp_matches_finite_differences(kl):
    rng = np.random.default_rng(3)
    a, b, g = rng.standard_normal((3, 2, 7))
    v, first = pav(a, b, kl)
    ga, gb = pav_vjp(g, a, b, first, kl)
    for x, got, which in ((a, ga, 0), (b, gb, 1)):
        fd = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            e = np.zeros_like(x)
            e[idx] = H
            args_p, args_m = [a, b], [a, b]
            args_p[which], args_m[which] = x + e, x - e
            fd[idx] = np.sum(g * (pav(*args_p, kl)[0] - pav(*args_m, kl)[0])) / (2 * H)
        np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-7)


def test_numba_kernel_equals_python_loop():
    from diffopt._ops import namespace
    from diffopt.sorting._kernels import kernel

    pytest.importorskip("numba")
    a, b = np.random.default_rng(5).standard_normal((2, 4, 40))
    for kl in (False, True):
        out = kernel("sorting_pav", namespace("numpy"))(a, b, kl)
        if out is None:
            pytest.skip("numba switched off (DIFFOPT_NUMBA)")
        np.testing.assert_array_equal(out[0], pav(a, b, kl)[0])
        np.testing.assert_array_equal(out[1], pav(a, b, kl)[1])


# ------------------------------------------------------------------ values


@pytest.mark.parametrize("op, reg, descending", CASES)
@pytest.mark.parametrize("strength", [0.3, 1.0, 3.0])
def test_values_match_projection_by_scipy(op, reg, descending, strength):
    x = np.array([[0.4, -0.3, 1.1, 0.2], [2.0, -1.0, 0.5, 0.45]])
    got = _run(op, x, strength, reg, descending)
    for r in range(len(x)):
        np.testing.assert_allclose(got[r], _reference(op, x[r], strength, reg, descending), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op, reg, descending", CASES)
def test_every_backend_gives_the_numpy_values(backend, op, reg, descending):
    want = _run(op, X, 0.8, reg, descending)
    with backend.float64():
        got = backend.to_numpy(_run(op, backend.asarray(X, "float64"), 0.8, reg, descending))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op, reg, descending", CASES)
def test_compiled_equals_eager(backend, op, reg, descending):
    if backend.name not in ("jax", "tensorflow"):
        pytest.skip("jax.jit / tf.function")
    xb = backend.asarray(X, "float32")
    eager = backend.to_numpy(_run(op, xb, 0.8, reg, descending))
    compiled = backend.to_numpy(backend.jit(lambda x: _run(op, x, 0.8, reg, descending))(xb))
    np.testing.assert_allclose(compiled, eager, rtol=1e-6, atol=1e-6)


def test_jax_vmap_equals_batch():
    jax = pytest.importorskip("jax")
    x = jax.numpy.asarray(X, "float32")
    for op in OPS:
        got = jax.vmap(lambda r: _run(op, r, 0.8, "l2", False))(x)
        np.testing.assert_allclose(np.asarray(got), np.asarray(_run(op, x, 0.8, "l2", False)), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_kept(backend, dtype):
    with backend.float64():
        backend.require(dtype)
        xb = backend.asarray(X, dtype)
        for op, reg in itertools.product(OPS, ("l2", "kl")):
            out = _run(op, xb, 0.5, reg, False)
            assert ar.get_dtype_name(out) == dtype
            np.testing.assert_allclose(backend.to_numpy(out), _run(op, X, 0.5, reg, False),
                                       rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5)


def test_strength_zero_is_exact():
    x = np.array([[0.3, -1.0, 2.0, 0.5, 0.3]])
    np.testing.assert_array_equal(ds.projection_sort(x, regularization_strength=0), np.sort(x))
    np.testing.assert_array_equal(ds.projection_sort(x, regularization_strength=0, descending=True), np.sort(x)[:, ::-1])
    np.testing.assert_array_equal(ds.projection_rank(x[:, :4], regularization_strength=0), [[1.0, 0.0, 3.0, 2.0]])
    np.testing.assert_array_equal(ds.projection_rank(x[:, :4], regularization_strength=0, descending=True),
                                  [[2.0, 3.0, 0.0, 1.0]])


@pytest.mark.parametrize("op", ["sort", "rank"])
def test_small_strength_tends_to_exact(op):
    want = np.sort(X) if op == "sort" else np.argsort(np.argsort(X)).astype(float)
    np.testing.assert_allclose(_run(op, X, 1e-4, "l2", False), want, atol=1e-9)
    np.testing.assert_allclose(_run(op, X, 1e-4, "kl", False), want, atol=1e-6)


def test_any_axis_and_batch_shape():
    x = RNG.standard_normal((2, 5, 3))
    for op, reg in itertools.product(OPS, ("l2", "kl")):
        got = _run(op, x, 0.7, reg, True, axis=1)
        want = np.moveaxis(_run(op, np.moveaxis(x, 1, -1).reshape(6, 5), 0.7, reg, True).reshape(2, 3, 5), -1, 1)
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_l2_keeps_row_sums_and_ranks_sum():
    s, r = ds.projection_sort(X, regularization_strength=2.0), ds.projection_rank(X, regularization_strength=2.0)
    np.testing.assert_allclose(s.sum(axis=1), X.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(r.sum(axis=1), 15.0, rtol=1e-12)  # n (n - 1) / 2 for n = 6


def test_nan_makes_its_row_nan(backend):
    x = X.copy()
    x[1, 2] = np.nan
    for op, reg in itertools.product(OPS, ("l2", "kl")):
        out = backend.to_numpy(_run(op, backend.asarray(x, "float32"), 0.5, reg, False))
        assert np.isnan(out[1]).all() and not np.isnan(out[[0, 2]]).any()


def test_n_equals_one_and_empty():
    x = np.array([[1.5], [-2.0]])
    np.testing.assert_array_equal(ds.projection_sort(x, regularization_strength=1.0), x)
    np.testing.assert_array_equal(ds.projection_rank(x, regularization_strength=1.0, regularization="kl"), [[0.0], [0.0]])
    assert ds.projection_rank(np.zeros((2, 0))).shape == (2, 0)


def test_ties_get_equal_ranks_and_exact_gradients(grad_backend):
    """Tied inputs are pooled: equal ranks, and the ranks are differentiable there (the gradient
    is the finite difference, and swapping the tied inputs' cotangents swaps their gradients)."""
    b = grad_backend
    x = np.array([[0.5, 1.0, 0.5, -1.0, 1.0]])
    c = np.array([[1.0, 2.0, -1.0, 0.5, 3.0]])
    swapped = c[:, [2, 4, 0, 3, 1]]
    for reg in ("l2", "kl"):
        f = lambda v, w: np.sum(ds.projection_rank(v, regularization_strength=0.5, regularization=reg) * w)
        fd = np.array([[(f(x + e, c) - f(x - e, c)) / (2 * H) for e in np.eye(5)[:, None, :] * H]])
        with b.float64():
            r = b.to_numpy(ds.projection_rank(b.asarray(x, "float64"), regularization_strength=0.1, regularization=reg))
            grad = lambda w: b.to_numpy(b.grad(lambda v: ar.do("sum", ds.projection_rank(
                v, regularization_strength=0.5, regularization=reg) * b.asarray(w, "float64")), b.asarray(x, "float64")))
            g, gs = grad(c), grad(swapped)
        assert r[0, 0] == r[0, 2] and r[0, 1] == r[0, 4]
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(gs, g[:, [2, 4, 0, 3, 1]], rtol=1e-12, atol=1e-12)


def test_kl_is_stable_for_large_inputs(grad_backend):
    """|x / strength| far past 709 (exp overflows): torchsort's KL gradient is inf/NaN there (torchsort #63)."""
    b = grad_backend
    x = np.array([[800.0, -900.0, 1000.0, 0.0]])
    with b.float64():
        xb = b.asarray(x, "float64")
        r = b.to_numpy(ds.projection_rank(xb, regularization_strength=1.0, regularization="kl"))
        g = b.to_numpy(b.grad(lambda v: ar.do("sum", ds.projection_rank(
            v, regularization_strength=1.0, regularization="kl") * b.asarray(W[:1, :4], "float64")), xb))
    np.testing.assert_allclose(r, [[2.0, 0.0, 3.0, 1.0]], atol=1e-12)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, 0.0, atol=1e-12)  # nothing pooled: locally constant ranks


@pytest.mark.parametrize("bad, error", [
    (dict(regularization="l1"), ValueError), (dict(regularization_strength=-1.0), ValueError),
    (dict(axis=2), ValueError), (dict(x=np.arange(3)), TypeError)])
def test_bad_arguments(bad, error):
    args = dict(x=X, axis=-1, regularization_strength=1.0, regularization="l2")
    args.update(bad)
    x, axis = args.pop("x"), args.pop("axis")
    for op in OPS.values():
        with pytest.raises(error, match=next(iter(bad))):
            op(x, axis, **args)


# ------------------------------------------------------------------ gradients


def _fd_input(op, reg, descending, strength):
    g = np.zeros_like(X)
    for idx in np.ndindex(X.shape):
        e = np.zeros_like(X)
        e[idx] = H
        g[idx] = np.sum((_run(op, X + e, strength, reg, descending) - _run(op, X - e, strength, reg, descending)) * W) / (2 * H)
    return g


@pytest.mark.parametrize("op, reg, descending", CASES)
def test_input_gradient_matches_finite_differences(grad_backend, op, reg, descending):
    b = grad_backend
    want = _fd_input(op, reg, descending, 0.9)
    with b.float64():
        wb = b.asarray(W, "float64")
        got = b.to_numpy(b.grad(lambda v: ar.do("sum", _run(op, v, 0.9, reg, descending) * wb), b.asarray(X, "float64")))
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op, reg, descending", CASES)
def test_strength_gradient_matches_finite_differences(grad_backend, op, reg, descending):
    b = grad_backend
    t0 = 0.9
    want = np.sum((_run(op, X, t0 + H, reg, descending) - _run(op, X, t0 - H, reg, descending)) * W) / (2 * H)
    with b.float64():
        xb, wb = b.asarray(X, "float64"), b.asarray(W, "float64")
        got = float(b.to_numpy(b.grad(lambda t: ar.do("sum", _run(op, xb, t, reg, descending) * wb),
                                      b.asarray(np.array(t0), "float64"))))
    assert abs(want) > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_jax_grad_under_jit_and_vmap():
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        x, w = jax.numpy.asarray(X), jax.numpy.asarray(W)
        f = lambda v, c: (ds.projection_rank(v, regularization_strength=0.9, regularization="kl") * c).sum()
        eager = np.asarray(jax.grad(f)(x, w))
        np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(f))(x, w)), eager, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(jax.vmap(jax.grad(f))(x[:, None], w[:, None]))[:, 0], eager, rtol=1e-12)
    np.testing.assert_allclose(eager, _fd_input("rank", "kl", False, 0.9), rtol=1e-5, atol=1e-6)


def test_at_most_five_lookups_per_call(backend):
    from references import LIMIT, LookupCounter as _Counter

    for n in (8, 256):
        x = backend.asarray(np.random.default_rng(n).normal(size=(2, n)), "float32")
        for op, reg in itertools.product(OPS, ("l2", "kl")):
            calls = _Counter().count(lambda: _run(op, x, 0.5, reg, False))
            assert calls <= LIMIT, (op, reg, n, calls)


def test_jax_compiles_once_for_every_strength():
    jax = pytest.importorskip("jax")
    from diffopt.backends import get_backend
    from diffopt.sorting._modern import _compiled
    from diffopt.sorting._projection import _rank_rows

    x = jax.numpy.asarray(X, "float32")
    fn = _compiled(_rank_rows, "jax", get_backend(x), 1, False, "kl", False)
    ds.projection_rank(x, regularization_strength=0.3, regularization="kl")
    before = fn._cache_size()
    for strength in (0.7, 1.9):
        ds.projection_rank(x, regularization_strength=strength, regularization="kl")
    assert fn._cache_size() == before


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_kept(backend, dtype):
    backend.require(dtype)
    xb = backend.asarray(X, dtype)
    for op in OPS:
        out = _run(op, xb, 0.5, "l2", False)
        assert ar.get_dtype_name(out) == dtype
        np.testing.assert_allclose(backend.to_numpy(out), _run(op, X, 0.5, "l2", False), atol=0.05 * np.abs(X).max())


@pytest.mark.parametrize("numba", ["0", "1"])
def test_jax_traced_or_host(monkeypatch, numba):
    """JAX's isotonic solve: the shim's ``lax`` loop (no ``pure_callback``) without numba or off
    the CPU; on the CPU with numba, the compiled host loop through ``pure_callback``. Same numbers."""
    jax = pytest.importorskip("jax")
    if numba == "1":
        pytest.importorskip("numba")
    monkeypatch.setenv("DIFFOPT_NUMBA", numba)
    host = jax.default_backend() == "cpu" and numba == "1"
    m = 5 if host else 4  # a shape of its own: the choice is read when the compiled function is traced
    xn, wn = X[:, :m], W[:, :m]
    with jax.enable_x64(True):
        x, w = jax.numpy.asarray(xn), jax.numpy.asarray(wn)
        for op in OPS:
            loss = lambda v: (_run(op, v, 0.8, "kl", False) * w).sum()
            text = str(jax.make_jaxpr(jax.grad(loss))(x))
            assert ("callback" in text) == host and ("scan" in text or "while" in text) != host
            f = lambda v: np.sum(_run(op, v, 0.8, "kl", False) * wn)
            want = np.array([(f(xn + e) - f(xn - e)) / (2 * H) for e in np.eye(xn.size).reshape((-1,) + xn.shape) * H])
            np.testing.assert_allclose(np.asarray(jax.grad(loss)(x)), want.reshape(xn.shape), rtol=1e-5, atol=1e-6)
