"""Exact tests of the perturbed estimators and the noise samplers: fixed noise draws, a
hand-written NumPy reference (:mod:`references`), float64 to 1e-10, every backend.
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
from references import B, CHUNK, D, FixedNoise, FixedRng, N, SIGMA, close, ref_solver, solver


SCORES = {"normal": (lambda z: z, lambda z: z), "gumbel": (lambda z: 1.0 - ar.do("exp", -z), lambda z: 1.0 - np.exp(-z))}


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
        pytest.skip("the graph loop is TensorFlow's (JAX's lax.fori_loop: tests/backends/test_compiled.py)")
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
