"""Second derivatives of the perturbed estimators, with each framework's own nested autodiff.

- Exact: fixed noise draws, float64, a NumPy reference written from the formulas
  (Stein's identity ∇²y_σ = E[f (∇ν∇νᵀ − ∇²ν)]/σ² for ``perturbed``; the
  symmetrised score-function Jacobian of y_σ for ``perturbed_max``), 1e-10, for
  every control variate, multiplicative noise, chunking and residual mode.
- Statistical: Gumbel argmax against the closed forms (softmax, log-sum-exp),
  smooth solvers against finite differences of a quadrature; tolerance
  ``Z_TOL · std / √N`` with the std computed from the estimator's own terms.
- Ops without a second-order estimate (Fenchel-Young loss, I-MLE) keep raising.
"""

import contextlib

import autoray as ar
import numpy as np
import pytest

import diffopt
from diffopt._ops import first_max_mask

Z_TOL = 5.0
TOL = 1e-10


# ----------------------------------------------------------------- helpers


@contextlib.contextmanager
def float64(backend):
    """float64 for this test only (JAX's x64 flag is scoped, never set globally)."""
    if backend.name == "jax":
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


def hessian(backend, f, x):
    """Hessian ``[x.size, x.size]`` of the scalar ``f`` at ``x`` by the framework's own API."""
    size = int(np.prod(x.shape))
    if backend.name == "jax":
        import jax

        return np.asarray(jax.hessian(f)(x)).reshape(size, size)
    if backend.name == "torch":
        import torch

        return torch.autograd.functional.hessian(f, x).reshape(size, size).numpy()
    if backend.name == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = f(x)
            g = inner.gradient(y, x)
        return outer.jacobian(g, x).numpy().reshape(size, size)
    import autograd

    return np.asarray(autograd.hessian(f)(x)).reshape(size, size)


def reverse_over_reverse(backend, f, x, v):
    """``d/dx <∇f(x), v>``: a gradient of a gradient (torch ``create_graph=True`` then
    ``backward``, ``jax.grad`` of ``jax.grad``), the other way to a Hessian-vector product."""
    if backend.name == "torch":
        import torch

        x = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(x), x, create_graph=True)
        (g * v).sum().backward()
        return x.grad.numpy()
    import jax

    return np.asarray(jax.grad(lambda u: (jax.grad(f)(u) * v).sum())(x))


class FixedNoise(diffopt.Noise):
    """Draws given by the test: rows of ``block`` repeated to the requested length."""

    def __init__(self, block, backend, kind):
        self.block, self.backend, self.kind = np.asarray(block, dtype=np.float64), backend, kind

    def draws(self, n):
        reps = -(-n // self.block.shape[0])
        return np.concatenate([self.block] * reps)[:n]

    def sample(self, shape, like, rng=None):
        shape = tuple(int(d) for d in shape)
        return self.backend.asarray(self.draws(shape[0]), ar.get_dtype_name(like))

    def score(self, z):
        return z if self.kind == "normal" else 1.0 - ar.do("exp", -z)

    def score_derivative(self, z):
        return ar.do("ones_like", z) if self.kind == "normal" else ar.do("exp", -z)


def ref_scores(z, kind):
    """∇ν and the diagonal of ∇²ν at ``z`` (NumPy)."""
    if kind == "normal":
        return z, np.ones_like(z)
    return 1.0 - np.exp(-z), np.exp(-z)


def stein_matrices(s, d):
    """∇ν∇νᵀ − ∇²ν per sample: ``[..., D, D]``."""
    return s[..., :, None] * s[..., None, :] - d[..., :, None] * np.eye(s.shape[-1])


# ------------------------------------------------------------- exact (fixed draws)

B, D, N, CHUNK, SIGMA, QUAD = 2, 3, 7, 3, 0.3, 0.4


def solver(x):
    """Discrete and continuous parts, 4 outputs for 3 inputs."""
    return ar.do("concatenate", [first_max_mask(x), 0.5 * ar.do("sum", x * x, axis=-1, keepdims=True)], axis=-1)


def ref_solver(x):
    return np.concatenate([np.eye(x.shape[-1])[x.argmax(-1)], 0.5 * (x * x).sum(-1, keepdims=True)], axis=-1)


def ref_perturbed_hessian(theta, z, kind, g, control_variate, multiplicative):
    """Hessian ``[B·D, B·D]`` of ``Σ <g, y> + QUAD/2 Σ y²`` as the estimators give it.

    y's Jacobian is the score-function estimate J = Σ_i c_i s_iᵀ / (Nσ) (``c_i`` the
    centred outputs), ∇²<u, y> = Σ_i <u, c_i> (s_i s_iᵀ − diag s'_i) / (Nσ²); the loss
    is quadratic in y, so its Hessian is Jᵀ QUAD J + ∇²<g + QUAD ȳ, y>. Multiplicative
    noise is additive in log θ: J/θ and D H D − diag(G/θ²).
    """
    n = z.shape[0]
    x = theta * np.exp(SIGMA * z - SIGMA**2 / 2) if multiplicative else theta + SIGMA * z
    f = ref_solver(x.reshape(-1, D)).reshape(n, B, -1)
    ybar = f.mean(0)
    if control_variate is None:
        c = f
    elif control_variate == "value":
        c = f - ref_solver(theta)[None]
    else:
        c = f - (f.sum(0, keepdims=True) - f) / (n - 1)
    s, d = ref_scores(z, kind)
    u = g + QUAD * ybar
    out = np.zeros((B * D, B * D))
    for b in range(B):
        jac = np.einsum("no,ni->oi", c[:, b], s[:, b]) / (n * SIGMA)
        w = c[:, b] @ u[b]
        hess = np.einsum("n,nij->ij", w, stein_matrices(s[:, b], d[:, b])) / (n * SIGMA**2)
        if multiplicative:
            grad_u = w @ s[:, b] / (n * SIGMA)
            jac = jac / theta[b]
            hess = hess / np.outer(theta[b], theta[b]) - np.diag(grad_u / theta[b] ** 2)
        out[b * D:(b + 1) * D, b * D:(b + 1) * D] = QUAD * jac.T @ jac + hess
    return out


RUNS = [dict(chunk_size=None), dict(chunk_size=CHUNK), dict(chunk_size=CHUNK, residual="recompute"),
        dict(chunk_size=CHUNK, residual="jacobian")]


@pytest.mark.parametrize("multiplicative", [False, True], ids=["additive", "multiplicative"])
@pytest.mark.parametrize("control_variate", [None, "mean", "value"])
def test_perturbed_hessian_exact(grad_backend, control_variate, multiplicative):
    b = grad_backend
    rng = np.random.default_rng(0)
    theta = rng.uniform(0.5, 2.0, size=(B, D)) * np.array([[1.0], [1.3]])
    g = rng.normal(size=(B, D + 1))
    for kind in ("normal", "gumbel"):
        noise = FixedNoise(rng.normal(size=(CHUNK, B, D)), b, kind)
        want = ref_perturbed_hessian(theta, noise.draws(N), kind, g, control_variate, multiplicative)
        assert np.abs(want).max() > 0.1  # a non-trivial Hessian is compared
        with float64(b):
            t, gb = b.asarray(theta, "float64"), b.asarray(g, "float64")
            for run in RUNS:
                fn = diffopt.perturbed(solver, num_samples=N, sigma=SIGMA, noise=noise,
                                       multiplicative=multiplicative, control_variate=control_variate, **run)

                def loss(u):
                    y = fn(u, rng=0)
                    return ar.do("sum", y * gb) + 0.5 * QUAD * ar.do("sum", y * y)

                np.testing.assert_allclose(hessian(b, loss, t), want, rtol=0, atol=TOL)
                if b.name in ("torch", "jax"):
                    v = rng.normal(size=(B, D))
                    got = reverse_over_reverse(b, loss, t, b.asarray(v, "float64"))
                    np.testing.assert_allclose(got.reshape(-1), want @ v.reshape(-1), rtol=0, atol=TOL)


def ref_max_hessian(theta, z, kind, w):
    """Hessian of ``Σ_b w_b F_b + QUAD/2 Σ_b F_b²``: ȳȳᵀ QUAD + (w + QUAD F)(J + Jᵀ)/2 per instance."""
    n = z.shape[0]
    x = theta[None] + SIGMA * z
    f = np.eye(D)[x.argmax(-1)]
    value, ybar = (x * f).sum(-1).mean(0), f.mean(0)
    s, _ = ref_scores(z, kind)
    out = np.zeros((B * D, B * D))
    for b in range(B):
        jac = np.einsum("no,ni->oi", f[:, b] - ybar[b], s[:, b]) / ((n - 1) * SIGMA)
        block = QUAD * np.outer(ybar[b], ybar[b]) + (w[b] + QUAD * value[b]) * (jac + jac.T) / 2
        out[b * D:(b + 1) * D, b * D:(b + 1) * D] = block
    return out


@pytest.mark.parametrize("chunk_size", [None, CHUNK])
def test_perturbed_max_hessian_exact(grad_backend, chunk_size):
    b = grad_backend
    rng = np.random.default_rng(2)
    theta, w = rng.normal(size=(B, D)), rng.normal(size=B)
    for kind in ("normal", "gumbel"):
        noise = FixedNoise(rng.normal(size=(CHUNK, B, D)), b, kind)
        want = ref_max_hessian(theta, noise.draws(N), kind, w)
        with float64(b):
            fn = diffopt.perturbed_max(first_max_mask, num_samples=N, sigma=SIGMA, noise=noise, chunk_size=chunk_size)
            t, wb = b.asarray(theta, "float64"), b.asarray(w, "float64")

            def loss(u):
                v = fn(u, rng=0)
                return ar.do("sum", v * wb) + 0.5 * QUAD * ar.do("sum", v * v)

            got = hessian(b, loss, t)
            np.testing.assert_allclose(got, got.T, rtol=0, atol=TOL)  # symmetric, like a Hessian
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
