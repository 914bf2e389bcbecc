"""Learnable temperatures and compile-once sorting (issue 17, items 1 and 2).

``temperature`` may be a scalar array of ``x``'s framework: every sorting op
then differentiates in it (``soft_sort`` by its hand-written backward, which
sums ``(g_hi - g_lo) dspread/dT`` over the comparators; the transports by the
framework's autodiff). Checked in float64 against central finite differences
of the NumPy forward. On JAX the ops take the temperature as an input of one
compiled function: a sweep of temperatures, or a traced one, compiles nothing new.
"""

import autoray as ar
import numpy as np
import pytest

import diffopt.sorting as ds
from conftest import SELECTED

RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 6)) * 1.5  # n = 6: padded to 8 with +inf (the padding's pairs are exact)
W = RNG.standard_normal((2, 6))
T0, H = 0.6, 1e-5

OPS = {
    "sort": lambda x, t, r, d: ds.soft_sort(x, temperature=t, relaxation=r, descending=d),
    "rank": lambda x, t, r, d: ds.soft_rank(x, temperature=t, relaxation=r, descending=d),
    "topk": lambda x, t, r, d: ds.soft_topk(x, 3, temperature=t, relaxation=r, largest=d),
    "perm": lambda x, t, r, d: ds.soft_permutation(x, temperature=t, relaxation=r, descending=d)[:, :, 2],
}
# soft_sort's hand-written backward for every relaxation; the transports (framework autodiff)
# with one relaxation each (their logsumexp case is in the infinities test)
CASES = [("sort", r, False) for r in ("logsumexp", "logistic", "cauchy", "reciprocal", "optimal")] + [
    ("sort", "cauchy", True), ("rank", "optimal", True), ("topk", "logsumexp", True), ("perm", "reciprocal", False),
]


def _loss_np(op, relaxation, descending, t):
    return float(np.sum(OPS[op](X, t, relaxation, descending) * W))


@pytest.mark.parametrize("op, relaxation, descending", CASES)
def test_temperature_gradient_matches_finite_differences(grad_backend, op, relaxation, descending):
    b = grad_backend
    want = (_loss_np(op, relaxation, descending, T0 + H) - _loss_np(op, relaxation, descending, T0 - H)) / (2 * H)
    with b.float64():
        xb, wb = b.asarray(X, "float64"), b.asarray(W, "float64")

        def loss(t):
            return ar.do("sum", OPS[op](xb, t, relaxation, descending) * wb)

        got = float(b.to_numpy(b.grad(loss, b.asarray(np.array(T0), "float64"))))
        value = float(b.to_numpy(loss(b.asarray(np.array(T0), "float64"))))
    assert abs(want) > 1e-3  # the case moves with T: a zero gradient would fail
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    # an array temperature gives the same values as the number
    np.testing.assert_allclose(value, _loss_np(op, relaxation, descending, T0), rtol=1e-12)


def test_exact_sort_has_zero_temperature_gradient(grad_backend):
    b = grad_backend
    with b.float64():
        xb = b.asarray(X, "float64")
        g = b.grad(lambda t: ar.do("sum", ds.soft_sort(xb, temperature=t, relaxation=None) * b.asarray(W, "float64")),
                   b.asarray(np.array(T0), "float64"))
    assert float(b.to_numpy(g)) == 0.0


@pytest.mark.parametrize("op", ["sort", "rank"])
def test_autograd_python_float_temperature(grad_backend, op):
    """``autograd.grad(f)(0.6)`` traces a Python float (a box without an array inside): the
    gradient equals the one of a 0-d array temperature."""
    if grad_backend.name != "autograd":
        pytest.skip("a traced Python float: autograd only")
    import autograd

    def loss(t):
        return ar.do("sum", OPS[op](X, t, "logistic", False) * W)

    as_float, as_array = autograd.grad(loss)(T0), autograd.grad(loss)(np.array(T0))
    assert abs(float(as_array)) > 1e-3
    np.testing.assert_allclose(float(as_float), float(as_array), rtol=1e-12)


def test_temperature_gradient_with_infinities(grad_backend):
    """Entries at ±inf are compared exactly: a finite gradient, the finite outputs' FD."""
    b = grad_backend
    x = np.array([[0.3, np.inf, -1.0, 0.5, -np.inf]])
    w = np.array([1.0, -2.0, 0.5])  # on the sorted positions 1..3 (0 and 4 hold -inf and +inf)

    def np_loss(t):
        return float(np.sum(ds.soft_sort(x, temperature=t)[:, 1:4] * w))

    want = (np_loss(T0 + H) - np_loss(T0 - H)) / (2 * H)
    with b.float64():
        xb, wb = b.asarray(x, "float64"), b.asarray(w, "float64")
        t0 = b.asarray(np.array(T0), "float64")
        g = float(b.to_numpy(b.grad(lambda t: ar.do("sum", ds.soft_sort(xb, temperature=t)[:, 1:4] * wb), t0)))
        g_rank = float(b.to_numpy(b.grad(lambda t: ar.do("sum", ds.soft_rank(xb, temperature=t)[:, ::2] * wb), t0)))
    np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-8)
    rank_loss = lambda t: float(np.sum(ds.soft_rank(x, temperature=t)[:, ::2] * w))  # noqa: E731
    np.testing.assert_allclose(g_rank, (rank_loss(T0 + H) - rank_loss(T0 - H)) / (2 * H), rtol=1e-6, atol=1e-8)


def test_bad_array_temperature(backend):
    b = backend
    x = b.asarray(X, "float32")
    with pytest.raises(ValueError, match="temperature"):
        ds.soft_sort(x, temperature=b.asarray(np.array([0.5, 0.5]), "float32"))
    with pytest.raises(ValueError, match="temperature"):
        ds.soft_rank(x, temperature=b.asarray(np.array(-0.5), "float32"))
    with pytest.raises(TypeError, match="temperature"):
        ds.soft_topk(x, 2, temperature=b.asarray(np.array(1), "int32"))


def _jax():
    if "jax" not in SELECTED:
        pytest.skip("jax is not among DIFFOPT_TEST_BACKENDS")
    return pytest.importorskip("jax")


class _Compiles:
    """Counts XLA compilations (JAX's backend-compile events) while active."""

    def __enter__(self):
        import jax

        self.count = 0
        self._listener = lambda event, *args, **kwargs: setattr(  # noqa: E731
            self, "count", self.count + (event == "/jax/core/compile/backend_compile_duration"))
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        import jax

        jax.monitoring.unregister_event_duration_listener(self._listener)


SWEEP = np.geomspace(0.05, 2.0, 20)
PUBLIC = {
    "soft_sort": lambda x, t: ds.soft_sort(x, temperature=t),
    "soft_rank": lambda x, t: ds.soft_rank(x, temperature=t, relaxation="cauchy"),
    "soft_topk": lambda x, t: ds.soft_topk(x, 3, temperature=t),
    "soft_permutation": lambda x, t: ds.soft_permutation(x, temperature=t),
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_jax_temperature_sweep_compiles_once(name):
    """20 temperatures: eagerly (Python numbers) the network compiles with the first and
    never again; under jax.jit a traced temperature (value and gradient): one compile in all."""
    jax = _jax()
    import jax.numpy as jnp

    fn = PUBLIC[name]
    x = jnp.asarray(RNG.standard_normal((3, 13)), dtype=jnp.float32)
    with _Compiles() as first:
        outs = [fn(x, float(SWEEP[0]))]
    with _Compiles() as eager:
        outs += [fn(x, float(t)) for t in SWEEP[1:]]
    assert first.count >= 1 and eager.count == 0, f"{eager.count} compiles for 19 new temperatures"
    ref = np.asarray(fn(np.asarray(x, dtype=np.float64), float(SWEEP[-1])))
    np.testing.assert_allclose(np.asarray(outs[-1]), ref, rtol=1e-4, atol=1e-4)

    step = jax.jit(jax.value_and_grad(lambda t: jnp.sum(fn(x, t) ** 2)))
    with _Compiles() as traced:
        for t in SWEEP:
            value, grad = step(jnp.float32(t))
    assert traced.count <= 1 and step._cache_size() == 1
    np.testing.assert_allclose(float(value), float(np.sum(np.asarray(outs[-1], dtype=np.float64) ** 2)), rtol=1e-4)
    assert np.isfinite(float(grad)) and float(grad) != 0.0
