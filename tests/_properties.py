"""Shared pieces of the property-based tests (``tests/<family>/test_properties_*.py``, hypothesis).

Examples are derandomised (CI is deterministic) and few, so that each file runs in
well under a minute per backend on a busy machine. JAX compiles every new
configuration (shape, dtype, sample count: 1-2 s each there), so the tests whose
examples each compile something run :func:`check` with fewer examples on JAX.
"""

import pytest

# The test extra has hypothesis; an environment without it (tox -e sdist) skips these modules.
pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

__all__ = ["SETTINGS", "EPS", "HALF", "dtypes", "check", "given", "settings", "st"]

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
EPS = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7, "float32": 2.0 ** -23, "float64": 2.0 ** -52}
HALF = ("float16", "bfloat16")
_SLOW = {"jax": 3}  # divisor of the example count


def dtypes(backend, allowed=("float32", "float64", "float16", "bfloat16")):
    """The floating dtypes of ``allowed`` that ``backend`` makes (float64 inside its ``float64()`` scope)."""
    with backend.float64():
        return [d for d in allowed if backend.supports(d)]


def check(backend, max_examples, strategies, body):
    """Run ``body(**drawn)`` on ``max_examples`` examples of ``strategies`` (fewer where compiling is slow)."""
    n = max(4, max_examples // _SLOW.get(backend.name, 1))
    settings(SETTINGS, max_examples=n)(given(**strategies)(body))()
