"""The PyTorch port of ``perturbations`` (tuero/perturbations-differential-pytorch).

Its test cases (``perturbations_test.py``, ``fenchel_young_test.py``) and its
README's printed numbers, with ``import perturbations`` / ``import
fenchel_young`` changed to ``from diffopt.perturbations.torch import ...``.
Statistical checks compare with closed forms within Z standard deviations.
"""

import numpy as np
import pytest
from compat_refs import Z, normal_argmax_grad_of_square_norm, normal_argmax_probs, softmax
from scipy.special import ndtr
from scipy.stats import norm

from diffopt.perturbations.torch import fenchel_young as fy
from diffopt.perturbations.torch import perturbations


def reduce_sign_any(input_tensor, axis=-1):
    import torch

    boolean_sign = torch.any(((torch.sign(input_tensor) + 1) / 2.0).type(torch.bool), dim=axis)
    return boolean_sign.type(input_tensor.dtype) * 2.0 - 1.0


def argmax(x, axis=-1):
    """The README's one-hot argmax."""
    import torch
    import torch.nn.functional as F

    return F.one_hot(torch.argmax(x, dim=axis), list(x.shape)[axis]).float()


def ranks(inputs, axis=-1):
    import torch

    return 1 + torch.argsort(torch.argsort(inputs, axis=axis), axis=axis).type(inputs.dtype)


def test_noise_names_and_sampler(torch_backend):
    import torch

    assert perturbations.SUPPORTED_NOISES == (perturbations._GUMBEL, perturbations._NORMAL) == ("gumbel", "normal")
    for noise in perturbations.SUPPORTED_NOISES:
        samples, gradients = perturbations.sample_noise_with_gradients(noise, (3, 2, 4))
        assert isinstance(samples, torch.Tensor) and tuple(samples.shape) == tuple(gradients.shape) == (3, 2, 4)
        z = samples.double()
        want = z if noise == "normal" else 1.0 - torch.exp(-z)
        np.testing.assert_allclose(gradients.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not supported"):
        perturbations.sample_noise_with_gradients("unknown", (3, 2, 4))


@pytest.mark.parametrize("sigma", [1e-3, 1e-2, 1e-1])
def test_perturbed_reduce_sign_any(torch_backend, sigma):
    import torch

    x = torch.tensor([[-0.3, -1.2, 1.6], [-0.4, -2.4, -1.0]])
    out = perturbations.perturbed(reduce_sign_any, sigma=sigma)(x, -1, rng=0)  # axis passed positionally
    p = 1.0 - np.prod(ndtr(-x.numpy().astype(np.float64) / sigma), axis=-1)
    np.testing.assert_array_less(np.abs(out.numpy() - (2 * p - 1)), Z * 2 * np.sqrt(p * (1 - p) / 1000) + 1e-6)
    np.testing.assert_almost_equal(out.numpy(), [1.0, -1.0], decimal=2)


def test_perturbed_reduce_sign_any_gradients(torch_backend):
    import torch

    sigma, n = 0.1, 20000
    x = torch.tensor([[-0.6, -1.2, 0.5 * sigma], [-2 * sigma, -2.4, -1.0]], requires_grad=True)
    out = perturbations.perturbed(reduce_sign_any, sigma=sigma, num_samples=n)(x, rng=1)
    out.backward(torch.ones_like(out))
    grad = x.grad.numpy()
    assert grad[0, 2] > 0 and grad[1, 0] > 0 and np.all(grad <= grad[0, 2])
    xd = x.detach().numpy().astype(np.float64)
    below = ndtr(-xd / sigma)
    want = 2.0 * norm.pdf(xd / sigma) / sigma * np.prod(below, -1, keepdims=True) / below
    np.testing.assert_allclose(grad, want, atol=Z / (sigma * np.sqrt(n)))


def test_unbatched_rank_one_raise(torch_backend):
    import torch

    soft_argmax = perturbations.perturbed(argmax, sigma=0.5, num_samples=10_000_000)
    with pytest.raises(ValueError, match="batched"):
        soft_argmax(torch.tensor([-0.6, -0.5, 0.5]))


@pytest.mark.parametrize("batched", [False, True], ids=["without_minibatch", "with_minibatch"])
def test_perturbed_argmax_gradients(torch_backend, batched):
    import torch

    n = 200_000
    if batched:
        x, sigma = np.array([[-0.6, -0.7, 0.5], [0.9, -0.6, -0.5]]), 2.5
    else:
        x, sigma = np.array([-0.6, -0.5, 0.5]), 0.5
    soft_argmax = perturbations.perturbed(argmax, sigma=sigma, num_samples=n, batched=batched)
    theta = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    value = torch.sum(torch.square(soft_argmax(theta, rng=2)))
    value.backward(torch.ones_like(value))
    want = normal_argmax_grad_of_square_norm(x, sigma).reshape(x.shape)
    np.testing.assert_allclose(value.item(), np.sum(normal_argmax_probs(x, sigma) ** 2), atol=Z * 2 * np.sqrt(x.ndim / n))
    np.testing.assert_allclose(theta.grad.numpy(), want, atol=Z * 2 * np.sqrt(x.ndim) / (sigma * np.sqrt(n)))


def test_fenchel_young_gradients(torch_backend):
    import torch

    n = 10000
    loss_fn = fy.FenchelYoungLoss(ranks, num_samples=n, sigma=0.1, batched=False)
    theta1, theta2, theta3 = (torch.tensor([1, 20, 7.3, 7.35], requires_grad=True) for _ in range(3))
    y_true = torch.tensor([1, 4, 3, 2], dtype=theta1.dtype)
    y_hard_minimum = torch.tensor([1, 4, 2, 3], dtype=theta2.dtype)
    y_perturbed_minimum = loss_fn.perturbed(theta3, rng=3)  # depends on theta3: gets no gradient
    outputs = [loss_fn(theta1, y_true, rng=3), loss_fn(theta2, y_hard_minimum, rng=3),
               loss_fn.forward(theta3, y_perturbed_minimum, rng=3)]
    for out in outputs:
        out.backward(torch.ones_like(out))
    g_true, g_hard_minimum, g_perturbed_minimum = theta1.grad, theta2.grad, theta3.grad
    np.testing.assert_almost_equal(g_true[:2].numpy(), [0.0, 0.0])
    assert torch.norm(g_perturbed_minimum) < torch.norm(g_hard_minimum) < torch.norm(g_true)
    for g in (g_true, g_hard_minimum, g_perturbed_minimum):
        assert abs(torch.sum(g).item()) < 1e-5
    p = ndtr(-0.05 / (0.1 * np.sqrt(2)))
    tol = Z * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(g_true.numpy(), [0, 0, p - 1, 1 - p], atol=tol)
    np.testing.assert_allclose(outputs[0].item(), 2 * (1 - p) ** 2, atol=4 * tol)
    # same noise, same perturbed solution: y_σ − y_σ = 0 exactly, no term from the label's own graph
    np.testing.assert_allclose(g_perturbed_minimum.numpy(), 0.0, atol=1e-6)


def test_fenchel_young_batched_losses_are_per_instance(torch_backend):
    import torch

    theta = torch.tensor([[1.0, 20.0, 7.3, 7.35], [3.0, 1.0, 2.0, 2.5]])
    y = torch.tensor([[1.0, 4, 3, 2], [4, 1, 2, 3]])
    losses = fy.FenchelYoungLoss(ranks, num_samples=500, sigma=0.1)(theta, y, rng=5)
    ybar = perturbations.perturbed(ranks, num_samples=500, sigma=0.1)(theta, rng=5)
    assert tuple(losses.shape) == (2,)  # the port does not reduce
    np.testing.assert_allclose(losses.numpy(), ((ybar - y) ** 2).sum(-1).numpy(), rtol=1e-5)


# ---------------------------------------------------------------------- README snippets

THETA = np.array([-0.6, 1.9, -0.2, 1.1, -1.0])
THETA_BATCH = np.array([[-0.6, 1.9, -0.2, 1.1, -1.0], [-0.6, 1.0, -0.2, 1.8, -1.0]])


def test_readme_perturbed_argmax_is_softmax(torch_backend):
    import torch

    n, sigma = 200_000, 0.5
    want = softmax(THETA / sigma)
    tol = Z * np.sqrt(want * (1 - want) / n) + 1e-6
    pert_argmax = perturbations.perturbed(argmax, num_samples=n, sigma=sigma, noise="gumbel", batched=False,
                                          device=torch.device("cpu"))
    np.testing.assert_array_less(np.abs(pert_argmax(torch.tensor(THETA, dtype=torch.float32), rng=6).numpy() - want), tol)
    np.testing.assert_allclose(want, [0.0055, 0.8152, 0.0122, 0.1646, 0.0025], atol=1e-4)  # the README's softmax

    @perturbations.perturbed(num_samples=n, sigma=sigma, noise="gumbel", batched=True)
    def batched_argmax(x, axis=-1):
        return argmax(x, axis)

    want_b = softmax(THETA_BATCH / sigma)
    got = batched_argmax(torch.tensor(THETA_BATCH, dtype=torch.float32), rng=7).numpy()
    np.testing.assert_array_less(np.abs(got - want_b), Z * np.sqrt(want_b * (1 - want_b) / n) + 1e-6)


def test_readme_gradient_matches_softmax_gradient(torch_backend):
    import torch

    n, sigma = 200_000, 0.5
    theta = torch.tensor(THETA_BATCH, dtype=torch.float32, requires_grad=True)
    pert_argmax = perturbations.perturbed(argmax, num_samples=n, sigma=sigma, noise="gumbel")
    square_norm = torch.linalg.norm(pert_argmax(theta, rng=8))
    square_norm.backward(torch.ones_like(square_norm))
    theta_soft = torch.tensor(THETA_BATCH, requires_grad=True)
    torch.linalg.norm(torch.softmax(theta_soft / sigma, -1)).backward()
    # Gumbel score 1 − e^{−z} has unit variance; ⟨g, f⟩ ≤ 1 for the unit vector g
    np.testing.assert_allclose(theta.grad.numpy(), theta_soft.grad.numpy(), atol=Z / (sigma * np.sqrt(n)))
    np.testing.assert_allclose(theta_soft.grad.numpy()[0, :2], [-0.0064, 0.1714], atol=1e-4)  # README's grad_soft


def test_readme_perturbed_or(torch_backend):
    import torch

    def hard_or(x):
        s = ((torch.sign(x) + 1) / 2.0).type(torch.bool)
        return torch.any(s, dim=-1).type(torch.float) * 2.0 - 1

    n, sigma = 100_000, 0.1
    theta = torch.tensor([[-5.0, 0.2], [-5.0, 0.1]])
    np.testing.assert_array_equal(hard_or(theta).numpy(), [1.0, 1.0])
    out = perturbations.perturbed(hard_or, num_samples=n, sigma=sigma, noise="gumbel")(theta, rng=9).numpy()
    # Gumbel: P(x + σZ ≤ 0) = exp(−exp(x/σ)); OR = 2·(1 − Π_j P_j) − 1
    p = 1.0 - np.prod(np.exp(-np.exp(theta.numpy().astype(np.float64) / sigma)), axis=-1)
    np.testing.assert_array_less(np.abs(out - (2 * p - 1)), Z * 2 * np.sqrt(p * (1 - p) / n) + 1e-6)
    assert out[1] < out[0]  # the README's 0.854 < 1.000
