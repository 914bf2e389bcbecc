"""The shim contract (diffopt.backends._contract): every shim conforms, and a new backend is one module."""

import importlib
import importlib.util
import pathlib
import sys
import types

import numpy as np
import pytest

import diffopt
from diffopt import backends
from diffopt.backends import _contract

SHIM_DIR = pathlib.Path(backends.__file__).parent


def _shim_source(name):
    """A shim's source, read without importing it: ``<name>.py``, or ``<name>/__init__.py``
    for a framework whose shim is a package (its kernels beside it)."""
    single = SHIM_DIR / f"{name}.py"
    return (single if single.exists() else SHIM_DIR / name / "__init__.py").read_text()


@pytest.mark.parametrize("name", list(backends.SHIMS))
def test_every_shim_satisfies_the_contract(name):
    # the module itself, imported directly (autograd's is not NumPy's); statically when absent
    source = _shim_source(name)
    assert _contract.check_source(source) == []
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed: checked statically")
    try:
        module = importlib.import_module(backends.SHIMS[name])
    except ImportError as err:  # e.g. CuPy installed without a CUDA driver
        pytest.skip(f"{name} shim does not import here ({err}): checked statically")
    assert module.NAME == name and module.__name__ == f"diffopt.backends.{name}"
    assert _contract.check_shim(module, name) == []
    assert isinstance(module, _contract.Shim)


def test_contract_catches_missing_and_misshapen_names():
    source = _shim_source("numpy")
    broken = source.replace("def to_numpy(x):", "def to_numpy_(x):").replace(
        "def host_call(fn, x, out_shape, out_dtype):", "def host_call(fn, x):")
    problems = _contract.check_source(broken)
    assert "missing to_numpy" in problems
    assert any(p.startswith("host_call") for p in problems)
    module = types.ModuleType("half_shim")
    module.NAME, module.OPS = "half", {}
    assert "missing custom_vjp" in _contract.check_shim(module, "half")


def test_a_shim_breaking_the_contract_is_refused_with_its_problems(monkeypatch):
    module = types.ModuleType("half_shim")
    module.NAME, module.OPS = "half", {}
    monkeypatch.setitem(sys.modules, "half_shim", module)
    monkeypatch.setitem(backends.SHIMS, "half", "half_shim")
    with pytest.raises(TypeError, match="missing custom_vjp"):
        backends.load("half")


def test_a_new_backend_is_one_module_plus_its_registration(monkeypatch):
    da = pytest.importorskip("dask.array")
    monkeypatch.setattr(backends, "_SHIMS", dict(backends._SHIMS))  # forget the registration afterwards
    monkeypatch.setitem(backends.SHIMS, "dask", "tiny_backend")
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parent))
    rs = np.random.RandomState(3)
    x_np = rs.randn(3, 6)
    x = da.from_array(x_np)
    assert backends.get_backend(x).NAME == "dask"
    checks = [
        lambda v: diffopt.sorting.soft_sort(v, temperature=0.5),
        lambda v: diffopt.sorting.soft_rank(v, temperature=0.5),
        lambda v: diffopt.argmax_one_hot(v),
        lambda v: diffopt.perturbed(diffopt.argmax_one_hot, num_samples=50, sigma=0.5)(v, rng=4),
    ]
    for op in checks:
        out = op(x)
        assert isinstance(out, da.Array)
        np.testing.assert_allclose(np.asarray(out.compute()), op(x_np), rtol=1e-12, atol=1e-12)
