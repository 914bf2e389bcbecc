"""I-MLE, AIMLE, STE, target and noise distributions, on every backend."""

import itertools
import math
import warnings

import autoray as ar
import numpy as np
import pytest

import diffopt
from diffopt._ops import do  # compiles under torch.compile, unlike autoray's torch sum
from diffopt.imle import (
    AdaptiveTargetDistribution,
    GumbelNoiseDistribution,
    SumOfGammaNoiseDistribution,
    TargetDistribution,
    aimle,
    imle,
    ste,
)
from references import grad2

THETA = np.array([[3.0, 2.0, 1.0, 0.0]])
DY = np.array([[0.0, 1.0, -1.0, 0.0]])
COLD = {"input_noise_temperature": 0.0, "target_noise_temperature": 0.0}


def top2(x):
    return diffopt.top_k_mask(x, 2)


def bottom2(x):
    return diffopt.top_k_mask(-x, 2)


@diffopt.host_solver
def host_top2(x):
    order = np.argsort(-x, axis=-1, kind="stable")[..., :2]
    out = np.zeros_like(x)
    np.put_along_axis(out, order, 1.0, axis=-1)
    return out


class Counting:
    """A solver that records the number of rows of every call."""

    def __init__(self, solver=top2):
        self.solver = solver
        self.rows = []

    def __call__(self, x, *args):
        self.rows.append(int(x.shape[0]))
        return self.solver(x, *args)


def linear_loss_grad(backend, estimator, theta, dy, **call):
    """∂/∂θ of ⟨estimator(θ), dy⟩ by the framework's own autodiff."""
    dy_b = backend.asarray(dy)
    return backend.to_numpy(backend.grad(lambda x: ar.do("sum", estimator(x, **call) * dy_b), backend.asarray(theta)))


# -- the exact gradients of the issue --------------------------------------------------
@pytest.mark.parametrize("scaling, expected", [(False, [0, 1, -1, 0]), (True, [0, 2 / 3, -2 / 3, 0])])
@pytest.mark.parametrize("solver", [top2, host_top2], ids=["native", "host"])
def test_imle_gradient_beta_1_5(grad_backend, solver, scaling, expected):
    est = imle(solver, TargetDistribution(beta=1.5, do_gradient_scaling=scaling), **COLD)
    g = linear_loss_grad(grad_backend, est, THETA, DY)
    np.testing.assert_allclose(g, [expected], atol=1e-6)


def test_symmetric_aimle_is_a_halved_central_difference(grad_backend):
    est = aimle(top2, TargetDistribution(beta=1.5), symmetric_perturbation=True, **COLD)
    np.testing.assert_allclose(linear_loss_grad(grad_backend, est, THETA, DY), [[0, 0.5, -0.5, 0]], atol=1e-6)


@pytest.mark.parametrize("family", [imle, aimle])
def test_adaptive_target_step_gradient_and_beta_update(grad_backend, family):
    target = AdaptiveTargetDistribution(initial_beta=1.0)
    lam = target.step(np.tile(THETA, (1, 1)), DY)
    assert lam == pytest.approx(math.sqrt(7.0))
    est = family(top2, target, **COLD)
    g = linear_loss_grad(grad_backend, est, THETA, DY)
    r7 = 1 / math.sqrt(7.0)
    np.testing.assert_allclose(g, [[0, r7, -r7, 0]], rtol=1e-5)
    assert target.beta == pytest.approx(0.9999, abs=1e-12)
    assert target.grad_norm == pytest.approx(1.1)


def test_adaptive_norms_do_not_grow_with_the_number_of_samples(grad_backend):
    """λ uses ‖θ repeated S times‖ against the S cotangents: S does not rescale the gradient."""
    grads = []
    for s in (1, 3):
        est = imle(top2, AdaptiveTargetDistribution(), nb_samples=s, **COLD)
        grads.append(linear_loss_grad(grad_backend, est, THETA, np.repeat(DY, s, axis=0)))
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-5)
    r7 = 1 / math.sqrt(7.0)  # λ = ‖θ‖/‖dy‖ = √7 at β = 1, as for one sample
    np.testing.assert_allclose(grads[0], [[0, r7, -r7, 0]], rtol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: imle(top2, TargetDistribution(beta=1.5), **COLD),
    lambda: aimle(top2, TargetDistribution(beta=1.5), symmetric_perturbation=True, **COLD),
    lambda: aimle(top2, AdaptiveTargetDistribution(), **COLD),
], ids=["imle", "aimle-symmetric", "aimle-adaptive"])
def test_zero_cotangent_gives_exactly_zero_gradient(grad_backend, make):
    g = linear_loss_grad(grad_backend, make(), THETA, np.zeros_like(DY))
    assert np.all(g == 0.0)


def test_minimize_flips_the_target_and_the_sign(grad_backend):
    target = TargetDistribution(beta=1.5)
    g_min = linear_loss_grad(grad_backend, imle(bottom2, target, minimize=True, **COLD), THETA, -DY)
    g_max = linear_loss_grad(grad_backend, imle(top2, target, **COLD), -THETA, -DY)
    np.testing.assert_allclose(g_min, -g_max, atol=1e-6)
    np.testing.assert_allclose(g_min, [[0, 1, -1, 0]], atol=1e-6)
    legacy = imle(bottom2, target, _is_minimization=True, theta_noise_temperature=0.0, target_noise_temperature=0.0)
    np.testing.assert_allclose(linear_loss_grad(grad_backend, legacy, THETA, -DY), g_min)


def test_descent_property_for_an_exact_solver(grad_backend):
    """z' = argmax⟨θ − β·dy + ε, ·⟩ and z = argmax⟨θ + ε, ·⟩ imply ⟨dy, z − z'⟩ ≥ 0."""
    gen = np.random.default_rng(1)
    theta, dy = gen.normal(size=(64, 6)), gen.normal(size=(64, 6))
    est = imle(lambda x: diffopt.top_k_mask(x, 3), TargetDistribution(beta=0.7), GumbelNoiseDistribution())
    g = linear_loss_grad(grad_backend, est, theta, dy, rng=3)
    inner = np.sum(g * dy, axis=1)
    assert np.all(inner >= -1e-6)
    assert np.sum(inner > 1e-6) >= 10
    # each row of g is z − z' (no gradient scaling) for top-3 masks z, z': entries in {0, ±1}, as many
    # +1 as −1 (both masks hold 3 ones)
    np.testing.assert_array_equal(np.round(g), g)
    assert np.abs(g).max() == 1.0
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-5)


# -- shapes, calls, arguments ---------------------------------------------------------
def test_output_is_instance_major_b_times_s(backend):
    theta = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 0.0, 2.0]])
    z = imle(top2, nb_samples=4, nb_marginal_samples=2, **COLD)(backend.asarray(theta))
    z = backend.to_numpy(z)
    assert z.shape == (24, 4)
    expected = np.repeat(diffopt.top_k_mask(theta, 2), 8, axis=0)
    np.testing.assert_array_equal(z, expected)


@pytest.mark.parametrize("family, options, backward_rows", [
    (imle, {}, [12]),
    (aimle, {"symmetric_perturbation": True}, [24]),
    (aimle, {}, [12]),
    (aimle, {"target_noise_temperature": 0.5}, [24]),
    (ste, None, []),
])
def test_one_batched_solver_call_forward_and_backward(grad_backend, family, options, backward_rows):
    counting = Counting()
    if options is None:
        est = family(counting, GumbelNoiseDistribution(), nb_samples=4)
    else:
        est = family(counting, TargetDistribution(), GumbelNoiseDistribution(), nb_samples=4, **options)
    theta = np.random.default_rng(0).normal(size=(3, 5))
    linear_loss_grad(grad_backend, est, theta, np.ones((12, 5)), rng=0)
    assert counting.rows == [12] + backward_rows


def test_marginal_samples_average_before_the_difference(grad_backend):
    est = imle(top2, TargetDistribution(beta=1.5), nb_samples=2, nb_marginal_samples=3, **COLD)
    g = linear_loss_grad(grad_backend, est, THETA, np.repeat(DY, 6, axis=0))
    np.testing.assert_allclose(g, [[0, 1, -1, 0]], atol=1e-6)


def test_extra_solver_arguments_pass_through_without_gradient(grad_backend):
    def topk(x, k, offset):
        return diffopt.top_k_mask(x + offset, k)

    est = imle(topk, TargetDistribution(beta=1.5), **COLD)
    offset = grad_backend.asarray(np.zeros((1, 4)))
    dy_b = grad_backend.asarray(DY)
    g = grad_backend.grad(lambda x: ar.do("sum", est(x, 2, offset) * dy_b), grad_backend.asarray(THETA))
    np.testing.assert_allclose(grad_backend.to_numpy(g), [[0, 1, -1, 0]], atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_and_framework_are_kept(grad_backend, dtype):
    theta = grad_backend.asarray(THETA, dtype)
    est = imle(host_top2, noise_distribution=SumOfGammaNoiseDistribution(k=2))
    dtype = ar.get_dtype_name(theta)  # JAX without x64 keeps float32
    z = est(theta, rng=0)
    assert ar.get_dtype_name(z) == dtype and ar.infer_backend(z) == ar.infer_backend(theta)
    z_np = grad_backend.to_numpy(z)
    np.testing.assert_array_equal(z_np.sum(-1), 2.0)  # a top-2 mask of the perturbed θ in every row
    assert set(np.unique(z_np)) <= {0.0, 1.0}, z_np
    g = grad_backend.grad(lambda x: ar.do("sum", est(x, rng=0) * grad_backend.asarray(DY, dtype)), theta)
    assert ar.get_dtype_name(g) == dtype
    assert np.isfinite(grad_backend.to_numpy(g)).all()


def test_same_seed_same_output_other_seed_other_output(backend):
    est = imle(lambda x: diffopt.top_k_mask(x, 3), noise_distribution=GumbelNoiseDistribution(), nb_samples=8)
    theta = backend.asarray(np.zeros((2, 10)))
    a, b, c = (backend.to_numpy(est(theta, rng=seed)) for seed in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_ste_passes_the_mean_cotangent(grad_backend):
    est = ste(top2, GumbelNoiseDistribution(), noise_temperature=0.5, nb_samples=3)
    dy = np.arange(12.0).reshape(3, 4)
    g = linear_loss_grad(grad_backend, est, THETA, dy, rng=0)
    np.testing.assert_allclose(g, dy.mean(axis=0, keepdims=True))


# -- compiled functions and adaptive state --------------------------------------------
def test_gradient_under_the_framework_compiler(grad_backend):
    """jax.jit, tf.function, torch.compile (which graph-breaks around the host solver)."""
    est = imle(host_top2, TargetDistribution(beta=1.5), GumbelNoiseDistribution(), **COLD)
    dy = grad_backend.asarray(DY)
    key = _key(grad_backend, 0)
    step = grad_backend.jit(lambda x, k: grad_backend.grad(lambda t: do("sum", est(t, rng=k) * dy), x))
    g = grad_backend.to_numpy(step(grad_backend.asarray(THETA), key))
    np.testing.assert_allclose(g, [[0, 1, -1, 0]], atol=1e-6)


def _key(backend, seed):
    if backend.name == "jax":
        import jax

        return jax.random.key(seed)
    if backend.name == "tensorflow":
        import tensorflow as tf

        return tf.constant([seed, 0], dtype=tf.int64)
    return seed


def test_functional_adaptive_state_under_the_compiler(grad_backend):
    """With target_state=..., the gradient w.r.t. the state is the new state (also under jit)."""
    target = AdaptiveTargetDistribution()
    est = aimle(top2, target, **COLD)
    dy = grad_backend.asarray(DY)

    def loss(x, s):
        return ar.do("sum", est(x, target_state=s) * dy)

    def both(x, s):
        return grad2(grad_backend, loss, x, s)

    if grad_backend.name in ("jax", "tensorflow"):
        both = grad_backend.jit(both)
    state = grad_backend.asarray(target.init_state())
    for expected_beta in (0.9999, 0.9998):
        g, state = both(grad_backend.asarray(THETA), state)
        assert grad_backend.to_numpy(state)[0] == pytest.approx(expected_beta, abs=1e-6)
    r7 = 1 / (0.9999 * math.sqrt(7.0))  # the second step used beta = 0.9999
    np.testing.assert_allclose(grad_backend.to_numpy(g), [[0, r7, -r7, 0]], rtol=1e-5)
    assert target.beta == 1.0
    target.load_state(state)
    assert target.beta == pytest.approx(0.9998, abs=1e-6)


def test_stateful_adaptive_target_warns_when_traced():
    jax = pytest.importorskip("jax")
    target = AdaptiveTargetDistribution()
    est = aimle(top2, target, **COLD)
    step = jax.jit(jax.grad(lambda x: (est(x) * DY).sum()))
    with pytest.warns(RuntimeWarning, match="target_state"):
        g = step(jax.numpy.asarray(THETA))
    assert target.beta == 1.0
    r7 = 1 / math.sqrt(7.0)  # the step λ = √7 of the initial β = 1 (the state is not updated under jit)
    np.testing.assert_allclose(np.asarray(g), [[0, r7, -r7, 0]], rtol=1e-5)


# -- noise distributions --------------------------------------------------------------
def _tolerance(var, kappa4, n, z=5.0):
    """z-sigma half-widths for the sample mean and the sample variance."""
    return z * math.sqrt(var / n), z * math.sqrt((kappa4 + 2 * var**2) / n)


def test_sum_of_gamma_moments(backend):
    k, s, n = 5.0, 10, 40_000
    noise = SumOfGammaNoiseDistribution(k=k, nb_iterations=s)
    x = noise.sample((n,), backend.asarray(np.zeros(1), "float64"), rng=0)
    assert ar.infer_backend(x) == ar.infer_backend(backend.asarray(np.zeros(1)))
    x = backend.to_numpy(x)
    i = np.arange(1, s + 1)
    mean, var = (np.sum(1 / i) - math.log(s)) / k, np.sum(i**-2.0) / k
    assert (mean, var) == pytest.approx((0.125277, 0.309954), abs=1e-6)
    kappa4 = 6.0 / k * np.sum(i**-4.0)
    tol_mean, tol_var = _tolerance(var, kappa4, n)
    assert abs(x.mean() - mean) < tol_mean
    assert abs(x.var() - var) < tol_var


def test_sum_of_k_sum_of_gamma_draws_tends_to_a_standard_gumbel(backend):
    k, s, n = 5, 50, 2_000
    noise = SumOfGammaNoiseDistribution(k=k, nb_iterations=s)
    x = backend.to_numpy(noise.sample((k, n), backend.asarray(np.zeros(1), "float64"), rng=1)).sum(axis=0)
    i = np.arange(1, s + 1)
    mean, var = np.sum(1 / i) - math.log(s), np.sum(i**-2.0)
    assert abs(mean - np.euler_gamma) < 1 / s and abs(var - math.pi**2 / 6) < 1 / s
    tol_mean, tol_var = _tolerance(var, 6 * 1.0823, n)
    assert abs(x.mean() - mean) < tol_mean
    assert abs(x.var() - var) < tol_var


def test_gumbel_noise_moments_dtype_and_score(backend):
    noise = GumbelNoiseDistribution(location=1.0, scale=2.0)
    n = 50_000
    x = noise.sample((n,), backend.asarray(np.zeros(1), "float32"), rng=2)
    assert ar.get_dtype_name(x) == "float32"
    x = backend.to_numpy(x).astype(np.float64)
    var = 4 * math.pi**2 / 6
    tol_mean, tol_var = _tolerance(var, 2.4 * var**2, n)
    assert abs(x.mean() - (1.0 + 2.0 * np.euler_gamma)) < tol_mean
    assert abs(x.var() - var) < tol_var
    z = np.array([-1.0, 1.0, 3.0])
    expected = (1 - np.exp(-(z - 1.0) / 2.0)) / 2.0
    np.testing.assert_allclose(backend.to_numpy(noise.score(backend.asarray(z))), expected)


def test_noise_sample_without_like_is_numpy():
    n = 20_000
    x = SumOfGammaNoiseDistribution(k=3, nb_iterations=5).sample((n, 2), rng=4)
    assert isinstance(x, np.ndarray) and x.shape == (n, 2) and x.dtype == np.float64
    i = np.arange(1, 6)
    mean, var = (np.sum(1 / i) - math.log(5)) / 3, np.sum(i**-2.0) / 3
    tol_mean, tol_var = _tolerance(var, 6.0 / 3 * np.sum(i**-4.0), x.size)
    assert abs(x.mean() - mean) < tol_mean and abs(x.var() - var) < tol_var


# -- learning ---------------------------------------------------------------------------
def test_topk_toy_learns(grad_backend):
    """n=10, k=5, loss ‖z − b‖²: the exact expected loss under p(z) ∝ exp⟨z, θ⟩ approaches its minimum."""
    n, k = 10, 5
    subsets = np.array([np.isin(np.arange(n), c) for c in itertools.combinations(range(n), k)], float)
    b = np.random.default_rng(0).normal(size=n)
    losses = ((subsets - b) ** 2).sum(axis=1)

    def gap(theta):
        logits = subsets @ theta
        p = np.exp(logits - logits.max())
        return p @ losses / p.sum() - losses.min()

    est = imle(lambda x: diffopt.top_k_mask(x, k), TargetDistribution(beta=1.0),
               SumOfGammaNoiseDistribution(k=k), nb_samples=10)
    b_arr = grad_backend.asarray(b[None, :])
    theta = np.zeros((1, n))
    start = gap(theta[0])
    for step in range(50):
        g = grad_backend.grad(lambda t: ar.do("sum", (est(t, rng=step) - b_arr) ** 2) / 10.0,
                              grad_backend.asarray(theta))
        theta = theta - 5.0 * grad_backend.to_numpy(g)
    assert gap(theta[0]) < 0.3 * start


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, exc, name", [
    ({"nb_samples": 0}, ValueError, "nb_samples"),
    ({"nb_samples": 1.5}, TypeError, "nb_samples"),
    ({"nb_marginal_samples": 0}, ValueError, "nb_marginal_samples"),
    ({"input_noise_temperature": -1.0}, ValueError, "input_noise_temperature"),
    ({"target_noise_temperature": -0.1}, ValueError, "target_noise_temperature"),
    ({"noise_distribution": "gumbel"}, TypeError, "noise_distribution"),
    ({"target_distribution": 1.0}, TypeError, "target_distribution"),
    ({"bogus": 1}, TypeError, "bogus"),
])
def test_bad_estimator_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        imle(top2, **kwargs)


@pytest.mark.parametrize("make, exc, name", [
    (lambda: SumOfGammaNoiseDistribution(k=0), ValueError, "k"),
    (lambda: SumOfGammaNoiseDistribution(k="5"), TypeError, "k"),
    (lambda: SumOfGammaNoiseDistribution(k=5, nb_iterations=0), ValueError, "nb_iterations"),
    (lambda: GumbelNoiseDistribution(scale=0.0), ValueError, "scale"),
    (lambda: TargetDistribution(beta=-1.0), ValueError, "beta"),
    (lambda: AdaptiveTargetDistribution(grad_norm_decay_rate=1.5), ValueError, "grad_norm_decay_rate"),
    (lambda: ste(top2, nb_samples=0), ValueError, "nb_samples"),
    (lambda: ste(top2, noise_temperature=-1), ValueError, "^noise_temperature"),
])
def test_bad_distribution_arguments(make, exc, name):
    with pytest.raises(exc, match=name):
        make()


def test_bad_call_arguments_fail_before_the_solver(backend):
    counting = Counting()
    est = imle(counting)
    with pytest.raises(TypeError, match="theta"):
        est(backend.asarray(np.array([[1, 2]]), "int32"))
    with pytest.raises(ValueError, match="theta"):
        est(backend.asarray(np.array(1.0)))
    with pytest.raises(ValueError, match="target_state"):
        est(backend.asarray(THETA), target_state=backend.asarray(np.zeros(3)))
    assert counting.rows == []


def test_solver_returning_the_wrong_shape_or_type(backend):
    with pytest.raises(ValueError, match="function"):
        imle(lambda x: x[:, :2], **COLD)(backend.asarray(THETA))
    if backend.name not in ("numpy", "autograd"):
        with pytest.raises(TypeError, match="function"):
            imle(lambda x: np.zeros((1, 4)), **COLD)(backend.asarray(THETA))


def test_drop_in_module_paths():
    from diffopt.imle import noise, target, wrapper
    from diffopt.imle.aimle import aimle as aimle2

    # diffopt.imle.aimle.aimle keeps torch-adaptive-imle's positional order (tests/compat)
    assert wrapper.imle is imle and wrapper.aimle is aimle and wrapper.ste is ste and aimle2 is not aimle
    assert target.TargetDistribution is TargetDistribution
    assert noise.SumOfGammaNoiseDistribution is SumOfGammaNoiseDistribution

    @imle(target_distribution=TargetDistribution(beta=1.5), nb_samples=1, **COLD)
    def solver(x):
        return top2(x)

    assert solver.__name__ == "solver"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(solver(THETA), [[1, 1, 0, 0]])


def test_torch_vmap_matches_row_by_row_calls():
    # torch.func.vmap needs randomness="same" here (the Gamma draws are seeded on the host);
    # with an explicit seed every slice is then computed as if called alone
    torch = pytest.importorskip("torch")

    @imle(target_distribution=TargetDistribution(alpha=1.0, beta=10.0),
          noise_distribution=SumOfGammaNoiseDistribution(k=5, nb_iterations=100), nb_samples=2)
    def solver(theta):
        return diffopt.top_k_mask(theta, 2)

    theta = torch.from_numpy(np.random.RandomState(23).randn(3, 4, 6))
    w = torch.from_numpy(np.random.RandomState(24).randn(8, 6))
    out = torch.func.vmap(lambda t: solver(t, rng=0), randomness="same")(theta)
    grads = torch.func.vmap(torch.func.grad(lambda t: (solver(t, rng=0) * w).sum()), randomness="same")(theta)
    for i in range(3):
        np.testing.assert_array_equal(out[i].numpy(), solver(theta[i], rng=0).numpy())
        t = theta[i].clone().requires_grad_(True)
        (solver(t, rng=0) * w).sum().backward()
        np.testing.assert_allclose(grads[i].numpy(), t.grad.numpy(), atol=1e-12)


def test_adaptive_step_in_float16_does_not_overflow(backend):
    # 600 values of size ~50: the float16 sum of squares (~1e6) overflows; the norms are taken in float32
    backend.require("float16")
    rs = np.random.RandomState(25)
    theta, dy = rs.randn(2, 600) * 50, rs.randn(2, 600) * 30
    target = AdaptiveTargetDistribution()
    want = float(target.step(theta, dy))  # float64 reference
    got = target.step(backend.asarray(theta, "float16"), backend.asarray(dy, "float16"))
    assert ar.get_dtype_name(got) == "float16"
    np.testing.assert_allclose(float(backend.to_numpy(got)), want, rtol=2e-3)  # float16 inputs: ~1e-3


# -- torch-adaptive-imle's module layout, on every backend (tests/compat runs the originals' cases on torch) --
def test_drop_in_select_k_and_mathias_select_k(backend):
    from diffopt.imle.solvers import mathias_select_k, select_k

    x = backend.asarray(np.array([[3.0, 1.0, 3.0, 0.0, 2.0], [0.0, 5.0, 1.0, 1.0, 4.0]]))
    np.testing.assert_array_equal(backend.to_numpy(select_k(x, 2)), [[1, 0, 1, 0, 0], [0, 1, 0, 0, 1]])
    # k = 3: select_k takes exactly one of the two tied 1s, mathias_select_k keeps both
    three = backend.to_numpy(select_k(x, 3))
    np.testing.assert_array_equal(three[:, [0, 1, 4]], [[1, 0, 1], [0, 1, 1]])
    np.testing.assert_array_equal(three[0, 2:4], [1, 0])
    assert sorted(three[1, 2:4]) == [0, 1]
    np.testing.assert_array_equal(backend.to_numpy(mathias_select_k(x, 3)), [[1, 0, 1, 0, 1], [0, 1, 1, 1, 1]])
    assert ar.get_dtype_name(mathias_select_k(x, 1)) == ar.get_dtype_name(x)
    for bad in (0, 6, True, 2.0):
        with pytest.raises(ValueError, match="k must"):
            mathias_select_k(x, bad)


def test_drop_in_modules_keep_the_original_positional_order(grad_backend):
    from diffopt.imle.aimle import aimle as aimle_dropin
    from diffopt.imle.imle import imle as imle_dropin

    # (function, target, noise, nb_samples, nb_marginal_samples, theta_noise_temperature, target_noise_temperature)
    est = imle_dropin(top2, TargetDistribution(beta=1.5), None, 1, 1, 0.0, 0.0)
    np.testing.assert_allclose(linear_loss_grad(grad_backend, est, THETA, DY), [[0, 1, -1, 0]], atol=1e-6)
    est = imle_dropin(bottom2, TargetDistribution(beta=1.5), None, 1, 1, 0.0, 0.0, None, True)  # minimising
    np.testing.assert_allclose(linear_loss_grad(grad_backend, est, THETA, -DY), [[0, 1, -1, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="_gradient_save_path"):
        imle_dropin(top2, _gradient_save_path="grads.npy")
    # aimle's default target is the original's TargetDistribution(alpha=1, beta=1): z(θ) − z(θ − dy)
    est = aimle_dropin(top2, None, None, 1, 1, 0.0, 0.0)
    np.testing.assert_allclose(linear_loss_grad(grad_backend, est, THETA, DY), [[0, 1, -1, 0]], atol=1e-6)
    est = aimle_dropin(top2, TargetDistribution(beta=1.5), None, 1, 1, 0.0, 0.0, True)  # symmetric
    np.testing.assert_allclose(linear_loss_grad(grad_backend, est, THETA, DY), [[0, 0.5, -0.5, 0]], atol=1e-6)
    with pytest.warns(UserWarning, match="√S"):
        aimle_dropin(top2, AdaptiveTargetDistribution(), None, 2)
    with pytest.warns(UserWarning, match="√S"):
        imle_dropin(top2, AdaptiveTargetDistribution(), None, 1, 3)
