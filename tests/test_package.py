"""The package as users install it: one version source, a typed public API, the py.typed marker."""

import importlib
import inspect
import os
import re
import typing

import autoray as ar
import numpy as np
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
        installed = version("pydiffopt")  # the distribution name; the import name is diffopt
    except PackageNotFoundError:
        pytest.skip("diffopt runs from a checkout, not installed as pydiffopt: no metadata to compare")
    assert installed == diffopt.__version__


def test_pyproject_names_the_distribution_pydiffopt():
    """The index's "diffopt" is another project: ours is published as pydiffopt, imported as diffopt."""
    import tomllib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "pyproject.toml")
    if not os.path.isfile(path):
        pytest.skip("no pyproject.toml beside the tests (an installed copy of the tests)")
    with open(path, "rb") as f:
        project = tomllib.load(f)["project"]
    from diffopt._demo import runner

    assert project["name"] == runner.DISTRIBUTION == "pydiffopt"
    assert project["description"].startswith(runner.SUMMARY_START)


class _Dist:
    def __init__(self, name, version, summary):
        self.metadata = {"Name": name, "Summary": summary}
        self.version = version


def _fake_metadata(monkeypatch, dists, mapping):
    """``importlib.metadata`` seeing only ``dists`` (name -> _Dist) and ``packages_distributions`` = mapping."""
    import importlib.metadata as md

    def distribution(name):
        if name not in dists:
            raise md.PackageNotFoundError(name)
        return dists[name]

    monkeypatch.setattr(md, "distribution", distribution)
    monkeypatch.setattr(md, "packages_distributions", lambda: mapping)


OURS = _Dist("pydiffopt", "0.1.0", "Differentiable discrete solvers and sorting for NumPy, PyTorch, JAX, ...")
OTHER = _Dist("diffopt", "2.0.0", "Parallelization and optimization of Jax models")


def test_info_names_the_distribution(monkeypatch):
    from diffopt._demo import runner

    _fake_metadata(monkeypatch, {"pydiffopt": OURS}, {"diffopt": ["pydiffopt"]})
    assert runner.distribution_lines() == ["distribution: pydiffopt 0.1.0"]
    assert runner.info_lines(list_devices=False)[1] == "distribution: pydiffopt 0.1.0"


def test_info_warns_about_the_unrelated_diffopt(monkeypatch):
    from diffopt._demo import runner

    _fake_metadata(monkeypatch, {"pydiffopt": OURS, "diffopt": OTHER}, {"diffopt": ["pydiffopt", "diffopt"]})
    first, warning = runner.distribution_lines()
    assert first == "distribution: pydiffopt 0.1.0"
    assert warning.startswith("WARNING: the distribution 'diffopt' 2.0.0 is installed too: an unrelated project")
    assert "pip uninstall diffopt pydiffopt; pip install pydiffopt" in warning
    # found by name even when packages_distributions does not map the import name to it
    _fake_metadata(monkeypatch, {"pydiffopt": OURS, "diffopt": OTHER}, {"diffopt": ["pydiffopt"]})
    assert len(runner.distribution_lines()) == 2
    # the unrelated project alone: no distribution of ours, and the warning
    _fake_metadata(monkeypatch, {"diffopt": OTHER}, {"diffopt": ["diffopt"]})
    first, warning = runner.distribution_lines()
    assert first.startswith("distribution: none (pydiffopt is not installed") and "WARNING" in warning


def test_info_from_a_checkout_and_under_the_former_name(monkeypatch):
    from diffopt._demo import runner

    _fake_metadata(monkeypatch, {}, {})
    (line,) = runner.distribution_lines()
    assert line == f"distribution: none (pydiffopt is not installed; diffopt imported from {PACKAGE})"
    former = _Dist("diffopt", "0.1.0", OURS.metadata["Summary"])
    _fake_metadata(monkeypatch, {"diffopt": former}, {"diffopt": ["diffopt"]})
    assert runner.distribution_lines() == [
        "distribution: diffopt 0.1.0 (this project's former name: reinstall as pydiffopt)"]
    _fake_metadata(monkeypatch, {"diffopt": former, "pydiffopt": OURS}, {"diffopt": ["diffopt", "pydiffopt"]})
    first, warning = runner.distribution_lines()
    assert first == ("distribution: pydiffopt 0.1.0, diffopt 0.1.0 (this project's former name: reinstall as "
                     "pydiffopt)")
    assert warning == ("WARNING: this project is installed twice, as pydiffopt and diffopt, into the one folder "
                       "diffopt/; keep one: pip uninstall diffopt")



# ----------------------------------------------------------------------------- the import graph

PACKAGE = os.path.dirname(os.path.abspath(diffopt.__file__))


def _module_files():
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                found[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return found


def _imports_at_import_time(module, path, modules, anywhere=False):
    """The diffopt modules ``module`` imports when it is imported (module level, ``if``/``try``
    bodies included, ``TYPE_CHECKING`` blocks and imports inside functions excluded); with
    ``anywhere``, every import of its source (inside functions too: at call time)."""
    import ast

    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()

    def visit(body):
        for node in body:
            if anywhere and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(node.body)
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.dump(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)

    with open(path, encoding="utf-8") as f:
        visit(ast.parse(f.read()).body)
    return {m for m in found if m in modules and m != module}


def _import_graph(anywhere=False):
    modules = _module_files()
    return {m: _imports_at_import_time(m, p, modules, anywhere) for m, p in modules.items()}


def test_import_graph_has_no_cycle():
    """No module of diffopt imports, directly or not, a module that imports it back (a static scan)."""
    graph = _import_graph()
    assert sum(map(len, graph.values())) > 100  # the scan sees the package's imports
    state, path, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_backends_import_nothing_above_them_but_leaves():
    """The shims sit below the core: outside ``diffopt.backends`` they import only modules that
    import no other part of diffopt (dtype rules, type aliases), never the core that calls them."""
    graph = _import_graph()
    up = {m: sorted(t for t in targets if not t.startswith("diffopt.backends"))
          for m, targets in graph.items() if m.startswith("diffopt.backends")}
    assert any(up.values())  # the scan sees e.g. diffopt.backends._rng -> diffopt._dtypes
    assert {m: [t for t in ts if graph[t]] for m, ts in up.items() if any(graph[t] for t in ts)} == {}


def test_backends_import_no_family_even_at_call_time():
    """Not even inside a function does a module of ``diffopt.backends`` import the core or a family
    that sits above it (the kernel declarations register with the contract instead): outside
    ``diffopt.backends`` its imports, at any time, are leaf modules."""
    at_import, anywhere = _import_graph(), _import_graph(anywhere=True)
    assert sum(map(len, anywhere.values())) > sum(map(len, at_import.values()))  # it sees more
    up = {m: sorted(t for t in targets if not t.startswith("diffopt.backends") and at_import[t])
          for m, targets in anywhere.items() if m.startswith("diffopt.backends")}
    assert {m: ts for m, ts in up.items() if ts} == {}


# ----------------------------------------------------------------------------- top-level names

SORTING_NAMES = ("soft_sort", "soft_rank", "soft_topk", "soft_permutation", "soft_argsort")


def test_soft_sorting_is_at_the_top_level():
    from diffopt import sorting

    for name in SORTING_NAMES:
        assert getattr(diffopt, name) is getattr(sorting, name), name
        assert name in diffopt.__all__ and name in sorting.__all__, name


def test_imle_package_is_callable_and_keeps_its_attributes():
    import types

    import diffopt.imle.aimle  # noqa: F401  (importing the drop-in submodules changes nothing)
    import diffopt.imle.imle  # noqa: F401
    from diffopt.imle import wrapper

    assert isinstance(diffopt.imle, types.ModuleType) and callable(diffopt.imle)
    assert diffopt.imle.imle is wrapper.imle and diffopt.imle.aimle is wrapper.aimle
    assert diffopt.imle.ste is wrapper.ste
    assert type(diffopt.sorting) is types.ModuleType  # only diffopt.imle's class changed
    import pickle

    assert pickle.loads(pickle.dumps(diffopt.imle.imle)) is wrapper.imle


THETA = np.array([[0.5, 2.0, -1.0, 1.0], [1.5, -0.5, 0.25, 0.75]])
WEIGHTS = np.array([1.0, -2.0, 0.5, 3.0])


def test_calling_diffopt_imle_is_diffopt_imle_imle(grad_backend):
    """Same values and gradients, as a call and as a decorator, with the same seeded noise."""
    from diffopt.imle import SumOfGammaNoiseDistribution, TargetDistribution

    def top2(t):
        return diffopt.top_k_mask(t, 2)

    options = dict(target_distribution=TargetDistribution(alpha=1.0, beta=10.0), nb_samples=4,
                   noise_distribution=SumOfGammaNoiseDistribution(k=2, nb_iterations=10))
    weights = grad_backend.asarray(np.tile(WEIGHTS, (8, 1)), "float32")
    theta = grad_backend.asarray(THETA, "float32")
    made = [diffopt.imle(top2, **options), diffopt.imle.imle(top2, **options), diffopt.imle(**options)(top2)]

    def loss(solver):
        return lambda t: ar.do("sum", solver(t, rng=3) * weights)

    values = [grad_backend.to_numpy(solver(theta, rng=3)) for solver in made]
    grads = [grad_backend.to_numpy(grad_backend.grad(loss(solver), theta)) for solver in made]
    assert values[0].shape == (8, 4) and np.all(values[0].sum(-1) == 2)
    assert np.any(grads[0] != 0)  # the comparison below compares real gradients
    for value, g in zip(values[1:], grads[1:]):
        np.testing.assert_array_equal(value, values[0])
        np.testing.assert_array_equal(g, grads[0])
