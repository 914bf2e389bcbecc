"""JAX runs every sorting op's network as a loop (issue 17): a program whose size does not grow with n.

``soft_sort`` (forward, hand-written backward, temperature gradient) and the
transports (``soft_rank``, ``soft_topk``, ``soft_permutation``) trace one layer
body inside a ``lax.scan`` (:mod:`diffopt.backends.jax._sorting`). The lowered
program of the value and its gradients at ``n = 2**5`` and ``n = 2**10`` (15 and
55 layers) differs by at most a few lines (the generic loop unrolled every layer:
thousands of lines), and the numbers are the generic path's: float64 against
NumPy/autograd to 1e-12 (lengths 5, 16, 37), float32 against the generic JAX
path (the same XLA arithmetic, layer by layer) to 1e-6 (lengths 13, 32). Float32
against NumPy differs by a few ulps per layer on any JAX path (XLA's own exp and
log), so the float32 reference is JAX's generic loop.
"""

import functools

import numpy as np
import pytest

import diffopt.sorting as ds
from conftest import SELECTED

jax = pytest.importorskip("jax")
if "jax" not in SELECTED:
    pytest.skip("jax is not among DIFFOPT_TEST_BACKENDS", allow_module_level=True)
jnp = jax.numpy

RELAXATIONS = ("logsumexp", "logistic", "cauchy", "reciprocal", "optimal", None)
OPS = {
    "sort": lambda x, t, r: ds.soft_sort(x, temperature=t, relaxation=r),
    "sort_desc": lambda x, t, r: ds.soft_sort(x, temperature=t, relaxation=r, descending=True),
    "rank": lambda x, t, r: ds.soft_rank(x, temperature=t, relaxation=r),
    "topk": lambda x, t, r: ds.soft_topk(x, 3, temperature=t, relaxation=r),
    "perm": lambda x, t, r: ds.soft_permutation(x, temperature=t, relaxation=r)[..., 1, :],
}


def _loss(op, relaxation, x, t):
    y = OPS[op](x, t, relaxation)
    return jnp.sum(y * jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape)))


def _program_lines(op, relaxation, n, learnable):
    """Lines of the lowered StableHLO of the op's value and gradient(s) at length ``n`` (2 rows, float32)."""
    x = jax.ShapeDtypeStruct((2, n), jnp.float32)
    t = jax.ShapeDtypeStruct((), jnp.float32)
    f = functools.partial(_loss, op, relaxation)
    if learnable:
        g = jax.value_and_grad(f, argnums=(0, 1))
        return len(jax.jit(g).lower(x, t).as_text().splitlines())
    g = jax.value_and_grad(lambda v: f(v, 0.5))
    return len(jax.jit(g).lower(x).as_text().splitlines())


@pytest.mark.parametrize("op, relaxation, learnable", [
    ("sort", "logsumexp", False), ("sort", "logsumexp", True), ("sort", "cauchy", True), ("sort", None, False),
    ("sort_desc", "logistic", False), ("rank", "logsumexp", False), ("rank", "optimal", True),
    ("topk", "reciprocal", False), ("perm", "logsumexp", False),
])
def test_program_size_does_not_grow_with_layers(op, relaxation, learnable):
    small, large = (_program_lines(op, relaxation, n, learnable) for n in (2 ** 5, 2 ** 10))
    # 15 -> 55 layers; unrolled, soft_sort's program grew by dozens of lines per layer
    assert abs(large - small) <= 4, (small, large)


def _numpy_case(op, relaxation, x, t):
    import autograd
    import autograd.numpy as anp

    def loss(v, s):
        y = OPS[op](v, s, relaxation)
        return anp.sum(y * anp.cos(anp.arange(y.size, dtype=y.dtype).reshape(y.shape)))

    return loss(x, t), autograd.grad(loss, 0)(x, t), autograd.grad(loss, 1)(x, t)


def _jax_case(op, relaxation, x, t):
    value, (gx, gt) = jax.value_and_grad(functools.partial(_loss, op, relaxation), argnums=(0, 1))(
        jnp.asarray(x), jnp.asarray(t))
    return float(value), np.asarray(gx), float(gt)


RNG = np.random.default_rng(3)
CASES = [(op, r) for op in ("sort", "sort_desc") for r in RELAXATIONS] + [
    ("rank", "logsumexp"), ("rank", "cauchy"), ("topk", "optimal"), ("perm", "logistic")]


@pytest.mark.parametrize("op, relaxation", CASES)
def test_float64_equals_numpy(op, relaxation):
    """float64: value, gradient in x and in the temperature equal NumPy/autograd's to 1e-12."""
    for n in (5, 16, 37):
        x = RNG.standard_normal((2, n)) * 1.5
        with jax.enable_x64(True):  # scoped, as the conftest's float64()
            got = _jax_case(op, relaxation, x, np.float64(0.4))
            if op.startswith("sort"):  # a number temperature: the backward without the temperature's part
                fixed = jax.grad(lambda v: _loss(op, relaxation, v, 0.4))(jnp.asarray(x))
        want = _numpy_case(op, relaxation, x, 0.4)
        assert np.abs(want[1]).max() > 1e-3  # a gradient that could differ
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
        if op.startswith("sort"):
            np.testing.assert_allclose(np.asarray(fixed), want[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("relaxation", ["logsumexp", "cauchy", None])
def test_float32_equals_generic_jax(relaxation):
    """float32: the looped network gives the numbers of the generic (unrolled) one on JAX.

    Value and gradient in x to 1e-6; the temperature's gradient, a sum over all
    comparators taken in another order, to 1e-5 relative.
    """
    from diffopt.backends import jax as shim
    from diffopt.sorting import _modern, _soft

    cases = [("sort", 13), ("sort_desc", 32)]
    data = {c: RNG.standard_normal((3, c[1])).astype(np.float32) for c in cases}
    looped = {c: _jax_case(c[0], relaxation, data[c], np.float32(0.3)) for c in cases}
    with pytest.MonkeyPatch.context() as mp:
        for name in ("sorting_network", "sorting_network_pull"):
            mp.delitem(shim.KERNELS, name)
        try:
            _soft.sorter.cache_clear()
            _modern._compiled.cache_clear()
            generic = {c: _jax_case(c[0], relaxation, data[c], np.float32(0.3)) for c in cases}
        finally:  # no generic function stays cached for the restored shim
            _soft.sorter.cache_clear()
            _modern._compiled.cache_clear()
    for c in cases:
        (value, gx, gt), (want_value, want_gx, want_gt) = looped[c], generic[c]
        assert np.abs(want_gx).max() > 1e-3
        np.testing.assert_allclose(value, want_value, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(gx, want_gx, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(gt, want_gt, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("relaxation", ["logsumexp", "cauchy", None])
def test_rows_of_one_with_a_learnable_temperature(relaxation):
    """n = 1 (no comparator): the value is the input, d/dx is 1 and d/dT is 0 with an array temperature."""
    x = jnp.asarray(RNG.standard_normal((2, 1)).astype(np.float32))
    t = jnp.asarray(np.float32(0.3))
    value, (gx, gt) = jax.value_and_grad(lambda u, v: jnp.sum(ds.soft_sort(u, temperature=v, relaxation=relaxation)),
                                         argnums=(0, 1))(x, t)
    np.testing.assert_array_equal(np.asarray(value), np.asarray(x).sum())
    np.testing.assert_array_equal(np.asarray(gx), np.ones((2, 1), np.float32))
    assert float(gt) == 0.0
