"""torch's random streams under ``torch.compile(fullgraph=True)`` draw the eager numbers.

Every draw of a :class:`diffopt.backends.torch.TorchRng` while compiling is the op
``diffopt::seeded_draw``, which seeds a generator inside and replays the stream's earlier draws: a
sequence of normal, gamma and uniform draws (and a child stream's) compiles as one graph and equals
the eager sequence exactly.
"""

import numpy as np
import pytest

from references import fullgraph, torch_for_compile_tests

torch = torch_for_compile_tests()

from diffopt.backends.torch import TorchRng  # noqa: E402  (after the skip: torch is selected)


def _draws(x):
    stream = TorchRng(5, x)
    first = stream.normal((2, 3), "float64")
    gamma = stream.gamma((4,), 0.7, "float32")
    uniform = stream.uniform((3,), "float64")
    again = stream.normal((2, 3), "float64")
    child = stream.fold(2).gamma((3,), 2.5, "float64")
    return first, gamma, uniform, again, child


def test_torch_compile_fullgraph_stream_draws_equal_eager():
    x = torch.zeros(2, dtype=torch.float64)
    eager = _draws(x)
    compiled = fullgraph(_draws)(x)
    for c, e in zip(compiled, eager):
        assert c.dtype == e.dtype
        np.testing.assert_array_equal(c.numpy(), e.numpy())
    assert not np.array_equal(eager[0].numpy(), eager[3].numpy())  # a later draw is not the first again
    assert (eager[1].numpy() > 0).all() and (eager[4].numpy() > 0).all()  # gamma draws
