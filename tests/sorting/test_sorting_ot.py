"""Optimal-transport soft sorting (``ot_sort``, ``ot_rank``, ``soft_quantile``, ``soft_median``).

References: the exact sort/ranks/quantiles at small epsilon, central finite differences for
the gradients, the NumPy result on every framework, and ott-jax where it is installed.
"""

import numpy as np
import pytest

from diffopt.sorting import ot_rank, ot_sort, soft_median, soft_quantile

RNG = np.random.default_rng(3)
X = RNG.normal(size=(2, 9))
EPS = 1e-3  # small: the plan is (almost) the sorting permutation for well-separated values


def test_small_epsilon_is_exact():
    xs = np.stack([RNG.permutation(9), RNG.permutation(9)]).astype(float)  # separated after squashing
    np.testing.assert_allclose(ot_sort(X, epsilon=EPS), np.sort(X, -1), atol=2e-2)
    np.testing.assert_allclose(ot_rank(xs, epsilon=EPS), np.argsort(np.argsort(xs, -1), -1), atol=5e-2)
    np.testing.assert_allclose(ot_sort(X, topk=3, epsilon=EPS), np.sort(X, -1)[:, -3:], atol=2e-2)
    np.testing.assert_allclose(ot_sort(X, epsilon=EPS, descending=True), np.sort(X, -1)[:, ::-1], atol=2e-2)
    np.testing.assert_allclose(ot_rank(xs, epsilon=EPS, descending=True),
                               8 - np.argsort(np.argsort(xs, -1), -1), atol=5e-2)


def test_quantiles_several_at_once_and_median():
    x = np.linspace(-1.0, 1.0, 201)[None, :].repeat(2, 0)
    q = [0.9, 0.25, 0.5]
    got = soft_quantile(x, q, epsilon=EPS)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, np.quantile(x, q, axis=1).T, atol=2e-2)
    np.testing.assert_allclose(soft_median(x, epsilon=EPS), np.median(x, axis=1), atol=2e-2)
    np.testing.assert_allclose(soft_quantile(x.T, q, axis=0, epsilon=EPS), got.T, atol=1e-12)


def test_axis_and_num_targets_shapes():
    x = RNG.normal(size=(4, 6, 3))
    out = ot_sort(x, axis=1, num_targets=4)
    assert out.shape == (4, 4, 3)
    np.testing.assert_allclose(out, np.moveaxis(ot_sort(np.moveaxis(x, 1, -1), num_targets=4), -1, 1), atol=1e-12)
    # mass is conserved: the mean of the soft sort (uniform targets) is the row mean
    np.testing.assert_allclose(ot_sort(x, axis=1).mean(axis=1), x.mean(axis=1), atol=1e-3)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="epsilon"):
        ot_sort(X, epsilon=0.0)
    with pytest.raises(ValueError, match="q must"):
        soft_quantile(X, [0.5, 1.5])
    with pytest.raises(TypeError, match="squashing_fun"):
        ot_sort(X, squashing_fun=3)
    with pytest.raises(ValueError, match="num_targets"):
        ot_rank(X, num_targets=1)
    with pytest.raises(TypeError, match="x"):
        ot_sort(np.arange(3))


def _fd(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def _losses(xp_sum, w=np.arange(1.0, 10.0)):
    return {
        "sort": lambda x: xp_sum(ot_sort(x, epsilon=0.05) * w),
        "rank": lambda x: xp_sum(ot_rank(x, epsilon=0.05) * w),
        "quantile": lambda x: xp_sum(soft_quantile(x, [0.3, 0.7], epsilon=0.05) * w[:2]),
    }


@pytest.mark.parametrize("op", ["sort", "rank", "quantile"])
def test_values_and_gradients_on_every_framework(backend, op):
    with backend.float64():
        backend.require("float64")
        x = X[:1]
        ref = _losses(np.sum)[op]
        import autoray as ar

        xb = backend.asarray(x, "float64")
        f = _losses(lambda z: ar.do("sum", z), backend.asarray(np.arange(1.0, 10.0), "float64"))[op]
        np.testing.assert_allclose(float(backend.to_numpy(f(xb))), ref(x), rtol=1e-9)
        if backend.name in ("jax", "tensorflow"):  # jax.jit / tf.function (the loop is traced there)
            np.testing.assert_allclose(float(backend.to_numpy(backend.jit(f)(xb))), ref(x), rtol=1e-9)
        if backend.has_grad:
            g = backend.to_numpy(backend.grad(f, xb))
            np.testing.assert_allclose(g, _fd(ref, x), atol=1e-4, rtol=1e-3)


def test_matches_ott():
    pytest.importorskip("ott")
    import jax
    import jax.numpy as jnp
    from ott.tools import soft_sort as ss

    with jax.enable_x64(True):
        xj = jnp.asarray(X)
        for eps in (1e-2, 1e-1):
            np.testing.assert_allclose(ot_sort(X, epsilon=eps), ss.sort(xj, epsilon=eps), atol=1e-2)
            np.testing.assert_allclose(ot_sort(X, topk=3, epsilon=eps), ss.sort(xj, topk=3, epsilon=eps), atol=1e-2)
            np.testing.assert_allclose(ot_sort(X, num_targets=4, epsilon=eps),
                                       ss.sort(xj, num_targets=4, epsilon=eps), atol=1e-2)
            np.testing.assert_allclose(ot_rank(X, epsilon=eps), ss.ranks(xj, epsilon=eps), atol=2e-2)
            q = jnp.array([0.2, 0.5, 0.8])
            np.testing.assert_allclose(soft_quantile(X, [0.2, 0.5, 0.8], epsilon=eps),
                                       ss.quantile(xj, q=q, epsilon=eps), atol=1e-2)
