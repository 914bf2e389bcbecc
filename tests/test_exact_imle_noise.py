"""Exact tests of the I-MLE estimators and the noise samplers, written for their mutation survivors.

Same conventions as :mod:`test_exact` (whose fixtures and references they reuse):
fixed draws (:class:`~test_exact.FixedNoise`, :class:`~test_exact.FixedRng`) or a
seeded stream, a hand-written NumPy reference, float64 to 1e-10, every backend.
The cases are the ones ``mutmut`` found untested (see ``tests/MUTATION.md``):
dtypes other than float64 (half-precision draws made in float32, a float32
estimator with a float32 state), solver arguments travelling beside an explicit
state, a single sample, a target object without ``adaptive``, β = 0, instances
of rank two, and optax's ``sample(key, shape, dtype)`` convention.
"""

import math

import autoray as ar
import numpy as np
import pytest

import diffopt
from diffopt import backends
from diffopt import imle as dimle
from diffopt._ops import first_max_mask
from diffopt.random import make_rng
from test_exact import B, D, S, FixedNoise, FixedRng, _imle_inputs, close, ref_beta_update, ref_imle

# ---------------------------------------------------------------------- noise


@pytest.mark.parametrize("noise, kind", [(diffopt.Normal(), "normal"), (diffopt.Gumbel(), "gumbel")],
                         ids=["normal", "gumbel"])
def test_optax_style_sample_hands_key_shape_and_dtype_to_the_keys_framework(monkeypatch, noise, kind):
    """``sample(key, shape, dtype)`` calls the key's shim's ``draw_with_key(kind, key, shape, dtype)``.

    JAX is the only framework with such keys; a stand-in ``draw_with_key`` on the NumPy
    shim checks the call itself in every test env (``test_exact`` checks JAX's numbers).
    """
    key = np.array([0, 7], dtype=np.uint32)
    shim = backends.get_backend(key)
    calls = []

    def draw_with_key(*args):
        calls.append(args)
        return "drawn"

    monkeypatch.setattr(shim, "draw_with_key", draw_with_key, raising=False)
    assert noise.sample(key, (3, 2), np.float32) == "drawn"
    assert noise.sample(key=key, sample_shape=4) == "drawn"
    assert [(c[0], c[2], c[3]) for c in calls] == [(kind, (3, 2), np.float32), (kind, (4,), float)]
    assert all(c[1] is key for c in calls)


def test_noise_log_prob_and_score_derivative_exact(backend):
    """``log_prob`` (optax's) and ``score_derivative`` of the standard normal and Gumbel noises."""
    x = np.random.default_rng(11).normal(size=(3, 4)) * 1.5
    with backend.float64():
        z = backend.asarray(x, "float64")
        close(backend, diffopt.Normal().log_prob(z), -0.5 * x**2)
        close(backend, diffopt.Gumbel().log_prob(z), -x - np.exp(-x))
        close(backend, diffopt.Normal().score_derivative(z), np.ones_like(x))
        close(backend, diffopt.Gumbel().score_derivative(z), np.exp(-x))


def _seeded_samplers():
    """``(name, sample(shape, like, rng), reference(stream, shape))``: the reference reads the same stream."""
    k, s = 3.0, 4

    def gumbel(stream, shape):
        return -np.log(-np.log(stream.uniform(shape)))

    def sog(stream, shape):
        g = stream.gamma((s,) + shape, 1.0 / k)
        return (sum(g[i] * k / (i + 1) for i in range(s)) - math.log(s)) / k

    return [
        ("normal", diffopt.Normal().sample, lambda stream, shape: stream.normal(shape)),
        ("gumbel", diffopt.Gumbel().sample, gumbel),
        ("imle-gumbel", dimle.GumbelNoiseDistribution(0.4, 1.7).sample,
         lambda stream, shape: 0.4 + 1.7 * gumbel(stream, shape)),
        ("sog", dimle.SumOfGammaNoiseDistribution(k=k, nb_iterations=s).sample, sog),
    ]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_seeded_draws_follow_the_framework_and_dtype_of_like(backend, dtype):
    """An int seed draws from ``make_rng(seed, like)``: ``like``'s framework and dtype, the same numbers."""
    shape = (3, 4)
    tol = 1e-10 if dtype == "float64" else 1e-5
    with backend.float64():
        backend.require(dtype)
        like = backend.asarray(np.zeros(1), dtype)
        for name, sample, reference in _seeded_samplers():
            got = sample(shape, like, 5)
            assert backends.same_framework(got, backends.get_backend(like)), name
            assert ar.get_dtype_name(got) == dtype, name
            stream = make_rng(5, like)
            want = reference(_NumpyStream(backend, stream), shape)
            np.testing.assert_allclose(backend.to_numpy(got).astype(np.float64), want, rtol=tol, atol=tol,
                                       err_msg=name)


class _NumpyStream:
    """A diffopt stream's draws as NumPy float64 (for the references)."""

    def __init__(self, backend, stream):
        self.backend, self.stream = backend, stream

    def _np(self, x):
        return self.backend.to_numpy(x).astype(np.float64)

    def normal(self, shape):
        return self._np(self.stream.normal(shape))

    def uniform(self, shape):
        return self._np(self.stream.uniform(shape))

    def gamma(self, shape, alpha):
        return self._np(self.stream.gamma(shape, alpha))


def _within_half_ulp(got, want, what):
    """``got`` (float16) is ``want`` rounded once: at most half a float16 spacing away."""
    got = got.astype(np.float64)
    half = 0.5 * np.spacing(np.abs(want).astype(np.float16)).astype(np.float64)
    err = np.abs(got - want)
    assert np.all(err <= half * (1 + 1e-3)), (what, err / half)


def test_half_precision_draws_are_made_in_float32_and_rounded_once(backend):
    """float16 noise: uniforms and gammas drawn in float32, the transform in float32, one rounding.

    Uniforms close to 1 (0.999 is 2e-5 from its nearest float16) and sums of Gamma
    terms tell a computation in float32 from one in float16 (several roundings).
    """
    backend.require("float16")
    rng = np.random.default_rng(12)
    shape = (4, 5)
    u = rng.uniform(0.02, 0.98, size=shape)
    u[0, :4] = [0.999, 0.9995, 0.99, 0.9993]
    k, s = 3.0, 6
    gammas = rng.gamma(1.0 / k, size=(s,) + shape) + 0.5
    u32, g32 = u.astype(np.float32).astype(np.float64), gammas.astype(np.float32).astype(np.float64)
    gumbel = -np.log(-np.log(u32))
    like = backend.asarray(np.zeros(1), "float16")

    def fixed():
        return FixedRng(like, backend, uniform=u, normal=u, gamma=gammas)

    draws = {
        "gumbel": (diffopt.Gumbel().sample(shape, like, fixed()), gumbel),
        "imle-gumbel": (dimle.GumbelNoiseDistribution(0.25, 1.5).sample(shape, like, fixed()), 0.25 + 1.5 * gumbel),
        "sog": (dimle.SumOfGammaNoiseDistribution(k=k, nb_iterations=s).sample(shape, like, fixed()),
                (sum(g32[i] * k / (i + 1) for i in range(s)) - math.log(s)) / k),
    }
    for name, (got, want) in draws.items():
        assert ar.get_dtype_name(got) == "float16", name
        _within_half_ulp(backend.to_numpy(got), want, name)


# ---------------------------------------------------------------- adaptive target arithmetic


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_adaptive_target_keeps_the_dtype_of_its_inputs(backend, dtype):
    """λ in θ's dtype (norms of half precision in float32), the non-zero ratio in the compute dtype."""
    theta, dy = np.array([[3.0, 4.0], [0.0, 12.0]]), np.array([[0.5, 0.0], [-1.0, 2.0]])
    target = dimle.AdaptiveTargetDistribution(initial_beta=1.5)
    with backend.float64():
        backend.require(dtype)
        lam = target.step(backend.asarray(theta, dtype), backend.asarray(dy, dtype))
        assert ar.get_dtype_name(lam) == dtype
        want = 1.5 * np.linalg.norm(theta) / np.linalg.norm(dy)
        np.testing.assert_allclose(float(backend.to_numpy(lam)), want, rtol=1e-3 if dtype == "float16" else 1e-6)
        grad = np.zeros((2, 3, 4))
        grad[0, 1, :3], grad[1, 0, 2] = 1.0, -0.5
        ratio = target.nonzero_ratio(backend.asarray(grad, dtype))
        assert ar.get_dtype_name(ratio) == ("float32" if dtype == "float16" else dtype)
        assert float(backend.to_numpy(ratio)) == float(np.asarray(4 / 6, ar.get_dtype_name(ratio)))


def test_nonzero_ratio_of_instances_of_rank_two(backend):
    """A ``[B, S, 2, 3]`` gradient: non-zeros counted over each sample's 6 entries."""
    grad = np.zeros((2, 3, 2, 3))
    grad[0, 0] = [[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]
    grad[1, 2, 1] = [-1.0, -1.0, 0.0]
    with backend.float64():
        ratio = dimle.AdaptiveTargetDistribution.nonzero_ratio(backend.asarray(grad, "float64"))
        assert float(backend.to_numpy(ratio)) == pytest.approx(5 / 6, abs=1e-15)


def test_adaptive_next_state_float32_and_beta_zero(backend):
    """The state keeps its dtype (a float32 state with a float64 ratio); β = 0 is a valid state."""
    target = dimle.AdaptiveTargetDistribution(beta_update_step=0.25, beta_update_momentum=0.5,
                                              grad_norm_decay_rate=0.75, target_norm=1.5)
    hyper = dict(step=0.25, momentum=0.5, decay=0.75, target_norm=1.5)
    with backend.float64():
        for state, ratio in [((0.8, 2.0, 0.125), 0.5), ((0.0, 2.0, 0.0), 3.0), ((0.1, 1.0, -0.5), 4.0)]:
            for dtype in ("float32", "float64"):
                new = target.next_state(backend.asarray(np.array(state), dtype), backend.asarray(ratio, "float64"))
                assert ar.get_dtype_name(new) == dtype
                got = backend.to_numpy(new).astype(np.float64)
                np.testing.assert_allclose(got, ref_beta_update(state, ratio, **hyper), rtol=0,
                                           atol=1e-10 if dtype == "float64" else 1e-6)


def test_adaptive_scale_leaves_a_nonpositive_step_alone():
    """``scale`` divides by λ only when λ > 0 (the class docstring): λ = 0 or λ < 0 leave ``g`` as is."""
    target = dimle.AdaptiveTargetDistribution()
    g = np.array([[1.0, -2.0, 0.5]])
    for lam in (0.0, -0.5, -3.0):
        np.testing.assert_array_equal(target.scale(g, np.float64(lam)), g)
    np.testing.assert_allclose(target.scale(g, np.float64(4.0)), g / 4.0, rtol=0, atol=1e-15)


# ---------------------------------------------------------------- estimators


def _shifted_solver(x, w):
    """The argmax of ``x + w`` plus ``0.1·x``: ``w`` is an extra array argument of the solver."""
    return first_max_mask(x + w) + 0.1 * x


def _ref_shifted(w):
    return lambda x: np.eye(x.shape[-1])[(x + w).argmax(-1)] + 0.1 * x


def test_solver_arguments_travel_beside_an_explicit_state(grad_backend):
    """An extra array argument of the solver with ``target_state=`` (aimle) and without (imle, ste)."""
    backend = grad_backend
    theta, eps, dy = _imle_inputs(14)
    w = np.array([0.3, -0.2, 0.0, 0.4])
    hyper = dict(step=0.05, momentum=0.5, decay=0.6, target_norm=1.9)
    state = (0.7, 1.2, 0.02)
    with backend.float64():
        t, dyb, wb = (backend.asarray(a, "float64") for a in (theta, dy, w))
        noise = FixedNoise(eps, backend, None)

        def loss(fn, **kw):
            return lambda u: ar.do("sum", fn(u, wb, rng=0, **kw) * dyb)

        fn = dimle.imle(_shifted_solver, target_distribution=dimle.TargetDistribution(beta=1.3),
                        noise_distribution=noise, nb_samples=S)
        want_z, want_g, _ = ref_imle(theta, eps, dy, kind="imle", beta=1.3, solve=_ref_shifted(w))
        close(backend, fn(t, wb, rng=0), want_z)
        close(backend, backend.grad(loss(fn), t), want_g)

        fn = dimle.ste(_shifted_solver, noise_distribution=noise, noise_temperature=0.6, nb_samples=S)
        want_z, want_g, _ = ref_imle(theta, eps, dy, kind="ste", t_in=0.6, solve=_ref_shifted(w))
        close(backend, fn(t, wb, rng=0), want_z)
        close(backend, backend.grad(loss(fn), t), want_g)

        target = dimle.AdaptiveTargetDistribution(initial_beta=5.0, beta_update_step=hyper["step"],
                                                  beta_update_momentum=hyper["momentum"],
                                                  grad_norm_decay_rate=hyper["decay"],
                                                  target_norm=hyper["target_norm"])
        fn = dimle.aimle(_shifted_solver, target_distribution=target, noise_distribution=noise, nb_samples=S,
                         symmetric_perturbation=True)
        _, want_g, diff = ref_imle(theta, eps, dy, kind="aimle", adaptive=True, beta=state[0], symmetric=True,
                                   solve=_ref_shifted(w))
        want_state = ref_beta_update(state, np.count_nonzero(diff) / (B * S), **hyper)
        from test_imle import grad2

        sb = backend.asarray(np.array(state), "float64")
        g_theta, new = grad2(backend, lambda u, s_: ar.do("sum", fn(u, wb, rng=0, target_state=s_) * dyb), t, sb)
        close(backend, g_theta, want_g)
        close(backend, new, np.array(want_state), tol=1e-12)
    assert target.beta == 5.0


def test_aimle_float32_with_a_float32_state(grad_backend):
    """float32 θ and state: output, gradient and new state in float32, equal to the float64 reference."""
    backend = grad_backend
    hyper = dict(step=0.05, momentum=0.5, decay=0.6, target_norm=1.9)
    theta, eps, dy = _imle_inputs(15)
    state = (0.7, 1.2, 0.02)
    want_z, want_g, diff = ref_imle(theta, eps, dy, kind="aimle", adaptive=True, beta=state[0], symmetric=True)
    want_state = ref_beta_update(state, np.count_nonzero(diff) / (B * S), **hyper)
    target = dimle.AdaptiveTargetDistribution(initial_beta=5.0, beta_update_step=hyper["step"],
                                              beta_update_momentum=hyper["momentum"],
                                              grad_norm_decay_rate=hyper["decay"], target_norm=hyper["target_norm"])
    fn = dimle.aimle(lambda x: first_max_mask(x) + 0.1 * x, target_distribution=target,
                     noise_distribution=FixedNoise(eps, backend, None), nb_samples=S, symmetric_perturbation=True)
    t, dyb = backend.asarray(theta, "float32"), backend.asarray(dy, "float32")
    sb = backend.asarray(np.array(state), "float32")
    z = fn(t, rng=0, target_state=sb)
    from test_imle import grad2

    g_theta, new = grad2(backend, lambda u, s_: ar.do("sum", fn(u, rng=0, target_state=s_) * dyb), t, sb)
    # θ alone too: HIPS autograd casts the gradient of a tuple of arguments to their dtypes
    g_alone = backend.grad(lambda u: ar.do("sum", fn(u, rng=0, target_state=sb) * dyb), t)
    for got, want in ((z, want_z), (g_theta, want_g), (g_alone, want_g), (new, np.array(want_state))):
        assert ar.get_dtype_name(got) == "float32"
        np.testing.assert_allclose(backend.to_numpy(got), want, rtol=0, atol=1e-5)


class _DuckTarget:
    """A target written from scratch (no ``BaseTargetDistribution``, no ``adaptive``): λ = 0.7."""

    alpha = 1.0

    def step(self, theta, dy, beta=None):
        return 0.7

    def params(self, theta, dy, _is_minimization=False, *, lam=None):
        return theta - lam * dy

    def scale(self, gradient, lam):
        return gradient


def test_imle_with_a_target_object_without_adaptive(grad_backend):
    """A duck-typed target has no ``adaptive`` attribute: it is not adaptive (no β update is attempted)."""
    backend = grad_backend
    theta, eps, dy = _imle_inputs(16)
    want_z, want_g, _ = ref_imle(theta, eps, dy, kind="imle", beta=0.7)
    with backend.float64():
        fn = dimle.imle(lambda x: first_max_mask(x) + 0.1 * x, target_distribution=_DuckTarget(),
                        noise_distribution=FixedNoise(eps, backend, None), nb_samples=S)
        t, dyb = backend.asarray(theta, "float64"), backend.asarray(dy, "float64")
        close(backend, fn(t, rng=0), want_z)
        close(backend, backend.grad(lambda u: ar.do("sum", fn(u, rng=0) * dyb), t), want_g)


@pytest.mark.parametrize("batch", [1, 3])
def test_aimle_beta_update_with_one_sample(grad_backend, batch):
    """``nb_samples=1`` (and a batch of one): β, the ratio and the momentum still follow the rule."""
    backend = grad_backend
    hyper = dict(step=0.05, momentum=0.5, decay=0.6, target_norm=0.5)
    rng = np.random.default_rng(17)
    theta, eps, dy = rng.normal(size=(batch, D)), rng.gumbel(size=(batch, 1, D)), rng.normal(size=(batch, D)) * 3.0
    target = dimle.AdaptiveTargetDistribution(initial_beta=0.9, beta_update_step=hyper["step"],
                                              beta_update_momentum=hyper["momentum"],
                                              grad_norm_decay_rate=hyper["decay"], target_norm=hyper["target_norm"])
    state = (0.9, 1.0, 0.0)
    with backend.float64():
        fn = dimle.aimle(first_max_mask, target_distribution=target, noise_distribution=FixedNoise(eps, backend, None))
        t, dyb = backend.asarray(theta, "float64"), backend.asarray(dy, "float64")
        for _ in range(2):
            _, want_g, diff = ref_imle(theta, eps, dy, kind="aimle", adaptive=True, beta=state[0], samples=1,
                                       solve=lambda x: np.eye(D)[x.argmax(-1)])
            close(backend, backend.grad(lambda u: ar.do("sum", fn(u, rng=0) * dyb), t), want_g)
            state = ref_beta_update(state, np.count_nonzero(diff) / batch, **hyper)
            np.testing.assert_allclose(target.state, state, rtol=0, atol=1e-12)
    assert target.beta != 0.9


def test_noise_with_the_wrong_batch_size_is_an_error(backend):
    """The noise's leading axis must be θ's batch: ``[B, T, ...]``."""

    class OneRowTooMany(diffopt.Noise):
        def sample(self, shape, like, rng=None):
            return backend.asarray(np.zeros((shape[0] + 1,) + tuple(shape[1:])), ar.get_dtype_name(like))

    fn = dimle.imle(first_max_mask, noise_distribution=OneRowTooMany(), nb_samples=2)
    with pytest.raises(ValueError, match="noise_distribution.sample returned shape"):
        fn(backend.asarray(np.zeros((3, 4)), "float32"), rng=0)


class _Float64Noise(FixedNoise):
    """Fixed draws returned in float64 whatever ``like`` is (as a NumPy-only noise would)."""

    def sample(self, shape, like, rng=None):
        return self.backend.asarray(self.draws(int(shape[0])), "float64")


@pytest.mark.parametrize("symmetric", [False, True], ids=["reuse", "symmetric"])
def test_the_solver_sees_theta_dtype_with_a_float64_noise(grad_backend, symmetric):
    """float32 θ, float64 noise: the noise is cast to θ's dtype, every solver call gets float32."""
    backend = grad_backend
    theta, eps, dy = _imle_inputs(18)
    seen = []

    def solver(x):
        seen.append(ar.get_dtype_name(x))
        return first_max_mask(x) + 0.1 * x

    target = dimle.TargetDistribution(alpha=1.0, beta=1.5)
    want_z, want_g, _ = ref_imle(theta, eps, dy, kind="aimle", beta=1.5, symmetric=symmetric)
    with backend.float64():
        fn = dimle.aimle(solver, target_distribution=target, noise_distribution=_Float64Noise(eps, backend, None),
                         nb_samples=S, symmetric_perturbation=symmetric)
        t, dyb = backend.asarray(theta, "float32"), backend.asarray(dy, "float32")
        z = fn(t, rng=0)
        g = backend.grad(lambda u: ar.do("sum", fn(u, rng=0) * dyb), t)
    assert seen and set(seen) == {"float32"}, seen
    for got, want in ((z, want_z), (g, want_g)):
        assert ar.get_dtype_name(got) == "float32"
        np.testing.assert_allclose(backend.to_numpy(got), want, rtol=0, atol=1e-5)


def test_imle_draws_its_noise_from_rng(backend):
    """``rng=`` reaches the noise: the output is the reference on ``noise.sample([B, T, D], θ, rng)``."""
    theta, _, _ = _imle_inputs(19)
    noise = dimle.GumbelNoiseDistribution(0.1, 0.8)
    with backend.float64():
        t = backend.asarray(theta, "float64")
        fn = dimle.imle(lambda x: first_max_mask(x) + 0.1 * x, noise_distribution=noise, nb_samples=S)
        for seed in (3, 4):
            eps = backend.to_numpy(noise.sample((B, S, D), t, seed)).astype(np.float64)
            want_z, _, _ = ref_imle(theta, eps, np.zeros((B * S, D)), kind="imle")
            close(backend, fn(t, rng=seed), want_z)


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
    """test_exact's ±inf case through the generic network (sentinels, clip and restore of ``lse_network``)."""
    from test_exact import test_soft_sort_infinities_exact

    _without_fused_kernels(backend, monkeypatch)
    test_soft_sort_infinities_exact(backend, relaxation)


@pytest.mark.parametrize("relaxation", ["logsumexp", "logistic"])
def test_soft_sort_generic_network_largest_finite_values(backend, monkeypatch, relaxation):
    """test_edge_cases' float32 ``±finfo.max`` case through the generic network: the sentinels are
    float32's own (not float64's), the largest finite values stay finite and ``+inf`` stays ``+inf``."""
    from test_edge_cases import test_soft_sort_of_the_largest_finite_values_is_finite

    _without_fused_kernels(backend, monkeypatch)
    for n in (3, 4):
        test_soft_sort_of_the_largest_finite_values_is_finite(backend, relaxation, n)


def test_soft_sort_uses_the_fused_kernel_where_the_shim_has_one(backend, monkeypatch):
    """Where a shim has ``sorting_fused`` (NumPy, autograd, eager torch), ``soft_sort`` with a number
    temperature runs it (asked with the rows, the temperature and the relaxation; its forward called),
    and its numbers are the generic network's."""
    from diffopt import sorting
    from test_exact import ref_sorting

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
    from test_exact import ref_sorting

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
    from test_exact import _diffopt_sorting, _sorting_cases

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

    from test_exact import ref_sorting

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
    from test_exact import ref_sorting

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
