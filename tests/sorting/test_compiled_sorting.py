"""``torch.compile(fullgraph=True)`` of the sorting ops equals eager (forward and backward).

``soft_sort``, ``soft_rank``, ``soft_topk`` and ``soft_permutation`` compile as one graph
(``fullgraph=True`` raises at any graph break) with the ``aot_eager`` backend, with a Python-number
and a learnable temperature; the first diffopt call of a fresh process may be a compiled one. The
other compiled-equals-eager checks (every framework's compiler, vmap) are in
``tests/backends/test_compiled.py``.
"""

import numpy as np
import pytest

from diffopt.sorting import projection_rank, projection_sort, soft_permutation, soft_rank, soft_sort, soft_topk

from references import last_line_of_a_fresh_process

_SORT_OPS = {
    "soft_sort": lambda v, t: soft_sort(v, axis=1, temperature=t),
    "soft_rank": lambda v, t: soft_rank(v, axis=1, temperature=t, relaxation="cauchy", descending=True),
    "soft_topk": lambda v, t: soft_topk(v, 3, axis=1, temperature=t, relaxation="logistic"),
    "soft_permutation": lambda v, t: soft_permutation(v, axis=1, temperature=t)[..., 1, :],
}


def _torch_or_skip():
    torch = pytest.importorskip("torch")
    from conftest import SELECTED

    if "torch" not in SELECTED:
        pytest.skip("torch is not among DIFFOPT_TEST_BACKENDS")
    return torch


def _assert_compiled_grads_equal(torch, f, x0, scalar, tol):
    """``f(x, scalar)`` compiled with ``fullgraph=True`` (``aot_eager``) equals eager: the value and
    the gradients of ``sum(f * w)`` in ``x`` and, when it is a tensor, in ``scalar``."""
    from torch import _dynamo

    def value_and_grads(fn):
        x = x0.clone().requires_grad_(True)
        y = fn(x, scalar)
        w = torch.tensor(np.random.default_rng(8).normal(size=tuple(y.shape)), dtype=y.dtype)
        inputs = [x] + ([scalar] if isinstance(scalar, torch.Tensor) else [])
        return [y.detach()] + [g.detach() for g in torch.autograd.grad((y * w).sum(), inputs)]

    eager = value_and_grads(f)
    _dynamo.reset()
    try:
        compiled = value_and_grads(torch.compile(f, backend="aot_eager", fullgraph=True))
    finally:
        _dynamo.reset()
    assert len(compiled) == len(eager) == (3 if isinstance(scalar, torch.Tensor) else 2)
    assert float(eager[1].abs().max()) > 1e-3  # a gradient that could differ
    for c, e in zip(compiled, eager):
        np.testing.assert_allclose(c.numpy(), e.numpy(), rtol=tol, atol=tol)



@pytest.mark.parametrize("op", list(_SORT_OPS))
def test_torch_compile_fullgraph_sorting_equals_eager(op):
    """Each sorting op compiles as one graph (``fullgraph=True`` raises at any graph break),
    forward and backward, with a Python-number and a learnable (tensor) temperature; values
    and gradients (in ``x`` and the temperature) equal eager's to 1e-6 in float32. The
    rows (3 x 4 = 12 of length 7, sorted along axis 1) take the padded, batch-innermost layout.
    Also the forward alone (no input requires a gradient: the path without autograd recording),
    traced by dynamo with ``fullgraph=True``."""
    torch = _torch_or_skip()
    from torch import _dynamo

    rng = np.random.default_rng(7)
    x0 = torch.tensor(rng.normal(size=(3, 7, 4)), dtype=torch.float32)
    f = _SORT_OPS[op]

    want = f(x0, 0.4)  # first: loads the torch shim (diffopt was imported before torch)
    _dynamo.reset()
    try:
        forward = torch.compile(f, backend="eager", fullgraph=True)(x0, 0.4)
    finally:
        _dynamo.reset()
    np.testing.assert_allclose(forward.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    for temperature in (0.4, torch.tensor(0.4, requires_grad=True)):
        _assert_compiled_grads_equal(torch, f, x0, temperature, tol=1e-6)


def test_torch_compile_fullgraph_first_call_in_a_fresh_process():
    """In a fresh process (``import torch`` then diffopt), the very first diffopt call may be a
    compiled one: the torch shim is loaded at import, not imported inside the traced region
    (``torch.compile`` cannot trace an import; torch imported after diffopt: the shim loads
    on the first call, which must then be an eager one for ``fullgraph=True``)."""
    _torch_or_skip()
    code = (
        "import torch, diffopt\n"
        "from diffopt.sorting import soft_rank\n"
        "x = torch.tensor([[0.3, -1.0, 2.0, 0.5]])\n"
        "y = torch.compile(lambda v: soft_rank(v, temperature=1e-3), backend='eager', fullgraph=True)(x)\n"
        "print(y.round().tolist())\n"
    )
    assert last_line_of_a_fresh_process(code) == "[[1.0, 0.0, 3.0, 2.0]]"


_PROJECTION_OPS = {
    "projection_sort": lambda v, t: projection_sort(v, axis=1, regularization_strength=t, regularization="kl"),
    "projection_rank": lambda v, t: projection_rank(v, axis=1, regularization_strength=t, descending=True),
    "projection_topk": lambda v, t: soft_topk(v, 3, axis=1, temperature=t, relaxation="projection"),
    "relative_rank": lambda v, t: projection_rank(v, axis=1, regularization_strength=t, relative=True),
}


@pytest.mark.parametrize("op", list(_PROJECTION_OPS))
def test_torch_compile_fullgraph_projection_equals_eager(op):
    """The projection family compiles as one graph: its host isotonic solve is the custom ops
    ``diffopt::isotonic_forward`` / ``isotonic_backward`` (with fakes), inside the shim's autograd
    Function. Values and gradients (in ``x`` and a learnable strength) equal eager's, float64."""
    torch = _torch_or_skip()

    rng = np.random.default_rng(27)
    x0 = torch.tensor(rng.normal(size=(3, 7, 4)), dtype=torch.float64)
    f = _PROJECTION_OPS[op]
    for strength in (0.5, torch.tensor(0.5, dtype=torch.float64, requires_grad=True)):
        _assert_compiled_grads_equal(torch, f, x0, strength, tol=1e-12)
