"""Projection top-k and the scale-free strength (issue 27, item 1 and item 2's ``relative``).

References, independent of the code under test:

* the projection onto the capped simplex ``{0 <= m <= 1, sum m = k}`` by its closed form
  ``m = clip(z - tau, 0, 1)`` with ``tau`` found by bisection on ``sum m = k``;
* the exact top-k mask from ``np.argsort``;
* gradients (inputs and strength) by central finite differences of the NumPy forward, float64;
* the scale-free option by its definition: ``x -> c x + b`` leaves ranks and masks unchanged and
  maps the sort to ``c y + b``, and equals the absolute strength times each row's range.
"""

import autoray as ar
import numpy as np
import pytest

import diffopt.sorting as ds

RNG = np.random.default_rng(2727)
X = RNG.standard_normal((3, 7)) * 1.5
W = RNG.standard_normal((3, 7))
H = 1e-6


def _capped_simplex(z, k):
    lo, hi = z.min() - 1.0, z.max()
    for _ in range(200):
        tau = 0.5 * (lo + hi)
        lo, hi = (tau, hi) if np.clip(z - tau, 0, 1).sum() > k else (lo, tau)
    return np.clip(z - 0.5 * (lo + hi), 0, 1)


def _exact_mask(x, k, largest):
    order = np.argsort(-x if largest else x, axis=-1, kind="stable")
    mask = np.zeros_like(x)
    np.put_along_axis(mask, order[..., :k], 1.0, axis=-1)
    return mask


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("strength", [0.2, 1.0, 4.0])
@pytest.mark.parametrize("largest", [True, False])
def test_topk_is_the_capped_simplex_projection(k, strength, largest):
    got = ds.projection_topk(X, k, regularization_strength=strength, largest=largest)
    sign = 1.0 if largest else -1.0
    for r in range(len(X)):
        np.testing.assert_allclose(got[r], _capped_simplex(sign * X[r] / strength, k), atol=1e-9)
    np.testing.assert_allclose(got.sum(-1), k, rtol=1e-12)
    assert got.min() >= -1e-12 and got.max() <= 1 + 1e-12


@pytest.mark.parametrize("largest", [True, False])
def test_topk_tends_to_the_exact_mask_on_every_backend(backend, largest):
    want = _exact_mask(X, 3, largest)
    gap = np.min(np.abs(np.diff(np.sort(X, -1), axis=-1)))
    with backend.float64():
        xb = backend.asarray(X, "float64")
        exact = backend.to_numpy(ds.projection_topk(xb, 3, regularization_strength=0.0, largest=largest))
        small = backend.to_numpy(ds.projection_topk(xb, 3, regularization_strength=gap / 2, largest=largest))
        via = backend.to_numpy(ds.soft_topk(xb, 3, temperature=gap / 2, largest=largest, relaxation="projection"))
    np.testing.assert_array_equal(exact, want)
    np.testing.assert_allclose(small, want, atol=1e-12)  # gaps > strength: the projection is a vertex
    np.testing.assert_array_equal(via, small)


def test_topk_any_axis_and_ties():
    x3 = RNG.standard_normal((2, 5, 3))
    got = ds.projection_topk(x3, 2, axis=1, regularization_strength=0.7)
    want = np.moveaxis(ds.projection_topk(np.moveaxis(x3, 1, -1), 2, regularization_strength=0.7), -1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    tied = ds.projection_topk(np.array([1.0, 2.0, 2.0, 0.0]), 1, regularization_strength=1e-3)
    np.testing.assert_allclose(tied, [0.0, 0.5, 0.5, 0.0], atol=1e-12)


@pytest.mark.parametrize("bad, error", [({"k": 0}, ValueError), ({"k": 8}, ValueError), ({"k": 2.0}, ValueError),
                                        ({"regularization_strength": -1.0}, ValueError),
                                        ({"relative": 1}, TypeError)])
def test_bad_arguments(bad, error):
    args = {"k": 2, **bad}
    with pytest.raises(error, match=next(iter(bad))):
        ds.projection_topk(X, **args)
    if "relative" in bad:
        with pytest.raises(TypeError, match="relative"):
            ds.projection_rank(X, relative=1)


# ------------------------------------------------------------------ gradients

OPS = {"topk": lambda x, t, rel: ds.projection_topk(x, 3, regularization_strength=t, relative=rel),
       "rank": lambda x, t, rel: ds.projection_rank(x, regularization_strength=t, relative=rel, regularization="kl"),
       "sort": lambda x, t, rel: ds.projection_sort(x, regularization_strength=t, relative=rel)}
CASES = [("topk", False), ("topk", True), ("rank", True), ("sort", True)]
# the sort's strength acts on 1/x: relative to the range it pools once strength > range / gap
STRENGTH = {("topk", False): 0.9, ("topk", True): 0.3, ("rank", True): 0.3, ("sort", True): 8.0}


def _fd_input(f, t):
    g = np.zeros_like(X)
    for idx in np.ndindex(X.shape):
        e = np.zeros_like(X)
        e[idx] = H
        g[idx] = np.sum((f(X + e, t) - f(X - e, t)) * W) / (2 * H)
    return g


@pytest.mark.parametrize("op, rel", CASES)
def test_input_gradient_matches_finite_differences(grad_backend, op, rel):
    b, t = grad_backend, STRENGTH[op, rel]
    f = lambda v, s: OPS[op](v, s, rel)
    want = _fd_input(f, t)
    with b.float64():
        wb = b.asarray(W, "float64")
        got = b.to_numpy(b.grad(lambda v: ar.do("sum", f(v, t) * wb), b.asarray(X, "float64")))
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op, rel", CASES)
def test_strength_gradient_matches_finite_differences(grad_backend, op, rel):
    b, t0 = grad_backend, STRENGTH[op, rel]
    f = lambda v, s: OPS[op](v, s, rel)
    want = np.sum((f(X, t0 + H) - f(X, t0 - H)) * W) / (2 * H)
    with b.float64():
        xb, wb = b.asarray(X, "float64"), b.asarray(W, "float64")
        got = float(b.to_numpy(b.grad(lambda t: ar.do("sum", f(xb, t) * wb), b.asarray(np.array(t0), "float64"))))
    assert abs(want) > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ scale-free strength


@pytest.mark.parametrize("c, shift", [(1e-3, 0.0), (7.0, -3.0), (250.0, 40.0)])
def test_relative_strength_is_scale_and_shift_free(backend, c, shift):
    with backend.float64():
        before = {name: backend.to_numpy(f(backend.asarray(X, "float64"), STRENGTH[name, True], True))
                  for name, f in OPS.items()}
        after = {name: backend.to_numpy(f(backend.asarray(c * X + shift, "float64"), STRENGTH[name, True], True))
                 for name, f in OPS.items()}
    np.testing.assert_allclose(after["topk"], before["topk"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(after["rank"], before["rank"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(after["sort"], c * before["sort"] + shift, rtol=1e-9, atol=1e-9 * max(c, abs(shift)))
    # and the absolute strength does depend on the scale (the test could fail)
    absolute = [ds.projection_rank(v, regularization_strength=0.3, regularization="kl") for v in (X, c * X + shift)]
    assert np.abs(absolute[1] - absolute[0]).max() > 1e-3
    assert np.abs(before["sort"] - np.sort(X, -1)).max() > 1e-2  # relaxed, not the exact sort


def test_relative_is_the_absolute_strength_times_the_range():
    r = X.max(-1) - X.min(-1)
    for i, row in enumerate(X):
        np.testing.assert_allclose(ds.projection_rank(row, regularization_strength=0.4, relative=True),
                                   ds.projection_rank(row, regularization_strength=0.4 * r[i]), rtol=1e-12)
        np.testing.assert_allclose(ds.projection_topk(row, 2, regularization_strength=0.4, relative=True),
                                   ds.projection_topk(row, 2, regularization_strength=0.4 * r[i]), rtol=1e-12)
        # the sort: its strength acts on 1/x (Blondel et al.), so relative divides by the range
        np.testing.assert_allclose(ds.projection_sort(row, regularization_strength=0.4, relative=True),
                                   ds.projection_sort(row, regularization_strength=0.4 / r[i]), rtol=1e-12)
    const = np.full((1, 4), 2.5)
    np.testing.assert_allclose(ds.projection_rank(const, relative=True), ds.projection_rank(const), rtol=1e-12)


# ------------------------------------------------------------------ compiled


@pytest.mark.parametrize("op, rel", CASES)
def test_compiled_equals_eager(backend, op, rel):
    if backend.name not in ("jax", "tensorflow"):
        pytest.skip("jax.jit / tf.function")
    xb = backend.asarray(X, "float32")
    eager = backend.to_numpy(OPS[op](xb, STRENGTH[op, rel], rel))
    compiled = backend.to_numpy(backend.jit(lambda x: OPS[op](x, STRENGTH[op, rel], rel))(xb))
    np.testing.assert_allclose(compiled, eager, rtol=1e-6, atol=1e-6)


def test_jax_grad_under_jit_and_vmap():
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        x, w = jax.numpy.asarray(X), jax.numpy.asarray(W)
        f = lambda v, c: (ds.projection_topk(v, 3, regularization_strength=0.3, relative=True) * c).sum()
        eager = np.asarray(jax.grad(f)(x, w))
        np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(f))(x, w)), eager, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(jax.vmap(jax.grad(f))(x[:, None], w[:, None]))[:, 0], eager, rtol=1e-12)
    np.testing.assert_allclose(eager, _fd_input(lambda v, s: OPS["topk"](v, s, True), 0.3), rtol=1e-5, atol=1e-6)
