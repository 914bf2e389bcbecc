"""Learnable smoothing: gradients with respect to an array ``sigma`` (issue 17, item 2).

``perturbed`` differentiates y_σ(θ) = E[f(θ + σZ)] in σ by the score of the
scale, ∂_σ y_σ = E[f(θ + σZ) (⟨∇ν(Z), Z⟩ − d)] / σ; ``perturbed_max`` and
``FenchelYoungLoss`` by the envelope theorem, ∂_σ F_σ = E⟨Z, y*(θ + σZ)⟩.
Checked on every autodiff backend against closed forms (Gumbel argmax) and
finite differences of a Gauss-Hermite quadrature, with tolerances
``Z_TOL · std / √N`` from the estimator's own terms.
"""

import autoray as ar
import numpy as np
import pytest

import diffopt
from diffopt._ops import first_max_mask
from references import softmax

Z_TOL = 5.0
THETA = np.array([0.3, -0.2, 0.5, 0.1])
SIGMA, N = 0.5, 20000


def gumbel_samples(seed):
    z = np.random.default_rng(seed).gumbel(size=(N, THETA.size))
    return z, np.eye(THETA.size)[(THETA + SIGMA * z).argmax(-1)]


def sigma_grad(b, loss):
    """d loss / dσ at σ = SIGMA (float64) by the framework's autodiff."""
    with b.float64():
        return float(b.to_numpy(b.grad(loss, b.asarray(np.array(SIGMA), "float64"))))


@pytest.mark.parametrize("control_variate", [None, "mean", "value"])
def test_perturbed_sigma_gradient_is_softmax_derivative(grad_backend, control_variate):
    """Gumbel argmax: y_σ = softmax(θ/σ), ∂_σ <w, y_σ> = <w, (diag p − ppᵀ)(−θ/σ²)>."""
    b = grad_backend
    w = np.array([1.0, 2.0, 0.5, -1.0])
    p = softmax(THETA, SIGMA)
    want = w @ ((np.diag(p) - np.outer(p, p)) @ (-THETA / SIGMA**2))

    def loss(s):
        fn = diffopt.perturbed(first_max_mask, num_samples=N, sigma=s, noise="gumbel", batched=False,
                               control_variate=control_variate, chunk_size=N // 3)
        return ar.do("sum", fn(b.asarray(THETA, "float64"), rng=21) * b.asarray(w, "float64"))

    got = sigma_grad(b, loss)
    z, f = gumbel_samples(0)
    base = {None: 0.0, "mean": f.mean(0), "value": np.eye(4)[THETA.argmax()]}[control_variate]
    terms = ((f - base) @ w) * (((1 - np.exp(-z)) * z).sum(-1) - THETA.size) / SIGMA
    assert abs(got - want) < Z_TOL * terms.std() / np.sqrt(N)


def test_perturbed_max_sigma_gradient_is_logsumexp_derivative(grad_backend):
    """Gumbel: F_σ = σ logsumexp(θ/σ) + σγ, ∂_σ F_σ = logsumexp(θ/σ) − <p, θ>/σ + γ; also the
    Fenchel-Young loss F_σ(θ) − <θ, y>, whose σ-derivative is the same."""
    b = grad_backend
    p = softmax(THETA, SIGMA)
    want = np.log(np.exp(THETA / SIGMA).sum()) - p @ THETA / SIGMA + np.euler_gamma

    def max_loss(s):
        return diffopt.perturbed_max(first_max_mask, num_samples=N, sigma=s, noise="gumbel", batched=False)(
            b.asarray(THETA, "float64"), rng=22)

    def fy_loss(s):
        fy = diffopt.FenchelYoungLoss(first_max_mask, num_samples=N, sigma=s, noise="gumbel", batched=False)
        return fy(b.asarray(THETA, "float64"), b.asarray(np.eye(4)[1], "float64"), rng=22)

    z, f = gumbel_samples(1)
    tol = Z_TOL * (z * f).sum(-1).std() / np.sqrt(N)
    assert abs(sigma_grad(b, max_loss) - want) < tol
    assert abs(sigma_grad(b, fy_loss) - want) < tol


def np_smooth(x):
    return np.stack([np.tanh(x[..., 0] + 0.5 * x[..., 1]), np.sin(x[..., 1] - x[..., 2])], axis=-1)


def smooth(x):
    return ar.do("stack", [ar.do("tanh", x[..., 0] + 0.5 * x[..., 1]), ar.do("sin", x[..., 1] - x[..., 2])], axis=-1)


def test_perturbed_sigma_gradient_matches_finite_differences(grad_backend):
    """Normal noise, a smooth solver: against a central difference in σ of y_σ by quadrature."""
    b = grad_backend
    n, sigma, h = 40000, 0.4, 1e-4
    theta, w = np.array([0.8, 0.5, 1.2]), np.array([1.0, -0.7])
    nodes, weights = np.polynomial.hermite_e.hermegauss(24)
    grid = np.stack(np.meshgrid(nodes, nodes, nodes, indexing="ij"), -1).reshape(-1, 3)
    mass = np.prod(np.stack(np.meshgrid(weights, weights, weights, indexing="ij"), -1).reshape(-1, 3), -1)
    mass = mass / mass.sum()
    smoothed = lambda s: mass @ np_smooth(theta + s * grid) @ w  # noqa: E731
    want = (smoothed(sigma + h) - smoothed(sigma - h)) / (2 * h)

    def loss(s):
        fn = diffopt.perturbed(smooth, num_samples=n, sigma=s, batched=False, control_variate="value")
        return ar.do("sum", fn(b.asarray(theta, "float64"), rng=23) * b.asarray(w, "float64"))

    with b.float64():
        got = float(b.to_numpy(b.grad(loss, b.asarray(np.array(sigma), "float64"))))
    z = np.random.default_rng(2).standard_normal((n, 3))
    terms = ((np_smooth(theta + sigma * z) - np_smooth(theta)) @ w) * ((z * z).sum(-1) - 3) / sigma
    assert abs(got - want) < Z_TOL * terms.std() / np.sqrt(n)


def test_sigma_gradient_under_jax_jit():
    """A traced sigma under jax.jit: the same gradient as eagerly (one compiled function)."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from conftest import SELECTED

    if "jax" not in SELECTED:
        pytest.skip("jax is not among DIFFOPT_TEST_BACKENDS")

    def loss(s, key):
        fn = diffopt.perturbed(first_max_mask, num_samples=2000, sigma=s, noise="gumbel", batched=False)
        return jnp.sum(fn(jnp.asarray(THETA, dtype=s.dtype), rng=key) * jnp.arange(4.0, dtype=s.dtype))

    key = jax.random.key(5)
    eager = jax.grad(loss)(jnp.asarray(SIGMA), key)
    compiled = jax.jit(jax.grad(loss))
    np.testing.assert_allclose(np.asarray(compiled(jnp.asarray(SIGMA), key)), np.asarray(eager), rtol=1e-5)
    assert compiled._cache_size() == 1
    compiled(jnp.asarray(0.7), key)  # a new value, no new compile
    assert compiled._cache_size() == 1


def test_bad_learnable_sigma(grad_backend):
    b = grad_backend
    with pytest.raises(ValueError, match="sigma"):
        diffopt.perturbed(first_max_mask, sigma=b.asarray(np.array([0.5, 0.5], dtype=np.float32)))
    with pytest.raises(ValueError, match="sigma"):
        diffopt.perturbed(first_max_mask, sigma=b.asarray(np.array(-0.5, dtype=np.float32)))
    with pytest.raises(ValueError, match="multiplicative"):
        diffopt.perturbed(first_max_mask, sigma=b.asarray(np.array(0.5, dtype=np.float32)), multiplicative=True)
    with pytest.raises(ValueError, match="residual"):
        diffopt.perturbed(first_max_mask, sigma=b.asarray(np.array(0.5, dtype=np.float32)), residual="jacobian")
    with pytest.raises(ValueError, match="squared"):
        from diffopt.perturbations.torch import fenchel_young  # the port's squared loss, any framework

        loss = fenchel_young.FenchelYoungLoss(first_max_mask, sigma=b.asarray(np.array(0.5, dtype=np.float32)))
        loss(b.asarray(THETA[None], "float32"), b.asarray(np.eye(4)[[1]], "float32"))


@pytest.mark.parametrize("op", ["perturbed", "perturbed_max", "fenchel_young"])
def test_learnable_sigma_of_another_framework_than_theta(grad_backend, op):
    """A NumPy θ with a torch/JAX/TensorFlow σ mixes frameworks: a TypeError naming both arguments."""
    b = grad_backend
    if b.name == "autograd":
        pytest.skip("a NumPy theta with an autograd sigma runs on autograd (tests/perturbations/test_hessians.py)")
    theta, label = THETA[None], np.eye(4)[[1]]
    with b.float64():
        sigma = b.asarray(np.array(SIGMA), "float64")
        calls = {
            "perturbed": lambda: diffopt.perturbed(first_max_mask, num_samples=4, sigma=sigma)(theta, rng=0),
            "perturbed_max": lambda: diffopt.perturbed_max(first_max_mask, num_samples=4, sigma=sigma)(theta, rng=0),
            "fenchel_young": lambda: diffopt.FenchelYoungLoss(first_max_mask, num_samples=4, sigma=sigma)(
                theta, label, rng=0),
        }
        with pytest.raises(TypeError, match=r"theta is a numpy array, sigma is a \w+ array"):
            calls[op]()
