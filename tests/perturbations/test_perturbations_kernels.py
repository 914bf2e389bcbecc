"""The eager CPU torch kernels of the perturbed engine equal the generic ops.

``diffopt.backends.torch._samples``: ``sum_samples`` (``1ᵀ X``) and
``add_scaled`` (the perturbed rows written contiguous), looked up by
``diffopt._ops.sum_samples`` / ``add_scaled``; and a perturbed argmax that
runs them gives the forward and gradient of the generic path.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import diffopt  # noqa: E402
from diffopt import _ops  # noqa: E402
from diffopt.backends.torch import _samples as ts  # noqa: E402
from diffopt.backends import torch as torch_shim  # noqa: E402


@pytest.mark.parametrize("scale", [0.5, "tensor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_add_scaled_equals_generic_and_is_contiguous(scale, dtype):
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn((4, 7), generator=gen, dtype=dtype)
    z = torch.randn((30, 4, 7), generator=gen, dtype=dtype)
    s = torch.tensor(0.5, dtype=dtype) if scale == "tensor" else scale
    a, b = theta[:, None], z.transpose(0, 1)
    generic = a + s * b
    assert not generic.is_contiguous()  # why the kernel exists: the generic result is laid out like b
    out = ts.add_scaled(a, b, s)
    assert out is not None and out.is_contiguous() and out.shape == (4, 30, 7) and out.dtype == dtype
    np.testing.assert_allclose(out.numpy(), generic.numpy(), rtol=1e-6 if dtype == torch.float32 else 1e-15)
    assert _ops.add_scaled(a, b, s).is_contiguous()


def test_add_scaled_declines():
    a, b = torch.ones((4, 1, 7)), torch.ones((30, 4, 7)).transpose(0, 1)
    assert ts.add_scaled(a.half(), b.half(), 0.5) is None  # dtype
    assert ts.add_scaled(a, b.double(), 0.5) is None  # mixed dtypes: the generic op promotes
    assert ts.add_scaled(a, b, torch.ones(2)) is None  # not a scalar scale
    assert ts.add_scaled(a.requires_grad_(True), b, 0.5) is None  # recorded by autograd
    with torch.no_grad():
        assert ts.add_scaled(a, b, 0.5) is not None
    assert ts.add_scaled(a.detach(), b, np.ones(1)) is None  # neither a number nor a tensor


@pytest.mark.parametrize("shape", [(3000, 32, 10), (2, 300, 500), (3000, 400)])
def test_sum_samples_equals_sum(shape):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    assert ts.sum_samples(x) is not None
    np.testing.assert_allclose(_ops.sum_samples(x).numpy(), x.sum(0).numpy(), rtol=1e-12, atol=1e-10)
    assert ts.sum_samples(x[:, :1]) is None  # narrow rows: torch.sum
    assert ts.sum_samples(torch.ones(10, 10)) is None  # small


@pytest.mark.parametrize("batch", [1, 8])
def test_perturbed_gradient_equals_generic_path(monkeypatch, batch):
    """N = 3000, d = 300 float64, the samples kept: the kernels run (``sum_samples`` applies to one
    instance, whose samples are contiguous); the same forward and gradient without them."""
    theta = torch.randn((batch, 300), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    g = torch.randn((batch, 300), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    names = ("sum_samples", "add_scaled")
    calls = []

    def run():
        f = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=3000, sigma=0.5, control_variate="mean")
        th = theta.clone().requires_grad_(True)
        y = f(th, rng=0)
        (y * g).sum().backward()
        return y.detach().numpy(), th.grad.numpy()

    for name in names:
        kernel = torch_shim.KERNELS[name]

        def spy(*a, _k=kernel, _n=name):
            out = _k(*a)
            calls.append((_n, out is not None))
            return out

        monkeypatch.setitem(torch_shim.KERNELS, name, spy)
    y_fast, grad_fast = run()
    assert ("add_scaled", True) in calls
    assert (("sum_samples", True) in calls) == (batch == 1)
    for name in names:
        monkeypatch.delitem(torch_shim.KERNELS, name)
    y_ref, grad_ref = run()
    np.testing.assert_allclose(y_fast, y_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad_fast, grad_ref, rtol=1e-10, atol=1e-12)
