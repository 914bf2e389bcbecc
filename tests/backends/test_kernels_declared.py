"""Declared kernels: shims provide only kernels their families declare, under the declared
names and parameters; asking for an undeclared name is an error; soft_sort chooses its
implementation in one function; the numba kernel's relaxations are the generic ones; the
contract's docs section is generated from the code.
"""

import importlib
import math
import pathlib
import types

import numpy as np
import pytest

from diffopt import _kernels as sample_kernels
from diffopt import _ops, backends
from diffopt.backends import _contract
from diffopt.sorting import _kernels as sorting_kernels
from diffopt.sorting import _relax, _soft

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "backends.md"


def _loaded_shims():
    out = []
    for name, path in backends.SHIMS.items():
        try:
            out.append((name, importlib.import_module(path)))
        except ImportError:  # a framework not installed here (CuPy): checked statically elsewhere
            continue
    return out


def test_every_shim_kernel_is_declared_with_its_parameters():
    declared = _contract.declared_kernels()
    assert set(declared) == sorting_kernels.NAMES | sample_kernels.NAMES
    seen = set()
    for name, shim in _loaded_shims():
        table = getattr(shim, "KERNELS", {})
        assert set(table) <= set(declared), (name, set(table) - set(declared))
        assert _contract.check_shim(shim, name) == []
        # OPS holds translations only: no kernel name in it
        assert not set(shim.OPS) & set(declared), (name, set(shim.OPS) & set(declared))
        seen |= set(table)
    # every kernel that diffopt's shims provide is used by a family: none left undeclared, and the
    # ones provided here are a real part of the declarations
    assert {"sorting_fused", "promote_float"} <= seen


def test_check_shim_refuses_an_undeclared_or_misshapen_kernel():
    shim = types.ModuleType("kernels_shim")
    numpy_shim = backends.load("numpy")
    for attr in ("NAME", "OPS", *[n for n in _contract.REQUIRED if n not in ("NAME", "OPS")]):
        setattr(shim, attr, getattr(numpy_shim, attr))
    assert _contract.check_shim(shim, "numpy") == []
    shim.KERNELS = {"sorting_pul": lambda t, weights, layers: None}  # a typo
    assert any("KERNELS['sorting_pul'] is not a declared kernel" in p for p in _contract.check_shim(shim, "numpy"))
    shim.KERNELS = {"sorting_pull": lambda t, w: None}  # wrong parameters
    assert any(p.startswith("KERNELS['sorting_pull']") for p in _contract.check_shim(shim, "numpy"))
    shim.KERNELS = {"sum_samples": 3}
    assert "KERNELS['sum_samples'] is not callable" in _contract.check_shim(shim, "numpy")


def test_asking_for_an_undeclared_kernel_is_an_error():
    xp = _ops.namespace(np.zeros(3))
    assert sorting_kernels.kernel("sorting_fused", xp) is backends.kernels("numpy").get("sorting_fused")
    assert sorting_kernels.kernel("sorting_pull", xp) is None  # declared, not provided: the generic path
    with pytest.raises(ValueError, match="'sorting_pul' is not a kernel declared"):
        sorting_kernels.kernel("sorting_pul", xp)
    with pytest.raises(ValueError, match="'sum_sample' is not a kernel declared"):
        _ops.kernel("sum_sample", np.zeros(3))
    assert _ops.kernel("sum_samples", np.zeros(3)) is None
    with pytest.raises(ValueError, match="not a kernel declared"):  # a sorting kernel is not the core's
        _ops.kernel("sorting_fused", np.zeros(3))


# ---------------------------------------------------------------- soft_sort's one choice


def _choice(backend, rows, learnable=False, relaxation="logsumexp"):
    shim = backends.get_backend(rows)
    xp = _ops.namespace(shim.NAME)
    temperature = backend.asarray(np.array(0.5), "float32") if learnable else 0.5
    f = _soft.soft_sort_function(shim, xp, rows, temperature, relaxation, learnable)
    n = int(rows.shape[1])
    if f is _soft.sorter(shim, n, relaxation, learnable):
        return "generic"
    run = backends.kernels(shim.NAME).get("sorting_network")
    if run is not None and f is _soft._looped_sorter(shim, run, backends.kernels(shim.NAME)["sorting_network_pull"],
                                                      n, relaxation, learnable):
        return "looped"
    return "fused"


def test_soft_sort_chooses_its_implementation_in_one_place(backend, monkeypatch):
    from diffopt.backends.numpy import _fused

    rows = backend.asarray(np.random.default_rng(0).normal(size=(3, 6)), "float32")
    expected = {"jax": "looped", "tensorflow": "generic", "cupy": "generic"}.get(backend.name, "fused")
    if expected == "fused" and _fused.kernels() is None:
        expected = "generic"  # numba missing: the generic network
    assert _choice(backend, rows) == expected
    # a learnable temperature needs the temperature's gradient: never the fused kernel
    assert _choice(backend, rows, learnable=True) == ("looped" if backend.name == "jax" else "generic")
    # the numba switch turns the fused kernel off: the generic network (looped on JAX)
    monkeypatch.setenv(_fused.ENV, "0")
    assert _choice(backend, rows) == ("looped" if backend.name == "jax" else "generic")


# ------------------------------------------- the numba kernel's relaxations are _relax's, value for value


def _numba():
    from diffopt.backends.numpy import _fused

    kern = _fused.kernels()
    if kern is None:
        pytest.skip("numba is not installed (or DIFFOPT_NUMBA is off)")
    return kern


GAPS = np.concatenate([np.linspace(0.0, 3.0, 61), [0.2499, 0.25, 0.2501, 7.5, 40.0, 1e3, 1e8]])


@pytest.mark.parametrize("relaxation", ["logistic", "cauchy", "reciprocal", "optimal"])
def test_numba_relaxation_terms_equal_the_generic_definitions(relaxation):
    """For every gap v >= 0 of a grid: the numba kernel's ``(shift, slope)`` equal _relax's
    (``RELAXATIONS[r](v, numpy)``), and both slopes are the derivative of _relax's shift
    (central differences where the shift is smooth)."""
    kern = _numba()
    terms = getattr(kern, f"_{relaxation}")
    xp = _ops.namespace("numpy")
    for v in GAPS:
        shift, slope, _ = _relax.RELAXATIONS[relaxation](np.float64(v), xp)
        k_shift, k_slope = terms(np.float64(v))
        assert math.isclose(k_shift, shift, rel_tol=1e-14, abs_tol=1e-300), (v, k_shift, shift)
        assert math.isclose(k_slope, slope, rel_tol=1e-12, abs_tol=1e-15), (v, k_slope, slope)
        if 1e-3 < v < 10 and abs(v - 0.25) > 1e-3:
            h = 1e-6
            fd = (_relax.RELAXATIONS[relaxation](np.float64(v + h), xp)[0]
                  - _relax.RELAXATIONS[relaxation](np.float64(v - h), xp)[0]) / (2 * h)
            assert math.isclose(float(slope), fd, rel_tol=1e-6, abs_tol=1e-8), (v, slope, fd)


PAIRS = [(a, b) for a in (-2.0, -0.3, 0.0, 0.1, 1.7) for b in (-1.9, -0.3, 0.05, 2.5, 40.0)] + [
    (np.inf, 1.0), (1.0, -np.inf), (np.inf, np.inf), (np.nan, 1.0)]


@pytest.mark.parametrize("relaxation", ["logsumexp", "logistic", "cauchy", "reciprocal", "optimal", None])
@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_numba_comparator_equals_the_generic_comparator(relaxation, temperature):
    """One comparator on a grid of input pairs, both directions: the numba kernel's outputs and its
    weight ``q = d first output / d first input`` equal the generic compare-and-swap of
    :mod:`diffopt.sorting._soft` (``'slope'`` weights; a descending comparator is the ascending one
    on negated inputs, as the generic network runs it). ``'logsumexp'`` goes through the kernel's
    polynomial ``exp``/``log`` (to about an ulp) and takes finite inputs (the network moves
    infinities onto sentinels first)."""
    kern = _numba()
    cswap = {"logsumexp": kern._lse, None: kern._exact}.get(relaxation)
    if cswap is None:
        cswap = kern._mixing(getattr(kern, f"_{relaxation}"))
    xp = _ops.namespace("numpy")
    pairs = [p for p in PAIRS if relaxation != "logsumexp" or np.isfinite(p).all()]
    t = np.float64(temperature)
    for a, b in pairs:
        for desc in (False, True):
            sign = -1.0 if desc else 1.0
            with np.errstate(invalid="ignore"):  # inf - inf: an exact comparator, as in the network
                lo, hi, w = _soft._cswap(np.array([sign * a]), np.array([sign * b]), relaxation, temperature,
                                         "slope", xp)
                got = cswap(np.float64(a), np.float64(b), t, 1.0 / t, desc)
            want = (sign * lo[0], sign * hi[0], w[0])
            if np.isnan(a) or np.isnan(b):
                assert np.isnan(got[0]) and np.isnan(got[1])
                continue
            np.testing.assert_allclose(got[:2], want[:2], rtol=4e-16, atol=1e-15, err_msg=f"{(a, b, desc)}")
            np.testing.assert_allclose(got[2], want[2], rtol=1e-13, atol=1e-15, err_msg=f"{(a, b, desc)}")


# -------------------------------------------------------------- the contract's docs section


def test_the_backends_page_holds_the_contract_generated_from_the_code():
    page = DOCS.read_text(encoding="utf-8")
    assert page.count(_contract.DOC_BEGIN) == 1 and page.count(_contract.DOC_END) == 1
    section = page[page.index(_contract.DOC_BEGIN): page.index(_contract.DOC_END) + len(_contract.DOC_END)]
    assert section == _contract.markdown(), (
        "docs/backends.md is out of date: run python -c \"from diffopt.backends import _contract; "
        "_contract.update_page('docs/backends.md')\"")
    # the generated text does say what the code says
    for name in [*_contract.REQUIRED, *_contract.OPTIONAL, *_contract.declared_kernels()]:
        assert f"- `{name}" in section, name
    assert "## Shim contract" in section
