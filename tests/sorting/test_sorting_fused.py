"""The optional fused soft-sort kernel (numba): same numbers as the generic loops, and a clean fallback.

Small sizes only: every (relaxation, dtype) compiles once (then numba's disk cache).
"""

import sys

import numpy as np
import pytest

import diffopt.sorting as ds
from diffopt.backends import load
from diffopt.backends.numpy import _fused

RELAXATIONS = ("logsumexp", None, "logistic", "cauchy", "reciprocal", "optimal")


def _has_kernel(backend):
    return "sorting_fused" in getattr(load(backend.name), "KERNELS", {})


@pytest.fixture
def kernels(backend):
    """The numba kernel module (the test is skipped without numba or on a backend without the kernel)."""
    pytest.importorskip("numba")
    if not _has_kernel(backend):
        pytest.skip(f"{backend.name} has no fused sorting kernel")
    kern = _fused.kernels()
    assert kern is not None  # numba is installed and DIFFOPT_NUMBA is not set to off
    return kern


def _data(dtype, rows=20, n=13, special=True):
    rs = np.random.RandomState(7)
    x = rs.randn(rows, n) * 2
    if special:  # infinities and a NaN row; rows = 20: one full tile of 16 rows, and 4 more
        x[1, 2], x[2, 5], x[3, 0], x[4, 4] = np.inf, -np.inf, np.nan, np.finfo(dtype).max
    return x.astype(dtype), rs.randn(rows, n).astype(dtype)


def _sort_and_grad(backend, x, w, relaxation, descending):
    def loss(v):
        return (ds.soft_sort(v, temperature=0.6, relaxation=relaxation, descending=descending) * w).sum()

    out = backend.to_numpy(ds.soft_sort(x, temperature=0.6, relaxation=relaxation, descending=descending))
    grad = backend.to_numpy(backend.grad(loss, x)) if backend.has_grad else None
    return out, grad


def _assert_same(fused, generic, tol):
    np.testing.assert_array_equal(np.isnan(fused), np.isnan(generic))
    np.testing.assert_array_equal(np.where(np.isinf(generic), generic, 0), np.where(np.isinf(fused), fused, 0))
    finite = np.isfinite(generic)
    np.testing.assert_allclose(fused[finite], generic[finite], rtol=tol, atol=tol)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_matches_generic_loops(backend, kernels, monkeypatch, relaxation, dtype):
    if dtype == "float64" and relaxation not in ("logsumexp", "cauchy"):
        pytest.skip("float64: the default and one mixing relaxation (compile time)")
    calls = []
    forward = kernels.forward
    monkeypatch.setattr(kernels, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    xs, ws = _data(dtype)
    x, w = backend.asarray(xs), backend.asarray(ws)
    for descending in (False, True):
        monkeypatch.delenv(_fused.ENV, raising=False)
        before = len(calls)
        fused = _sort_and_grad(backend, x, w, relaxation, descending)
        assert len(calls) > before  # the kernel ran
        monkeypatch.setenv(_fused.ENV, "0")
        before = len(calls)
        generic = _sort_and_grad(backend, x, w, relaxation, descending)
        assert len(calls) == before  # switched off: the generic loops ran
        tol = 1e-6 if dtype == "float32" else 1e-12
        _assert_same(fused[0], generic[0], tol)
        if backend.has_grad:
            _assert_same(fused[1], generic[1], tol)
            ok = np.isfinite(xs).all(1)  # (rows with NaN or inf: checked against the generic loops above)
            np.testing.assert_allclose(fused[1][ok].sum(1), ws[ok].sum(1), rtol=1e-5)  # a soft permutation's columns


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (17, 64), (2, 5)])
def test_fused_shapes(backend, kernels, monkeypatch, shape):
    # a single value, fewer rows than a tile, more than one tile, a power of two, padding
    xs = np.random.RandomState(sum(shape)).randn(*shape).astype("float32")
    x = backend.asarray(xs)
    fused = backend.to_numpy(ds.soft_sort(x, temperature=0.3))
    monkeypatch.setenv(_fused.ENV, "off")
    generic = backend.to_numpy(ds.soft_sort(x, temperature=0.3))
    np.testing.assert_allclose(fused, generic, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fused.sum(1), xs.sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value", ["0", "false", "OFF", "no"])
def test_environment_variable_turns_it_off(monkeypatch, value):
    monkeypatch.setenv(_fused.ENV, value)
    assert _fused.kernels() is None
    assert _fused.numpy_fused(np.zeros((2, 3)), 1.0, "logsumexp") is None


def test_fallback_when_numba_is_missing(backend, monkeypatch):
    # numba not installed: the kernel module cannot be imported, soft_sort runs the generic loops
    monkeypatch.delenv(_fused.ENV, raising=False)
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.setitem(sys.modules, "diffopt.backends.numpy._numba_sorting", None)
    _fused._load.cache_clear()
    try:
        assert _fused.kernels() is None
        make = getattr(load(backend.name), "KERNELS", {}).get("sorting_fused")
        x = backend.asarray(np.array([[3.0, 1.0, 2.0]]))
        if make is not None:
            assert make(x, 1.0, "logsumexp") is None
        out = backend.to_numpy(ds.soft_sort(x, temperature=0.01))
        np.testing.assert_allclose(out, [[1.0, 2.0, 3.0]], atol=1e-4)
    finally:
        _fused._load.cache_clear()


def test_temperature_needing_a_gradient_falls_back(backend, kernels):
    # the kernel gives the temperature no gradient: such a temperature is left to the generic loops
    if backend.name != "torch":
        pytest.skip("torch tensors carry requires_grad")
    import torch

    x = backend.asarray(np.array([[3.0, 1.0, 2.0]]))
    make = load("torch").KERNELS["sorting_fused"]
    assert make(x, torch.tensor(0.5, dtype=x.dtype), "logsumexp") is not None
    assert make(x, torch.tensor(0.5, dtype=x.dtype, requires_grad=True), "logsumexp") is None
    assert make(x.to(torch.float16), 0.5, "logsumexp") is None  # soft_sort upcasts half precision first
