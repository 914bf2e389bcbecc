"""Property-based tests (hypothesis) of I-MLE and AIMLE on a top-k solver, on every backend.

From the estimators' definitions (Niepert et al., 2021; Minervini et al., 2023):
the forward output is the solver's output on each perturbed copy of θ, so a
top-k solver gives k-hot rows (exactly ``top_k_mask(θ)`` repeated without
noise); the gradient is a mean over samples of ``z − z'`` (two k-hot vectors
for the same noise), so its rows sum to zero, and I-MLE's entries lie in
``[-1, 1]``; with ``α = 1`` and a zero downstream gradient the target is θ
itself, ``z' = z`` and the gradient is exactly zero.
"""

import autoray as ar
import numpy as np

from _properties import check, dtypes, st
from diffopt import top_k_mask
from diffopt.imle import GumbelNoiseDistribution, SumOfGammaNoiseDistribution, TargetDistribution, aimle, imle

SHAPES = [(1, 1), (2, 3), (1, 5), (3, 4)]


@st.composite
def problems(draw):
    """``(θ [B, n], k, nb_samples, noise, minimize)``."""
    b, n = draw(st.sampled_from(SHAPES))
    entry = st.one_of(st.integers(-2, 2).map(float), st.floats(-2.0, 2.0, width=16))
    theta = np.asarray(draw(st.lists(st.lists(entry, min_size=n, max_size=n), min_size=b, max_size=b)))
    k = draw(st.integers(1, n))
    noise = draw(st.sampled_from(["none", "gumbel", "sum_of_gamma"]))
    noise = {"none": None, "gumbel": GumbelNoiseDistribution(),
             "sum_of_gamma": SumOfGammaNoiseDistribution(k=k, nb_iterations=5)}[noise]
    return theta, k, draw(st.sampled_from([1, 3])), noise, draw(st.booleans())


def _solver(k, minimize):
    return (lambda x: top_k_mask(-x, k)) if minimize else (lambda x: top_k_mask(x, k))


def test_forward_is_k_hot_and_the_plain_top_k_without_noise(backend):
    def body(data, problem, api):
        theta, k, nb_samples, noise, minimize = problem
        dtype = data.draw(st.sampled_from(dtypes(backend)), label="dtype")
        f = {"imle": imle, "aimle": aimle}[api](_solver(k, minimize), noise_distribution=noise, nb_samples=nb_samples,
                                                minimize=minimize)
        with backend.float64():
            z = f(backend.asarray(theta, dtype), rng=0)
            assert ar.get_dtype_name(z) == dtype
            z = np.asarray(backend.to_numpy(z), dtype=np.float64)
        assert z.shape == (theta.shape[0] * nb_samples, theta.shape[1])
        assert set(np.unique(z)) <= {0.0, 1.0} and np.all(z.sum(-1) == k)
        if noise is None:
            hard = np.asarray(backend.to_numpy(_solver(k, minimize)(backend.asarray(theta, "float32"))))
            assert np.array_equal(z, np.repeat(hard, nb_samples, axis=0))

    check(backend, 15, dict(data=st.data(), problem=problems(), api=st.sampled_from(["imle", "aimle"])), body)


def test_gradient_rows_sum_to_zero_and_vanish_without_a_downstream_gradient(grad_backend):
    def body(data, problem, beta, api, symmetric):
        backend = grad_backend
        theta, k, nb_samples, noise, minimize = problem
        kw = dict(noise_distribution=noise, nb_samples=nb_samples, minimize=minimize)
        if api == "imle":
            f = imle(_solver(k, minimize), target_distribution=TargetDistribution(alpha=1.0, beta=beta), **kw)
        else:
            f = aimle(_solver(k, minimize), symmetric_perturbation=symmetric, **kw)
        rows = theta.shape[0] * nb_samples
        w = np.asarray(data.draw(st.lists(st.floats(-2, 2, width=16), min_size=rows * theta.shape[1],
                                          max_size=rows * theta.shape[1]), label="w")).reshape(rows, -1)
        with backend.float64():
            x, wa, zero = (backend.asarray(a, "float64") for a in (theta, w, np.zeros_like(w)))
            g = np.asarray(backend.to_numpy(backend.grad(lambda a: ar.do("sum", f(a, rng=0) * wa), x)))
            g0 = np.asarray(backend.to_numpy(backend.grad(lambda a: ar.do("sum", f(a, rng=0) * zero), x)))
        assert g.shape == theta.shape and np.all(np.isfinite(g))
        assert np.allclose(g.sum(-1), 0.0, atol=1e-12)
        if api == "imle":
            assert np.all(np.abs(g) <= 1.0 + 1e-12)  # a mean of differences of 0/1 vectors
        assert np.array_equal(g0, np.zeros_like(g0))

    check(grad_backend, 15, dict(data=st.data(), problem=problems(), beta=st.sampled_from([0.5, 1.0, 10.0]),
        api=st.sampled_from(["imle", "aimle"]), symmetric=st.booleans()), body)
