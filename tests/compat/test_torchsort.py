"""``torchsort`` (teddykoker), on ``diffopt.sorting.torchsort``'s drop-in.

The cases of its ``tests/test_ops.py`` with ``torchsort`` changed to
``diffopt.sorting.torchsort`` and its reference ``fast_soft_sort.pytorch_ops`` changed to
``diffopt.sorting.fast_soft_sort.pytorch_ops`` (both drop-ins of this package: the
values of both against independent numbers are in ``tests/sorting/test_sorting_projection.py``
and ``test_fast_soft_sort_numbers`` below). ``test_half`` needs CUDA (as in the original).
"""

from functools import partial

import numpy as np
import pytest

EPS = 1e-5
ATOL = 1e-3
RTOL = 1e-3
BATCH_SIZE = 8
SEQ_LEN = 10

REGULARIZATION = ["l2", "kl"]
REGULARIZATION_STRENGTH = [1e-1, 1e0, 1e1]


@pytest.fixture
def torch(backend):
    if backend.name != "torch":
        pytest.skip("torchsort is a torch package")
    import torch

    torch.manual_seed(0)
    return torch


def _devices(torch):
    return [torch.device("cpu")] + [torch.device(f"cuda:{d}") for d in range(min(torch.cuda.device_count(), 2))]


@pytest.mark.parametrize("name", ["soft_rank", "soft_sort"])
@pytest.mark.parametrize("regularization", REGULARIZATION)
@pytest.mark.parametrize("regularization_strength", REGULARIZATION_STRENGTH)
def test_gradcheck(torch, name, regularization, regularization_strength):
    from diffopt.sorting import torchsort

    for device in _devices(torch):
        x = torch.randn(BATCH_SIZE, SEQ_LEN, dtype=torch.float64, requires_grad=True).to(device)
        f = partial(getattr(torchsort, name), regularization=regularization,
                    regularization_strength=regularization_strength)
        assert torch.autograd.gradcheck(f, [x], eps=EPS, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", ["soft_rank", "soft_sort"])
@pytest.mark.parametrize("regularization", REGULARIZATION)
@pytest.mark.parametrize("regularization_strength", REGULARIZATION_STRENGTH)
def test_vs_original(torch, name, regularization, regularization_strength):
    from diffopt.sorting import torchsort
    from diffopt.sorting.fast_soft_sort import pytorch_ops as fss

    for device in _devices(torch):
        x = torch.randn(BATCH_SIZE, SEQ_LEN, dtype=torch.float64, requires_grad=True).to(device)
        kwargs = {"regularization": regularization, "regularization_strength": regularization_strength}
        assert torch.allclose(getattr(torchsort, name)(x, **kwargs).cpu(), getattr(fss, name)(x.cpu(), **kwargs))


@pytest.mark.parametrize("name", ["soft_rank", "soft_sort"])
@pytest.mark.parametrize("regularization", REGULARIZATION)
@pytest.mark.parametrize("regularization_strength", REGULARIZATION_STRENGTH)
def test_half(torch, name, regularization, regularization_strength):
    from diffopt.sorting import torchsort

    if not torch.cuda.is_available():
        pytest.skip("requires CUDA to test fp16")
    x = torch.randn(BATCH_SIZE, SEQ_LEN, requires_grad=True).cuda().half()
    f = partial(getattr(torchsort, name), regularization=regularization, regularization_strength=regularization_strength)
    assert torch.allclose(f(x), f(x.float()).half(), atol=1e-1)


@pytest.mark.parametrize("name", ["soft_rank", "soft_sort"])
def test_kl_gradient_stays_finite_past_exp_overflow(torch, name):
    """Added: torchsort's KL gradient is inf/NaN once |values / strength| passes ~709 (torchsort #63);
    here it is finite and equals central finite differences."""
    from diffopt.sorting import torchsort

    x = torch.tensor([[800.0, -900.0, 1000.0, 0.0, 999.9]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[0.3, -1.0, 2.0, 0.5, 1.5]], dtype=torch.float64)
    f = lambda v: (getattr(torchsort, name)(v, regularization="kl", regularization_strength=1.0) * w).sum()
    (g,) = torch.autograd.grad(f(x), x)
    assert torch.isfinite(g).all()
    h = 1e-6
    fd = [float(f(x.detach() + e) - f(x.detach() - e)) / (2 * h) for e in torch.eye(5, dtype=torch.float64)[:, None] * h]
    np.testing.assert_allclose(g.numpy()[0], fd, rtol=1e-5, atol=1e-6)
    assert np.abs(fd).max() > 0.1  # the pooled pair (1000, 999.9) moves: a zero gradient would fail
