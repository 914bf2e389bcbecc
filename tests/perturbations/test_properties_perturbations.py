"""Property-based tests (hypothesis) of the perturbed optimizers and the Fenchel-Young loss, on every backend.

Properties and their tolerances, from the math (Berthet et al., 2020):

* every sample of a perturbed argmax is one-hot, so their mean is a
  probability vector per row (exactly: entries in [0, 1], sum 1);
* with Gumbel noise, E[argmax(θ + σZ)] = softmax(θ/σ): each entry is a mean of
  N Bernoulli draws, within 5 standard deviations ``5 sqrt(p (1 - p) / N)``;
* a control variate makes the gradient of a constant function exactly zero (the
  sum of a probability vector is the constant 1);
* the Monte-Carlo Fenchel-Young loss
  ``(1/N) Σ_i max_y' ⟨θ + σZ_i, y'⟩ − ⟨θ, y⟩ >= (1/N) Σ_i ⟨θ + σZ_i, y⟩ − ⟨θ, y⟩ = σ⟨Z̄, y⟩``
  for every feasible label ``y``, and ``⟨Z̄, y⟩ >= E⟨Z, y⟩ − 5 sd ‖y‖ / sqrt(N)``;
  its gradient ``y_σ − y`` has rows summing to 0 for one-hot labels.
"""

import functools
import math

import autoray as ar
import numpy as np
import pytest

from _properties import EPS, check, dtypes, st
from diffopt import FenchelYoungLoss, argmax_one_hot, perturbed, perturbed_max

# mean and standard deviation of one coordinate of the noise
MOMENTS = {"normal": (0.0, 1.0), "gumbel": (np.euler_gamma, math.pi / math.sqrt(6))}


# A few shapes and sample counts only: JAX compiles once per (shape, num_samples), ~2 s each.
SHAPES = [(1, 1), (2, 3), (1, 4), (3, 5)]
NUM_SAMPLES = st.sampled_from([1, 8, 32])


@st.composite
def thetas(draw):
    b, n = draw(st.sampled_from(SHAPES))
    entry = st.one_of(st.integers(-3, 3).map(float), st.floats(-3.0, 3.0, width=16))
    return np.asarray(draw(st.lists(st.lists(entry, min_size=n, max_size=n), min_size=b, max_size=b)))


def test_perturbed_argmax_is_a_probability_vector_per_row(backend):
    def body(data, noise, sigma, num_samples, batched, multiplicative, control_variate):
        dtype = data.draw(st.sampled_from(dtypes(backend)), label="dtype")
        theta = data.draw(thetas(), label="theta")
        theta = theta if batched else theta[0]
        make = functools.partial(perturbed, argmax_one_hot, num_samples=num_samples, sigma=sigma, noise=noise,
                                 batched=batched, multiplicative=multiplicative, control_variate=control_variate)
        if control_variate == "mean" and num_samples == 1:  # no leave-one-out mean of one sample
            with pytest.raises(ValueError, match="num_samples"):
                make()
            return
        f = make()
        with backend.float64():
            y = f(backend.asarray(theta, dtype), rng=0)
            assert ar.get_dtype_name(y) == dtype
            y = np.asarray(backend.to_numpy(y), dtype=np.float64)
        n = theta.shape[-1]
        assert y.shape == theta.shape
        assert np.all(y >= 0) and np.all(y <= 1)
        assert np.allclose(y.sum(-1), 1.0, rtol=0, atol=4 * n * EPS[dtype])
        assert np.allclose(y * num_samples, np.round(y * num_samples), atol=num_samples * n * 4 * EPS[dtype])

    check(backend, 15, dict(data=st.data(), noise=st.sampled_from(["normal", "gumbel"]),
        sigma=st.sampled_from([0.01, 0.5, 3.0]), num_samples=NUM_SAMPLES, batched=st.booleans(),
        multiplicative=st.booleans(), control_variate=st.sampled_from([None, "mean", "value"])), body)


def test_gumbel_perturbed_argmax_is_the_softmax(backend):
    def body(theta, sigma):
        n_samples = 2000
        f = perturbed(argmax_one_hot, num_samples=n_samples, sigma=sigma, noise="gumbel")
        y = np.asarray(backend.to_numpy(f(backend.asarray(theta, "float32"), rng=1)), dtype=np.float64)
        p = np.exp(theta / sigma - (theta / sigma).max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        assert np.all(np.abs(y - p) <= 5 * np.sqrt(p * (1 - p) / n_samples) + 1e-6)

    check(backend, 8, dict(theta=thetas(), sigma=st.sampled_from([0.5, 1.0, 2.0])), body)


def test_perturbed_gradient_is_finite_and_zero_for_a_constant_with_a_control_variate(grad_backend):
    def body(theta, noise, control_variate, num_samples):
        backend = grad_backend
        f = perturbed(argmax_one_hot, num_samples=num_samples, sigma=0.5, noise=noise, control_variate=control_variate)
        with backend.float64():
            w = backend.asarray(np.cos(np.arange(theta.size)).reshape(theta.shape), "float64")
            x = backend.asarray(theta, "float64")
            g_const = backend.to_numpy(backend.grad(lambda a: ar.do("sum", f(a, rng=0)), x))
            g = backend.to_numpy(backend.grad(lambda a: ar.do("sum", f(a, rng=0) * w), x))
        assert g.shape == theta.shape and np.all(np.isfinite(g))
        assert np.allclose(g_const, 0.0, atol=1e-9)

    check(grad_backend, 10, dict(theta=thetas(), noise=st.sampled_from(["normal", "gumbel"]),
        control_variate=st.sampled_from(["mean", "value"]), num_samples=st.sampled_from([8, 32])), body)


def _one_hot(data, shape):
    idx = data.draw(st.lists(st.integers(0, shape[-1] - 1), min_size=shape[0], max_size=shape[0]), label="labels")
    return np.eye(shape[-1])[idx]


def test_fenchel_young_loss_is_nonnegative_up_to_the_noise_mean(backend):
    def body(data, noise, sigma, num_samples, maximize):
        dtype = data.draw(st.sampled_from([d for d in dtypes(backend) if d in ("float32", "float64")]), label="dtype")
        theta = data.draw(thetas(), label="theta")
        y = _one_hot(data, theta.shape)
        solver = argmax_one_hot if maximize else (lambda c: argmax_one_hot(-c))
        loss = FenchelYoungLoss(solver, num_samples=num_samples, sigma=sigma, noise=noise, maximize=maximize,
                                reduction="none")
        with backend.float64():
            value = np.asarray(backend.to_numpy(loss(backend.asarray(theta, dtype), backend.asarray(y, dtype), rng=0)))
        mean, sd = MOMENTS[noise]
        # sign * σ⟨Z̄, y⟩ with ‖y‖ = 1, Σy = 1: E = ±σ mean, deviation <= 5 σ sd / sqrt(N)
        floor = (mean if maximize else -mean) * sigma - 5 * sigma * sd / math.sqrt(num_samples)
        work = 8 * EPS[dtype] * (np.abs(theta).max() + sigma * 10) * theta.shape[-1]
        assert value.shape == (theta.shape[0],)
        assert np.all(value >= floor - work), (value, floor)

    check(backend, 20, dict(data=st.data(), noise=st.sampled_from(["normal", "gumbel"]),
        sigma=st.sampled_from([0.01, 0.3, 2.0]), num_samples=NUM_SAMPLES, maximize=st.booleans()), body)


def test_fenchel_young_gradient_is_the_perturbed_argmax_minus_the_label(grad_backend):
    def body(data, noise, num_samples):
        backend = grad_backend
        theta = data.draw(thetas(), label="theta")
        y = _one_hot(data, theta.shape)
        loss = FenchelYoungLoss(argmax_one_hot, num_samples=num_samples, sigma=0.5, noise=noise)
        with backend.float64():
            x, ya = backend.asarray(theta, "float64"), backend.asarray(y, "float64")
            g = np.asarray(backend.to_numpy(backend.grad(lambda a: loss(a, ya, rng=3), x)))
            ybar = np.asarray(backend.to_numpy(loss.perturbed(x, rng=3)))
        assert g.shape == theta.shape and np.all(np.isfinite(g))
        assert np.allclose(g.sum(-1), 0.0, atol=1e-12)  # y_σ and y both sum to 1
        assert np.allclose(g, ybar - y, atol=1e-12)  # the same draws (rng=3): the same y_σ

    check(grad_backend, 10, dict(data=st.data(), noise=st.sampled_from(["normal", "gumbel"]),
        num_samples=NUM_SAMPLES), body)


def test_perturbed_max_is_at_least_the_max_plus_the_noise_mean(backend):
    def body(theta, sigma, num_samples):
        # (1/N) Σ max_y ⟨θ + σZ_i, y⟩ >= (1/N) Σ ⟨θ + σZ_i, y*⟩ = max⟨θ, y⟩ + σ Z̄_{argmax}
        f = perturbed_max(argmax_one_hot, num_samples=num_samples, sigma=sigma, noise="normal")
        value = np.asarray(backend.to_numpy(f(backend.asarray(theta, "float32"), rng=0)), dtype=np.float64)
        assert value.shape == (theta.shape[0],)
        assert np.all(value >= theta.max(-1) - 5 * sigma / math.sqrt(num_samples) - 1e-5 * (1 + np.abs(theta).max()))

    check(backend, 10, dict(theta=thetas(), sigma=st.sampled_from([0.1, 1.0]), num_samples=NUM_SAMPLES), body)


BAD_SIGMA = st.one_of(st.floats(max_value=0.0), st.just(float("nan")), st.just(float("inf")))


def test_bad_arguments_raise_errors_naming_them(backend):
    def body(sigma, num_samples, noise):
        for make in (perturbed, perturbed_max, FenchelYoungLoss):
            with pytest.raises(ValueError, match="sigma"):
                make(argmax_one_hot, sigma=sigma)
            with pytest.raises((ValueError, TypeError), match="num_samples"):
                make(argmax_one_hot, num_samples=num_samples)
            with pytest.raises(ValueError, match="noise"):
                make(argmax_one_hot, noise=noise)
        with pytest.raises(TypeError, match="theta"):
            perturbed(argmax_one_hot)(backend.asarray(np.zeros((2, 3), dtype=np.int32)), rng=0)

    check(backend, 10, dict(sigma=BAD_SIGMA, num_samples=st.one_of(st.integers(max_value=0), st.just(2.5)),
        noise=st.text(min_size=1, max_size=5).filter(lambda s: s not in ("normal", "gumbel"))), body)


@pytest.mark.parametrize("api", ["perturbed", "perturbed_max", "FenchelYoungLoss"])
def test_a_numpy_scalar_sigma_is_a_number(backend, api):
    # np.float64 and np.float32 scalars are numbers on every framework (as a Python float)
    theta = backend.asarray(np.array([[0.0, 1.0, 2.0]]), "float32")
    make = {"perturbed": perturbed, "perturbed_max": perturbed_max, "FenchelYoungLoss": FenchelYoungLoss}[api]
    args = (backend.asarray(np.array([[0.0, 0.0, 1.0]]), "float32"),) if api == "FenchelYoungLoss" else ()
    got = make(argmax_one_hot, num_samples=10, sigma=np.float64(0.5))(theta, *args, rng=0)
    expect = make(argmax_one_hot, num_samples=10, sigma=0.5)(theta, *args, rng=0)
    assert np.allclose(backend.to_numpy(got), backend.to_numpy(expect), atol=1e-6)
