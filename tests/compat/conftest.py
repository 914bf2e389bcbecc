"""Fixtures of the compatibility tests: each original runs on its own framework.

An original's cases run on the ``backend`` of that framework only (the TF
``perturbations`` package on tensorflow, the PyTorch port and the I-MLE
packages on torch, ``optax.perturbations`` on jax, ``differentiable_sorting``
on numpy/autograd); the others, and frameworks that are not installed or not
selected by ``DIFFOPT_TEST_BACKENDS``, are skipped.
"""

import pytest


def _only(backend, names, original):
    if backend.name not in names:
        pytest.skip(f"{original} is a {'/'.join(names)} package")
    return backend


@pytest.fixture
def tf_backend(backend):
    """The tensorflow backend (the TensorFlow ``perturbations`` package)."""
    return _only(backend, ("tensorflow",), "perturbations (TF)")


@pytest.fixture
def torch_backend(backend):
    """The torch backend (the PyTorch port, torch-imle, torch-adaptive-imle)."""
    return _only(backend, ("torch",), "this original")


@pytest.fixture
def jax_backend(backend):
    """The jax backend (``optax.perturbations``)."""
    return _only(backend, ("jax",), "optax.perturbations")


@pytest.fixture
def autograd_backend(backend):
    """numpy + HIPS autograd (``differentiable_sorting``'s own backend)."""
    return _only(backend, ("autograd",), "differentiable_sorting (autograd)")


@pytest.fixture
def numpy_like_backend(backend):
    """numpy or autograd (``differentiable_sorting``'s NumPy functions)."""
    return _only(backend, ("numpy", "autograd"), "differentiable_sorting")


# Test modules of tests/ do `from conftest import SELECTED`. Under pytest's default
# ("prepend") import mode this file, once collected, is the module named `conftest`,
# so it re-exports the names they import from tests/conftest.py (loaded from its path:
# its fixtures stay registered once, by pytest, from the original).
def _root_conftest():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("_diffopt_tests_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ROOT = _root_conftest()
SELECTED = _ROOT.SELECTED
ALL = _ROOT.ALL
