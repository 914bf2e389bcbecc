"""The noise distributions of the perturbed estimators: moments, scores and names.
"""

import numpy as np
import pytest

import diffopt


# --- noise ---------------------------------------------------------------------------------

EULER_GAMMA = 0.5772156649015329


@pytest.mark.parametrize(
    "noise, mean, var",
    [(diffopt.Normal(), 0.0, 1.0), (diffopt.Gumbel(), EULER_GAMMA, np.pi**2 / 6)],
)
def test_noise_moments(backend, noise, mean, var):
    n = 200_000
    z = backend.to_numpy(noise.sample((n,), backend.asarray(np.zeros(1), "float64"), rng=3))
    assert abs(z.mean() - mean) < 5 * np.sqrt(var / n)
    # Var of the sample variance ≈ (μ4 − σ⁴)/n; μ4 = 3 (normal), 5.4σ⁴ (Gumbel).
    kurt = 3.0 if noise.name == "normal" else 5.4
    assert abs(z.var() - var) < 5 * var * np.sqrt((kurt - 1) / n)


@pytest.mark.parametrize("alpha", [0.3, 2.5])  # below 1 (the U^(1/alpha) boost) and above
def test_gamma_moments(backend, alpha):
    n = 100_000
    g = backend.to_numpy(diffopt.make_rng(4, backend.asarray(np.zeros(1), "float64")).gamma((n,), alpha))
    assert g.shape == (n,) and np.all(g >= 0)
    assert abs(g.mean() - alpha) < 5 * np.sqrt(alpha / n)
    # Var of the sample variance ≈ (μ4 − σ⁴)/n, μ4 = 3α² + 6α for Gamma(α, 1)
    assert abs(g.var() - alpha) < 5 * np.sqrt((2 * alpha**2 + 6 * alpha) / n)


def test_gamma_draws_are_replayed_from_the_key(backend):
    like = backend.asarray(np.zeros(1), "float32")
    a, b = (backend.to_numpy(diffopt.make_rng(7, like).gamma((3, 50), 0.2)) for _ in range(2))
    c = backend.to_numpy(diffopt.make_rng(8, like).gamma((3, 50), 0.2))
    assert a.shape == (3, 50) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_noise_scores(backend):
    z = backend.asarray(np.array([-1.0, 0.0, 2.0]))
    np.testing.assert_allclose(backend.to_numpy(diffopt.Normal().score(z)), [-1.0, 0.0, 2.0])
    np.testing.assert_allclose(backend.to_numpy(diffopt.Gumbel().score(z)), 1 - np.exp([1.0, 0.0, -2.0]))


def test_noise_score_is_gradient_of_negative_log_density():
    zs = np.linspace(-2, 3, 7)
    neg_log = {"normal": lambda z: z**2 / 2, "gumbel": lambda z: z + np.exp(-z)}
    for noise in (diffopt.Normal(), diffopt.Gumbel()):
        fd = (neg_log[noise.name](zs + 1e-6) - neg_log[noise.name](zs - 1e-6)) / 2e-6
        np.testing.assert_allclose(noise.score(zs), fd, rtol=1e-6)


def test_get_noise_names_and_objects():
    from diffopt.noise import get_noise

    assert isinstance(get_noise("Gumbel"), diffopt.Gumbel)

    class Laplace(diffopt.Noise):
        def sample(self, shape, like, rng=None):
            u = diffopt.make_rng(rng, like).uniform(shape) - 0.5
            return -np.sign(u) * np.log1p(-2 * np.abs(u))

        def score(self, z):
            return np.sign(z)

    lap = Laplace()
    assert get_noise(lap) is lap
    with pytest.raises(ValueError, match="unknown noise='cauchy'"):
        get_noise("cauchy")
    with pytest.raises(TypeError, match="noise must be"):
        get_noise(3)
