"""``diffopt.noise``: densities, scores, calling conventions and their errors, on every backend."""

import numpy as np
import pytest

import diffopt
from diffopt.imle import SumOfGammaNoiseDistribution
from diffopt.noise import Gumbel, Noise, Normal, draw, get_noise, get_sampler, sample_convention

Z = np.array([-1.5, -0.2, 0.0, 0.7, 2.5])


@pytest.mark.parametrize("noise, nu", [(Normal(), lambda z: 0.5 * z * z), (Gumbel(), lambda z: z + np.exp(-z))])
def test_log_prob_score_and_its_derivative(backend, noise, nu):
    """log_prob = −ν (up to a constant), score = ν′ and score_derivative = ν″, by central differences."""
    h = 1e-5
    d1 = (nu(Z + h) - nu(Z - h)) / (2 * h)
    d2 = (nu(Z + h) - 2 * nu(Z) + nu(Z - h)) / h**2
    with backend.float64():
        z = backend.asarray(Z, "float64")
        np.testing.assert_allclose(backend.to_numpy(noise.log_prob(z)), -nu(Z), rtol=1e-12)
        np.testing.assert_allclose(backend.to_numpy(noise.score(z)), d1, atol=1e-8)
        np.testing.assert_allclose(backend.to_numpy(noise.score_derivative(z)), d2, atol=1e-4)


def test_sample_by_keyword_equals_positional(backend):
    like = backend.asarray(np.zeros(2))
    for noise in (Normal(), Gumbel()):
        a = backend.to_numpy(noise.sample((3, 2), like, 7))
        b = backend.to_numpy(noise.sample(shape=(3, 2), like=like, rng=7))
        c = backend.to_numpy(draw(get_sampler(noise), (3, 2), like, rng=7))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        assert not np.array_equal(a, backend.to_numpy(noise.sample(3 * 2, like, 8)).reshape(3, 2))


@pytest.mark.parametrize("args, kwargs, match", [
    (((2,), np.zeros(1), 0, 1), {}, "at most 3 arguments"),
    (((2,), np.zeros(1)), {"seed": 0}, "unexpected keyword argument 'seed'"),
    (((2,), np.zeros(1)), {"like": np.zeros(1)}, "multiple values for argument 'like'"),
    (((2,),), {}, "needs shape and like"),
    ((np.zeros(2),), {}, "needs a JAX key"),  # an array first: optax's convention, but not a JAX key
])
def test_sample_argument_errors(args, kwargs, match):
    for noise in (Normal(), Gumbel()):
        with pytest.raises(TypeError, match=match):
            noise.sample(*args, **kwargs)


def test_equality_hash_and_repr():
    assert Normal() == Normal() and Normal() != Gumbel() and hash(Normal()) == hash(Normal())
    assert len({Normal(), Normal(), Gumbel()}) == 2
    assert repr(Gumbel()) == "Gumbel()"


def test_base_class_methods_must_be_defined():
    class Half(Noise):
        def sample(self, shape, like, rng=None):
            return np.zeros(shape)

        def score(self, z):
            return z

    with pytest.raises(NotImplementedError):
        Noise().sample((2,), np.zeros(1))
    with pytest.raises(NotImplementedError):
        Noise().score(np.zeros(1))
    with pytest.raises(NotImplementedError):
        Noise().log_prob(np.zeros(1))
    with pytest.raises(NotImplementedError, match="score_derivative"):
        Half().score_derivative(np.zeros(1))
    assert get_noise(Half()).score(np.ones(1)) == 1.0  # a subclass with sample and score is accepted


class _KeyStyle:
    def sample(self, key, sample_shape=(), dtype=float):
        raise AssertionError("not called for non-JAX inputs")

    def log_prob(self, x):
        return -x


class _ShapeStyle:
    def __init__(self):
        self.calls = []

    def sample(self, shape):
        self.calls.append(shape)
        return np.full(shape, 2.0)


class _TooManyArgs:
    def sample(self, a, b, c, d):
        return None


def test_sample_convention_from_the_signature():
    assert sample_convention(Normal()) == "diffopt"
    assert sample_convention(_KeyStyle()) == "key"
    assert sample_convention(_ShapeStyle()) == "shape"
    assert sample_convention(_TooManyArgs()) is None
    assert sample_convention(object()) is None
    assert sample_convention(type("NotCallable", (), {"sample": 3})()) is None


def test_shape_only_sampler_moves_draws_and_warns_on_rng(backend):
    noise = _ShapeStyle()
    sampler = get_sampler(noise, argname="noise_distribution")
    like = backend.asarray(np.zeros(3, dtype=np.float32))
    z = draw(sampler, (2, 3), like)
    assert type(z) is type(like) and backend.to_numpy(z).dtype == np.float32
    np.testing.assert_array_equal(backend.to_numpy(z), np.full((2, 3), 2.0))
    with pytest.warns(RuntimeWarning, match=r"noise_distribution.sample\(shape\) takes no rng"):
        draw(sampler, (4,), like, rng=0)
    assert noise.calls == [(2, 3), (4,)]


def test_keyed_noise_needs_jax_inputs(backend):
    if backend.name == "jax":
        pytest.skip("JAX arrays are what optax-style noises draw for (tests/test_peers.py)")
    noise = get_noise(_KeyStyle())
    assert "optax convention" in repr(noise)
    np.testing.assert_array_equal(backend.to_numpy(noise.log_prob(backend.asarray(Z))), -Z)
    with pytest.raises(TypeError, match="optax's convention"):
        noise.sample((2,), backend.asarray(np.zeros(2)))


def test_get_noise_and_get_sampler_errors():
    assert isinstance(get_noise("GUMBEL"), Gumbel) and isinstance(get_noise(Normal), Normal)
    with pytest.raises(ValueError, match="unknown noise='laplace'"):
        get_noise("laplace")
    with pytest.raises(TypeError, match="closed-form score"):
        get_noise(SumOfGammaNoiseDistribution(k=3))  # samples, but has no score: not for perturbed()
    with pytest.raises(TypeError, match="^my_noise must be a name"):
        get_noise(object(), argname="my_noise")
    with pytest.raises(TypeError, match="^noise_distribution must have sample"):
        get_sampler(_TooManyArgs())
    with pytest.raises(TypeError, match="noise"):
        diffopt.perturbed(diffopt.argmax_one_hot, noise=object())


def test_jax_eager_sum_of_gamma_compiles_once_per_shape(backend):
    """Eager JAX Sum-of-Gamma draws: the rejection sampler's ``while_loop`` compiles with the first
    draw of a shape and never for a new seed (it was traced and compiled on every call: 1.4 s a
    draw); the draws still differ between seeds and have the closed-form mean (H_s - ln s)/k."""
    if backend.name != "jax":
        pytest.skip("compile counting is JAX's")
    import jax

    noise, like = SumOfGammaNoiseDistribution(k=2, nb_iterations=10), backend.asarray(np.zeros(1))
    count = [0]

    def listener(event, *args, **kwargs):
        count[0] += event == "/jax/core/compile/backend_compile_duration"

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        first = backend.to_numpy(noise.sample((50, 40), like=like, rng=0))
        after_first = count[0]
        draws = [backend.to_numpy(noise.sample((50, 40), like=like, rng=seed)) for seed in range(1, 6)]
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert after_first >= 1 and count[0] == after_first, f"{count[0] - after_first} compiles for 5 new seeds"
    assert not np.array_equal(first, draws[0])
    values = np.concatenate([first.ravel()] + [d.ravel() for d in draws])
    mean = (sum(1.0 / i for i in range(1, 11)) - np.log(10)) / 2
    var = sum(1.0 / i**2 for i in range(1, 11)) / 2
    assert abs(values.mean() - mean) < 5 * np.sqrt(var / values.size)


def test_a_gumbel_subclass_keeps_its_own_sample_and_score(backend):
    """A call binds Gumbel to its namespace; a subclass's own sample/score must still be used."""

    class Zero(Gumbel):  # no noise at all: the perturbed argmax is the plain argmax
        def sample(self, shape, like, rng=None):
            return diffopt._ops.do("zeros_like", diffopt._ops.do("broadcast_to", like[None], tuple(shape)))

    theta = backend.asarray(np.array([[0.1, 0.3, 0.2]]))
    y = backend.to_numpy(diffopt.perturbed(diffopt.argmax_one_hot, num_samples=4, sigma=1.0, noise=Zero())(theta))
    np.testing.assert_array_equal(y, [[0.0, 1.0, 0.0]])  # Gumbel draws would mix the three entries
