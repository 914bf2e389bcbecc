"""Second derivatives of the perturbed estimators, with each framework's own nested
differentiation, against exact references, closed forms and finite differences.
"""

import autoray as ar
import numpy as np
import pytest

import diffopt
from diffopt._ops import first_max_mask
from references import THETA, hessian, ref_solver, softmax, solver


Z_TOL = 5.0
TOL = 1e-10


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

    return np.asarray(jax.jit(jax.grad(lambda u: (jax.grad(f)(u) * v).sum()))(x))


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
    for kind, runs in (("normal", RUNS), ("gumbel", RUNS[:1])):
        noise = FixedNoise(rng.normal(size=(CHUNK, B, D)), b, kind)
        want = ref_perturbed_hessian(theta, noise.draws(N), kind, g, control_variate, multiplicative)
        assert np.abs(want).max() > 0.1  # a non-trivial Hessian is compared
        with b.float64():
            t, gb = b.asarray(theta, "float64"), b.asarray(g, "float64")
            for run in runs:
                fn = diffopt.perturbed(solver, num_samples=N, sigma=SIGMA, noise=noise,
                                       multiplicative=multiplicative, control_variate=control_variate, **run)

                def loss(u):
                    y = fn(u, rng=0)
                    return ar.do("sum", y * gb) + 0.5 * QUAD * ar.do("sum", y * y)

                np.testing.assert_allclose(hessian(b, loss, t), want, rtol=0, atol=TOL)
                if b.name in ("torch", "jax") and kind == "gumbel":
                    v = rng.normal(size=(B, D))
                    got = reverse_over_reverse(b, loss, t, b.asarray(v, "float64"))
                    np.testing.assert_allclose(got.reshape(-1), want @ v.reshape(-1), rtol=0, atol=TOL)


def ref_max_hessian(theta, z, kind, w, y_true=None):
    """Hessian of ``Σ_b w_b F_b + QUAD/2 Σ_b F_b²``: ȳȳᵀ QUAD + (w + QUAD F)(J + Jᵀ)/2 per instance.

    With ``y_true``, of the Fenchel-Young loss L = F − <θ, y> instead of F (gradient ȳ − y).
    """
    n = z.shape[0]
    x = theta[None] + SIGMA * z
    f = np.eye(D)[x.argmax(-1)]
    value, ybar = (x * f).sum(-1).mean(0), f.mean(0)
    grad = ybar
    if y_true is not None:
        value, grad = value - (theta * y_true).sum(-1), ybar - y_true
    s, _ = ref_scores(z, kind)
    out = np.zeros((B * D, B * D))
    for b in range(B):
        jac = np.einsum("no,ni->oi", f[:, b] - ybar[b], s[:, b]) / ((n - 1) * SIGMA)
        block = QUAD * np.outer(grad[b], grad[b]) + (w[b] + QUAD * value[b]) * (jac + jac.T) / 2
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
        with b.float64():
            fn = diffopt.perturbed_max(first_max_mask, num_samples=N, sigma=SIGMA, noise=noise, chunk_size=chunk_size)
            t, wb = b.asarray(theta, "float64"), b.asarray(w, "float64")

            def loss(u):
                v = fn(u, rng=0)
                return ar.do("sum", v * wb) + 0.5 * QUAD * ar.do("sum", v * v)

            got = hessian(b, loss, t)
            np.testing.assert_allclose(got, got.T, rtol=0, atol=TOL)  # symmetric, like a Hessian
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_fenchel_young_hessian_exact(grad_backend):
    b = grad_backend
    rng = np.random.default_rng(3)
    theta, w = rng.normal(size=(B, D)), rng.normal(size=B)
    y_true = np.eye(D)[[1, 2]] * 0.75
    noise = FixedNoise(rng.normal(size=(CHUNK, B, D)), b, "gumbel")
    want = ref_max_hessian(theta, noise.draws(N), "gumbel", w, y_true)
    with b.float64():
        fn = diffopt.FenchelYoungLoss(first_max_mask, num_samples=N, sigma=SIGMA, noise=noise, reduction="none",
                                      chunk_size=CHUNK)
        t, wb, yb = b.asarray(theta, "float64"), b.asarray(w, "float64"), b.asarray(y_true, "float64")

        def loss(u):
            v = fn(u, yb, rng=0)
            return ar.do("sum", v * wb) + 0.5 * QUAD * ar.do("sum", v * v)

        np.testing.assert_allclose(hessian(b, loss, t), want, rtol=0, atol=TOL)


def gumbel_terms(n, seed):
    """``(z, f, s, s')`` of ``n`` Gumbel perturbations of THETA by the one-hot argmax (NumPy)."""
    z = np.random.default_rng(seed).gumbel(size=(n, THETA.size))
    f = np.eye(THETA.size)[(THETA + SIGMA_G * z).argmax(-1)]
    s, d = ref_scores(z, "gumbel")
    return z, f, s, d


SIGMA_G, N_G = 0.5, 20000


def test_perturbed_argmax_hessian_is_softmax_hessian(grad_backend):
    """Gumbel argmax: y_σ = softmax(θ/σ), so ∇²<w, y_σ> is softmax's, in closed form."""
    b = grad_backend
    w = np.array([1.0, 2.0, 0.5, -1.0])
    p = softmax(THETA, SIGMA_G)
    jac = (np.diag(p) - np.outer(p, p)) / SIGMA_G
    # ∇<w, p> = J w = (p ⊙ w − p <p, w>)/σ; differentiate once more (J = ∂p/∂θ, symmetric)
    want = (np.diag(w) @ jac - (p @ w) * jac - np.outer(p, jac @ w)) / SIGMA_G
    fn = diffopt.perturbed(first_max_mask, num_samples=N_G, sigma=SIGMA_G, noise="gumbel", batched=False,
                           control_variate="mean")
    with b.float64():
        wb = b.asarray(w, "float64")
        got = hessian(b, lambda u: ar.do("sum", fn(u, rng=11) * wb), b.asarray(THETA, "float64"))
    _, f, s, d = gumbel_terms(N_G, 0)  # the estimator's terms, for their std
    terms = ((f - f.mean(0)) @ w)[:, None, None] * stein_matrices(s, d) / SIGMA_G**2
    np.testing.assert_array_less(np.abs(got - want), Z_TOL * terms.std(0) / np.sqrt(N_G))


def test_perturbed_max_hessian_is_softmax_jacobian(grad_backend):
    """Gumbel: F_σ = σ logsumexp(θ/σ) + σγ, whose Hessian is (diag p − ppᵀ)/σ."""
    b = grad_backend
    p = softmax(THETA, SIGMA_G)
    want = (np.diag(p) - np.outer(p, p)) / SIGMA_G
    fn = diffopt.perturbed_max(first_max_mask, num_samples=N_G, sigma=SIGMA_G, noise="gumbel", batched=False)
    with b.float64():
        got = hessian(b, lambda u: fn(u, rng=12), b.asarray(THETA, "float64"))
    _, f, s, _ = gumbel_terms(N_G, 1)
    c = f - f.mean(0)
    terms = (c[:, :, None] * s[:, None, :] + s[:, :, None] * c[:, None, :]) / (2 * SIGMA_G)
    np.testing.assert_array_less(np.abs(got - want), Z_TOL * terms.std(0) / np.sqrt(N_G))


def smooth(x):
    """A smooth, non-separable solver: 2 outputs for 3 inputs."""
    return ar.do("stack", [ar.do("tanh", x[..., 0] + 0.5 * x[..., 1]), ar.do("sin", x[..., 1] - x[..., 2])], axis=-1)


def np_smooth(x):
    return np.stack([np.tanh(x[..., 0] + 0.5 * x[..., 1]), np.sin(x[..., 1] - x[..., 2])], axis=-1)


@pytest.mark.parametrize("multiplicative", [False, True], ids=["additive", "multiplicative"])
def test_perturbed_hessian_matches_finite_differences(grad_backend, multiplicative):
    """Normal noise: the Hessian estimate against second differences of y_σ by Gauss-Hermite quadrature."""
    b = grad_backend
    n, sigma = 40000, 0.4
    theta, w = np.array([0.8, 0.5, 1.2]), np.array([1.0, -0.7])
    nodes, weights = np.polynomial.hermite_e.hermegauss(24)  # ∫ φ(z) h(z) dz = Σ w h / √(2π)
    grid = np.stack(np.meshgrid(nodes, nodes, nodes, indexing="ij"), -1).reshape(-1, 3)
    mass = np.prod(np.stack(np.meshgrid(weights, weights, weights, indexing="ij"), -1).reshape(-1, 3), -1)
    mass = mass / mass.sum()

    def perturb(t, z):
        return t * np.exp(sigma * z - sigma**2 / 2) if multiplicative else t + sigma * z

    def smoothed(t):
        return mass @ np_smooth(perturb(t, grid)) @ w

    h, eye = 1e-3, np.eye(3)
    want = np.array([[(smoothed(theta + h * (eye[j] + eye[k])) - smoothed(theta + h * (eye[j] - eye[k]))
                       - smoothed(theta - h * (eye[j] - eye[k])) + smoothed(theta - h * (eye[j] + eye[k])))
                      / (4 * h * h) for k in range(3)] for j in range(3)])
    fn = diffopt.perturbed(smooth, num_samples=n, sigma=sigma, batched=False, control_variate="value",
                           multiplicative=multiplicative, chunk_size=n // 4)
    with b.float64():
        wb = b.asarray(w, "float64")
        got = hessian(b, lambda u: ar.do("sum", fn(u, rng=13) * wb), b.asarray(theta, "float64"))
    z = np.random.default_rng(2).standard_normal((n, 3))
    c = (np_smooth(perturb(theta, z)) - np_smooth(theta)) @ w
    terms = c[:, None, None] * stein_matrices(z, np.ones_like(z)) / sigma**2
    if multiplicative:  # D H D − diag(G/θ²), G the log-space gradient term
        grad_terms = c[:, None] * z / sigma
        terms = terms / np.outer(theta, theta) - grad_terms[:, :, None] * np.diag(1 / theta**2)
    np.testing.assert_array_less(np.abs(got - want), Z_TOL * terms.std(0) / np.sqrt(n))


@pytest.mark.parametrize("op", ["perturbed", "perturbed_max", "fenchel_young"])
def test_learnable_sigma_second_derivatives_raise(grad_backend, op):
    """A learnable (array) σ gives first derivatives only: a Hessian raises the second-order
    error on every backend (JAX could otherwise differentiate the hand-written backward)."""
    b = grad_backend
    with b.float64():
        t = b.asarray(THETA[None], "float64")
        sigma = b.asarray(np.array(0.5), "float64")
        label = b.asarray(np.eye(4)[[2]], "float64")
        if op == "perturbed":
            fn = diffopt.perturbed(first_max_mask, num_samples=4, sigma=sigma)
            f = lambda u: ar.do("sum", fn(u, rng=0) * u)  # noqa: E731
        elif op == "perturbed_max":
            fn = diffopt.perturbed_max(first_max_mask, num_samples=4, sigma=sigma)
            f = lambda u: ar.do("sum", fn(u, rng=0))  # noqa: E731
        else:
            fn = diffopt.FenchelYoungLoss(first_max_mask, num_samples=4, sigma=sigma)
            f = lambda u: fn(u, label, rng=0)  # noqa: E731
        b.grad(f, t)  # the first derivative works
        with pytest.raises((NotImplementedError, RuntimeError), match="second-order"):
            hessian(b, f, t)


# ------------------------------------------------------- mutation survivors (tests/MUTATION.md)


def shifted_argmax(x, shift):
    """One-hot argmax of ``x + shift`` over the last axis of ``[rows, 2, 2]`` instances (4 entries)."""
    rows = int(x.shape[0])
    flat = ar.do("reshape", x + shift, (rows, 4))
    return ar.do("reshape", first_max_mask(flat), (rows, 2, 2))


@pytest.mark.parametrize("n", [1, 2, 5])
def test_perturbed_max_and_fenchel_young_hessian_few_samples_extra_array_rank_three(grad_backend, n):
    """N = 1 (no baseline, 1/σ), N = 2 (leave-one-out, 1/σ), an extra array argument passed through the
    replay, ``[B, 2, 2]`` instances: Hessians of Σ w_b F_b and of Σ w_b L_b against the formula."""
    b = grad_backend
    rng = np.random.default_rng(20 + n)
    theta, w, shift = rng.normal(size=(B, 2, 2)), rng.normal(size=B), rng.normal(size=(2, 2)) * 0.3
    y_true = np.eye(4)[[1, 3]].reshape(B, 2, 2)
    z = rng.normal(size=(n, B, 4))
    noise = FixedNoise(z, b, "normal")
    x = theta.reshape(1, B, 4) + SIGMA * z
    f = np.eye(4)[(x + shift.reshape(4)).argmax(-1)]
    c = f - f.mean(0) if n > 1 else f
    want = np.zeros((B * 4, B * 4))
    for i in range(B):
        jac = np.einsum("no,ni->oi", c[:, i], z[:, i]) / ((n - 1 if n > 1 else n) * SIGMA)
        want[i * 4:(i + 1) * 4, i * 4:(i + 1) * 4] = w[i] * (jac + jac.T) / 2
    assert np.abs(want).max() > 0.1
    with b.float64():
        t, wb, sb, yb = (b.asarray(a, "float64") for a in (theta, w, shift, y_true))
        fmax = diffopt.perturbed_max(shifted_argmax, num_samples=n, sigma=SIGMA, noise=noise)
        got = hessian(b, lambda u: ar.do("sum", fmax(u, sb, rng=0) * wb), t)
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
        for maximize in (True, False):
            loss = diffopt.FenchelYoungLoss(shifted_argmax, num_samples=n, sigma=SIGMA, noise=noise,
                                            maximize=maximize, reduction="none")
            got = hessian(b, lambda u: ar.do("sum", loss(u, yb, sb, rng=0) * wb), t)
            np.testing.assert_allclose(got, want if maximize else -want, rtol=0, atol=TOL)


def test_fenchel_young_and_perturbed_max_replay_the_seeded_noise(grad_backend):
    """Real noise: the same seed gives the same value and Hessian (the replay reads the forward's key),
    another seed other ones."""
    b = grad_backend
    theta, y_true = np.random.default_rng(30).normal(size=(B, D)), np.eye(D)[[0, 2]]
    fmax = diffopt.perturbed_max(first_max_mask, num_samples=6, sigma=0.5, chunk_size=4)
    loss = diffopt.FenchelYoungLoss(first_max_mask, num_samples=6, sigma=0.5, chunk_size=4)
    with b.float64():
        t, yb = b.asarray(theta, "float64"), b.asarray(y_true, "float64")
        for f in (lambda u, s: ar.do("sum", fmax(u, rng=s)), lambda u, s: loss(u, yb, rng=s)):
            values = [float(b.to_numpy(f(t, s))) for s in (3, 3, 4)]
            hessians = [hessian(b, lambda u: f(u, s), t) for s in (3, 3)]
            assert values[0] == values[1] != values[2]
            np.testing.assert_array_equal(hessians[0], hessians[1])
            assert np.abs(hessians[0]).max() > 0


@pytest.mark.parametrize("op", ["fenchel_young", "perturbed_max"])
def test_max_and_fenchel_young_float32_extra_array_and_float64_sigma(grad_backend, op):
    """float32 ``[B, 2, 2]`` θ, label and extra solver array, a float64 learnable σ: the value and
    θ-gradient keep float32, the σ-gradient σ's float64 (not the extra array's), all equal to the
    float64 formula to float32 precision."""
    b = grad_backend
    rng = np.random.default_rng(31)
    theta, w, shift = rng.normal(size=(B, 2, 2)), rng.normal(size=B), rng.normal(size=(2, 2)) * 0.3
    y_true = np.eye(4)[[2, 0]].reshape(B, 2, 2) if op == "fenchel_young" else np.zeros((B, 2, 2))
    z = rng.normal(size=(N, B, 4))
    noise = FixedNoise(z, b, "normal")
    s32 = float(np.float32(SIGMA))
    th, sh = theta.astype(np.float32).astype(np.float64), shift.astype(np.float32).astype(np.float64)
    x = th.reshape(1, B, 4) + s32 * z
    f = np.eye(4)[(x + sh.reshape(4)).argmax(-1)]
    value = (x * f).sum(-1).mean(0) - (th.reshape(B, 4) * y_true.reshape(B, 4)).sum(-1)
    grad = w[:, None] * (f.mean(0) - y_true.reshape(B, 4))
    d_sigma = float(w @ (z * f).sum(-1).mean(0))
    with b.float64():  # a float64 σ needs JAX's x64 scope
        t, wb, yb, shb = (b.asarray(a, "float32") for a in (theta, w, y_true, shift))
        s = b.asarray(np.array(s32), "float64")

        def call(u, v):
            if op == "perturbed_max":
                return diffopt.perturbed_max(shifted_argmax, num_samples=N, sigma=v, noise=noise)(u, shb, rng=0)
            loss = diffopt.FenchelYoungLoss(shifted_argmax, num_samples=N, sigma=v, noise=noise, reduction="none")
            return loss(u, yb, shb, rng=0)

        out = call(t, s)
        g_theta = b.grad(lambda u: ar.do("sum", call(u, s) * wb), t)
        g_sigma = b.grad(lambda v: ar.do("sum", call(t, v) * wb), s)
        for got, want, shape, dtype in ((out, value, (B,), "float32"), (g_theta, grad.reshape(B, 2, 2), (B, 2, 2), "float32"),
                                        (g_sigma, d_sigma, (), "float64")):
            assert ar.get_dtype_name(got) == dtype and tuple(got.shape) == shape
            np.testing.assert_allclose(b.to_numpy(got), want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("op", ["perturbed", "perturbed_max", "fenchel_young"])
def test_numpy_theta_with_an_autograd_sigma(grad_backend, op):
    """A plain NumPy θ with a learnable σ traced by autograd runs on autograd (σ picks the
    framework): the σ-gradient equals the one with θ traced too, and a Python-float σ
    (``autograd.grad(f)(0.3)``, which autograd unboxes to a float) gives the same."""
    b = grad_backend
    if b.name != "autograd":
        pytest.skip("NumPy arrays beside a traced sigma: autograd only")
    import autograd

    rng = np.random.default_rng(33)
    theta, label, w = rng.normal(size=(B, 4)), np.eye(4)[[0, 2]], rng.normal(size=(B, 4))
    noise = FixedNoise(rng.normal(size=(N, B, 4)), b, "normal")

    def loss(t, s):
        if op == "perturbed":
            return ar.do("sum", diffopt.perturbed(first_max_mask, num_samples=N, sigma=s, noise=noise)(t, rng=0) * w)
        if op == "perturbed_max":
            return ar.do("sum", diffopt.perturbed_max(first_max_mask, num_samples=N, sigma=s, noise=noise)(t, rng=0))
        return diffopt.FenchelYoungLoss(first_max_mask, num_samples=N, sigma=s, noise=noise)(t, label, rng=0)

    sigma = np.array(SIGMA)
    with_numpy_theta = autograd.grad(lambda s: loss(theta, s))(sigma)
    both_traced = autograd.grad(lambda s: loss(theta + 0.0 * s, s))(sigma)
    python_float = autograd.grad(lambda s: loss(theta, s))(SIGMA)
    assert abs(with_numpy_theta) > 0.1
    np.testing.assert_allclose(with_numpy_theta, both_traced, rtol=1e-12)
    np.testing.assert_allclose(python_float, both_traced, rtol=1e-12)


@pytest.mark.parametrize("dtype,rtol,atol", [("float32", 0, 1e-4), ("float16", 3 * 2.0**-10, 1e-3)])
def test_perturbed_hessian_float32_rank_three(grad_backend, dtype, rtol, atol):
    """float32 and float16 ``[B, 1, D]`` θ in each residual mode: value, gradient and Hessian keep θ's
    dtype and shape, and equal the float64 formula to that precision (float16 is computed in float32:
    its tangents and cotangents are cast up, the results cast back). The loss itself is computed in
    float32; the tolerance is 3 float16 spacings (2**-10 relative each): the solver's float16 output,
    the value ``y`` and the Hessian are each rounded once. TensorFlow's nested tapes also round the
    float16 gradient that the outer tape differentiates: 5 spacings there."""
    b = grad_backend
    rng = np.random.default_rng(32)
    theta = rng.uniform(0.5, 2.0, size=(B, D)).astype(dtype).astype(np.float64)
    g = rng.normal(size=(B, D + 1)).astype(dtype).astype(np.float64)
    noise = FixedNoise(rng.normal(size=(CHUNK, B, D)), b, "normal")
    want = ref_perturbed_hessian(theta, noise.draws(N), "normal", g, "mean", False)
    t, gb = b.asarray(theta.reshape(B, 1, D), dtype), b.asarray(g.reshape(B, 1, D + 1), "float32")
    for run in RUNS:
        fn = diffopt.perturbed(solver, num_samples=N, sigma=SIGMA, noise=noise, control_variate="mean", **run)

        def loss(u):
            y = ar.astype(fn(u, rng=0), "float32")
            return ar.do("sum", y * gb) + 0.5 * QUAD * ar.do("sum", y * y)

        y, grad = fn(t, rng=0), b.grad(loss, t)
        assert ar.get_dtype_name(y) == dtype and tuple(y.shape) == (B, 1, D + 1), run
        assert ar.get_dtype_name(grad) == dtype and tuple(grad.shape) == (B, 1, D), run
        got = hessian(b, loss, t)
        assert got.dtype == dtype, run
        if dtype == "float16" and b.name == "tensorflow":
            rtol = 5 * 2.0**-10
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=str(run))


@pytest.mark.parametrize("op", ["perturbed", "perturbed_max", "fenchel_young"])
def test_second_derivatives_through_an_extra_array_are_zero(grad_backend, op):
    """The solver's extra array arguments and the loss's label get no gradient (documented), so every
    second derivative that passes through one is 0: the Hessian in ``shift`` (in ``y_true`` for the loss)
    and the mixed ``d/dθ ∂/∂shift``. HIPS autograd differentiates the zero cotangent of ``shift`` once
    more: its shim must give zero without asking the op, which would get no tangent for θ."""
    b = grad_backend
    if b.name == "tensorflow":
        pytest.skip("TensorFlow's gradient in an unconnected argument is None: nothing to differentiate again")
    rng = np.random.default_rng(31)
    theta, w, shift = rng.normal(size=(B, 2, 2)), rng.normal(size=(B, 2, 2)), rng.normal(size=(2, 2)) * 0.3
    y_true = np.eye(4)[[1, 3]].reshape(B, 2, 2)
    noise = FixedNoise(rng.normal(size=(5, B, 4)), b, "normal")
    kw = dict(num_samples=5, sigma=SIGMA, noise=noise)
    with b.float64():
        t, wb, sb, yb = (b.asarray(a, "float64") for a in (theta, w, shift, y_true))
        if op == "perturbed":
            fn = diffopt.perturbed(shifted_argmax, **kw)
            f, arg = (lambda u, s: ar.do("sum", fn(u, s, rng=0) * wb)), sb
        elif op == "perturbed_max":
            fn = diffopt.perturbed_max(shifted_argmax, **kw)
            f, arg = (lambda u, s: ar.do("sum", fn(u, s, rng=0) * wb[:, 0, 0])), sb
        else:
            fn = diffopt.FenchelYoungLoss(shifted_argmax, reduction="none", **kw)
            f, arg = (lambda u, y: ar.do("sum", fn(u, y, sb, rng=0) * wb[:, 0, 0])), yb
        got = hessian(b, lambda s: f(t, s), arg)
        assert got.shape == (int(np.prod(arg.shape)),) * 2 and not np.any(got)
        if b.name == "autograd":
            import autograd

            mixed = autograd.grad(lambda u: ar.do("sum", autograd.grad(lambda s: f(u, s))(arg) * arg))(t)
            assert mixed.shape == theta.shape and not np.any(mixed)


def test_perturbed_hessian_with_an_extra_array_argument(grad_backend):
    """An extra array argument of the solver travels through the second-order op (one ``None`` per
    extra array in the Hessian's tuple): the Hessian in θ equals the one with the array closed over."""
    b = grad_backend
    rng = np.random.default_rng(33)
    theta, w, shift = rng.normal(size=(B, 2, 2)), rng.normal(size=(B, 2, 2)), rng.normal(size=(2, 2)) * 0.3
    noise = FixedNoise(rng.normal(size=(5, B, 4)), b, "normal")
    with b.float64():
        t, wb, sb = (b.asarray(a, "float64") for a in (theta, w, shift))
        passed = diffopt.perturbed(shifted_argmax, num_samples=5, sigma=SIGMA, noise=noise)
        closed = diffopt.perturbed(lambda x: shifted_argmax(x, sb), num_samples=5, sigma=SIGMA, noise=noise)
        got = hessian(b, lambda u: ar.do("sum", passed(u, sb, rng=0) * wb), t)
        want = hessian(b, lambda u: ar.do("sum", closed(u, rng=0) * wb), t)
        assert np.abs(want).max() > 0.1
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
