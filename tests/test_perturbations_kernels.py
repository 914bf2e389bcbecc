"""The eager CPU torch kernels of the perturbed engine's sample reductions equal the generic ops.

``diffopt.backends._torch_samples``: ``sum_samples`` (``1ᵀ X``) and
``inner_samples`` (blockwise ``einsum('nbo,bo->nb')``), looked up by
``diffopt._ops.sum_samples`` / ``inner_samples``; and a perturbed argmax whose
backward runs them gives the gradient of the generic path.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import diffopt  # noqa: E402
from diffopt import _ops  # noqa: E402
from diffopt.backends import _torch_samples as ts  # noqa: E402
from diffopt.backends import torch as torch_shim  # noqa: E402


@pytest.mark.parametrize("shape", [(700, 32, 100), (40, 4, 9000), (300, 3, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inner_samples_equals_einsum(shape, dtype):
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(shape, generator=gen, dtype=torch.float64)
    g = torch.randn(shape[1:], generator=gen, dtype=torch.float64)
    ref = torch.einsum("nbo,bo->nb", f, g)
    fast = ts.inner_samples(f.to(dtype), g.to(dtype))
    width = shape[1] * shape[2]
    applies = shape[0] > max(ts.MIN_ROWS, ts.BLOCK // width)
    assert (fast is not None) == applies
    out = _ops.inner_samples(f.to(dtype), g.to(dtype))
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    # float32 sums of `width` products of unit normals: error ~ eps * sqrt(out) * |terms|
    np.testing.assert_allclose(out.double().numpy(), ref.numpy(), rtol=tol, atol=tol * np.sqrt(shape[2]))
    assert out.shape == shape[:2] and out.dtype == dtype


def test_inner_samples_recorded_keeps_the_graph():
    gen = torch.Generator().manual_seed(1)
    f = torch.randn((100, 8, 500), generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn((8, 500), generator=gen, dtype=torch.float64)
    out = ts.inner_samples(f, g)
    assert out is not None and out.requires_grad
    out.sum().backward()
    np.testing.assert_allclose(f.grad.numpy(), g.expand(100, 8, 500).numpy())


def test_inner_samples_declines():
    f = torch.ones((1000, 1, 500))  # one instance: einsum's rows are contiguous
    assert ts.inner_samples(f, torch.ones((1, 500))) is None
    f = torch.ones((1000, 4, 500))
    assert ts.inner_samples(f, torch.ones((4, 499))) is None  # shape mismatch: the generic op raises
    assert ts.inner_samples(f.half(), torch.ones((4, 500)).half()) is None
    assert ts.inner_samples(f.transpose(0, 1).contiguous().transpose(0, 1), torch.ones((4, 500))) is None


@pytest.mark.parametrize("shape", [(3000, 32, 10), (2, 300, 500), (3000, 400)])
def test_sum_samples_equals_sum(shape):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    assert ts.sum_samples(x) is not None
    np.testing.assert_allclose(_ops.sum_samples(x).numpy(), x.sum(0).numpy(), rtol=1e-12, atol=1e-10)
    assert ts.sum_samples(x[:, :1]) is None  # narrow rows: torch.sum
    assert ts.sum_samples(torch.ones(10, 10)) is None  # small


def test_perturbed_gradient_equals_generic_path(monkeypatch):
    """Samples kept (N = 3000, B = 8, d = 50 float64): the kernels run; same forward and gradient."""
    theta = torch.randn((8, 50), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    g = torch.randn((8, 50), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    calls = []

    def run():
        f = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=3000, sigma=0.5, control_variate="mean")
        th = theta.clone().requires_grad_(True)
        y = f(th, rng=0)
        (y * g).sum().backward()
        return y.detach().numpy(), th.grad.numpy()

    for name in ("sum_samples", "inner_samples"):
        kernel = torch_shim.OPS[name]
        monkeypatch.setitem(torch_shim.OPS, name, lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    y_fast, grad_fast = run()
    assert {"sum_samples", "inner_samples"} <= set(calls)
    for name in ("sum_samples", "inner_samples"):
        monkeypatch.delitem(torch_shim.OPS, name)
    y_ref, grad_ref = run()
    np.testing.assert_allclose(y_fast, y_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad_fast, grad_ref, rtol=1e-10, atol=1e-12)
