"""The package as users install it: one version source, a typed public API, the py.typed marker."""

import importlib
import inspect
import os
import re
import typing

import pytest

import diffopt

PUBLIC_MODULES = [
    "diffopt", "diffopt.host", "diffopt.noise", "diffopt.random", "diffopt.solvers",
    "diffopt.perturbations", "diffopt.imle", "diffopt.imle.noise", "diffopt.imle.target",
    "diffopt.imle.wrapper", "diffopt.sorting", "diffopt.backends",
]


def _public_callables():
    seen = {}
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if inspect.isclass(obj):
                for key, member in vars(obj).items():
                    if inspect.isfunction(member) and (not key.startswith("_") or key in ("__init__", "__call__")):
                        seen[f"{obj.__module__}.{member.__qualname__}"] = member
            elif inspect.isfunction(obj):
                seen[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return seen


def test_every_public_function_has_resolvable_annotations():
    missing = {}
    for name, fn in _public_callables().items():
        hints = typing.get_type_hints(fn)  # NameError here: an annotation names something not imported
        params = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]
        lacking = [p for p in params if p not in hints] + ([] if "return" in hints else ["return"])
        if lacking:
            missing[name] = lacking
    assert not missing, f"unannotated parameters/returns: {missing}"
    assert len(_public_callables()) > 60  # the walk found the API, not an empty list


def test_every_public_name_has_an_examples_section():
    # Functions and classes in the public modules' __all__ (a class's example is in its docstring).
    names = {}
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                names[f"{obj.__module__}.{obj.__qualname__}"] = obj
    lacking = sorted(n for n, obj in names.items() if not re.search(r"^\s*Examples\n\s*-{8}", obj.__doc__ or "", re.M))
    assert not lacking, f"{len(lacking)} of {len(names)} public names have no Examples section: {lacking}"
    assert len(names) > 60  # the walk found the API


def test_py_typed_marker_ships_with_the_package():
    assert os.path.isfile(os.path.join(os.path.dirname(diffopt.__file__), "py.typed"))


def test_version_has_one_source():
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("diffopt")
    except PackageNotFoundError:
        pytest.skip("diffopt runs from a checkout, not installed: no metadata to compare")
    assert installed == diffopt.__version__

