"""``torch.compile(fullgraph=True)`` of the perturbed estimators equals eager.

``perturbed``, ``perturbed_max`` and ``FenchelYoungLoss`` compile as one graph (``fullgraph=True``
raises at any graph break) with the ``aot_eager`` backend, in one chunk (the samples kept for the
backward) and in several chunks with a remainder (the backward replays the noise), with normal and
Gumbel noise; for the same rng the compiled forward and gradient equal the eager ones exactly (the
compiled noise draw is the eager draw, made by the op ``diffopt::seeded_draw``).
"""

import numpy as np
import pytest

import diffopt

from references import (COMPILE_THETA as THETA, assert_compiled_equals_eager, fullgraph, last_line_of_a_fresh_process,
                        torch_for_compile_tests, torch_value_and_grad)

torch = torch_for_compile_tests()

Y = np.eye(5)[[2, 0]]
W = np.random.default_rng(0).normal(size=THETA.shape)


def _losses(noise, chunk_size, rng=3):
    kw = dict(num_samples=11, sigma=0.4, noise=noise, chunk_size=chunk_size)
    pert = diffopt.perturbed(diffopt.argmax_one_hot, control_variate="mean", **kw)
    fmax = diffopt.perturbed_max(diffopt.argmax_one_hot, **kw)
    fy = diffopt.FenchelYoungLoss(diffopt.argmax_one_hot, **kw)
    w = torch.tensor(W)
    return {
        "perturbed": lambda t, y: (pert(t, rng=rng) * w).sum(),
        "perturbed_max": lambda t, y: (fmax(t, rng=rng) * w[:, 0]).sum(),
        "FenchelYoungLoss": lambda t, y: fy(t, y, rng=rng),
    }


def _value_and_grad(f, y):
    return torch_value_and_grad(lambda t: f(t, y), THETA)


@pytest.mark.parametrize("op", ["perturbed", "perturbed_max", "FenchelYoungLoss"])
@pytest.mark.parametrize("noise", ["normal", "gumbel"])
@pytest.mark.parametrize("chunk_size", [None, 4])  # one chunk kept; 3 chunks replayed in the backward
def test_torch_compile_fullgraph_equals_eager(op, noise, chunk_size):
    f = _losses(noise, chunk_size)[op]
    y = torch.tensor(Y)
    eager = assert_compiled_equals_eager(lambda t: f(t, y))
    # another rng: other noise draws in the compiled graph too (the seed is not baked in wrongly);
    # dynamic=False: a recompile for a new int would otherwise make the seed a symbolic int
    f4 = _losses(noise, chunk_size, rng=4)[op]
    other = _value_and_grad(fullgraph(f4), y)
    np.testing.assert_array_equal(other[1].numpy(), _value_and_grad(f4, y)[1].numpy())
    assert not np.array_equal(other[1].numpy(), eager[1].numpy())


def test_torch_compile_fullgraph_perturbed_first_call_in_a_fresh_process():
    """The very first call of a fresh process may be the compiled one: every array function the
    pipeline uses is resolved by the torch shim, none is imported while tracing."""
    code = (
        "import torch, diffopt\n"
        "op = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=64, sigma=1e-3)\n"
        "t = torch.tensor([[0.3, -1.0, 2.0, 0.5]], requires_grad=True)\n"
        "f = torch.compile(lambda v: (op(v, rng=0) * torch.arange(4.0)).sum(), backend='aot_eager', fullgraph=True)\n"
        "v = f(t)\n"
        "v.backward()\n"
        "print(float(v), bool(torch.isfinite(t.grad).all()))\n"
    )
    assert last_line_of_a_fresh_process(code) == "2.0 True"


@pytest.mark.parametrize("op", ["perturbed", "FenchelYoungLoss"])
def test_torch_compile_fullgraph_with_a_changing_seed_and_default_dynamic(op):
    """The seed as an argument of the compiled function, changing between calls, with torch.compile's
    default ``dynamic`` (which makes an int that changed a symbolic int): the torch shim specialises
    it (one graph per seed), so each call still equals its eager run, value and gradient."""
    import torch._dynamo

    y = torch.tensor(Y)
    torch._dynamo.reset()
    compiled = torch.compile(_losses_fn(op), backend="aot_eager", fullgraph=True)
    grads = []
    for seed in (3, 4, 5):
        want = _value_and_grad(lambda t, y: _losses_fn(op)(t, y, seed), y)
        got = _value_and_grad(lambda t, y: compiled(t, y, seed), y)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g.numpy(), w.numpy())
        grads.append(want[1].numpy())
    assert not np.array_equal(grads[0], grads[1])  # the seed matters: the graphs are not one


_OPS = {}


def _losses_fn(op):
    """``loss(t, y, seed)`` of one estimator object (built once: the compiled function closes over it)."""
    if op not in _OPS:
        kw = dict(num_samples=11, sigma=0.4, noise="gumbel", chunk_size=4)
        est = (diffopt.perturbed(diffopt.argmax_one_hot, control_variate="mean", **kw) if op == "perturbed"
               else diffopt.FenchelYoungLoss(diffopt.argmax_one_hot, **kw))
        w = torch.tensor(W)
        _OPS[op] = ((lambda t, y, seed: (est(t, rng=seed) * w).sum()) if op == "perturbed"
                    else (lambda t, y, seed: est(t, y, rng=seed)))
    return _OPS[op]
