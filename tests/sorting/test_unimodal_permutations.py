"""SoftSort and NeuralSort in :func:`diffopt.sorting.soft_permutation`, and the straight-through option.

References: the papers' formulas written out element by element (NeuralSort in
its original descending form, applied to ``-x``), the exact permutation as the
temperature goes to 0, finite differences for the gradients.
"""

import autoray
import numpy as np
import pytest

from diffopt.sorting import soft_permutation

METHODS = ("softsort", "neuralsort")


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _reference(method, x, t):
    """Direct loops: SoftSort (Prillo & Eisenschlos 2020, eq. 2), NeuralSort (Grover et al. 2019, eq. 5)."""
    n = len(x)
    if method == "softsort":
        s = np.sort(x)
        return np.array([_softmax(-np.abs(s[j] - x) / t) for j in range(n)])
    y = -x  # descending NeuralSort of -x is the ascending sort of x
    a1 = np.array([sum(abs(y[i] - y[k]) for k in range(n)) for i in range(n)])
    return np.array([_softmax(((n + 1 - 2 * (j + 1)) * y - a1) / t) for j in range(n)])


@pytest.mark.parametrize("method", METHODS)
def test_closed_forms(backend, method):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 6))
    with backend.float64():
        p = backend.to_numpy(soft_permutation(backend.asarray(x), temperature=0.7, method=method))
        cold = backend.to_numpy(soft_permutation(backend.asarray(x), temperature=1e-4, method=method))
        desc = backend.to_numpy(soft_permutation(backend.asarray(x), temperature=1e-4, method=method,
                                                 descending=True))
    for row in range(2):
        np.testing.assert_allclose(p[row], _reference(method, x[row], 0.7), atol=1e-12)
        exact = np.eye(6)[np.argsort(x[row])]
        np.testing.assert_allclose(cold[row], exact, atol=1e-9)
        np.testing.assert_allclose(desc[row], exact[::-1], atol=1e-9)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_gradient_finite_differences(grad_backend, method):
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=5), rng.normal(size=(5, 5))
    with grad_backend.float64():
        wt = grad_backend.asarray(w)
        g = grad_backend.to_numpy(grad_backend.grad(
            lambda z: autoray.do("sum", soft_permutation(z, temperature=0.5, method=method) * wt),
            grad_backend.asarray(x)))
    fd = np.array([((_reference(method, x + e, 0.5) - _reference(method, x - e, 0.5)) * w).sum() / 2e-6
                   for e in 1e-6 * np.eye(5)])
    np.testing.assert_allclose(g, fd, atol=1e-6)


@pytest.mark.parametrize("method", ("network", *METHODS))
def test_straight_through(grad_backend, method):
    """Forward: the exact permutation; backward: the relaxed matrix's gradient."""
    rng = np.random.default_rng(5)
    x, w = rng.normal(size=5), rng.normal(size=(5, 5))
    with grad_backend.float64():
        xt, wt = grad_backend.asarray(x), grad_backend.asarray(w)
        hard = grad_backend.to_numpy(soft_permutation(xt, temperature=2.0, method=method, straight_through=True))
        grads = [grad_backend.to_numpy(grad_backend.grad(
            lambda z, st=st: autoray.do("sum", soft_permutation(z, temperature=2.0, method=method,
                                                                 straight_through=st) * wt), xt))
            for st in (False, True)]
    np.testing.assert_allclose(hard, np.eye(5)[np.argsort(x)], atol=1e-12)
    np.testing.assert_allclose(grads[1], grads[0], atol=1e-12)
    assert np.abs(grads[0]).max() > 1e-3


def test_bad_method():
    with pytest.raises(ValueError, match="method"):
        soft_permutation(np.zeros(3), method="sinkhorn")
