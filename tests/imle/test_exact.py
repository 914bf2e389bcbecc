"""Exact tests of the I-MLE estimators (imle, aimle, ste, the adaptive target): fixed noise
draws, a hand-written NumPy reference (:mod:`references`), float64 to 1e-10, every backend.
Many cases are the ones ``mutmut`` found untested (see ``tests/MUTATION.md``).
"""

import autoray as ar
import numpy as np
import pytest

import diffopt
from diffopt import imle as dimle
from diffopt._ops import first_max_mask
from references import B, D, FixedNoise, M, S, _imle_inputs, close, grad2, ref_beta_update, ref_imle


def imle_solver(x):
    """Argmax plus a small linear part: every coefficient of the targets shows in z - z'."""
    return first_max_mask(x) + 0.1 * x


IMLE_CASES = {
    "default": dict(),
    "alpha-beta-scaled": dict(alpha=0.6, beta=1.7, scaling=True),
    "temperatures": dict(t_in=0.5, t_tgt=0.8, beta=2.0),
    "marginal": dict(marginal=M, beta=1.2),
    "minimize": dict(minimize=True, beta=1.5, alpha=0.9),
}


def _check_imle(backend, make, theta, eps, dy, want_z, want_g):
    with backend.float64():
        noise = FixedNoise(eps, backend, None)
        fn = make(noise)
        t, dyb = backend.asarray(theta, "float64"), backend.asarray(dy, "float64")
        close(backend, fn(t, rng=0), want_z)
        if backend.has_grad:
            close(backend, backend.grad(lambda u: ar.do("sum", fn(u, rng=0) * dyb), t), want_g)


@pytest.mark.parametrize("case", list(IMLE_CASES))
def test_imle_exact(backend, case):
    opts = IMLE_CASES[case]
    theta, eps, dy = _imle_inputs(4, opts.get("marginal", 1))
    want_z, want_g, diff = ref_imle(theta, eps, dy, kind="imle", **opts)
    assert np.abs(diff).max() > 0.5  # the discrete part moved: the test sees the solver's jumps

    def make(noise):
        target = dimle.TargetDistribution(alpha=opts.get("alpha", 1.0), beta=opts.get("beta", 1.0),
                                          do_gradient_scaling=opts.get("scaling", False))
        return dimle.imle(imle_solver, target_distribution=target, noise_distribution=noise, nb_samples=S,
                          input_noise_temperature=opts.get("t_in", 1.0),
                          target_noise_temperature=opts.get("t_tgt", 1.0),
                          nb_marginal_samples=opts.get("marginal", 1), minimize=opts.get("minimize", False))

    _check_imle(backend, make, theta, eps, dy, want_z, want_g)


AIMLE_CASES = {
    "reuse": dict(),
    "symmetric": dict(symmetric=True),
    "alpha": dict(alpha=0.7),
    "temperatures-min": dict(t_in=0.6, t_tgt=0.9, minimize=True),
    "symmetric-marginal": dict(symmetric=True, marginal=M),
    "symmetric-min-alpha": dict(symmetric=True, minimize=True, alpha=0.8, t_tgt=0.7),
}


@pytest.mark.parametrize("case", list(AIMLE_CASES))
def test_aimle_exact(backend, case):
    opts = AIMLE_CASES[case]
    theta, eps, dy = _imle_inputs(5, opts.get("marginal", 1))
    beta0 = 0.8
    want_z, want_g, _ = ref_imle(theta, eps, dy, kind="aimle", adaptive=True, beta=beta0, **opts)

    def make(noise):
        target = dimle.AdaptiveTargetDistribution(initial_alpha=opts.get("alpha", 1.0), initial_beta=beta0,
                                                  beta_update_step=0.0)
        return dimle.aimle(imle_solver, target_distribution=target, noise_distribution=noise, nb_samples=S,
                           input_noise_temperature=opts.get("t_in", 1.0),
                           target_noise_temperature=opts.get("t_tgt", 1.0),
                           nb_marginal_samples=opts.get("marginal", 1), minimize=opts.get("minimize", False),
                           symmetric_perturbation=opts.get("symmetric", False))

    _check_imle(backend, make, theta, eps, dy, want_z, want_g)


def test_ste_exact(backend):
    theta, eps, dy = _imle_inputs(6)
    want_z, want_g, _ = ref_imle(theta, eps, dy, kind="ste", t_in=0.7)
    _check_imle(backend, lambda noise: dimle.ste(imle_solver, noise_distribution=noise, noise_temperature=0.7,
                                                 nb_samples=S), theta, eps, dy, want_z, want_g)


@pytest.mark.parametrize("marginal", [1, M], ids=["one-marginal", "marginal"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["one-sided", "symmetric"])
def test_aimle_beta_update_exact(grad_backend, symmetric, marginal):
    """Three backward passes: β, the running non-zero ratio and the momentum follow the rule."""
    backend = grad_backend
    hyper = dict(step=0.05, momentum=0.5, decay=0.6, target_norm=1.9)
    theta, eps, dy = _imle_inputs(7, marginal)
    target = dimle.AdaptiveTargetDistribution(initial_beta=0.9, beta_update_step=hyper["step"],
                                              beta_update_momentum=hyper["momentum"],
                                              grad_norm_decay_rate=hyper["decay"], target_norm=hyper["target_norm"],
                                              initial_grad_norm=2.5)
    state = (0.9, 2.5, 0.0)
    directions = []
    with backend.float64():
        fn = dimle.aimle(first_max_mask, target_distribution=target, noise_distribution=FixedNoise(eps, backend, None),
                         nb_samples=S, nb_marginal_samples=marginal, symmetric_perturbation=symmetric)
        t = backend.asarray(theta, "float64")
        for k in range(3):
            scale = 1.0 + 4.0 * k  # larger steps: more argmaxes move, the ratio changes
            _, want_g, diff = ref_imle(theta, eps, dy * scale, kind="aimle", adaptive=True, beta=state[0],
                                       symmetric=symmetric, marginal=marginal,
                                       solve=lambda x: np.eye(D)[x.argmax(-1)])
            dyb = backend.asarray(dy * scale, "float64")
            close(backend, backend.grad(lambda u: ar.do("sum", fn(u, rng=0) * dyb), t), want_g)
            ratio = np.count_nonzero(diff) / (B * S)
            new = ref_beta_update(state, ratio, **hyper)
            directions.append(new[2] - hyper["momentum"] * state[2] > 0)
            state = new
            np.testing.assert_allclose(target.state, state, rtol=0, atol=1e-12)
    if marginal == 1:  # β went both up and down: both branches of the rule are checked
        assert len(set(directions)) == 2, directions


def test_target_distribution_defaults():
    """Public calls without the optional arguments: maximisation, the object's own β."""
    theta, dy = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.1, -1.0])
    target = dimle.TargetDistribution(alpha=0.5, beta=2.0)
    assert target.step(theta, dy) == 2.0 and target.step(theta, dy, 0.25) == 0.25
    np.testing.assert_allclose(target.params(theta, dy), 0.5 * theta - 2.0 * dy, rtol=0, atol=1e-15)
    adaptive = dimle.AdaptiveTargetDistribution(initial_alpha=0.5, initial_beta=2.0)
    lam = 2.0 * np.linalg.norm(theta) / np.linalg.norm(dy)
    np.testing.assert_allclose(adaptive.params(theta, dy), 0.5 * theta - lam * dy, rtol=0, atol=1e-12)


def test_adaptive_step_half_precision_norms(backend):
    """‖θ‖² above float16's range (65504): the norms are taken in float32, λ stays finite and right."""
    backend.require("float16")
    theta, dy = np.full((2, 3), 300.0), np.full((2, 3), 0.5)
    lam = dimle.AdaptiveTargetDistribution(initial_beta=1.5).step(backend.asarray(theta, "float16"),
                                                                  backend.asarray(dy, "float16"))
    got = float(backend.to_numpy(lam))
    np.testing.assert_allclose(got, 1.5 * np.linalg.norm(theta) / np.linalg.norm(dy), rtol=2e-3)


def test_nonzero_ratio_counts_per_sample():
    """Non-zero entries per (instance, sample) pair of a [B, S, ...] gradient, B != S."""
    grad = np.zeros((2, 3, 4))
    grad[0, 0, :3] = 1.0
    grad[1, 2, 1] = -2.0
    assert dimle.AdaptiveTargetDistribution.nonzero_ratio(grad) == pytest.approx(4 / 6)


def test_adaptive_step_and_scale_edge_cases():
    """λ = 0 for a zero cotangent (no NaN, also with θ = 0); small ‖dy‖ < 1; scale divides by λ > 0 only."""
    target = dimle.AdaptiveTargetDistribution(initial_beta=1.5)
    theta, dy = np.array([[3.0, 4.0]]), np.array([[0.3, 0.4]])  # ‖θ‖ = 5, ‖dy‖ = 0.5
    assert float(target.step(theta, dy)) == pytest.approx(15.0, abs=1e-12)
    assert float(target.step(theta, 0.0 * dy)) == 0.0
    assert float(target.step(0.0 * theta, 0.0 * dy)) == 0.0
    g = np.array([[1.0, -2.0]])
    np.testing.assert_array_equal(target.scale(g, np.float64(0.0)), g)
    np.testing.assert_allclose(target.scale(g, np.float64(2.0)), g / 2.0, rtol=0, atol=1e-15)


def test_aimle_explicit_state_exact(grad_backend):
    """``target_state=``: λ uses the state's β (not the object's), the state's gradient is the next state."""
    backend = grad_backend
    hyper = dict(step=0.05, momentum=0.5, decay=0.6, target_norm=1.9)
    theta, eps, dy = _imle_inputs(13)
    target = dimle.AdaptiveTargetDistribution(initial_beta=5.0, beta_update_step=hyper["step"],
                                              beta_update_momentum=hyper["momentum"],
                                              grad_norm_decay_rate=hyper["decay"], target_norm=hyper["target_norm"])
    state = (0.7, 1.2, 0.02)
    _, want_g, diff = ref_imle(theta, eps, dy, kind="aimle", adaptive=True, beta=state[0], symmetric=True)
    want_state = ref_beta_update(state, np.count_nonzero(diff) / (B * S), **hyper)
    with backend.float64():
        fn = dimle.aimle(imle_solver, target_distribution=target, noise_distribution=FixedNoise(eps, backend, None),
                         nb_samples=S, symmetric_perturbation=True)
        t, dyb = backend.asarray(theta, "float64"), backend.asarray(dy, "float64")
        sb = backend.asarray(np.array(state), "float64")

        g_theta, new = grad2(backend, lambda u, s_: ar.do("sum", fn(u, rng=0, target_state=s_) * dyb), t, sb)
        close(backend, g_theta, want_g)
        close(backend, new, np.array(want_state), tol=1e-12)
    assert target.beta == 5.0  # the object's state is untouched on the functional path


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
