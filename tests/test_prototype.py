""""Write your prototype once" (docs/prototype.md): NumPy-style code written against
``autoray.numpy`` runs unchanged on every backend and keeps the framework's graph."""

import math

import numpy as np
import pytest
from autoray import numpy as anp

import diffopt
from diffopt.sorting import soft_sort

X = np.array([[0.3, -1.2, 2.0, 0.7, -0.1], [1.5, 0.2, -0.8, 0.9, 0.0]])
W = np.arange(5.0, dtype=np.float32)  # float32 constants: TF does not promote float32 * float64


def sort_loss(x):
    """The prototype: a weighted soft sort, averaged over rows, in NumPy's vocabulary."""
    y = soft_sort(x, axis=-1, temperature=0.5)
    return anp.mean(anp.sum(y * anp.asarray(W, like=x), axis=-1))


def _numpy_reference(x):
    """Value in float64 NumPy and the central finite-difference gradient (h = 1e-6)."""
    value = float(sort_loss(x))
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = 1e-6
        grad[idx] = (float(sort_loss(x + step)) - float(sort_loss(x - step))) / 2e-6
    return value, grad


def test_sort_prototype_runs_unchanged_and_differentiates(grad_backend):
    value, grad = _numpy_reference(X)
    x = grad_backend.asarray(X, "float32")
    got = grad_backend.to_numpy(sort_loss(x))
    np.testing.assert_allclose(got, value, rtol=1e-5)
    g = grad_backend.grad(sort_loss, x)  # TF: None here if the prototype left the tape
    assert g is not None
    np.testing.assert_allclose(grad_backend.to_numpy(g), grad, rtol=1e-3, atol=1e-4)


def test_perturbed_prototype_matches_softmax_closed_form(grad_backend):
    # Gumbel-perturbed argmax has the closed form E[y] = softmax(θ/σ).
    sigma, n = 0.5, 4000
    pert = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=n, sigma=sigma, noise="gumbel")

    def loss(theta):
        y = pert(theta, rng=0)
        return anp.mean(anp.sum(y * anp.asarray(W, like=theta), axis=-1))

    p = np.exp(X / sigma) / np.exp(X / sigma).sum(-1, keepdims=True)
    expected = float(np.mean(p @ W))
    # std of the per-row weighted one-hot, averaged over 2 rows of n samples each
    std = math.sqrt(float(np.mean(p @ W**2 - (p @ W) ** 2)) / (2 * n))
    theta = grad_backend.asarray(X, "float32")
    got = float(grad_backend.to_numpy(loss(theta)))
    assert abs(got - expected) < 5 * std
    g = grad_backend.grad(loss, theta)
    assert g is not None and np.all(np.isfinite(grad_backend.to_numpy(g)))
    assert grad_backend.to_numpy(g).shape == X.shape


@pytest.mark.parametrize("fn", ["mean", "sum"])
def test_autoray_numpy_dispatches_to_the_framework(backend, fn):
    x = backend.asarray(X, "float32")
    out = getattr(anp, fn)(soft_sort(x, temperature=0.5), axis=-1)
    assert type(out).__module__.split(".")[0] == type(x).__module__.split(".")[0]
    np.testing.assert_allclose(backend.to_numpy(out), getattr(np, fn)(soft_sort(X, temperature=0.5), axis=-1),
                               rtol=1e-5)
