"""Closed forms used as references by the compatibility tests (NumPy/SciPy only)."""

import numpy as np
from scipy.special import ndtr

Z = 4.0  # tolerances are Z standard deviations of the Monte-Carlo estimate


def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def normal_argmax_probs(theta, sigma, nodes=120):
    """P(argmax(θ + σZ) = i) for standard normal Z, per row of ``theta`` (Gauss-Hermite quadrature).

    P_i = E_z[Π_{j≠i} Φ((θ_i − θ_j)/σ + z)], z ~ N(0, 1).
    """
    theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    gaps = (theta[:, :, None] - theta[:, None, :]) / sigma  # [B, i, j]
    cdf = ndtr(gaps[..., None] + z)  # [B, i, j, nodes]
    d = theta.shape[1]
    cdf[:, np.arange(d), np.arange(d), :] = 1.0
    return np.prod(cdf, axis=2) @ w


def normal_argmax_grad_of_square_norm(theta, sigma, eps=1e-5):
    """∇_θ Σ P(θ)² for the normal-perturbed argmax, by central differences of the closed form."""
    theta = np.asarray(theta, dtype=np.float64)
    grad = np.zeros_like(theta)
    for idx in np.ndindex(theta.shape):
        step = np.zeros_like(theta)
        step[idx] = eps
        up = np.sum(normal_argmax_probs(theta + step, sigma) ** 2)
        down = np.sum(normal_argmax_probs(theta - step, sigma) ** 2)
        grad[idx] = (up - down) / (2 * eps)
    return grad
