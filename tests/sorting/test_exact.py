"""Exact tests of the soft sorting operators: the hand-written NumPy sorting network of
:mod:`references` (HIPS-autograd differentiable) against every backend and relaxation,
including the generic network, the fused and log-sum-exp kernels and infinities.
"""

import functools

import autoray as ar
import numpy as np
import pytest

from diffopt import backends
from references import check_soft_sort_of_the_largest_finite_values, close, ref_sorting


def _diffopt_sorting(op, x, relaxation, temperature, k=2):
    from diffopt import sorting

    kw = dict(temperature=temperature, relaxation=relaxation)
    return {
        "sort": lambda: sorting.soft_sort(x, **kw),
        "sort_desc": lambda: sorting.soft_sort(x, descending=True, **kw),
        "rank": lambda: sorting.soft_rank(x, **kw),
        "topk": lambda: sorting.soft_topk(x, k, **kw),
        "perm": lambda: sorting.soft_permutation(x, **kw),
    }[op]()


@functools.lru_cache(maxsize=None)
def _sorting_cases(relaxation, op, temperature=0.7):
    """``(x, want, w, want_grad)`` for rows of 6 (padded to 8) and of 8, computed once for all backends."""
    import autograd

    rng = np.random.default_rng(9)
    cases = []
    for n in (6, 8):
        x = rng.normal(size=(2, n)) * 1.5
        x[1, 2] = x[1, 4] + 0.05  # a close pair: the relaxation matters there
        want = np.stack([ref_sorting(row, relaxation, temperature, op) for row in x])
        w = rng.normal(size=want.shape)
        want_g = np.stack([autograd.grad(lambda r: (ref_sorting(r, relaxation, temperature, op) * wi).sum())(row)
                           for row, wi in zip(x, w)])
        cases.append((x, want, w, want_g))
    return cases


@pytest.mark.parametrize("op", ["sort", "sort_desc", "rank", "topk", "perm"])
@pytest.mark.parametrize("relaxation", ["logsumexp", "logistic", "cauchy", "reciprocal", "optimal"])
def test_soft_sorting_exact(backend, relaxation, op):
    """Values and gradients of the sorting ops on 2 rows of 6 (padded to 8) and of 8.

    Eager JAX runs the transports (ranks, top-k, permutations) op by op and compiles
    each small op once (~1 min per case on two cores): JAX checks them for two
    relaxations, the other backends for all five.
    """
    if backend.name == "jax" and op in ("rank", "topk", "perm") and relaxation not in ("logsumexp", "cauchy"):
        pytest.skip("JAX: transports checked for 'logsumexp' and 'cauchy' only (CI time)")
    temperature = 0.7
    # JAX: compiled once per function instead of op by op (CI time); compiled = eager in test_compiled.py
    compile_ = backend.jit if backend.name == "jax" else (lambda f: f)
    for x, want, w, want_g in _sorting_cases(relaxation, op, temperature):
        with backend.float64():
            xb, wb = backend.asarray(x, "float64"), backend.asarray(w, "float64")
            close(backend, compile_(lambda u: _diffopt_sorting(op, u, relaxation, temperature))(xb), want)
            if backend.has_grad:
                loss = lambda u, v: ar.do("sum", _diffopt_sorting(op, u, relaxation, temperature) * v)  # noqa: E731
                got = compile_(lambda u, v: backend.grad(lambda z: loss(z, v), u))(xb, wb)
                close(backend, got, want_g)


@pytest.mark.parametrize("relaxation", ["logsumexp", "logistic"])
def test_soft_sort_infinities_exact(backend, relaxation):
    """±inf pass through the network as ±inf (not as the finite sentinels they travel as) and never mix:
    one finite value per row comes out unchanged at its place, with gradient 1 there and 0 elsewhere."""
    _check_soft_sort_infinities(backend, relaxation)


def _check_soft_sort_infinities(backend, relaxation):
    from diffopt import sorting

    inf = float("inf")
    x = np.array([[inf, 1.0, -inf], [-inf, -inf, 2.0], [0.5, inf, inf]])
    want = np.array([[-inf, 1.0, inf], [-inf, -inf, 2.0], [0.5, inf, inf]])
    w = np.array([[0.3, -1.2, 0.7], [0.4, 0.9, 1.5], [-0.8, 0.2, 0.6]])  # finite outputs: -1.2, 1.5, -0.8
    want_g = np.zeros_like(x)
    want_g[0, 1], want_g[1, 2], want_g[2, 0] = -1.2, 1.5, -0.8
    with backend.float64():
        xb = backend.asarray(x, "float64")
        got = backend.to_numpy(sorting.soft_sort(xb, temperature=0.5, relaxation=relaxation))
        np.testing.assert_array_equal(got, want)
        desc = backend.to_numpy(sorting.soft_sort(xb, temperature=0.5, relaxation=relaxation, descending=True))
        np.testing.assert_array_equal(desc, want[:, ::-1])
        if backend.has_grad:  # weights only at the finite outputs (0 · inf = NaN in the value, not in J^T w)
            wm = backend.asarray(np.where(np.isfinite(want), w, 0.0), "float64")
            loss = lambda u: ar.do("sum", sorting.soft_sort(u, temperature=0.5, relaxation=relaxation) * wm)  # noqa: E731
            with np.errstate(invalid="ignore"):
                close(backend, backend.grad(loss, xb), want_g)


# ---------------------------------------------------------------- soft sorting: the generic network


def _kernel_tables(backend):
    """The op tables ``backend``'s arrays read (HIPS autograd runs on the NumPy shim's)."""
    return [backends.kernels(name) for name in ({backend.name, "numpy"} if backend.name == "autograd" else {backend.name})]


def _without_fused_kernels(backend, monkeypatch):
    """Remove the fused sorting kernels of NumPy/autograd/eager torch for this test (skip where there are
    none: JAX, TensorFlow and compiled torch always run the generic network, checked by test_exact)."""
    tables = _kernel_tables(backend)
    if not any("sorting_fused" in table for table in tables):
        pytest.skip(f"{backend.name} has no fused sorting kernel: test_exact checks its network")
    for table in tables:
        for kernel_name in ("sorting_fused", "sorting_lse_network"):
            monkeypatch.delitem(table, kernel_name, raising=False)


@pytest.mark.parametrize("relaxation", ["logsumexp", "logistic"])
def test_soft_sort_generic_network_infinities_exact(backend, monkeypatch, relaxation):
    """The ±inf case above through the generic network (sentinels, clip and restore of ``lse_network``)."""
    _without_fused_kernels(backend, monkeypatch)
    _check_soft_sort_infinities(backend, relaxation)


@pytest.mark.parametrize("relaxation", ["logsumexp", "logistic"])
def test_soft_sort_generic_network_largest_finite_values(backend, monkeypatch, relaxation):
    """The float32 ``±finfo.max`` case of tests/sorting/test_edge_cases.py through the generic network: the
    sentinels are float32's own (not float64's), the largest finite values stay finite and ``+inf`` stays ``+inf``."""
    _without_fused_kernels(backend, monkeypatch)
    for n in (3, 4):
        check_soft_sort_of_the_largest_finite_values(backend, relaxation, n)


def test_soft_sort_uses_the_fused_kernel_where_the_shim_has_one(backend, monkeypatch):
    """Where a shim has ``sorting_fused`` (NumPy, autograd, eager torch), ``soft_sort`` with a number
    temperature runs it (asked with the rows, the temperature and the relaxation; its forward called),
    and its numbers are the generic network's."""
    from diffopt import sorting

    tables = [t for t in _kernel_tables(backend) if "sorting_fused" in t]
    if not tables:
        pytest.skip(f"{backend.name} has no fused sorting kernel")
    asked, applied, ran = [], [], []
    for table in tables:
        make = table["sorting_fused"]

        def counting(rows, temperature, relaxation, make=make):
            asked.append((tuple(rows.shape), temperature, relaxation))
            pair = make(rows, temperature, relaxation)
            applied.append(pair is not None)
            if pair is None:
                return None
            fwd, bwd = pair
            return (lambda *a: ran.append(1) or fwd(*a)), bwd

        monkeypatch.setitem(table, "sorting_fused", counting)
    x = np.random.default_rng(24).normal(size=(3, 6))
    with backend.float64():
        fused = backend.to_numpy(sorting.soft_sort(backend.asarray(x, "float64"), temperature=0.7,
                                                   relaxation="cauchy"))
    assert asked == [((3, 6), 0.7, "cauchy")], asked
    if applied == [False]:
        pytest.skip("the fused kernel declined these rows (numba missing or switched off)")
    assert applied == [True] and ran == [1], (applied, ran)
    want = np.stack([ref_sorting(row, "cauchy", 0.7, "sort") for row in x])
    np.testing.assert_allclose(fused, want, rtol=1e-10, atol=1e-10)


def test_soft_sort_uses_the_lse_kernel_where_the_shim_has_one(backend, monkeypatch):
    """Where a shim has ``sorting_lse_network`` (eager torch), a learnable-temperature ``logsumexp`` sort
    (which the fused kernel does not take) runs it: asked with the network's rows, the temperature, the
    schedule, the layout and the dtype's finite range; its result is used (the generic network does not
    run); numbers and gradients are the reference's."""
    import autograd

    from diffopt import sorting
    from diffopt.sorting import _soft
    from diffopt.sorting._network import schedule
    from diffopt.sorting._soft import finite_range

    tables = [t for t in _kernel_tables(backend) if "sorting_lse_network" in t]
    if not tables or not backend.has_grad:
        pytest.skip(f"{backend.name} has no logsumexp network kernel")
    asked, ran = [], []
    for table in tables:
        lse = table["sorting_lse_network"]

        def counting(x, temperature, layers, reverse, finite, lse=lse):
            asked.append((tuple(x.shape), layers == schedule(int(x.shape[1]), reverse), reverse,
                          finite == finite_range(x)))
            out = lse(x, temperature, layers, reverse, finite)
            ran.append(out is not None)
            return out

        monkeypatch.setitem(table, "sorting_lse_network", counting)

    def generic(*args):
        raise AssertionError("the generic logsumexp network ran although the kernel applied")

    monkeypatch.setattr(_soft, "_lse_network", generic)
    x, w = np.random.default_rng(25).normal(size=(2, 6)), np.random.default_rng(26).normal(size=(2, 6))
    with backend.float64():
        xb, wb, tb = backend.asarray(x, "float64"), backend.asarray(w, "float64"), backend.asarray(np.array(0.7))
        got = backend.to_numpy(sorting.soft_sort(xb, temperature=tb))
        got_g = backend.to_numpy(backend.grad(lambda v: ar.do("sum", sorting.soft_sort(v, temperature=tb) * wb), xb))
    assert asked and asked[0] == ((2, 8), True, True, True) and all(ran), (asked, ran)
    np.testing.assert_allclose(got, np.stack([ref_sorting(r, "logsumexp", 0.7, "sort") for r in x]),
                               rtol=1e-10, atol=1e-10)
    want_g = np.stack([autograd.grad(lambda r: np.sum(ref_sorting(r, "logsumexp", 0.7, "sort") * wi))(row)
                       for row, wi in zip(x, w)])
    np.testing.assert_allclose(got_g, want_g, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("op", ["sort", "sort_desc"])
@pytest.mark.parametrize("relaxation", ["logsumexp", "logistic", "cauchy", "reciprocal", "optimal"])
def test_soft_sort_generic_network_exact(backend, monkeypatch, relaxation, op):
    """``soft_sort`` through the autoray network (:func:`diffopt.sorting._soft.sorter`), fused kernels off.

    NumPy, autograd and eager torch sort with a fused kernel; the generic network (what
    JAX, TensorFlow and torch under a compiler run) is checked here on their arrays too,
    against the reference of ``test_exact`` (values and gradients, 1e-10).
    """

    _without_fused_kernels(backend, monkeypatch)
    for x, want, w, want_g in _sorting_cases(relaxation, op, 0.7):
        with backend.float64():
            xb, wb = backend.asarray(x, "float64"), backend.asarray(w, "float64")
            close(backend, _diffopt_sorting(op, xb, relaxation, 0.7), want)
            if backend.has_grad:
                got = backend.grad(lambda u: ar.do("sum", _diffopt_sorting(op, u, relaxation, 0.7) * wb), xb)
                close(backend, got, want_g)


def _ref_rows(x, relaxation, op, temperature=0.7):
    """Values and gradients of ``sum(w * op(x))`` row by row (``test_exact``'s reference; ``None``: hard)."""
    import autograd


    w = np.random.default_rng(21).normal(size=x.shape)
    if relaxation is None:  # the exact sort; its gradient scatters w back to the sorted positions
        order = np.argsort(x, axis=1, kind="stable")
        g = np.zeros_like(x)
        np.put_along_axis(g, order, w, axis=1)
        return np.take_along_axis(x, order, axis=1), w, g
    want = np.stack([ref_sorting(row, relaxation, temperature, op) for row in x])
    g = np.stack([autograd.grad(lambda r: (ref_sorting(r, relaxation, temperature, op) * wi).sum())(row)
                  for row, wi in zip(x, w)])
    return want, w, g


@pytest.mark.parametrize("relaxation", ["logsumexp", "cauchy", None])
def test_soft_sort_generic_network_row_lengths_and_batch_layout(backend, monkeypatch, relaxation):
    """Rows of 5 (padded to 8) in a batch of 9 (the batch-innermost layout), rows of 1 (no comparator),
    the exact sort (``relaxation=None``): values and gradients through the generic network."""
    from diffopt import sorting

    _without_fused_kernels(backend, monkeypatch)
    rng = np.random.default_rng(20)
    for shape in ((9, 5), (3, 1), (2, 3)):
        x = rng.normal(size=shape) * 1.5
        want, w, want_g = _ref_rows(x, relaxation, "sort")
        with backend.float64():
            xb, wb = backend.asarray(x, "float64"), backend.asarray(w, "float64")
            close(backend, sorting.soft_sort(xb, temperature=0.7, relaxation=relaxation), want)
            if backend.has_grad:
                loss = lambda u: ar.do("sum", sorting.soft_sort(u, temperature=0.7, relaxation=relaxation) * wb)  # noqa: E731
                close(backend, backend.grad(loss, xb), want_g)


@pytest.mark.parametrize("relaxation", ["logsumexp", "logistic", "cauchy", "reciprocal", "optimal", None])
def test_soft_sort_generic_network_learnable_temperature(backend, monkeypatch, relaxation):
    """An array temperature through the generic network's backward (:func:`~diffopt.sorting._soft.pull_temperature`).

    ``d/dT`` and ``d/dx`` of ``sum(w * soft_sort(x, T))`` equal the reference's autodiff to 1e-10, ascending
    and descending, on rows of 6 (padded to 8), a batch of 9 rows of 5 (batch-innermost layout) and rows
    of 1 (no comparator: a zero temperature gradient); the exact sort's temperature gradient is 0.
    """
    import autograd

    from diffopt import sorting

    if not backend.has_grad:
        pytest.skip("numpy arrays have no autodiff")
    _without_fused_kernels(backend, monkeypatch)
    rng = np.random.default_rng(23)
    t0 = 0.7
    for shape, descending in (((2, 6), False), ((2, 6), True), ((9, 5), False), ((3, 1), True)):
        x, w = rng.normal(size=shape) * 1.5, rng.normal(size=shape)
        op = "sort_desc" if descending else "sort"
        moving = relaxation is not None and shape[1] > 1  # else the loss does not depend on T

        def ref_loss(v, t):  # autograd-differentiable in v and t
            if relaxation is None:
                return np.sum(np.sort(v, axis=1)[:, ::-1 if descending else 1] * w)
            return sum(ar.do("sum", ref_sorting(row, relaxation, t, op) * wi) for row, wi in zip(v, w))

        want_value = float(ref_loss(x, t0))
        want_gt = autograd.grad(lambda t: ref_loss(x, t))(t0) if moving else 0.0
        want_gx = autograd.grad(lambda v: ref_loss(v, t0))(x) if relaxation is not None else None
        with backend.float64():
            xb, wb = backend.asarray(x, "float64"), backend.asarray(w, "float64")
            tb = backend.asarray(np.array(t0), "float64")

            def loss(v, t):
                return ar.do("sum", sorting.soft_sort(v, temperature=t, relaxation=relaxation,
                                                      descending=descending) * wb)

            got_value = float(backend.to_numpy(loss(xb, tb)))
            got_gt = float(backend.to_numpy(backend.grad(lambda t: loss(xb, t), tb)))
            got_gx = backend.to_numpy(backend.grad(lambda v: loss(v, tb), xb))
        np.testing.assert_allclose(got_value, want_value, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got_gt, want_gt, rtol=1e-10, atol=1e-10)
        if moving:
            assert abs(want_gt) > 1e-3, (shape, want_gt)  # a case that moves with T
        if want_gx is not None:
            np.testing.assert_allclose(got_gx, want_gx, rtol=1e-10, atol=1e-10)
