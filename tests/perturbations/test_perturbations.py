"""Perturbed optimizers, perturbed max, Fenchel-Young loss and make_perturbed_fun on every backend.

Statistical tests use fixed seeds and tolerances of ``Z_TOL`` standard errors,
the standard error being derived from the number of samples ``N``.
"""

import json
import os
import subprocess
import sys

import autoray as ar
import numpy as np
import pytest
from scipy.special import logsumexp as np_logsumexp
from scipy.stats import norm

import diffopt
from diffopt import FenchelYoungLoss, argmax_one_hot, host_solver, make_perturbed_fun, perturbed, perturbed_max
from references import softmax

Z_TOL = 5.0
EULER = 0.5772156649015329
THETA = np.array([-0.6, 1.9, -0.2, 1.1, -1.0])
THETA_BATCH = np.array([[-0.6, 1.9, -0.2, 1.1, -1.0], [-0.6, 1.0, -0.2, 1.8, -1.0]])
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, where conftest.py is


def softmax_jacobian(x, sigma):
    s = softmax(x, sigma)
    return (np.diag(s) - np.outer(s, s)) / sigma


def normal_max_moments(theta, sigma):
    """Mean and std of max_i(θ_i + σ Z_i), Z standard Normal, by quadrature (one row θ)."""
    from scipy import integrate

    def density(t):  # d/dt Π_i Φ((t − θ_i)/σ)
        u = (t - theta) / sigma
        cdf = norm.cdf(u)
        return sum(norm.pdf(u[i]) / sigma * np.prod(np.delete(cdf, i)) for i in range(len(theta)))

    lo, hi = theta.min() - 12 * sigma, theta.max() + 12 * sigma
    m1 = integrate.quad(lambda t: t * density(t), lo, hi, limit=200)[0]
    m2 = integrate.quad(lambda t: t * t * density(t), lo, hi, limit=200)[0]
    return m1, np.sqrt(m2 - m1**2)


def hard_or(x):
    """+1 if any entry is positive, else -1 (in x's framework and dtype)."""
    hit = ar.astype(ar.do("max", x, axis=-1) > 0, ar.get_dtype_name(x))
    return 2.0 * hit - 1.0


def sign(x):
    return ar.do("sign", x)


def argmin_one_hot(x):
    return argmax_one_hot(-x)


def total(x):
    return ar.do("sum", x)


# ----------------------------------------------------------------------------- forward

@pytest.mark.parametrize("batched", [True, False])
def test_gumbel_argmax_is_softmax(backend, batched):
    n, sigma = 20000, 0.5
    theta = THETA_BATCH if batched else THETA
    pert = perturbed(argmax_one_hot, num_samples=n, sigma=sigma, noise="gumbel", batched=batched)
    out = backend.to_numpy(pert(backend.asarray(theta), rng=0))
    expected = softmax(theta, sigma)
    assert out.shape == theta.shape
    tol = Z_TOL * np.sqrt(expected * (1 - expected) / n) + 1e-6
    np.testing.assert_array_less(np.abs(out - expected), tol)


def test_decorator_form_and_default_rng(backend):
    @perturbed(num_samples=2000, sigma=0.5, noise="gumbel")
    def pert(x):
        return argmax_one_hot(x)

    out = backend.to_numpy(pert(backend.asarray(THETA_BATCH)))
    assert pert.__name__ == "pert"
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-6)
    assert np.abs(out - softmax(THETA_BATCH, 0.5)).max() < Z_TOL * 0.5 / np.sqrt(2000)


def test_normal_sign_is_erf(backend):
    n, sigma = 20000, 0.5
    theta = np.array([[-1.0, -0.2, 0.0, 0.3, 1.2]])
    out = backend.to_numpy(perturbed(sign, num_samples=n, sigma=sigma)(backend.asarray(theta), rng=1))
    expected = 2 * norm.cdf(theta / sigma) - 1
    np.testing.assert_array_less(np.abs(out - expected), Z_TOL / np.sqrt(n))


def test_perturbed_or(backend):
    n, sigma = 20000, 0.1
    theta = np.array([[-5.0, 0.2], [-5.0, 0.1]])
    pert_or = perturbed(hard_or, num_samples=n, sigma=sigma, noise="gumbel")
    out = backend.to_numpy(pert_or(backend.asarray(theta), rng=2))
    p = 1 - np.exp(-np.exp(theta[:, 1] / sigma))
    expected = 2 * p - 1
    assert out.shape == (2,)
    np.testing.assert_array_less(np.abs(out - expected), Z_TOL * 2 * np.sqrt(p * (1 - p) / n) + 1e-6)
    assert out[0] > out[1]


def test_linear_function_value(backend):
    n, sigma = 4000, 0.3
    a = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]])
    b = np.array([0.5, -1.0])
    a_b, b_b = backend.asarray(a), backend.asarray(b)
    pert = perturbed(lambda x: ar.do("einsum", "nd,od->no", x, a_b) + b_b, num_samples=n, sigma=sigma)
    theta = np.array([[0.2, -0.4, 1.0]])
    out = backend.to_numpy(pert(backend.asarray(theta), rng=3))
    se = sigma * np.linalg.norm(a, axis=1)[None] / np.sqrt(n)
    np.testing.assert_array_less(np.abs(out - (theta @ a.T + b)), Z_TOL * se)


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("control_variate", [None, "mean", "value"])
def test_gumbel_argmax_gradient_is_softmax_gradient(grad_backend, control_variate):
    """The PyTorch port's README example: gradient of ||y_σ(θ)|| equals softmax's."""
    n, sigma = 100000, 0.5
    pert = perturbed(argmax_one_hot, num_samples=n, sigma=sigma, noise="gumbel", control_variate=control_variate)

    def loss(t):
        y = pert(t, rng=4)
        return ar.do("sqrt", total(y * y))

    grad = grad_backend.to_numpy(grad_backend.grad(loss, grad_backend.asarray(THETA_BATCH)))
    s = softmax(THETA_BATCH, sigma)
    g = s / np.linalg.norm(s)
    expected = np.stack([softmax_jacobian(t, sigma).T @ gb for t, gb in zip(THETA_BATCH, g)])
    # |<g, f>| <= 1 and E[(1 - exp(-Z))^2] = 1 for Gumbel Z, so each term has std <= 1/σ.
    np.testing.assert_array_less(np.abs(grad - expected), Z_TOL / (sigma * np.sqrt(n)))


def test_normal_sign_gradient(grad_backend):
    n, sigma = 50000, 0.5
    theta = np.array([[-0.7, 0.0, 0.4]])
    pert = perturbed(sign, num_samples=n, sigma=sigma, control_variate="mean")
    grad = grad_backend.to_numpy(grad_backend.grad(lambda t: total(pert(t, rng=5)), grad_backend.asarray(theta)))
    expected = 2 * norm.pdf(theta / sigma) / sigma
    # |sum_j sign_j - mean| <= 2 * 3 and E[Z^2] = 1: each term has std <= 6/σ... per coordinate
    # only its own sign correlates, so use the tighter bound 2·sqrt(3)/σ.
    np.testing.assert_array_less(np.abs(grad - expected), Z_TOL * 2 * np.sqrt(3) / (sigma * np.sqrt(n)))


def test_linear_function_jacobian(grad_backend):
    n, sigma = 20000, 0.05
    a = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]])
    w = np.array([0.7, -1.3])
    a_b, w_b = grad_backend.asarray(a), grad_backend.asarray(w)
    pert = perturbed(lambda x: ar.do("einsum", "nd,od->no", x, a_b) + 1.0, num_samples=n, sigma=sigma,
                     control_variate="value")
    theta = grad_backend.asarray(np.array([[0.2, -0.4, 1.0]]))
    grad = grad_backend.to_numpy(grad_backend.grad(lambda t: total(pert(t, rng=6) * w_b), theta))
    v = a.T @ w
    # With the f(θ) baseline each term is (vᵀZ) Z_j: variance |v|² + v_j².
    np.testing.assert_array_less(np.abs(grad[0] - v), Z_TOL * np.sqrt(v @ v + v**2) / np.sqrt(n))


def test_smooth_loss_matches_finite_differences(grad_backend):
    n, sigma, h = 200000, 0.5, 1e-4
    w = np.array([1.0, -0.5, 0.25])
    theta = np.array([[0.3, -0.8, 1.5]])
    pert = perturbed(lambda x: ar.do("tanh", x), num_samples=n, sigma=sigma, control_variate="mean")
    loss = lambda t: total(pert(t, rng=7) * grad_backend.asarray(w))  # noqa: E731
    grad = grad_backend.to_numpy(grad_backend.grad(loss, grad_backend.asarray(theta)))
    np_pert = perturbed(lambda x: np.tanh(x), num_samples=n, sigma=sigma)
    fd = np.zeros(3)
    for j in range(3):  # common random numbers: the same seed on both sides
        e = np.zeros_like(theta)
        e[0, j] = h
        fd[j] = ((np_pert(theta + e, rng=8) - np_pert(theta - e, rng=8)) @ w)[0] / (2 * h)
    # |<w, f - c>| <= 2|w|_1 and E[Z^2] = 1.
    np.testing.assert_array_less(np.abs(grad[0] - fd), Z_TOL * 2 * np.abs(w).sum() / (sigma * np.sqrt(n)))


def test_multiplicative_identity(grad_backend):
    n, sigma = 20000, 0.3
    theta = np.array([[0.5, 1.0, 2.0]])
    pert = perturbed(lambda x: x, num_samples=n, sigma=sigma, multiplicative=True, control_variate="value")
    out = grad_backend.to_numpy(pert(grad_backend.asarray(theta), rng=9))
    # value: θ E[exp(σZ − σ²/2)] = θ; std of θ exp(σZ − σ²/2) is θ sqrt(exp(σ²) − 1)
    np.testing.assert_array_less(np.abs(out - theta), Z_TOL * theta * np.sqrt(np.expm1(sigma**2) / n))
    grad = grad_backend.to_numpy(grad_backend.grad(lambda t: total(pert(t, rng=10)), grad_backend.asarray(theta)))
    # d/dθ_j Σ_k θ_k = 1; term std (over Z) of (exp(σZ−σ²/2) − 1) Z / σ, by quadrature
    z = np.random.default_rng(0).standard_normal(10**6)
    term_std = np.std(np.expm1(sigma * z - sigma**2 / 2) * z / sigma)
    np.testing.assert_array_less(np.abs(grad - 1.0), Z_TOL * np.sqrt(3) * term_std / np.sqrt(n))


def test_control_variates_lower_gradient_variance(grad_backend):
    n, reps, sigma = 50, 40, 0.5
    theta = grad_backend.asarray(THETA_BATCH[:1])
    w = grad_backend.asarray(np.array([[3.0, 2.0, 1.0, 2.5, 1.5]]))  # a loss far from zero-mean

    def spread(cv):
        pert = perturbed(argmax_one_hot, num_samples=n, sigma=sigma, noise="gumbel", control_variate=cv)
        grads = np.stack([grad_backend.to_numpy(grad_backend.grad(lambda t: total(pert(t, rng=s) * w), theta))
                          for s in range(reps)])
        # every control variate keeps the estimator unbiased: the mean of the reps is J(θ)ᵀw
        # (softmax Jacobian), to Z_TOL standard errors of that mean (sample std over the reps)
        exact = softmax_jacobian(THETA_BATCH[0], sigma) @ np.array([3.0, 2.0, 1.0, 2.5, 1.5])
        se = grads.std(axis=0, ddof=1) / np.sqrt(reps)
        np.testing.assert_array_less(np.abs(grads.mean(axis=0) - exact), Z_TOL * se + 1e-9)
        return np.var(grads, axis=0).sum()

    plain = spread(None)
    assert spread("mean") < 0.5 * plain
    assert spread("value") < 0.5 * plain


def test_extra_args_pass_through_without_gradient(grad_backend):
    scale = grad_backend.asarray(np.array([2.0, 0.5, 1.0, 1.0, 1.0]))

    def scaled_argmax(x, s, offset=0.0):
        return argmax_one_hot(x * s + offset)

    pert = perturbed(scaled_argmax, num_samples=500, sigma=0.5, noise="gumbel")
    loss = lambda t: total(pert(t, scale, offset=0.0, rng=11)[:, 1])  # noqa: E731
    grad = grad_backend.to_numpy(grad_backend.grad(loss, grad_backend.asarray(THETA_BATCH)))
    # the same estimator with the arguments baked into the solver, same rng: the same numbers
    baked = perturbed(lambda x: scaled_argmax(x, scale), num_samples=500, sigma=0.5, noise="gumbel")
    loss_baked = lambda t: total(baked(t, rng=11)[:, 1])  # noqa: E731
    want = grad_backend.to_numpy(grad_backend.grad(loss_baked, grad_backend.asarray(THETA_BATCH)))
    np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-6)
    assert np.abs(want).max() > 0.01


def test_extra_tensor_requiring_grad_gets_none():
    torch = pytest.importorskip("torch")
    scale = torch.ones(5, requires_grad=True)
    theta = torch.tensor(THETA_BATCH, requires_grad=True)
    pert = perturbed(lambda x, s: argmax_one_hot(x * s), num_samples=200, sigma=0.5, noise="gumbel")
    pert(theta, scale, rng=0)[:, 1].sum().backward()
    assert theta.grad is not None and scale.grad is None
    # scale is all ones: θ's gradient is the one without the extra tensor, on the same draws
    theta2 = torch.tensor(THETA_BATCH, requires_grad=True)
    perturbed(argmax_one_hot, num_samples=200, sigma=0.5, noise="gumbel")(theta2, rng=0)[:, 1].sum().backward()
    np.testing.assert_allclose(theta.grad.numpy(), theta2.grad.numpy(), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- chunking and residuals

@pytest.mark.parametrize("residual", ["jacobian", "recompute"])
def test_chunked_residuals_agree(grad_backend, residual):
    n, chunk = 50, 7  # 7 full chunks and a remainder of 1
    theta = grad_backend.asarray(THETA_BATCH)
    w = grad_backend.asarray(np.arange(10.0).reshape(2, 5))

    def run(res):
        pert = perturbed(argmax_one_hot, num_samples=n, sigma=0.5, noise="gumbel", chunk_size=chunk,
                         residual=res, control_variate="mean")
        value = grad_backend.to_numpy(pert(theta, rng=12))
        grad = grad_backend.to_numpy(grad_backend.grad(lambda t: total(pert(t, rng=12) * w), theta))
        return value, grad

    ref_value, ref_grad = run("recompute" if residual == "jacobian" else "jacobian")
    value, grad = run(residual)
    np.testing.assert_allclose(value, ref_value, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-5)
    np.testing.assert_allclose(value.sum(-1), 1.0, rtol=1e-6)


def test_samples_residual_needs_one_chunk():
    pert = perturbed(argmax_one_hot, num_samples=10, chunk_size=3, residual="samples")
    with pytest.raises(ValueError, match="residual='samples'"):
        pert(THETA_BATCH)


def _graph_ops(fn, spec):
    """Nodes of ``fn``'s graph for ``spec``, loop bodies (library functions) included."""
    graph = fn.get_concrete_function(spec).graph.as_graph_def()
    return len(graph.node) + sum(len(f.node_def) for f in graph.library.function)


@pytest.mark.parametrize("estimator", ["perturbed", "fenchel_young"])
def test_tf_graph_size_does_not_grow_with_the_number_of_chunks(estimator):
    tf = pytest.importorskip("tensorflow")
    from conftest import SELECTED

    if "tensorflow" not in SELECTED:
        pytest.skip("tensorflow is not among DIFFOPT_TEST_BACKENDS")
    theta = tf.constant(THETA_BATCH, tf.float32)
    sizes = []

    def weighted(y):  # a scalar of y: [B, 5] (perturbed) or [B] (the loss)
        return tf.reduce_sum(y * (tf.range(5.0) if len(y.shape) == 2 else tf.constant([1.0, -2.0])))

    for chunks in (10, 100):
        kw = dict(num_samples=4 * chunks, sigma=0.5, noise="gumbel", chunk_size=4)
        if estimator == "perturbed":
            op = perturbed(argmax_one_hot, residual="recompute", **kw)
        else:
            loss = diffopt.FenchelYoungLoss(argmax_one_hot, reduction="none", **kw)
            op = lambda t, rng: loss(t, argmax_one_hot(-t), rng=rng)  # noqa: E731

        @tf.function
        def value_and_grad(t):
            with tf.GradientTape() as tape:
                tape.watch(t)
                y = op(t, rng=3)
                total = weighted(y)
            return y, tape.gradient(total, t)

        sizes.append(_graph_ops(value_and_grad, tf.TensorSpec([None, 5], tf.float32)))
        with tf.GradientTape() as tape:  # eager: a Python loop over the same draws
            tape.watch(theta)
            y = op(theta, rng=3)
            total = weighted(y)
        graph_y, graph_g = value_and_grad(theta)
        np.testing.assert_allclose(graph_y.numpy(), y.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(graph_g.numpy(), tape.gradient(total, theta).numpy(), rtol=1e-5, atol=1e-6)
    assert sizes[0] == sizes[1], sizes


_MEMORY_SCRIPT = r"""
import json, resource, sys
sys.path.insert(0, {tests!r})
import conftest
import autoray as ar
import numpy as np
from diffopt import argmax_one_hot, perturbed
backend = conftest._CLASSES[{name!r}]({name!r})
theta = backend.asarray(np.linspace(-1.0, 1.0, 1000)[None], "float64")
pert = perturbed(argmax_one_hot, num_samples={n}, sigma=0.5, noise="gumbel", chunk_size=1000)
out = pert(theta, rng=0)
if backend.has_grad:
    backend.grad(lambda t: ar.do("sum", pert(t, rng=0)[:, :10]), theta)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def _peak_rss_kib(name, n):
    env = dict(os.environ, DIFFOPT_TEST_BACKENDS=name, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3",
               OMP_NUM_THREADS="1", JAX_PLATFORMS="cpu")
    script = _MEMORY_SCRIPT.format(tests=HERE, name=name, n=n)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_num_samples(backend):
    """40000 samples × 1000 dims would be 320 MB per float64 array if materialised."""
    if backend.name == "cupy":
        pytest.skip("host RSS does not measure GPU memory")
    small = _peak_rss_kib(backend.name, 2000)
    large = _peak_rss_kib(backend.name, 40000)
    assert large - small < 48 * 1024, f"peak RSS grew by {(large - small) / 1024:.0f} MiB"


# ----------------------------------------------------------------------------- perturbed max and Fenchel-Young

def test_perturbed_max_gumbel_closed_form(backend):
    n, sigma = 20000, 0.5
    fmax = perturbed_max(argmax_one_hot, num_samples=n, sigma=sigma, noise="gumbel")
    out = backend.to_numpy(fmax(backend.asarray(THETA_BATCH), rng=13))
    expected = sigma * np_logsumexp(THETA_BATCH / sigma, axis=-1) + sigma * EULER
    assert out.shape == (2,)
    np.testing.assert_array_less(np.abs(out - expected), Z_TOL * sigma * np.pi / np.sqrt(6 * n))


def test_perturbed_max_jensen_and_small_sigma(backend):
    theta = backend.asarray(THETA_BATCH)
    wide = backend.to_numpy(perturbed_max(argmax_one_hot, num_samples=2000, sigma=0.5)(theta, rng=14))
    assert np.all(wide > THETA_BATCH.max(-1))
    for got, row in zip(wide, THETA_BATCH):  # Normal noise (the default): E max by quadrature
        mean, std = normal_max_moments(row, 0.5)
        assert abs(got - mean) < Z_TOL * std / np.sqrt(2000)
    tiny = perturbed_max(argmax_one_hot, num_samples=100, sigma=1e-5, batched=False)
    np.testing.assert_allclose(backend.to_numpy(tiny(backend.asarray(THETA), rng=15)), THETA.max(), atol=1e-3)


def test_perturbed_max_gradient_is_softmax(grad_backend):
    n, sigma = 20000, 0.5
    fmax = perturbed_max(argmax_one_hot, num_samples=n, sigma=sigma, noise="gumbel")
    grad = grad_backend.to_numpy(grad_backend.grad(lambda t: total(fmax(t, rng=16)), grad_backend.asarray(THETA_BATCH)))
    s = softmax(THETA_BATCH, sigma)
    np.testing.assert_array_less(np.abs(grad - s), Z_TOL * np.sqrt(s * (1 - s) / n) + 1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_fenchel_young_one_hot_gumbel(backend, reduction):
    n = 20000
    y = np.eye(5)[[3, 1]]
    loss = FenchelYoungLoss(argmax_one_hot, num_samples=n, sigma=1.0, noise="gumbel", reduction=reduction)
    value = backend.to_numpy(loss(backend.asarray(THETA_BATCH), backend.asarray(y), rng=17))
    per = np_logsumexp(THETA_BATCH, axis=-1) - (THETA_BATCH * y).sum(-1) + EULER
    expected = {"sum": per.sum(), "mean": per.mean(), "none": per}[reduction]
    scale = {"sum": np.sqrt(2), "mean": 1 / np.sqrt(2), "none": 1.0}[reduction]
    assert np.shape(value) == np.shape(expected)
    np.testing.assert_array_less(np.abs(value - expected), Z_TOL * scale * np.pi / np.sqrt(6 * n))
    assert np.all(value > 0)


def test_fenchel_young_gradient(grad_backend):
    n = 20000
    y = np.eye(5)[[3, 1]]
    loss = FenchelYoungLoss(argmax_one_hot, num_samples=n, sigma=1.0, noise="gumbel")
    y_b = grad_backend.asarray(y)
    grad = grad_backend.to_numpy(grad_backend.grad(lambda t: loss(t, y_b, rng=18), grad_backend.asarray(THETA_BATCH)))
    s = softmax(THETA_BATCH)
    np.testing.assert_array_less(np.abs(grad - (s - y)), Z_TOL * np.sqrt(s * (1 - s) / n) + 1e-6)
    # y_true is a label: no gradient flows through it, also when it is computed from theta
    # (as in the originals); d/dθ L(θ, y(θ)) is then y_σ(θ) − y(θ) only.
    ysig = grad_backend.to_numpy(perturbed(argmax_one_hot, num_samples=n, sigma=1.0, noise="gumbel")(
        grad_backend.asarray(THETA_BATCH), rng=18))
    grad_self = grad_backend.to_numpy(grad_backend.grad(lambda t: loss(t, t * 0.5, rng=18),
                                                        grad_backend.asarray(THETA_BATCH)))
    np.testing.assert_allclose(grad_self, ysig - 0.5 * THETA_BATCH, rtol=1e-5, atol=1e-6)


def test_fenchel_young_minimize_and_unbatched(grad_backend):
    theta = grad_backend.asarray(THETA)
    y = grad_backend.asarray(np.eye(5)[4])
    loss = FenchelYoungLoss(argmin_one_hot, num_samples=300, sigma=0.5, batched=False, maximize=False)
    grad = grad_backend.to_numpy(grad_backend.grad(lambda t: loss(t, y, rng=19), theta))
    ysig = grad_backend.to_numpy(perturbed(argmin_one_hot, num_samples=300, sigma=0.5, batched=False)(theta, rng=19))
    np.testing.assert_allclose(grad, np.eye(5)[4] - ysig, atol=1e-6)
    # value ⟨θ, y⟩ − E min_i(θ_i + σZ_i) = θ_4 + E max_i(−θ_i + σZ_i) (Z symmetric), by quadrature
    mean, std = normal_max_moments(-THETA, 0.5)
    value = float(grad_backend.to_numpy(loss(theta, y, rng=19)))
    assert abs(value - (THETA[4] + mean)) < Z_TOL * std / np.sqrt(300)


def test_fenchel_young_as_decorator(backend):
    @FenchelYoungLoss(num_samples=200, sigma=0.5, noise="gumbel", reduction="none")
    def loss(x):
        return argmax_one_hot(x)

    y = np.eye(5)[[1, 3]]
    out = backend.to_numpy(loss(backend.asarray(THETA_BATCH), backend.asarray(y), rng=0))
    assert out.shape == (2,)
    # Gumbel: E max⟨y, θ + σZ⟩ = σ logsumexp(θ/σ) + σγ; per-row std σπ/√6
    expected = 0.5 * np_logsumexp(THETA_BATCH / 0.5, axis=-1) + 0.5 * EULER - (THETA_BATCH * y).sum(-1)
    np.testing.assert_array_less(np.abs(out - expected), Z_TOL * 0.5 * np.pi / np.sqrt(6 * 200))


# ----------------------------------------------------------------------------- make_perturbed_fun

def test_make_perturbed_fun_pytree(grad_backend):
    n, sigma = 4000, 0.5
    tree = (THETA, {"k1": np.array([0.1, 0.2]), "k2": np.array([0.3, -0.1])})
    fn = make_perturbed_fun(lambda t: (argmax_one_hot(t[0]), {k: argmax_one_hot(v) for k, v in t[1].items()}),
                            num_samples=n, scale=sigma)
    x = (grad_backend.asarray(tree[0]), {k: grad_backend.asarray(v) for k, v in tree[1].items()})
    out = fn(20, x)
    assert isinstance(out, tuple) and sorted(out[1]) == ["k1", "k2"]
    for got, leaf in [(out[0], tree[0]), (out[1]["k1"], tree[1]["k1"]), (out[1]["k2"], tree[1]["k2"])]:
        s = softmax(leaf, sigma)
        np.testing.assert_array_less(np.abs(grad_backend.to_numpy(got) - s), Z_TOL * np.sqrt(s * (1 - s) / n) + 1e-6)
    w = grad_backend.asarray(np.array([1.0, 0.0, 0.0, 0.0, 0.0]))
    grad = grad_backend.grad(lambda a: total(fn(21, (a, x[1]))[0] * w), x[0])
    expected = softmax_jacobian(THETA, sigma)[0]
    np.testing.assert_array_less(np.abs(grad_backend.to_numpy(grad) - expected), Z_TOL / (sigma * np.sqrt(n)))


def test_make_perturbed_fun_scalar_output(backend):
    fn = make_perturbed_fun(lambda x: total(ar.do("maximum", x, 0.0 * x)), num_samples=200, scale=0.1)
    out = fn(0, backend.asarray(np.zeros(3)))
    assert tuple(out.shape) == ()
    # 3 entries of max(0.1 Z, 0), Z standard Gumbel: mean and std by quadrature; tolerance k·std/√N
    from scipy import integrate

    density = lambda z: np.exp(-z - np.exp(-z))  # noqa: E731
    m1 = integrate.quad(lambda z: z * density(z), 0, np.inf)[0]
    m2 = integrate.quad(lambda z: z * z * density(z), 0, np.inf)[0]
    mean, std = 3 * 0.1 * m1, 0.1 * np.sqrt(3 * (m2 - m1**2))
    assert abs(float(backend.to_numpy(out)) - mean) < Z_TOL * std / np.sqrt(200)


# ----------------------------------------------------------------------------- frameworks, dtypes, jit

@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_dtype_preserved(backend, dtype):
    if dtype == "bfloat16" and backend.name in ("numpy", "autograd", "cupy"):
        pytest.skip("NumPy has no bfloat16")
    theta = backend.asarray(THETA_BATCH, dtype)
    if ar.get_dtype_name(theta) != dtype:
        pytest.skip(f"{backend.name} is not configured for {dtype}")
    n = 400
    out = perturbed(argmax_one_hot, num_samples=n, sigma=0.5, noise="gumbel")(theta, rng=0)
    assert ar.get_dtype_name(out) == dtype
    # Gumbel argmax: softmax(θ/σ), to Z_TOL standard errors plus the dtype's rounding of θ and the mean
    p = softmax(THETA_BATCH, 0.5)
    eps = {"float16": 2.0**-10, "bfloat16": 2.0**-7}.get(dtype, 1e-6)
    tol = Z_TOL * np.sqrt(p * (1 - p) / n) + 4 * eps
    np.testing.assert_array_less(np.abs(backend.to_numpy(out).astype(np.float64) - p), tol)


def test_host_solver(grad_backend):
    solver = host_solver(lambda x: np.eye(x.shape[-1])[np.argmax(x, axis=-1)])
    pert = perturbed(solver, num_samples=2000, sigma=0.5, noise="gumbel")
    theta = grad_backend.asarray(THETA_BATCH)
    out = grad_backend.to_numpy(pert(theta, rng=22))
    assert np.abs(out - softmax(THETA_BATCH, 0.5)).max() < Z_TOL * 0.5 / np.sqrt(2000)
    grad = grad_backend.to_numpy(grad_backend.grad(lambda t: total(pert(t, rng=22)[:, 1]), theta))
    expected = np.stack([softmax_jacobian(t, 0.5)[1] for t in THETA_BATCH])  # d y_1 / d theta
    np.testing.assert_array_less(np.abs(grad - expected), Z_TOL / (0.5 * np.sqrt(2000)))
    if grad_backend.name in ("jax", "tensorflow"):  # jax.pure_callback / tf.numpy_function inside jit
        key = __import__("jax").random.key(22) if grad_backend.name == "jax" else 22
        compiled = grad_backend.to_numpy(grad_backend.jit(lambda t, k: pert(t, rng=k))(theta, key))
        assert np.abs(compiled - softmax(THETA_BATCH, 0.5)).max() < Z_TOL * 0.5 / np.sqrt(2000)


def test_compiled(grad_backend):
    """jax.jit (key required), tf.function, torch.compile; host solvers included."""
    pert = perturbed(argmax_one_hot, num_samples=500, sigma=0.5, noise="gumbel", chunk_size=200)
    theta = grad_backend.asarray(THETA_BATCH)
    if grad_backend.name == "jax":
        import jax

        key = jax.random.key(0)
        out = jax.jit(lambda t, k: pert(t, rng=k))(theta, key)
        np.testing.assert_allclose(np.asarray(out), np.asarray(pert(theta, rng=key)), atol=1e-6)
        grad = jax.jit(jax.grad(lambda t, k: total(pert(t, rng=k)[:, 1])))(theta, key)
        eager = jax.grad(lambda t, k: total(pert(t, rng=k)[:, 1]))(theta, key)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(eager), atol=1e-5)
        expected = np.stack([softmax_jacobian(t, 0.5)[1] for t in THETA_BATCH])
        np.testing.assert_array_less(np.abs(np.asarray(grad) - expected), Z_TOL / (0.5 * np.sqrt(500)))
        row_pert = perturbed(argmax_one_hot, 500, 0.5, "gumbel", batched=False)
        rows = jax.vmap(lambda t: row_pert(t, rng=key))(theta)
        want = np.stack([np.asarray(row_pert(t, rng=key)) for t in theta])  # same key per row
        np.testing.assert_allclose(np.asarray(rows), want, atol=1e-6)
        with pytest.raises(ValueError, match="rng"):
            jax.jit(lambda t: pert(t))(theta)
        return
    if grad_backend.name != "tensorflow":  # torch.compile: test_compiled.py::test_compiled_equals_eager
        pytest.skip(f"{grad_backend.name}: compiled equals eager is tests/backends/test_compiled.py's")
    out = grad_backend.jit(lambda t: pert(t, rng=0))(theta)
    np.testing.assert_allclose(grad_backend.to_numpy(out), grad_backend.to_numpy(pert(theta, rng=0)), atol=1e-6)
    # tf.function without an rng: the default generator inside the graph
    import tensorflow as tf

    wide = perturbed(argmax_one_hot, num_samples=4000, sigma=0.5, noise="gumbel", chunk_size=1000)

    @tf.function
    def grad_fn(t):  # no rng: the default generator inside tf.function
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = wide(t)[:, 1]
        return tape.gradient(y, t)

    expected = np.stack([softmax_jacobian(t, 0.5)[1] for t in THETA_BATCH])
    np.testing.assert_array_less(np.abs(grad_fn(theta).numpy() - expected), Z_TOL / (0.5 * np.sqrt(4000)))


def test_seeds_reproducible(backend):
    pert = perturbed(argmax_one_hot, num_samples=50, sigma=0.5, noise="gumbel")
    theta = backend.asarray(THETA_BATCH)
    a, b = backend.to_numpy(pert(theta, rng=5)), backend.to_numpy(pert(theta, rng=5))
    c = backend.to_numpy(pert(theta, rng=6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("estimator", ["perturbed", "perturbed_max", "fenchel_young"])
def test_rng_made_once_per_call(grad_backend, monkeypatch, estimator):
    """A 10-chunk forward and its backward (a replay) normalise ``rng=`` once: the shim's
    ``make_rng`` runs one time per public call, the chunks and the backward reuse its key."""
    import diffopt.backends as backends

    calls = []
    shims = [backends.load(name) for name in ("numpy", grad_backend.name)]  # loaded (checked) first
    for shim in shims:
        monkeypatch.setattr(shim, "make_rng", _counting(shim.make_rng, calls))
    kw = dict(num_samples=100, sigma=0.5, noise="gumbel", chunk_size=10)
    if estimator == "perturbed":
        pert = perturbed(argmax_one_hot, residual="recompute", **kw)
        w = grad_backend.asarray(THETA_BATCH[::-1].copy())

        def f(t):
            return ar.do("sum", pert(t, rng=3) * w)
    elif estimator == "perturbed_max":
        pmax = perturbed_max(argmax_one_hot, **kw)

        def f(t):
            return ar.do("sum", pmax(t, rng=3))
    else:
        loss = FenchelYoungLoss(argmax_one_hot, **kw)
        y = grad_backend.asarray(np.eye(5)[[1, 3]])

        def f(t):
            return loss(t, y, rng=3)
    grad = grad_backend.grad(f, grad_backend.asarray(THETA_BATCH))
    assert np.all(np.isfinite(grad_backend.to_numpy(grad)))
    assert len(calls) == 1


def _counting(fn, calls):
    def counted(rng, like):
        calls.append(rng)
        return fn(rng, like)

    return counted


def test_drop_in_module():
    from diffopt import perturbations

    for name in ("perturbed", "FenchelYoungLoss", "make_perturbed_fun", "perturbed_max", "Gumbel", "Normal"):
        assert hasattr(perturbations, name)
    assert diffopt.perturbed is perturbations.perturbed
    # the TF package's module layout: `from perturbations import perturbations, fenchel_young`
    from diffopt.perturbations import fenchel_young
    from diffopt.perturbations import perturbations as pert_module

    assert pert_module.perturbed is diffopt.perturbed
    # the TF original's loss is a Keras loss, loss(y_true, y_pred): its own class, not the modern one
    assert fenchel_young.FenchelYoungLoss is not diffopt.FenchelYoungLoss
    # the originals' names, also on the modern loss (its .perturbed is y_σ with the same settings)
    theta = np.asarray(THETA_BATCH)
    loss = FenchelYoungLoss(argmax_one_hot, num_samples=50, sigma=0.5)
    np.testing.assert_array_equal(loss.perturbed(theta, rng=3),
                                  perturbed(argmax_one_hot, num_samples=50, sigma=0.5)(theta, rng=3))
    assert perturbations.SUPPORTED_NOISES == ("gumbel", "normal")
    z, score = perturbations.sample_noise_with_gradients("gumbel", (2, 3), rng=0)  # NumPy here by default
    assert isinstance(z, np.ndarray) and z.shape == (2, 3)
    np.testing.assert_allclose(score, 1.0 - np.exp(-z))
    with pytest.raises(ValueError, match="not supported"):
        perturbations.sample_noise_with_gradients("cauchy", (2,))


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(sigma=0.0), ValueError, "sigma"),
        (dict(sigma=-1.0), ValueError, "sigma"),
        (dict(num_samples=0), ValueError, "num_samples"),
        (dict(noise="cauchy"), ValueError, "noise"),
        (dict(control_variate="median"), ValueError, "control_variate"),
        (dict(control_variate="mean", num_samples=1), ValueError, "num_samples"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
    ],
)
def test_bad_settings(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        perturbed(argmax_one_hot, **kwargs)
    if "control_variate" not in kwargs:
        with pytest.raises(exc, match=match):
            FenchelYoungLoss(argmax_one_hot, **kwargs)


def test_bad_inputs(backend):
    pert = perturbed(argmax_one_hot, num_samples=10)
    with pytest.raises(ValueError, match="batched"):
        pert(backend.asarray(THETA))
    with pytest.raises(TypeError, match="floating"):
        pert(backend.asarray(np.arange(10).reshape(2, 5), "int32"))
    with pytest.raises(ValueError, match="leading"):
        perturbed(lambda x: x[:1], num_samples=10)(backend.asarray(THETA_BATCH))
    with pytest.raises(ValueError, match="theta's shape"):
        perturbed_max(lambda x: x[:, :2], num_samples=10)(backend.asarray(THETA_BATCH))


def test_solver_returning_another_framework(backend):
    if backend.name in ("numpy", "autograd"):
        pytest.skip("NumPy is this backend's own framework")
    pert = perturbed(lambda x: np.zeros((x.shape[0], 5)), num_samples=10)
    with pytest.raises(TypeError, match="framework"):
        pert(backend.asarray(THETA_BATCH), rng=0)


def test_fenchel_young_mixed_frameworks():
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    loss = FenchelYoungLoss(argmax_one_hot, num_samples=10)
    with pytest.raises(TypeError, match="y_true"):
        loss(torch.tensor(THETA_BATCH), jnp.asarray(np.eye(5)[[1, 3]]))
    with pytest.raises(TypeError, match="floating"):
        loss(torch.tensor([[1, 2]]), torch.tensor([[0, 1]]))


def test_torch_vmap_matches_row_by_row_calls():
    # torch.func.vmap over a leading axis: each slice as if called alone, values and gradients
    torch = pytest.importorskip("torch")
    pert = perturbed(argmax_one_hot, num_samples=200, sigma=0.5)
    theta = torch.from_numpy(np.random.RandomState(21).randn(3, 2, 4))
    w = torch.from_numpy(np.random.RandomState(22).randn(2, 4))
    out = torch.func.vmap(lambda t: pert(t, rng=0))(theta)
    grads = torch.func.vmap(torch.func.grad(lambda t: (pert(t, rng=0) * w).sum()))(theta)
    for i in range(3):
        np.testing.assert_allclose(out[i].numpy(), pert(theta[i], rng=0).numpy(), atol=1e-12)
        t = theta[i].clone().requires_grad_(True)
        (pert(t, rng=0) * w).sum().backward()
        np.testing.assert_allclose(grads[i].numpy(), t.grad.numpy(), atol=1e-12)
