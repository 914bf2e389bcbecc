"""``torch.compile(fullgraph=True)`` of the exact solvers (``ranking``, ``top_k_mask``) equals eager.

They go through the bound namespace and the shim's declared ``stable_argsort`` kernel, so no
autoray function is imported while tracing: the very first diffopt call of a fresh process may
be a compiled one.
"""

import numpy as np
import pytest

import diffopt

from references import fullgraph, last_line_of_a_fresh_process, torch_for_compile_tests

torch = torch_for_compile_tests()

# ties (0.3 three times) and a second row: a stable order is visible
X = np.array([[0.3, -1.0, 2.0, 0.3, 0.3], [1.0, 1.0, 0.0, 2.0, 1.0]], dtype=np.float32)


@pytest.mark.parametrize("op", ["ranking", "top_k_mask"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_torch_compile_fullgraph_solver_equals_eager_and_numpy(op, axis):
    f = (lambda v: diffopt.ranking(v, axis=axis)) if op == "ranking" else (lambda v: diffopt.top_k_mask(v, 2, axis=axis))
    x = torch.tensor(X)
    eager = f(x)  # first: loads the torch shim (the tests import diffopt before torch)
    compiled = fullgraph(f)(x)
    assert compiled.dtype == torch.float32
    np.testing.assert_array_equal(compiled.numpy(), eager.numpy())
    np.testing.assert_array_equal(compiled.numpy(), f(X))  # NumPy's stable sort: the same tie order


def test_torch_compile_fullgraph_ranking_first_call_in_a_fresh_process():
    code = (
        "import torch, diffopt\n"
        "x = torch.tensor([[0.3, -1.0, 2.0, 0.3]])\n"
        "print(torch.compile(diffopt.ranking, fullgraph=True, backend='aot_eager')(x).tolist())\n"
    )
    assert last_line_of_a_fresh_process(code) == "[[1.0, 0.0, 3.0, 2.0]]"
