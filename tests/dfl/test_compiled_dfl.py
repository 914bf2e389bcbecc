"""``torch.compile(fullgraph=True)`` of the DFL losses equals eager.

``spo_plus_loss``, ``blackbox``, ``negative_identity`` and ``regret`` around an on-device solver
compile as one graph (``fullgraph=True`` raises at any graph break; ``backend="aot_eager"``,
``dynamic=False``), in both senses; the compiled value and gradient equal the eager ones exactly
(no randomness: the same ops run in the same order).
"""

import numpy as np
import pytest

import diffopt
from diffopt import dfl

from references import torch_value_and_grad

torch = pytest.importorskip("torch")
if "torch" not in __import__("conftest").SELECTED:
    pytest.skip("torch is not among the selected backends", allow_module_level=True)

THETA = np.array([[0.3, -0.2, 0.9, 0.1, -0.5], [-0.1, 0.2, 0.15, -0.4, 0.05]])
C = np.array([[0.5, 1.2, 0.3, 0.8, 0.1], [0.9, 0.2, 0.7, 0.4, 1.1]])
W = np.random.default_rng(0).normal(size=THETA.shape)
SOLVE = diffopt.argmax_one_hot


def _argmin_one_hot(x):
    return diffopt.argmax_one_hot(-x)


def _losses(minimize):
    solver = _argmin_one_hot if minimize else SOLVE
    c, w = torch.tensor(C), torch.tensor(W)
    w_true = solver(c)
    spo = dfl.spo_plus_loss(solver, minimize=minimize)
    bb = dfl.blackbox(solver, lambd=5.0, minimize=minimize)
    ni = dfl.negative_identity(solver, minimize=minimize)
    return {
        "spo_plus_loss": lambda t: spo(t, c, w_true),
        "blackbox": lambda t: (bb(t) * w).sum(),
        "negative_identity": lambda t: (ni(t) * w).sum(),
        "regret": lambda t: (dfl.regret(solver, t, c, minimize=minimize) * (t ** 2).sum()).sum(),
    }


def _value_and_grad(f):
    return torch_value_and_grad(f, THETA)


@pytest.mark.parametrize("op", ["spo_plus_loss", "blackbox", "negative_identity", "regret"])
@pytest.mark.parametrize("minimize", [False, True])
def test_torch_compile_fullgraph_equals_eager(op, minimize):
    torch._dynamo.reset()
    f = _losses(minimize)[op]
    eager = _value_and_grad(f)
    compiled = _value_and_grad(torch.compile(f, backend="aot_eager", fullgraph=True, dynamic=False))
    assert float(eager[1].abs().max()) > 1e-3  # a gradient that could differ
    for c, e in zip(compiled, eager):
        np.testing.assert_array_equal(c.numpy(), e.numpy())
