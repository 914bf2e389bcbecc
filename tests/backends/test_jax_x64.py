"""diffopt's compiled JAX functions survive ``jax.enable_x64`` scopes (no ``jax.clear_caches``).

The sorting ops keep jitted functions and NumPy index arrays in caches. JAX
(0.10) keeps the dtype it first gave a cached NumPy operand: an ``int64`` index
array first used outside the x64 scope (as ``int32``) made the float64 call
inside it fail to lower ("operand type mismatch ... i64 ... i32"). A user who
toggles x64 meets that; so did the test suite, which cleared JAX's caches
around every float64 test (and recompiled everything after it). Here each op
runs in float32, then in float64 inside the scope, then float32 inside and
outside again, every result checked against NumPy in float64.
"""

import numpy as np
import pytest

import diffopt
import diffopt.sorting as ds
from conftest import SELECTED

if "jax" not in SELECTED:
    pytest.skip("jax is not among DIFFOPT_TEST_BACKENDS", allow_module_level=True)
jax = pytest.importorskip("jax")
jnp = jax.numpy

X = np.random.default_rng(11).standard_normal((3, 6))  # n = 6: padded to 8 (the bit-reversal indices)
T = 0.4

OPS = {
    "soft_sort": lambda x, t: ds.soft_sort(x, temperature=t),
    "soft_sort_desc_cauchy": lambda x, t: ds.soft_sort(x, temperature=t, descending=True, relaxation="cauchy"),
    "soft_rank": lambda x, t: ds.soft_rank(x, temperature=t),
    "soft_topk": lambda x, t: ds.soft_topk(x, 2, temperature=t, relaxation="logistic"),
    "soft_permutation": lambda x, t: ds.soft_permutation(x, temperature=t),
}


def _temperature(learnable, dtype):
    return jnp.asarray(T, dtype) if learnable else T


@pytest.mark.parametrize("learnable", [False, True], ids=["number", "array"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_sorting_ops_across_x64_scopes(name, learnable):
    fn = OPS[name]
    want = np.asarray(fn(X, T))  # NumPy float64 reference

    def run(dtype):
        x = jnp.asarray(X, dtype)
        y = fn(x, _temperature(learnable, dtype))
        g = jax.grad(lambda v: jnp.sum(fn(v, _temperature(learnable, dtype)) ** 2))(x)
        assert y.dtype == dtype and g.dtype == dtype
        return np.asarray(y, dtype=np.float64), np.asarray(g, dtype=np.float64)

    y32, g32 = run(jnp.float32)
    with jax.enable_x64(True):
        y64, g64 = run(jnp.float64)
        y32_in, g32_in = run(jnp.float32)
    y32_after, g32_after = run(jnp.float32)
    np.testing.assert_allclose(y64, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y32, want, rtol=1e-5, atol=1e-5)
    for y, g in ((y32_in, g32_in), (y32_after, g32_after)):
        np.testing.assert_allclose(y, y32, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(g, g32, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4)
    assert np.abs(g64).max() > 1e-2  # a gradient that could differ


def test_perturbed_and_fenchel_young_across_x64_scopes():
    """The perturbed engine (a chunked loop) and the Fenchel-Young loss, same key, both scopes."""
    pert = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=12, sigma=0.5, noise="normal", chunk_size=5)
    fy = diffopt.FenchelYoungLoss(diffopt.argmax_one_hot, num_samples=12, sigma=0.5, chunk_size=5)
    labels = np.eye(6)[[1, 4, 0]]
    key = jax.random.key(2)

    def run(dtype):
        x, y = jnp.asarray(X, dtype), jnp.asarray(labels, dtype)
        out = pert(x, rng=key)
        g = jax.grad(lambda v: jnp.sum(fy(v, y, rng=key)))(x)
        assert out.dtype == dtype and g.dtype == dtype
        return np.asarray(out, dtype=np.float64), np.asarray(g, dtype=np.float64)

    out32, g32 = run(jnp.float32)
    with jax.enable_x64(True):
        out64, g64 = run(jnp.float64)
        out32_in, g32_in = run(jnp.float32)
    out32_after, g32_after = run(jnp.float32)
    np.testing.assert_allclose(out32_in, out32, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out32_after, out32, rtol=0, atol=1e-6)
    np.testing.assert_allclose(g32_in, g32, rtol=0, atol=1e-6)
    np.testing.assert_allclose(g32_after, g32, rtol=0, atol=1e-6)
    # the rows are one-hot averages over 12 samples: multiples of 1/12 whatever the dtype
    np.testing.assert_allclose(out64 * 12, np.round(out64 * 12), atol=1e-9)
    np.testing.assert_allclose(out64.sum(axis=1), 1.0, atol=1e-12)
    assert np.abs(g64).max() > 1e-2
