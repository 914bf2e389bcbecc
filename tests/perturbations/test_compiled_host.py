"""``torch.compile(fullgraph=True)`` with a :func:`diffopt.host_solver` equals eager.

While ``torch.compile`` traces, a host solver is one op, ``diffopt::host_solve``: the host code
runs in the op (the eager call) and in its fake (the output shape, declared or probed), never under
dynamo, so the graph does not break (``fullgraph=True`` raises at any break; ``backend="aot_eager"``,
``dynamic=False``). The compiled forward and gradient equal the eager ones exactly, for the
perturbed estimators, ``imle`` and a DFL loss around host solvers: vectorized or not, with an extra
argument, with a declared output shape.
"""

import numpy as np
import pytest

import diffopt
from diffopt import dfl
from diffopt import imle as I

from references import COMPILE_THETA as THETA, assert_compiled_equals_eager, fullgraph, torch_for_compile_tests

torch = torch_for_compile_tests()

Y = np.eye(5)[[2, 0]]
W = np.random.default_rng(0).normal(size=THETA.shape)
C = np.array([[0.5, 1.2, 0.3, 0.8, 0.1], [0.9, 0.2, 0.7, 0.4, 1.1]])


def _one_hot(a):
    return np.eye(a.shape[-1])[np.argmax(a, -1)]


def _top_k(a, k):
    out = np.zeros_like(a)
    np.put_along_axis(out, np.argsort(-a, -1)[..., :k], 1.0, -1)
    return out


def _one_hot_row(row):
    return np.eye(row.shape[-1])[np.argmax(row)]


ARGMAX = diffopt.host_solver(_one_hot)
ROWWISE = diffopt.host_solver(_one_hot_row, vectorized=False)
TOP2 = diffopt.host_solver(_top_k, output_shape=lambda shape: shape)


def _losses(rng):
    w = torch.tensor(W)
    pert = diffopt.perturbed(ARGMAX, num_samples=7, sigma=0.4, chunk_size=3)
    rows = diffopt.perturbed(ROWWISE, num_samples=5, sigma=0.4)
    fy = diffopt.FenchelYoungLoss(ARGMAX, num_samples=6, sigma=0.4)
    top2 = diffopt.perturbed(TOP2, num_samples=5, sigma=0.4)
    im = I.imle(ARGMAX, target_distribution=I.TargetDistribution(beta=10.0), nb_samples=2)
    spo = dfl.spo_plus_loss(ARGMAX, minimize=False)
    c = torch.tensor(C)
    return {
        "perturbed": lambda t: (pert(t, rng=rng) * w).sum(),
        "perturbed_rowwise": lambda t: (rows(t, rng=rng) * w).sum(),
        "perturbed_extra_argument": lambda t: (top2(t, 2, rng=rng) * w).sum(),
        "FenchelYoungLoss": lambda t: fy(t, torch.tensor(Y), rng=rng),
        "imle": lambda t: (im(t, rng=rng) * w.repeat_interleave(2, 0)).sum(),
        "spo_plus_loss": lambda t: spo(t, c, torch.tensor(_one_hot(C))),
    }


@pytest.mark.parametrize("op", ["perturbed", "perturbed_rowwise", "perturbed_extra_argument", "FenchelYoungLoss",
                                "imle", "spo_plus_loss"])
def test_torch_compile_fullgraph_host_solver_equals_eager(op):
    for rng in (3, 4):  # two seeds: two compiled graphs, each equal to its eager run
        assert_compiled_equals_eager(_losses(rng)[op])


def test_torch_compile_host_solver_result_has_the_solver_values():
    """The op returns the host solver's values, in the input's dtype (float32 here)."""
    f = fullgraph(lambda t: TOP2(t * 2.0, 2))
    t = torch.tensor(THETA, dtype=torch.float32)
    out = f(t)
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), _top_k(THETA * 2.0, 2))


def test_torch_compile_host_solver_result_carries_no_gradient():
    """Called directly on a tensor that requires a gradient, the compiled solver result is a
    constant, as eager's: the gradient of ``<solver(t), t>`` is ``solver(t)``."""
    def f(t):
        return (TOP2(t, 2) * t).sum()

    t = torch.tensor(THETA, requires_grad=True)
    (compiled,) = torch.autograd.grad(fullgraph(f)(t), t)
    np.testing.assert_array_equal(compiled.numpy(), _top_k(THETA, 2))
