"""``torch-adaptive-imle`` (EdinburghNLP) and ``torch-imle``, on ``diffopt.imle``'s drop-in.

The cases of ``tests/imle/test_imle.py`` with ``imle.`` changed to
``diffopt.imle.``: I-MLE and (non-symmetric) AIMLE give the same gradient
exactly, the symmetric variant differs, samples of one instance agree, with
the original's user-defined noise class (``sample(self, shape)`` only). Fewer
random problems (12 instead of 4096) keep the run short.
"""

import warnings

import numpy as np
import pytest

from diffopt.imle.aimle import aimle
from diffopt.imle.imle import imle
from diffopt.imle.noise import BaseNoiseDistribution
from diffopt.imle.solvers import mathias_select_k, select_k
from diffopt.imle.target import AdaptiveTargetDistribution, TargetDistribution

ROUNDS = 12


class ConstantNoiseDistribution(BaseNoiseDistribution):
    """The original test's noise: a torch-imle style ``sample(self, shape)``."""

    def __init__(self, constant=0.0, device=None):
        import torch

        super().__init__()
        self.constant = torch.tensor(constant, dtype=torch.float, device=device)
        self.device = device

    def sample(self, shape):
        import torch

        return torch.zeros(size=shape, device=self.device) + self.constant


def _check_imle_equals_aimle(select_fun, nb_samples, batch_size=1, noisy=False):
    import torch
    from torch import nn

    rs = np.random.RandomState(0)
    torch.manual_seed(0)
    sym_mismatch = 0
    for _ in range(ROUNDS):
        input_size = rs.randint(32, 1024)
        k = rs.randint(1, input_size)
        target = TargetDistribution(alpha=rs.uniform(0, 10000), beta=rs.uniform(0, 10000))
        temperature = rs.uniform(0, 100.0) if noisy else 1.0
        noise = ConstantNoiseDistribution(constant=rs.uniform(-0.01, -0.01)) if noisy else None
        common = dict(target_distribution=target, noise_distribution=noise, nb_samples=nb_samples,
                      theta_noise_temperature=temperature, target_noise_temperature=temperature)

        def solver(logits):
            return select_fun(logits, k)

        imle_solver = imle(solver, **common)
        aimle_solver = aimle(solver, symmetric_perturbation=False, **common)
        aimle_sym_solver = aimle(solver, symmetric_perturbation=True, **common)
        init = rs.randn(batch_size, input_size)
        linear = nn.Linear(input_size, 1)
        params = [nn.Parameter(torch.tensor(init, dtype=torch.float)) for _ in range(3)]
        res = linear(aimle_solver(params[0])) + linear(aimle_sym_solver(params[1])) + linear(imle_solver(params[2]))
        res_2d = res.view(batch_size, nb_samples)
        for row in res_2d.detach().numpy():
            np.testing.assert_allclose(row, row[0], atol=1e-3, rtol=1e-3)
        torch.sum(res).backward()
        assert torch.sum(torch.abs(params[0].grad - params[2].grad)).item() < 1e-24
        sym_mismatch += torch.sum(torch.abs(params[1].grad - params[2].grad)).item() > 1e-24
    assert sym_mismatch > 0


@pytest.mark.parametrize("select_fun, nb_samples", [(select_k, 1), (mathias_select_k, 1), (mathias_select_k, 10)],
                         ids=["v1a", "v1b", "v1c"])
def test_imle_v1_no_noise(torch_backend, select_fun, nb_samples):
    _check_imle_equals_aimle(select_fun, nb_samples)


@pytest.mark.parametrize("select_fun, nb_samples", [(select_k, 1), (mathias_select_k, 1), (mathias_select_k, 10)],
                         ids=["v2a", "v2b", "v2c"])
def test_imle_v2_user_noise(torch_backend, select_fun, nb_samples):
    _check_imle_equals_aimle(select_fun, nb_samples, noisy=True)


@pytest.mark.parametrize("select_fun", [select_k, mathias_select_k], ids=["v3a", "v3b"])
def test_imle_v3_batched(torch_backend, select_fun):
    _check_imle_equals_aimle(select_fun, nb_samples=5, batch_size=3, noisy=True)


def test_user_noise_sample_shape_only(torch_backend):
    import torch

    noise = ConstantNoiseDistribution(constant=0.25)
    seen = []

    def solver(x):
        seen.append(x.detach().clone())
        return select_k(x, 1)

    theta = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    z = imle(solver, noise_distribution=noise, nb_samples=2, theta_noise_temperature=2.0)(theta)
    assert z.dtype == torch.float64 and tuple(z.shape) == (2, 3)
    np.testing.assert_allclose(seen[0].numpy(), np.tile([[0.5, 1.5, 2.5]], (2, 1)))  # θ + 2·0.25
    # the sampler has no rng: an explicit one warns instead of being silently ignored
    with pytest.warns(RuntimeWarning, match="takes no rng"):
        imle(solver, noise_distribution=noise)(theta, rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        imle(solver, noise_distribution=noise)(theta)


def test_positional_arguments_mean_the_originals(torch_backend):
    target = AdaptiveTargetDistribution(1.0, 2.0, 0.5, 1e-3, 0.1, 0.8, 3.0)
    assert (target.alpha, target.beta, target.grad_norm) == (1.0, 2.0, 0.5)
    assert (target.beta_update_step, target.beta_update_momentum) == (1e-3, 0.1)
    assert (target.grad_norm_decay_rate, target.target_norm) == (0.8, 3.0)
    scaled = TargetDistribution(1.0, 0.0, True, 0.25)  # eps fourth, as the original
    assert (scaled.do_gradient_scaling, scaled.eps) == (True, 0.25)
    np.testing.assert_allclose(scaled.scale(np.ones(2), 0.0), 4.0)  # divided by max(beta, eps)
    fixed = TargetDistribution(2.0, 3.0)
    theta, dy = np.array([1.0, -1.0]), np.array([0.5, 0.5])
    np.testing.assert_allclose(fixed.params(theta, dy), 2.0 * theta - 3.0 * dy)
    np.testing.assert_allclose(fixed.params(theta, dy, 1.0, 4.0), theta - 4.0 * dy)  # alpha, beta overrides
    np.testing.assert_allclose(fixed.params(theta, dy, None, None, True), 2.0 * theta + 3.0 * dy)
    np.testing.assert_allclose(target.params(theta, dy, True, lam=2.0), theta + 2.0 * dy)
    with pytest.raises(ValueError, match="_gradient_save_path"):
        imle(lambda x: x, None, None, 1, 1, 1.0, 1.0, "grads.npy")


def test_positional_order_of_the_estimators(torch_backend):
    """imle/aimle(function, target, noise, nb_samples, nb_marginal_samples, theta_noise_temperature, ...)."""
    import torch

    import diffopt.imle as package

    calls = []

    def solver(x):
        calls.append(tuple(x.shape))
        return select_k(x, 1)

    theta = torch.zeros(2, 4, requires_grad=True)
    z = imle(solver, TargetDistribution(), None, 3, 2)(theta)  # nb_marginal_samples=2
    assert tuple(z.shape) == (12, 4)
    z.sum().backward()
    assert calls == [(12, 4), (12, 4)]
    calls.clear()
    aimle(solver, None, None, 1, 1, 1.0, 1.0, True)(theta).sum().backward()  # symmetric_perturbation
    assert calls == [(2, 4), (4, 4)]  # the backward solves both sides at once
    # the original's default target for aimle is TargetDistribution(1, 1); the package's own
    # aimle (an adaptive target) keeps its signature even after importing the drop-in module
    assert package.aimle is not aimle and callable(package.aimle)
    calls.clear()
    package.aimle(solver, None, None, 1, 1.0)(theta).sum().backward()
    assert calls == [(2, 4), (2, 4)]


def test_adaptive_step_difference_warns(torch_backend):
    """The one deliberate difference (λ's norms over all S samples) is announced, not silent."""
    def solver(x):
        return select_k(x, 1)

    with pytest.warns(UserWarning, match="√S"):
        aimle(solver, AdaptiveTargetDistribution(), nb_samples=4)
    with pytest.warns(UserWarning, match="√S"):
        imle(solver, AdaptiveTargetDistribution(), None, 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aimle(solver, AdaptiveTargetDistribution(), nb_samples=1)  # S = 1: identical, no warning
        aimle(solver, TargetDistribution(), nb_samples=4)


def test_original_style_custom_target_is_a_clear_error(torch_backend):
    from diffopt.imle.target import BaseTargetDistribution

    class OriginalStyle(BaseTargetDistribution):
        def params(self, theta, dy, _is_minimization=False):
            return theta - 2.0 * dy

        def process(self, theta, dy, gradient_3d):
            return gradient_3d

    with pytest.raises(TypeError, match="does not implement step"):
        imle(lambda x: select_k(x, 1), OriginalStyle())
