"""Run by test_sorting_projection_cuda.py in a subprocess with NUMBA_ENABLE_CUDASIM=1.

Checks the numba.cuda PAV kernel (diffopt.backends._cuda_pav), executed by numba's CUDA
simulator on the CPU, against the host kernel diffopt.sorting._pav (itself tested against
independent references in test_sorting_projection.py): forward values, block flags and the
backward's cotangents, L2 and KL, ties, constant rows, n = 1, several rows, more rows than a
thread block. Exits non-zero (an AssertionError) on any mismatch; prints "ok" at the end.
"""

import os

import numpy as np
from numba import cuda

from diffopt.backends import _cuda_pav
from diffopt.sorting._pav import pav, pav_vjp

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run me under numba's CUDA simulator"
assert _cuda_pav.available()
RNG = np.random.default_rng(2027)


def inputs(rows, n):
    """Rows ``a`` (ties, equal differences and a constant row included) and ``b`` sorted descending, as the projection makes them."""
    a = RNG.standard_normal((rows, n)) * 2.0
    if n > 3:
        a[0, 1:3] = a[0, 0]  # a tie
        a[-1] = 0.7  # a constant row
    b = -np.sort(-RNG.standard_normal((rows, n)), axis=1)
    if rows > 2 and n > 3:  # a - b exactly equal along the row: equal neighbours are pooled
        b[1] = np.arange(n, 0, -1)
        a[1] = b[1] + 0.25
    return a, b


def zeros(rows, n, dtype=np.float64):
    return cuda.to_device(np.zeros((rows, n), dtype=dtype))


def check(rows, n, kl):
    a, b = inputs(rows, n)
    want_v, want_first = pav(a, b, kl)
    out = [zeros(rows, n), zeros(rows, n), zeros(rows, n, np.int64), zeros(rows, n), zeros(rows, n)]
    _cuda_pav.forward(cuda.to_device(a), cuda.to_device(b), kl, *out)
    first = out[1].copy_to_host()
    np.testing.assert_allclose(out[0].copy_to_host(), want_v, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(first, want_first)
    g = RNG.standard_normal((rows, n))
    want_ga, want_gb = pav_vjp(g, a, b, want_first, kl)
    grads = [zeros(rows, n), zeros(rows, n)]
    _cuda_pav.backward(*(cuda.to_device(x) for x in (g, a, b, first)), kl, *grads)
    np.testing.assert_allclose(grads[0].copy_to_host(), want_ga, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads[1].copy_to_host(), want_gb, rtol=1e-12, atol=1e-12)
    return want_first


def check_plumbing(kl):
    """pav_arrays / pav_vjp_arrays with NumPy arrays standing for a framework's CUDA arrays."""
    cuda.as_cuda_array = lambda x, sync=True: x  # the simulator launches on NumPy arrays in place
    cuda.external_stream = lambda ptr: cuda.stream()
    a, b = inputs(4, 9)
    empty = lambda dtype: np.zeros(a.shape, dtype=dtype)
    v, first = _cuda_pav.pav_arrays(a, b, kl, empty, 0, 1234)
    want_v, want_first = pav(a, b, kl)
    np.testing.assert_allclose(v, want_v, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(first, want_first)
    g = RNG.standard_normal(a.shape)
    ga, gb = _cuda_pav.pav_vjp_arrays(g, a, b, first, kl, empty, 0, 0)
    for got, want in zip((ga, gb), pav_vjp(g, a, b, want_first, kl)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


pooled = 0
for kl in (False, True):
    for rows, n in ((1, 1), (3, 1), (2, 2), (5, 8), (130, 5)):  # 130 rows: two thread blocks
        pooled += int(np.sum(check(rows, n, kl) == 0))
    check_plumbing(kl)
assert pooled > 0, "no block was pooled: the test would not exercise PAV"
print("ok")
