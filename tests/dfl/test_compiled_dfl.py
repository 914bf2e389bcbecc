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

from references import COMPILE_THETA as THETA, assert_compiled_equals_eager, torch_for_compile_tests

torch = torch_for_compile_tests()

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


@pytest.mark.parametrize("op", ["spo_plus_loss", "blackbox", "negative_identity", "regret"])
@pytest.mark.parametrize("minimize", [False, True])
def test_torch_compile_fullgraph_equals_eager(op, minimize):
    assert_compiled_equals_eager(_losses(minimize)[op])
