"""Exact tests of the estimators: fixed noise draws, a hand-written NumPy reference, 1e-10.

Every estimator's value and gradient is computed from noise draws that the
test chooses (:class:`FixedNoise`, :class:`FixedRng`) and compared in float64
with a few lines of NumPy written from the formulas of the papers / the spec,
independently of diffopt's code (the sorting reference is differentiated by
HIPS autograd, not by diffopt's hand-written backward). A wrong constant, sign,
scale, baseline or sample count fails here, where a statistical test would
still pass. JAX runs in float64 inside these tests only (``jax.enable_x64``).

``FixedNoise`` returns, for a request of ``n`` rows, the first ``n`` rows of
its block repeated: with a block of ``chunk_size`` rows, the chunked run
(``n = chunk_size`` per chunk, then the remainder) and the one-chunk run see
the same multiset of draws, so both must equal the same reference.
"""

import functools
import math

import autoray as ar
import numpy as np
import pytest

import diffopt
from diffopt import imle as dimle
from diffopt._ops import first_max_mask
from diffopt.random import Rng

TOL = 1e-10


def close(backend, got, want, tol=TOL):
    got = backend.to_numpy(got)
    assert got.dtype == np.float64, got.dtype
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


class FixedNoise(diffopt.Noise):
    """Draws given by the test: rows of ``block`` repeated to the requested length."""

    def __init__(self, block, backend, score):
        self.block, self.backend, self._score = np.asarray(block, dtype=np.float64), backend, score

    def draws(self, n):
        reps = -(-n // self.block.shape[0])
        return np.concatenate([self.block] * reps)[:n]

    def sample(self, shape, like, rng=None):
        shape = tuple(int(d) for d in shape)
        assert shape[1:] == self.block.shape[1:], (shape, self.block.shape)
        return self.backend.asarray(self.draws(shape[0]), ar.get_dtype_name(like))

    def score(self, z):
        return self._score(z)


SCORES = {"normal": (lambda z: z, lambda z: z), "gumbel": (lambda z: 1.0 - ar.do("exp", -z), lambda z: 1.0 - np.exp(-z))}


# ------------------------------------------------------------------ perturbed

B, D, N, CHUNK, SIGMA = 2, 4, 7, 3, 0.3


def solver(x):
    """Discrete and continuous parts, 5 outputs for 4 inputs (out != in)."""
    return ar.do("concatenate", [first_max_mask(x), 0.5 * ar.do("sum", x * x, axis=-1, keepdims=True)], axis=-1)


def ref_solver(x):
    return np.concatenate([np.eye(x.shape[-1])[x.argmax(-1)], 0.5 * (x * x).sum(-1, keepdims=True)], axis=-1)


def ref_perturbed(theta, z, sigma, g, score, control_variate, multiplicative):
    """Value ``[B, 5]`` and gradient of ``<g, y>`` ``[B, D]`` (Berthet et al. 2020, Prop. 3.1)."""
    n = z.shape[0]
    x = theta * np.exp(sigma * z - sigma**2 / 2) if multiplicative else theta + sigma * z
    f = ref_solver(x.reshape(-1, theta.shape[-1])).reshape(n, theta.shape[0], -1)
    if control_variate is None:
        centred = f
    elif control_variate == "value":
        centred = f - ref_solver(theta)[None]
    else:  # leave-one-out: sample i against the mean of the others
        centred = f - (f.sum(0, keepdims=True) - f) / (n - 1)
    weights = np.einsum("nbo,bo->nb", centred, g)
    grad = np.einsum("nb,nbi->bi", weights, score(z)) / (n * sigma)
    return f.mean(0), (grad / theta if multiplicative else grad)


RUNS = [dict(chunk_size=None), dict(chunk_size=CHUNK), dict(chunk_size=CHUNK, residual="recompute"),
        dict(chunk_size=CHUNK, residual="jacobian"), dict(chunk_size=None, residual="recompute")]


@pytest.mark.parametrize("multiplicative", [False, True], ids=["additive", "multiplicative"])
@pytest.mark.parametrize("control_variate", [None, "mean", "value"])
def test_perturbed_exact(backend, control_variate, multiplicative):
    rng = np.random.default_rng(0)
    theta = rng.uniform(0.5, 2.0, size=(B, D)) * np.array([[1.0], [1.3]])
    g = rng.normal(size=(B, D + 1))
    for noise_name, (score, ref_score) in SCORES.items():
        noise = FixedNoise(rng.normal(size=(CHUNK, B, D)), backend, score)
        z = noise.draws(N)
        want_y, want_g = ref_perturbed(theta, z, SIGMA, g, ref_score, control_variate, multiplicative)
        with backend.float64():
            t, gb = backend.asarray(theta, "float64"), backend.asarray(g, "float64")
            for run in RUNS:
                fn = diffopt.perturbed(solver, num_samples=N, sigma=SIGMA, noise=noise, multiplicative=multiplicative,
                                       control_variate=control_variate, **run)
                close(backend, fn(t, rng=0), want_y)
                if backend.has_grad:
                    close(backend, backend.grad(lambda u: ar.do("sum", fn(u, rng=0) * gb), t), want_g)


@pytest.mark.parametrize("multiplicative", [False, True], ids=["additive", "multiplicative"])
@pytest.mark.parametrize("control_variate", [None, "mean", "value"])
def test_perturbed_exact_in_tf_graph(backend, control_variate, multiplicative):
    """Under ``tf.function`` the chunks run in a ``tf.while_loop`` (the 2nd to 4th of 4 chunks
    here); eagerly, and on the other backends, a Python loop (:func:`test_perturbed_exact`)."""
    if backend.name != "tensorflow":
        pytest.skip("the graph loop is TensorFlow's (JAX's lax.fori_loop: tests/test_compiled.py)")
    import tensorflow as tf

    n = 3 * CHUNK + 1
    rng = np.random.default_rng(5)
    theta = rng.uniform(0.5, 2.0, size=(B, D))
    g = rng.normal(size=(B, D + 1))
    noise = FixedNoise(rng.normal(size=(CHUNK, B, D)), backend, SCORES["gumbel"][0])
    want_y, want_g = ref_perturbed(theta, noise.draws(n), SIGMA, g, SCORES["gumbel"][1], control_variate,
                                   multiplicative)
    t, gb = tf.constant(theta), tf.constant(g)
    for run in RUNS[1:4]:
        fn = diffopt.perturbed(solver, num_samples=n, sigma=SIGMA, noise=noise, multiplicative=multiplicative,
                               control_variate=control_variate, **run)

        @tf.function
        def value_and_grad(u):
            with tf.GradientTape() as tape:
                tape.watch(u)
                y = fn(u, rng=0)
                loss = tf.reduce_sum(y * gb)
            return y, tape.gradient(loss, u)

        y, grad = value_and_grad(t)
        close(backend, y, want_y)
        close(backend, grad, want_g)


def test_perturbed_unbatched_exact(backend):
    rng = np.random.default_rng(1)
    theta, g = rng.normal(size=D), rng.normal(size=D + 1)
    noise = FixedNoise(rng.normal(size=(N, 1, D)), backend, SCORES["gumbel"][0])
    want_y, want_g = ref_perturbed(theta[None], noise.draws(N), SIGMA, g[None], SCORES["gumbel"][1], None, False)
    with backend.float64():
        fn = diffopt.perturbed(solver, num_samples=N, sigma=SIGMA, noise=noise, batched=False)
        t = backend.asarray(theta, "float64")
        close(backend, fn(t, rng=0), want_y[0])
        if backend.has_grad:
            gb = backend.asarray(g, "float64")
            close(backend, backend.grad(lambda u: ar.do("sum", fn(u, rng=0) * gb), t), want_g[0])


# --------------------------------------------------- perturbed_max and Fenchel-Young


def ref_max(theta, z, sigma):
    """F_σ(θ) = mean_i <θ + σZ_i, y*(θ + σZ_i)> ``[B]`` and y_σ(θ) ``[B, D]``."""
    x = theta[None] + sigma * z
    y = np.eye(theta.shape[-1])[x.argmax(-1)]
    return (x * y).sum(-1).mean(0), y.mean(0)


@pytest.mark.parametrize("chunk_size", [None, CHUNK])
def test_perturbed_max_exact(backend, chunk_size):
    rng = np.random.default_rng(2)
    theta, w = rng.normal(size=(B, D)), rng.normal(size=B)
    for score, _ in SCORES.values():
        noise = FixedNoise(rng.normal(size=(CHUNK, B, D)), backend, score)
        value, ybar = ref_max(theta, noise.draws(N), SIGMA)
        with backend.float64():
            fn = diffopt.perturbed_max(first_max_mask, num_samples=N, sigma=SIGMA, noise=noise, chunk_size=chunk_size)
            t, wb = backend.asarray(theta, "float64"), backend.asarray(w, "float64")
            close(backend, fn(t, rng=0), value)
            if backend.has_grad:
                close(backend, backend.grad(lambda u: ar.do("sum", fn(u, rng=0) * wb), t), w[:, None] * ybar)


@pytest.mark.parametrize("maximize", [True, False], ids=["max", "min"])
@pytest.mark.parametrize("chunk_size", [None, CHUNK])
def test_fenchel_young_exact(backend, maximize, chunk_size):
    rng = np.random.default_rng(3)
    theta, w = rng.normal(size=(B, D)), rng.normal(size=B)
    y_true = np.eye(D)[[1, 3]] * 0.75
    sign = 1.0 if maximize else -1.0
    noise = FixedNoise(rng.normal(size=(CHUNK, B, D)), backend, SCORES["normal"][0])
    value, ybar = ref_max(theta, noise.draws(N), SIGMA)
    losses = sign * (value - (theta * y_true).sum(-1))
    with backend.float64():
        t, y, wb = (backend.asarray(a, "float64") for a in (theta, y_true, w))

        def make(reduction):
            return diffopt.FenchelYoungLoss(first_max_mask, num_samples=N, sigma=SIGMA, noise=noise,
                                            maximize=maximize, reduction=reduction, chunk_size=chunk_size)

        close(backend, make("none")(t, y, rng=0), losses)
        close(backend, make("sum")(t, y, rng=0), losses.sum())
        close(backend, make("mean")(t, y, rng=0), losses.mean())
        if backend.has_grad:
            loss = make("none")
            weighted = lambda u: ar.do("sum", loss(u, y, rng=0) * wb)  # noqa: E731
            close(backend, backend.grad(weighted, t), sign * w[:, None] * (ybar - y_true))
            # y_true is a label and gets no gradient (as in the originals), even when computed from θ
            d_self = backend.grad(lambda u: ar.do("sum", loss(u, 0.5 * u, rng=0) * wb), t)
            close(backend, d_self, sign * w[:, None] * (ybar - 0.5 * theta))
            close(backend, backend.grad(lambda u: make("mean")(u, y, rng=0), t), sign * (ybar - y_true) / B)


# ------------------------------------------------------------------- I-MLE family

S, M = 2, 2  # samples and marginal samples


def imle_solver(x):
    """Argmax plus a small linear part: every coefficient of the targets shows in z - z'."""
    return first_max_mask(x) + 0.1 * x


def ref_imle_solver(x):
    return np.eye(x.shape[-1])[x.argmax(-1)] + 0.1 * x


def ref_imle(theta, eps, dy, *, kind, alpha=1.0, beta=1.0, scaling=False, adaptive=False, t_in=1.0, t_tgt=1.0,
             samples=S, marginal=1, minimize=False, symmetric=False, solve=ref_imle_solver):
    """Forward ``[B·T, D]`` and gradient ``[B, D]`` (Niepert et al. 2021; Minervini et al. 2023).

    Returns also the I-MLE difference ``[B, S, D]`` (for the adaptive update).
    """
    b, t, d = eps.shape
    theta3 = np.repeat(theta[:, None], t, axis=1)
    z = solve(theta3 + t_in * eps)
    dy3 = dy.reshape(b, t, d)
    if kind == "ste":
        return z.reshape(b * t, d), dy3.mean(1), None
    lam = beta * np.linalg.norm(theta3) / np.linalg.norm(dy3) if adaptive else beta
    step = lam * dy3 if minimize else -lam * dy3  # θ' = αθ − λ dy (maximise), αθ + λ dy (minimise)
    right = solve(alpha * theta3 + step + t_tgt * eps)
    if kind == "imle":
        left = z
    else:
        left = solve(alpha * theta3 - (step if symmetric else 0.0) + t_tgt * eps)
    diff = (left - right).reshape(b, samples, marginal, d).mean(2)
    if symmetric:
        diff = diff / 2.0
    if adaptive:
        diff_scaled = diff / lam
    elif scaling:
        diff_scaled = diff / beta
    else:
        diff_scaled = diff
    grad = diff_scaled.mean(1)
    return z.reshape(b * t, d), (-grad if minimize else grad), diff


IMLE_CASES = {
    "default": dict(),
    "alpha-beta-scaled": dict(alpha=0.6, beta=1.7, scaling=True),
    "temperatures": dict(t_in=0.5, t_tgt=0.8, beta=2.0),
    "marginal": dict(marginal=M, beta=1.2),
    "minimize": dict(minimize=True, beta=1.5, alpha=0.9),
}


def _imle_inputs(seed, marginal=1):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(B, D))
    eps = rng.gumbel(size=(B, S * marginal, D))
    dy = rng.normal(size=(B * S * marginal, D)) * 2.0
    return theta, eps, dy


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


def ref_beta_update(state, ratio, *, step, momentum, decay, target_norm):
    beta, grad_norm, previous = state
    grad_norm = decay * grad_norm + (1.0 - decay) * ratio
    update = momentum * previous + (step if grad_norm < target_norm else -step)
    return max(beta + update, 0.0), grad_norm, update


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


# ---------------------------------------------------------------------- noise


class FixedRng(Rng):
    """An :class:`~diffopt.random.Rng` returning given uniforms, normals and gammas."""

    def __init__(self, like, backend, uniform=None, normal=None, gamma=None):
        super().__init__(0, like)
        self.backend, self.u, self.n, self.g = backend, uniform, normal, gamma
        self.alphas = []

    def _arr(self, a, shape, dtype):
        assert tuple(a.shape) == tuple(shape), (a.shape, shape)
        return self.backend.asarray(a, dtype)

    def _uniform(self, shape, dtype):
        return self._arr(self.u, shape, dtype)

    def _normal(self, shape, dtype):
        return self._arr(self.n, shape, dtype)

    def _gamma(self, shape, alpha, dtype):
        self.alphas.append(alpha)
        return self._arr(self.g, shape, dtype)

    def fold(self, index):
        return self


def test_noise_samples_and_scores_exact(backend):
    rng = np.random.default_rng(8)
    shape = (3, 5)
    u = rng.uniform(0.01, 0.99, size=shape)
    u[0, 0], u[0, 1] = 0.0, 1.0  # clipped into the open interval
    normal = rng.normal(size=shape)
    sog_k, sog_s = 3.0, 4
    gammas = rng.gamma(1.0 / sog_k, size=(sog_s,) + shape)
    u_safe = np.clip(u, np.finfo(np.float64).tiny, 1.0 - np.finfo(np.float64).epsneg)
    gumbel = -np.log(-np.log(u_safe))
    with backend.float64():
        like = backend.asarray(np.zeros(1), "float64")
        fixed = FixedRng(like, backend, uniform=u, normal=normal, gamma=gammas)
        close(backend, diffopt.Normal().sample(shape, like, fixed), normal)
        close(backend, diffopt.Gumbel().sample(shape, like, fixed), gumbel)
        close(backend, dimle.GumbelNoiseDistribution(0.4, 1.7).sample(shape, like, fixed), 0.4 + 1.7 * gumbel)
        sog = dimle.SumOfGammaNoiseDistribution(k=sog_k, nb_iterations=sog_s).sample(shape, like, fixed)
        terms = sum(gammas[i] * sog_k / (i + 1) for i in range(sog_s))
        close(backend, sog, (terms - math.log(sog_s)) / sog_k)
        assert fixed.alphas == [1.0 / sog_k]
        z = backend.asarray(normal, "float64")
        close(backend, diffopt.Normal().score(z), normal)
        close(backend, diffopt.Gumbel().score(z), 1.0 - np.exp(-normal))
        close(backend, dimle.GumbelNoiseDistribution(0.4, 1.7).score(z), (1.0 - np.exp(-(normal - 0.4) / 1.7)) / 1.7)


# ---------------------------------------------------------------------- soft sorting

SIGMOIDS = {  # weight f(v) of the smaller input in the smaller output, v = gap / T (Petersen et al.)
    "logistic": lambda v: 1.0 / (1.0 + anp_exp(-v)),
    "cauchy": lambda v: 0.5 + anp_arctan(v) / np.pi,
    "reciprocal": lambda v: 1.0 - 0.5 / (1.0 + v),
    "optimal": lambda v: 0.5 + v if v <= 0.25 else 1.0 - 1.0 / (16.0 * v),
}


def anp_exp(v):
    import autograd.numpy as anp

    return anp.exp(v)


def anp_arctan(v):
    import autograd.numpy as anp

    return anp.arctan(v)


def comparators(big_n):
    """``(a, b, descending)`` of the bitonic sorting network on ``big_n = 2**k`` wires, in order."""
    k = big_n.bit_length() - 1
    for stage in range(k):
        for j in range(stage + 1):
            m = 1 << (stage - j)
            for a in range(big_n):
                if not a & m:
                    yield a, a + m, bool((a >> (stage + 1)) & 1)


def ref_network(x, relaxation, temperature):
    """Relaxed bitonic sort of the list ``x`` (padded with +inf to a power of two) and its mixing matrix.

    Written with Python scalars so that HIPS autograd differentiates it; returns
    ``(values [big_n], P [big_n, big_n])`` with ``P[j, i]`` the weight of input ``i``
    at sorted position ``j``.
    """
    import autograd.numpy as anp

    n = len(x)
    big_n = 1 << (n - 1).bit_length()
    vals = list(x) + [np.inf] * (big_n - n)
    rows = list(np.eye(big_n))
    for a, b, descending in comparators(big_n):
        p, q = vals[a], vals[b]
        small, large = (a, b) if p <= q else (b, a)
        s, l = vals[small], vals[large]
        if not np.isfinite(s) or not np.isfinite(l):
            lo, hi, leak = s, l, 0.0
        else:
            v = (l - s) / temperature
            if relaxation == "logsumexp":
                hi = temperature * anp.logaddexp(p / temperature, q / temperature)
                lo = p + q - hi
                leak = 1.0 / (1.0 + anp.exp(v))
            else:
                f = SIGMOIDS[relaxation](v)
                lo, hi, leak = f * s + (1.0 - f) * l, (1.0 - f) * s + f * l, 1.0 - f
        r_lo = (1.0 - leak) * rows[small] + leak * rows[large]
        r_hi = leak * rows[small] + (1.0 - leak) * rows[large]
        (vals[a], vals[b]), (rows[a], rows[b]) = ((hi, lo), (r_hi, r_lo)) if descending else ((lo, hi), (r_lo, r_hi))
    return anp.stack(vals), anp.stack(rows)


def ref_sorting(x, relaxation, temperature, op, k=2):
    """Reference of one sorting op on one row ``x`` (autograd-differentiable)."""
    import autograd.numpy as anp

    n = len(x)
    if op == "sort":
        return ref_network(x, relaxation, temperature)[0][:n]
    if op == "sort_desc":
        return -ref_network(-x, relaxation, temperature)[0][:n]
    if op == "topk":
        return anp.sum(ref_network(-x, relaxation, temperature)[1][:k, :n], axis=0)
    _, p = ref_network(x, relaxation, temperature)
    if op == "rank":
        return anp.dot(anp.arange(p.shape[0], dtype=float), p[:, :n])
    return p[:n, :n]  # perm


def _diffopt_sorting(op, x, relaxation, temperature, k=2):
    from diffopt import sorting

    kw = dict(temperature=temperature, relaxation=relaxation)
    return {
        "sort": lambda: sorting.soft_sort(x, **kw),
        "sort_desc": lambda: sorting.soft_sort(x, descending=True, **kw),
        "rank": lambda: sorting.soft_rank(x, **kw),
        "topk": lambda: sorting.soft_topk(x, k, **kw),
        "perm": lambda: sorting.soft_permutation(x, **kw),
    }[op]()


@functools.lru_cache(maxsize=None)
def _sorting_cases(relaxation, op, temperature=0.7):
    """``(x, want, w, want_grad)`` for rows of 6 (padded to 8) and of 8, computed once for all backends."""
    import autograd

    rng = np.random.default_rng(9)
    cases = []
    for n in (6, 8):
        x = rng.normal(size=(2, n)) * 1.5
        x[1, 2] = x[1, 4] + 0.05  # a close pair: the relaxation matters there
        want = np.stack([ref_sorting(row, relaxation, temperature, op) for row in x])
        w = rng.normal(size=want.shape)
        want_g = np.stack([autograd.grad(lambda r: (ref_sorting(r, relaxation, temperature, op) * wi).sum())(row)
                           for row, wi in zip(x, w)])
        cases.append((x, want, w, want_g))
    return cases


@pytest.mark.parametrize("op", ["sort", "sort_desc", "rank", "topk", "perm"])
@pytest.mark.parametrize("relaxation", ["logsumexp", "logistic", "cauchy", "reciprocal", "optimal"])
def test_soft_sorting_exact(backend, relaxation, op):
    """Values and gradients of the sorting ops on 2 rows of 6 (padded to 8) and of 8.

    Eager JAX runs the transports (ranks, top-k, permutations) op by op and compiles
    each small op once (~1 min per case on two cores): JAX checks them for two
    relaxations, the other backends for all five.
    """
    if backend.name == "jax" and op in ("rank", "topk", "perm") and relaxation not in ("logsumexp", "cauchy"):
        pytest.skip("JAX: transports checked for 'logsumexp' and 'cauchy' only (CI time)")
    temperature = 0.7
    # JAX: compiled once per function instead of op by op (CI time); compiled = eager in test_compiled.py
    compile_ = backend.jit if backend.name == "jax" else (lambda f: f)
    for x, want, w, want_g in _sorting_cases(relaxation, op, temperature):
        with backend.float64():
            xb, wb = backend.asarray(x, "float64"), backend.asarray(w, "float64")
            close(backend, compile_(lambda u: _diffopt_sorting(op, u, relaxation, temperature))(xb), want)
            if backend.has_grad:
                loss = lambda u, v: ar.do("sum", _diffopt_sorting(op, u, relaxation, temperature) * v)  # noqa: E731
                got = compile_(lambda u, v: backend.grad(lambda z: loss(z, v), u))(xb, wb)
                close(backend, got, want_g)


# ------------------------------------------------- dtypes, shapes and defaults (mutation survivors)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_noise_samples_keep_the_dtype_of_like(backend, dtype):
    """Draws in ``like``'s dtype (half precision drawn in float32, rounded once), values as in float64."""
    backend.require(dtype)
    rng = np.random.default_rng(10)
    shape = (2, 3)
    u, normal = rng.uniform(0.05, 0.95, size=shape), rng.normal(size=shape)
    gammas = rng.gamma(0.5, size=(3,) + shape)
    like = backend.asarray(np.zeros(1), dtype)
    tol = 2e-3 if dtype == "float16" else 1e-5

    def fixed():
        return FixedRng(like, backend, uniform=u, normal=normal, gamma=gammas)

    gumbel = -np.log(-np.log(u))
    draws = {
        "normal": (diffopt.Normal().sample(shape, like, fixed()), normal),
        "gumbel": (diffopt.Gumbel().sample(shape, like, fixed()), gumbel),
        "imle-gumbel": (dimle.GumbelNoiseDistribution(0.2, 1.5).sample(shape, like, fixed()), 0.2 + 1.5 * gumbel),
        "sog": (dimle.SumOfGammaNoiseDistribution(k=2.0, nb_iterations=3).sample(shape, like, fixed()),
                (sum(gammas[i] * 2.0 / (i + 1) for i in range(3)) - math.log(3)) / 2.0),
    }
    for name, (got, want) in draws.items():
        assert ar.get_dtype_name(got) == dtype, name
        np.testing.assert_allclose(backend.to_numpy(got).astype(np.float64), want, rtol=tol, atol=tol, err_msg=name)


def test_perturbed_max_float32_instances_of_rank_two_and_unbatched(backend):
    """Instances of shape (2, 2) (the gradient is reshaped back), float32, and batched=False."""
    rng = np.random.default_rng(11)
    theta, w = rng.normal(size=(B, 2, 2)), rng.normal(size=B)
    block = rng.normal(size=(CHUNK, B, 4))
    noise = FixedNoise(block, backend, SCORES["normal"][0])
    value, ybar = ref_max(theta.reshape(B, 4), noise.draws(N), SIGMA)
    t32, w32 = backend.asarray(theta, "float32"), backend.asarray(w, "float32")

    def flat_argmax(x):
        rows = ar.do("reshape", x, (int(x.shape[0]), 4))
        return ar.do("reshape", first_max_mask(rows), tuple(x.shape))

    fn = diffopt.perturbed_max(flat_argmax, num_samples=N, sigma=SIGMA, noise=noise)
    out = fn(t32, rng=0)
    assert ar.get_dtype_name(out) == "float32" and tuple(out.shape) == (B,)
    np.testing.assert_allclose(backend.to_numpy(out), value, rtol=1e-5, atol=1e-5)
    if backend.has_grad:
        g = backend.grad(lambda u: ar.do("sum", fn(u, rng=0) * w32), t32)
        assert ar.get_dtype_name(g) == "float32" and tuple(g.shape) == (B, 2, 2)
        np.testing.assert_allclose(backend.to_numpy(g), (w[:, None] * ybar).reshape(B, 2, 2), rtol=1e-5, atol=1e-5)
    one = FixedNoise(block[:, :1], backend, SCORES["normal"][0])
    single = diffopt.perturbed_max(flat_argmax, num_samples=N, sigma=SIGMA, noise=one, batched=False)
    out1 = single(t32[0], rng=0)
    assert tuple(out1.shape) == ()
    np.testing.assert_allclose(backend.to_numpy(out1), ref_max(theta[:1].reshape(1, 4), one.draws(N), SIGMA)[0][0],
                               rtol=1e-5, atol=1e-5)


def test_perturbed_max_rng_is_used(backend):
    """Same seed, same value; the seed reaches the noise (a dropped rng would draw fresh noise)."""
    theta = backend.asarray(np.random.default_rng(12).normal(size=(B, D)), "float32")
    fn = diffopt.perturbed_max(first_max_mask, num_samples=20, sigma=0.5)
    a, b, c = (backend.to_numpy(fn(theta, rng=s)) for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


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


def test_optax_style_noise_sampling_with_a_jax_key():
    """``Normal().sample(key, shape, dtype)`` / ``Gumbel()``: optax's convention draws jax.random's numbers."""
    jax = pytest.importorskip("jax")
    from conftest import SELECTED

    if "jax" not in SELECTED:
        pytest.skip("jax is not among DIFFOPT_TEST_BACKENDS")
    key = jax.random.key(7)
    for noise, draw in ((diffopt.Normal(), jax.random.normal), (diffopt.Gumbel(), jax.random.gumbel)):
        got = noise.sample(key, (3, 2), jax.numpy.float32)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(draw(key, (3, 2), jax.numpy.float32)))
        assert got.shape == (3, 2) and got.dtype == jax.numpy.float32


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
        from test_imle import grad2  # gradients with respect to theta and the state together

        g_theta, new = grad2(backend, lambda u, s_: ar.do("sum", fn(u, rng=0, target_state=s_) * dyb), t, sb)
        close(backend, g_theta, want_g)
        close(backend, new, np.array(want_state), tol=1e-12)
    assert target.beta == 5.0  # the object's state is untouched on the functional path


# ------------------------------------------- learnable sigma on fixed draws (mutation survivors)


def ref_sigma_grad(theta, z, sigma, g, score, control_variate):
    """∂/∂σ of Σ <g, y_σ> by the score of the scale: Σ_i <g, c_i> (<∇ν(Z_i), Z_i> − d) / (Nσ)."""
    n, d = z.shape[0], theta.shape[-1]
    f = ref_solver((theta[None] + sigma * z).reshape(-1, d)).reshape(n, theta.shape[0], -1)
    if control_variate is None:
        centred = f
    elif control_variate == "value":
        centred = f - ref_solver(theta)[None]
    else:
        centred = f - (f.sum(0, keepdims=True) - f) / (n - 1)
    r = (score(z) * z).sum(-1) - d
    return float((np.einsum("nbo,bo->nb", centred, g) * r).sum() / (n * sigma))


@pytest.mark.parametrize("control_variate", [None, "mean", "value"])
def test_perturbed_learnable_sigma_exact(grad_backend, control_variate):
    """An array σ: value, θ-gradient (noise replayed with the traced σ) and σ-gradient, chunked or not;
    a float32 σ gets its gradient in float32."""
    backend = grad_backend
    rng = np.random.default_rng(14)
    theta, g = rng.normal(size=(B, D)), rng.normal(size=(B, D + 1))
    for score, ref_score in SCORES.values():
        noise = FixedNoise(rng.normal(size=(CHUNK, B, D)), backend, score)
        z = noise.draws(N)
        want_y, want_g = ref_perturbed(theta, z, SIGMA, g, ref_score, control_variate, False)
        want_s = ref_sigma_grad(theta, z, SIGMA, g, ref_score, control_variate)
        with backend.float64():
            t, gb, s = (backend.asarray(a, "float64") for a in (theta, g, np.array(SIGMA)))
            for chunk_size in (None, CHUNK):

                def fn(u, sig):
                    return diffopt.perturbed(solver, num_samples=N, sigma=sig, noise=noise, chunk_size=chunk_size,
                                             control_variate=control_variate)(u, rng=0)

                close(backend, fn(t, s), want_y)
                close(backend, backend.grad(lambda u: ar.do("sum", fn(u, s) * gb), t), want_g)
                close(backend, backend.grad(lambda v: ar.do("sum", fn(t, v) * gb), s), want_s)
            s32 = float(np.float32(SIGMA))
            got = backend.grad(lambda v: ar.do("sum", fn(t, v) * gb), backend.asarray(np.array(s32), "float32"))
            assert ar.get_dtype_name(got) == "float32"
            np.testing.assert_allclose(backend.to_numpy(got), ref_sigma_grad(theta, z, s32, g, ref_score,
                                                                             control_variate), rtol=1e-6)


def test_perturbed_max_and_fenchel_young_learnable_sigma_exact(grad_backend):
    """∂F_σ/∂σ = mean_i <Z_i, y*(θ + σZ_i)> (envelope theorem) on fixed draws; ±1 for a minimising loss."""
    backend = grad_backend
    rng = np.random.default_rng(15)
    theta, w = rng.normal(size=(B, D)), rng.normal(size=B)
    y_true = np.eye(D)[[0, 2]]
    noise = FixedNoise(rng.normal(size=(CHUNK, B, D)), backend, SCORES["normal"][0])
    z = noise.draws(N)
    value, ybar = ref_max(theta, z, SIGMA)
    y_star = np.eye(D)[(theta[None] + SIGMA * z).argmax(-1)]
    d_sigma = (z * y_star).sum(-1).mean(0)  # [B]
    with backend.float64():
        t, wb, s, y = (backend.asarray(a, "float64") for a in (theta, w, np.array(SIGMA), y_true))
        for chunk_size in (None, CHUNK):
            fmax = lambda u, v: diffopt.perturbed_max(first_max_mask, num_samples=N, sigma=v, noise=noise,  # noqa: E731
                                                     chunk_size=chunk_size)(u, rng=0)
            close(backend, fmax(t, s), value)
            close(backend, backend.grad(lambda u: ar.do("sum", fmax(u, s) * wb), t), w[:, None] * ybar)
            close(backend, backend.grad(lambda v: ar.do("sum", fmax(t, v) * wb), s), float(w @ d_sigma))
            for sign in (1.0, -1.0):
                loss = lambda u, v: diffopt.FenchelYoungLoss(  # noqa: E731
                    first_max_mask, num_samples=N, sigma=v, noise=noise, maximize=sign > 0, reduction="none",
                    chunk_size=chunk_size)(u, y, rng=0)
                close(backend, loss(t, s), sign * (value - (theta * y_true).sum(-1)))
                close(backend, backend.grad(lambda u: ar.do("sum", loss(u, s) * wb), t),
                      sign * w[:, None] * (ybar - y_true))
                close(backend, backend.grad(lambda v: ar.do("sum", loss(t, v) * wb), s), sign * float(w @ d_sigma))


@pytest.mark.parametrize("relaxation", ["logsumexp", "logistic"])
def test_soft_sort_infinities_exact(backend, relaxation):
    """±inf pass through the network as ±inf (not as the finite sentinels they travel as) and never mix:
    one finite value per row comes out unchanged at its place, with gradient 1 there and 0 elsewhere."""
    from diffopt import sorting

    inf = float("inf")
    x = np.array([[inf, 1.0, -inf], [-inf, -inf, 2.0], [0.5, inf, inf]])
    want = np.array([[-inf, 1.0, inf], [-inf, -inf, 2.0], [0.5, inf, inf]])
    w = np.array([[0.3, -1.2, 0.7], [0.4, 0.9, 1.5], [-0.8, 0.2, 0.6]])  # finite outputs: -1.2, 1.5, -0.8
    want_g = np.zeros_like(x)
    want_g[0, 1], want_g[1, 2], want_g[2, 0] = -1.2, 1.5, -0.8
    with backend.float64():
        xb = backend.asarray(x, "float64")
        got = backend.to_numpy(sorting.soft_sort(xb, temperature=0.5, relaxation=relaxation))
        np.testing.assert_array_equal(got, want)
        desc = backend.to_numpy(sorting.soft_sort(xb, temperature=0.5, relaxation=relaxation, descending=True))
        np.testing.assert_array_equal(desc, want[:, ::-1])
        if backend.has_grad:  # weights only at the finite outputs (0 · inf = NaN in the value, not in J^T w)
            wm = backend.asarray(np.where(np.isfinite(want), w, 0.0), "float64")
            loss = lambda u: ar.do("sum", sorting.soft_sort(u, temperature=0.5, relaxation=relaxation) * wm)  # noqa: E731
            with np.errstate(invalid="ignore"):
                close(backend, backend.grad(loss, xb), want_g)


# ------------------------------------------- the seed reaches the noise (mutation survivors)


class RecordingNormal(diffopt.Noise):
    """The real standard normal noise (the ``rng`` decides the draws), keeping a copy of each draw."""

    def __init__(self, backend):
        self.backend, self.draws = backend, []

    def sample(self, shape, like, rng=None):
        z = diffopt.Normal().sample(shape, like, rng)
        self.draws.append(self.backend.to_numpy(z))
        return z

    def score(self, z):
        return z


@pytest.mark.parametrize("run", RUNS, ids=["one-chunk", "chunked", "chunked-recompute", "chunked-jacobian",
                                           "one-chunk-recompute"])
def test_perturbed_seed_reaches_the_noise(backend, run):
    """``rng=`` decides the draws: chunk ``c`` draws ``make_rng(seed).fold(c)``'s normals (the engine's
    documented replayable stream), the same seed gives the same draws and outputs, another seed others;
    the value and gradient equal the NumPy reference on the recorded draws, and a replaying backward
    draws exactly the forward's noise. (:class:`FixedNoise` ignores the rng, so the exact tests above
    cannot see a dropped seed.)"""
    rng = np.random.default_rng(16)
    theta, g = rng.uniform(0.5, 2.0, size=(B, D)), rng.normal(size=(B, D + 1))
    sizes = [N] if run["chunk_size"] is None else [CHUNK, CHUNK, N - 2 * CHUNK]
    with backend.float64():
        t, gb = backend.asarray(theta, "float64"), backend.asarray(g, "float64")
        noise = RecordingNormal(backend)
        fn = diffopt.perturbed(solver, num_samples=N, sigma=SIGMA, noise=noise, control_variate="mean", **run)
        seen = {}
        for seed in (3, 4, 3):
            noise.draws.clear()
            y = fn(t, rng=seed)
            assert [d.shape for d in noise.draws] == [(n, B, D) for n in sizes]
            root = diffopt.make_rng(seed, t)
            for c, (n, drawn) in enumerate(zip(sizes, noise.draws)):
                want = backend.to_numpy(diffopt.Normal().sample((n, B, D), t, root.fold(c)))
                np.testing.assert_array_equal(drawn, want)
            z = np.concatenate(noise.draws)
            want_y, want_g = ref_perturbed(theta, z, SIGMA, g, lambda v: v, "mean", False)
            close(backend, y, want_y)
            if seed in seen:
                np.testing.assert_array_equal(z, seen[seed][0])
                np.testing.assert_array_equal(backend.to_numpy(y), seen[seed][1])
            seen[seed] = (z, backend.to_numpy(y))
            if backend.has_grad:
                noise.draws.clear()
                close(backend, backend.grad(lambda u: ar.do("sum", fn(u, rng=seed) * gb), t), want_g)
                forward, replay = noise.draws[:len(sizes)], noise.draws[len(sizes):]
                assert len(replay) == (len(sizes) if run.get("residual") == "recompute" else 0)
                np.testing.assert_array_equal(np.concatenate(forward), z)
                if replay:
                    np.testing.assert_array_equal(np.concatenate(replay), z)
        assert not np.array_equal(seen[3][0], seen[4][0])
        assert not np.allclose(seen[3][1], seen[4][1])
        if len(sizes) > 1:  # each chunk draws its own stream
            assert not np.array_equal(seen[3][0][:CHUNK], seen[3][0][CHUNK:2 * CHUNK])


@pytest.mark.parametrize("control_variate", [None, "mean", "value"])
def test_perturbed_multiplicative_zero_entries_exact(backend, control_variate):
    """Multiplicative noise cannot move θ_i = 0: value exact, gradient the reference's ``grad / θ`` with 0 at
    those entries (finite), in every residual mode; no 0/0 is computed on the way (NumPy errors raised)."""
    rng = np.random.default_rng(17)
    theta = rng.uniform(0.5, 2.0, size=(B, D))
    theta[0, 1] = theta[1, 0] = theta[1, 3] = 0.0
    g = rng.normal(size=(B, D + 1))
    noise = FixedNoise(rng.normal(size=(CHUNK, B, D)), backend, SCORES["normal"][0])
    z = noise.draws(N)
    x = theta * np.exp(SIGMA * z - SIGMA**2 / 2)
    f = ref_solver(x.reshape(-1, D)).reshape(N, B, -1)
    centred = {None: f, "value": f - ref_solver(theta)[None], "mean": f - (f.sum(0, keepdims=True) - f) / (N - 1)}
    a = np.einsum("nb,nbi->bi", np.einsum("nbo,bo->nb", centred[control_variate], g), z) / (N * SIGMA)
    want_g = np.zeros_like(a)
    want_g[theta != 0] = a[theta != 0] / theta[theta != 0]
    assert np.abs(a[theta == 0]).min() > 0.1  # what over θ = 0 would turn into ±inf
    with backend.float64(), np.errstate(divide="raise", invalid="raise"):
        t, gb = backend.asarray(theta, "float64"), backend.asarray(g, "float64")
        for run in RUNS:
            fn = diffopt.perturbed(solver, num_samples=N, sigma=SIGMA, noise=noise, multiplicative=True,
                                   control_variate=control_variate, **run)
            close(backend, fn(t, rng=0), f.mean(0))
            if backend.has_grad:
                close(backend, backend.grad(lambda u: ar.do("sum", fn(u, rng=0) * gb), t), want_g)


class CountingNormal(diffopt.Normal):
    """Standard normal noise counting the calls of its score."""

    def __init__(self):
        self.scores = 0

    def score(self, z):
        self.scores += 1
        return z


# (input size, batch, N, chunk_size, host solver, residual asked, residual used, chunks)
RESIDUAL_CASES = [
    (4, 2, 7, None, False, "auto", "samples", 1),  # one chunk: the samples are kept
    (33, 2, 7, None, False, "auto", "samples", 1),  # ... even when the Jacobian would not be cheap
    (4, 2, 7, 3, False, "auto", "jacobian", 3),  # chunked, B·in·out small and in·out <= 16 (in + out): the Jacobian
    (32, 2, 7, 3, False, "auto", "jacobian", 3),  # 32·32 = 16·(32 + 32): still cheap
    (33, 2, 7, 3, False, "auto", "recompute", 3),  # 33·33 > 16·66: replayed
    (33, 2, 7, 3, True, "auto", "jacobian", 3),  # a host solver is not called again: the Jacobian
    (32, 4096, 2, 1, False, "auto", "jacobian", 2),  # B·in·out = CHUNK_BUDGET (2**22): still small
    (32, 4097, 2, 1, False, "auto", "recompute", 2),  # one more instance: replayed
    # N·B·in = 5·2**20 numbers > CHUNK_BUDGET, 40 MB <= KEEP_BUDGET: one chunk when the samples may be kept,
    # else chunks of CHUNK_BUDGET numbers (4 + 1 samples)
    (32, 2**15, 5, None, False, "auto", "samples", 1),
    (32, 2**15, 5, None, False, "samples", "samples", 1),
    (4, 2**18, 5, None, False, "jacobian", "jacobian", 2),  # the same numbers, a smaller Jacobian
    (32, 2**15, 5, None, False, "recompute", "recompute", 2),
    (32, 2**16 + 1, 2, None, False, "recompute", "recompute", 2),  # B·in > CHUNK_BUDGET / 2: one sample a chunk
]


@pytest.mark.parametrize("size,batch,n,chunk_size,host,residual,mode,chunks", RESIDUAL_CASES,
                         ids=[f"{c[5]}-{c[0]}x{c[1]}-n{c[2]}-chunk{c[3]}{'-host' if c[4] else ''}" for c in RESIDUAL_CASES])
def test_perturbed_residual_choice_and_chunks(backend, size, batch, n, chunk_size, host, residual, mode, chunks):
    """``residual='auto'`` keeps the samples of one chunk, the Jacobian of small cheap chunked problems (and
    of host solvers), else nothing; without ``chunk_size`` the samples form one chunk when they may be kept.
    Seen in the solver rows and the score calls of forward and backward (a replay solves all N·B rows
    again and scores each chunk; the Jacobian is scored chunk by chunk in the forward, kept samples once)."""
    rows = []

    def mask(x):
        rows.append(int(x.shape[0]))
        return first_max_mask(x)

    def np_mask(x):
        rows.append(int(x.shape[0]))
        return np.eye(x.shape[-1], dtype=x.dtype)[x.argmax(-1)]

    func = diffopt.host_solver(np_mask) if host else mask
    theta = np.random.default_rng(18).normal(size=(batch, size))
    noise = CountingNormal()
    with backend.float64():
        t = backend.asarray(theta, "float64")
        fn = diffopt.perturbed(func, num_samples=n, sigma=SIGMA, noise=noise, chunk_size=chunk_size,
                               residual=residual)
        fn(t, rng=0)  # warm-up (a host solver may probe its output shape once)
        rows.clear()
        noise.scores = 0
        fn(t, rng=0)
        assert sum(rows) == n * batch and noise.scores == {"samples": 1, "jacobian": chunks, "recompute": 0}[mode]
        if backend.has_grad:
            rows.clear()
            noise.scores = 0
            w = backend.asarray(np.linspace(-1.0, 1.0, size), "float64")
            backend.grad(lambda u: ar.do("sum", fn(u, rng=0) * w), t)
            backward_rows = sum(rows) - n * batch
            assert backward_rows == (n * batch if mode == "recompute" else 0), (backward_rows, mode)
            assert noise.scores == {"samples": 1, "jacobian": chunks, "recompute": chunks}[mode]


def test_perturbed_residual_samples_needs_one_chunk(backend):
    """``residual='samples'`` raises when the samples take two chunks or more, and runs (exactly) in one."""
    rng = np.random.default_rng(19)
    theta, g = rng.normal(size=(B, D)), rng.normal(size=(B, D + 1))
    noise = FixedNoise(rng.normal(size=(N, B, D)), backend, SCORES["normal"][0])
    want_y, want_g = ref_perturbed(theta, noise.draws(N), SIGMA, g, SCORES["normal"][1], None, False)
    with backend.float64():
        t, gb = backend.asarray(theta, "float64"), backend.asarray(g, "float64")
        for chunk_size in (4, CHUNK):  # 2 and 3 chunks
            with pytest.raises(ValueError, match="residual='samples'"):
                diffopt.perturbed(solver, num_samples=N, sigma=SIGMA, noise=noise, chunk_size=chunk_size,
                                  residual="samples")(t, rng=0)
        for chunk_size in (N, None):
            fn = diffopt.perturbed(solver, num_samples=N, sigma=SIGMA, noise=noise, chunk_size=chunk_size,
                                   residual="samples")
            close(backend, fn(t, rng=0), want_y)
            if backend.has_grad:
                close(backend, backend.grad(lambda u: ar.do("sum", fn(u, rng=0) * gb), t), want_g)


# (batch, input size, dtype, KEEP_BUDGET, chunk rows): the samples of N = 10 take N·B·in·itemsize bytes
KEEP_CASES = [
    (2, 3, "float64", 480, [20]),  # 10·2·3·8 = 480 bytes <= KEEP_BUDGET: all samples in one chunk
    (2, 3, "float64", 479, [4] * 5),  # one byte short: chunks of CHUNK_BUDGET // (B·in) = 2 samples
    (2, 3, "float32", 240, [20]),  # 4 bytes a number
    (2, 3, "float32", 239, [4] * 5),
    (1, 1, "float64", 0, [10]),  # nothing kept: CHUNK_BUDGET // (B·in) = 12 >= N
]


@pytest.mark.parametrize("batch,size,dtype,keep_budget,rows", KEEP_CASES,
                         ids=[f"{c[0]}x{c[1]}-{c[2]}-keep{c[3]}" for c in KEEP_CASES])
def test_perturbed_keep_budget_boundary(backend, monkeypatch, batch, size, dtype, keep_budget, rows):
    """Without ``chunk_size`` the samples form one chunk exactly while all of them fit in
    ``KEEP_BUDGET`` bytes (the boundary, in the dtype's bytes), else chunks of
    ``CHUNK_BUDGET // (B·in)`` samples; both budgets made small here."""
    from diffopt.perturbations import _engine

    monkeypatch.setattr(_engine, "CHUNK_BUDGET", 12)
    monkeypatch.setattr(_engine, "KEEP_BUDGET", keep_budget)
    seen = []

    def mask(x):
        seen.append(int(x.shape[0]))
        return first_max_mask(x)

    theta = np.random.default_rng(20).normal(size=(batch, size))
    with backend.float64():
        diffopt.perturbed(mask, num_samples=10, sigma=SIGMA)(backend.asarray(theta, dtype), rng=0)
    assert seen == rows


class Float64Noise(FixedNoise):
    """Fixed draws returned in float64 whatever the dtype of ``like``."""

    def sample(self, shape, like, rng=None):
        return self.backend.asarray(self.draws(int(shape[0])), "float64")


def test_perturbed_float32_theta_float64_sigma(grad_backend):
    """A float64 learnable σ and float64 draws with float32 θ: the solver sees float32 points θ + σZ (σ and
    the draws cast to θ's dtype) in the forward and in the replay; value and θ-gradient in float32, σ-gradient in σ's float64, all equal to
    the float64 formula to float32 precision."""
    backend = grad_backend
    rng = np.random.default_rng(20)
    theta = rng.normal(size=(B, D)).astype(np.float32).astype(np.float64)
    g = rng.normal(size=(B, D + 1))
    noise = Float64Noise(rng.normal(size=(CHUNK, B, D)).astype(np.float32), backend, SCORES["normal"][0])
    s32 = float(np.float32(SIGMA))
    z = noise.draws(N)
    want_y, want_g = ref_perturbed(theta, z, s32, g, SCORES["normal"][1], "mean", False)
    want_s = ref_sigma_grad(theta, z, s32, g, SCORES["normal"][1], "mean")
    seen = []

    def solver32(x):
        seen.append(ar.get_dtype_name(x))
        return solver(x)

    with backend.float64():
        t, gb = backend.asarray(theta, "float32"), backend.asarray(g, "float32")
        s = backend.asarray(np.array(SIGMA), "float64")
        for chunk_size in (None, CHUNK):

            def fn(u, v):
                return diffopt.perturbed(solver32, num_samples=N, sigma=v, noise=noise, chunk_size=chunk_size,
                                         control_variate="mean")(u, rng=0)

            got = [fn(t, s), backend.grad(lambda u: ar.do("sum", fn(u, s) * gb), t),
                   backend.grad(lambda v: ar.do("sum", fn(t, v) * gb), s)]
            for out, want, dtype in zip(got, (want_y, want_g, want_s), ("float32", "float32", "float64")):
                assert ar.get_dtype_name(out) == dtype
                np.testing.assert_allclose(backend.to_numpy(out), want, rtol=1e-5, atol=1e-5)
            assert seen and set(seen) == {"float32"}, seen


def half_solver(x):
    """The first-max mask and ``x_0``: outputs exact in x's dtype (no float16 rounding inside the solver)."""
    return ar.do("concatenate", [first_max_mask(x), x[:, :1]], axis=-1)


@pytest.mark.parametrize("control_variate", [None, "value"])
def test_perturbed_float16_exact(backend, control_variate):
    """float16 θ (computed in float32, the solver called on float16 points): value and gradient come back in
    float16, in every residual mode, equal to the formula on the float16-rounded points to float16 precision."""
    backend.require("float16")
    rng = np.random.default_rng(21)
    theta, g = rng.uniform(0.5, 2.0, size=(B, D)).astype(np.float16), rng.normal(size=(B, D + 1)).astype(np.float16)
    noise = FixedNoise(rng.normal(size=(CHUNK, B, D)).astype(np.float32), backend, SCORES["normal"][0])
    z = noise.draws(N).astype(np.float32)
    x = (theta.astype(np.float32)[None] + np.float32(SIGMA) * z).astype(np.float16).astype(np.float64)
    ref = lambda v: np.concatenate([np.eye(D)[v.argmax(-1)], v[..., :1]], axis=-1)  # noqa: E731
    f = ref(x)
    centred = f if control_variate is None else f - ref(theta.astype(np.float64))[None]
    want_g = np.einsum("nb,nbi->bi", np.einsum("nbo,bo->nb", centred, g.astype(np.float64)), z) / (N * SIGMA)
    t, gb = backend.asarray(theta, "float16"), backend.asarray(g, "float16")
    seen = []

    def solver16(x):
        seen.append(ar.get_dtype_name(x))
        return half_solver(x)

    for run in RUNS:
        fn = diffopt.perturbed(solver16, num_samples=N, sigma=SIGMA, noise=noise, control_variate=control_variate,
                               **run)
        got = [fn(t, rng=0)] + ([backend.grad(lambda u: ar.do("sum", fn(u, rng=0) * gb), t)] if backend.has_grad
                                else [])
        for out, want in zip(got, (f.mean(0), want_g)):
            assert ar.get_dtype_name(out) == "float16"
            np.testing.assert_allclose(backend.to_numpy(out).astype(np.float64), want, rtol=1e-3, atol=1e-3)
    assert set(seen) == {"float16"}, seen  # the solver gets θ's dtype


def ref_with_args(theta, z, sigma, g, shift, weight, control_variate):
    """Value, θ-gradient and σ-gradient of ``<g, E[f(θ + σZ + shift) ⊙ weight]>`` (normal noise)."""
    n, d = z.shape[0], theta.shape[-1]
    f = (ref_solver((theta[None] + sigma * z + shift).reshape(-1, d)) * weight).reshape(n, theta.shape[0], -1)
    centred = f if control_variate is None else f - (f.sum(0, keepdims=True) - f) / (n - 1)
    w = np.einsum("nbo,bo->nb", centred, g)
    r = (z * z).sum(-1) - d
    return f.mean(0), np.einsum("nb,nbi->bi", w, z) / (n * sigma), float((w * r).sum() / (n * sigma))


@pytest.mark.parametrize("control_variate", [None, "mean"])
def test_perturbed_solver_array_arguments_exact(backend, control_variate):
    """Array arguments of the solver (a float32 positional one, a float64 keyword one) reach it unchanged in
    the forward and in the replay, get no gradient, and do not shift the learnable σ or its gradient's dtype."""
    rng = np.random.default_rng(22)
    theta, g = rng.normal(size=(B, D)), rng.normal(size=(B, D + 1))
    shift = rng.normal(size=D).astype(np.float32).astype(np.float64)
    weight = rng.uniform(0.5, 1.5, size=D + 1)
    noise = FixedNoise(rng.normal(size=(CHUNK, B, D)), backend, SCORES["normal"][0])
    z = noise.draws(N)
    want_y, want_g, want_s = ref_with_args(theta, z, SIGMA, g, shift, weight, control_variate)

    def shifted(x, sh, *, weight):
        return solver(x + ar.astype(sh, ar.get_dtype_name(x))) * weight

    with backend.float64():
        t, gb = backend.asarray(theta, "float64"), backend.asarray(g, "float64")
        sh, wt = backend.asarray(shift, "float32"), backend.asarray(weight, "float64")
        for run in RUNS:
            fn = diffopt.perturbed(shifted, num_samples=N, sigma=SIGMA, noise=noise, control_variate=control_variate,
                                   **run)
            close(backend, fn(t, sh, weight=wt, rng=0), want_y)
            if backend.has_grad:
                close(backend, backend.grad(lambda u: ar.do("sum", fn(u, sh, weight=wt, rng=0) * gb), t), want_g)
        if not backend.has_grad:
            return
        s = backend.asarray(np.array(SIGMA), "float64")
        for chunk_size in (None, CHUNK):

            def learnable(u, v):
                return diffopt.perturbed(shifted, num_samples=N, sigma=v, noise=noise, chunk_size=chunk_size,
                                         control_variate=control_variate)(u, sh, weight=wt, rng=0)

            close(backend, learnable(t, s), want_y)
            close(backend, backend.grad(lambda u: ar.do("sum", learnable(u, s) * gb), t), want_g)
            d_sigma = backend.grad(lambda v: ar.do("sum", learnable(t, v) * gb), s)
            assert ar.get_dtype_name(d_sigma) == "float64"
            close(backend, d_sigma, want_s)


def test_perturbed_max_chunks_of_the_chunk_budget(backend):
    """``perturbed_max`` never keeps its samples: without ``chunk_size`` it solves chunks of CHUNK_BUDGET
    (2**22) numbers, here 4 + 1 samples of 2**15 × 32."""
    calls = []

    def mask(x):
        calls.append(int(x.shape[0]))
        return first_max_mask(x)

    batch, n = 2**15, 5
    with backend.float64():
        t = backend.asarray(np.random.default_rng(23).normal(size=(batch, 32)), "float64")
        diffopt.perturbed_max(mask, num_samples=n, sigma=SIGMA)(t, rng=0)
    assert calls == [4 * batch, batch]
