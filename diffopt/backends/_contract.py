"""The shim contract as code: what every ``diffopt/backends/<framework>.py`` exposes.

:class:`Shim` lists the names (a :class:`typing.Protocol` a shim *module*
satisfies); :func:`check_shim` checks a loaded module against it, and
:func:`check_source` checks a shim's source without importing its framework
(for a framework that is not installed, e.g. CuPy without a GPU). Both are
run on every shim by the tests.

Adding a backend
----------------
1. Write one module, e.g. ``mypkg/diffopt_shim.py``, defining every name of
   :class:`Shim` (``forward_only`` and the loops of
   :mod:`diffopt.backends._common` serve a framework without autodiff;
   :class:`diffopt.backends._rng.GeneratorRng` one whose module has a NumPy-like
   ``random.default_rng``).
2. Register it: ``diffopt.backends.register("myframework", "mypkg.diffopt_shim")``,
   where ``myframework`` is the name :func:`autoray.infer_backend` gives its
   arrays. The core then finds it for those arrays; nothing else changes.
   diffopt's own shims are the entries of ``diffopt.backends.SHIMS``.
"""

import ast
import inspect
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

__all__ = ["Shim", "REQUIRED", "OPTIONAL", "check_shim", "check_source"]


@runtime_checkable
class Shim(Protocol):
    """The names a shim module defines (see :mod:`diffopt.backends` for their meaning)."""

    NAME: str
    OPS: Mapping[str, Callable[..., Any]]

    def custom_vjp(self, fwd, bwd, jit=False, second_order=False):
        """A natively differentiable ``f(*arrays)`` from the pure pair ``fwd``/``bwd``."""

    def host_call(self, fn, x, out_shape, out_dtype):
        """``fn`` (NumPy) on ``x`` outside the graph; the result in ``x``'s framework and device."""

    def make_rng(self, rng, like):
        """``rng=`` normalised into a :class:`diffopt.random.Rng` for ``like``."""

    def is_symbolic(self, x):
        """Whether ``x`` is being traced (values unknown to Python)."""

    def to_numpy(self, x):
        """A NumPy copy of a concrete array."""

    def from_numpy(self, a, like):
        """The NumPy array ``a`` as an array of ``like``'s framework, on its device."""

    def fori_loop(self, lower, upper, body, carry):
        """``carry = body(i, carry)`` over ``range(lower, upper)``."""

    def map_leading(self, fn, leaves, size):
        """``fn`` on each leading-axis slice of the tuple ``leaves``, results stacked."""


def _parameters(fn):
    return [p for p in inspect.signature(fn).parameters if p != "self"]


#: Required names: ``None`` for a value, else the parameter names of the function.
REQUIRED = {
    "NAME": None,
    "OPS": None,
    **{name: _parameters(getattr(Shim, name)) for name in (
        "custom_vjp", "host_call", "make_rng", "is_symbolic", "to_numpy", "from_numpy", "fori_loop", "map_leading")},
}

#: Names a shim may define; the core checks for them (JAX: optax-style noise objects;
#: TensorFlow: ``dynamic_size(x, axis)``, the run-time size of an axis unknown while tracing;
#: ``on_device(x)``: the array is off the host, so the core does not read its value).
OPTIONAL = {
    "draw_with_key": ["kind", "key", "shape", "dtype"],
    "dynamic_size": ["x", "axis"],
    "on_device": ["x"],
    "score_from_log_prob": ["log_prob", "z"],
    "score_derivative_from_log_prob": ["log_prob", "z"],
}


def check_shim(module, name=None):
    """Problems of the loaded shim ``module`` against :class:`Shim` (an empty list: it conforms).

    Parameters
    ----------
    module : module
        The shim.
    name : str, optional
        The backend name it is registered under; ``module.NAME`` must equal it.
    """
    problems = []
    for attr, params in {**REQUIRED, **OPTIONAL}.items():
        if not hasattr(module, attr):
            if attr in REQUIRED:
                problems.append(f"missing {attr}")
            continue
        value = getattr(module, attr)
        if params is None:
            continue
        if not callable(value):
            problems.append(f"{attr} is not callable")
        elif _parameters(value)[: len(params)] != params:
            problems.append(f"{attr}{tuple(_parameters(value))} does not take {tuple(params)}")
    if not isinstance(getattr(module, "NAME", None), str) or (name is not None and module.NAME != name):
        problems.append(f"NAME is {getattr(module, 'NAME', None)!r}, expected {name!r}")
    if not isinstance(getattr(module, "OPS", None), Mapping):
        problems.append("OPS is not a mapping")
    else:
        problems += [f"OPS[{k!r}] is not callable" for k, v in module.OPS.items() if not callable(v)]
    if not problems and not isinstance(module, Shim):
        problems.append("does not satisfy the Shim protocol")
    return problems


def check_source(source):
    """Problems of a shim's source text, read without importing it (see :func:`check_shim`).

    Names bound at module level by ``def``, assignment or ``import ... as``
    count; a function's parameters are checked when it is a ``def`` there.
    """
    tree = ast.parse(source)
    bound, params = set(), {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            bound.add(node.name)
            params[node.name] = [a.arg for a in node.args.posonlyargs + node.args.args]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    problems = [f"missing {attr}" for attr in REQUIRED if attr not in bound]
    for attr, want in {**REQUIRED, **OPTIONAL}.items():
        if want is not None and attr in params and params[attr][: len(want)] != want:
            problems.append(f"{attr}{tuple(params[attr])} does not take {tuple(want)}")
    return problems
