"""The shim contract as code: what every shim module (``diffopt.backends.<framework>``) exposes.

This module is the one statement of the contract: the "Shim contract" section
of the docs page ``docs/backends.md`` is generated from it (:func:`update_page`;
a test checks that the page is current).

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
import re
import sys
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

__all__ = ["Shim", "OptionalNames", "REQUIRED", "OPTIONAL", "declare_kernels", "declarations", "declared_kernels", "check_shim", "check_source"]


@runtime_checkable
class Shim(Protocol):
    """The names a shim module defines.

    The core never imports a framework: a shim module is imported only when an
    array of its framework reaches :func:`diffopt.backends.get_backend`.
    """

    NAME: str
    """The backend name, as :func:`autoray.infer_backend` spells it."""

    OPS: Mapping[str, Callable[..., Any]]
    """Translations, ``name -> function``: array functions that autoray lacks or that a
    compiler rejects (e.g. torch's positional reductions for ``torch.compile``).
    :func:`diffopt._ops.do` and :class:`diffopt._ops.Namespace` ask it before autoray.
    Kernels (faster paths of one family) are not translations: they go in ``KERNELS``."""

    def custom_vjp(self, fwd, bwd, jit=False, second_order=False):
        """Turn a pure pair into a natively differentiable function ``f(*arrays)``.

        ``fwd(*arrays) -> (out, residuals)`` with ``out`` an array or a tuple of
        arrays and ``residuals`` a tuple of arrays; ``bwd(residuals, cotangent)``
        returns one input cotangent (or ``None`` for zero) per array argument.
        Every array must be an argument of ``f``: ``fwd``/``bwd`` may close over
        Python constants only (JAX tracers must not be captured). ``jit=True`` asks
        for compilation where eager execution is slow (JAX), for a function built
        once and reused. Differentiating ``f``'s gradient again raises
        ``NotImplementedError`` (it would silently miss the residuals' dependence on
        the inputs), unless ``second_order`` says how: ``True`` (JAX only)
        differentiates ``fwd`` and ``bwd`` with JAX's autodiff (correct when both
        are smooth, as for the sorting network); a :class:`~diffopt.backends.SecondOrder`
        (every framework, one-output ops) makes the backward an op of
        ``(g, arrays)`` whose own derivative is the given JVP and symmetric
        Hessian-vector product.
        """

    def host_call(self, fn, x, out_shape, out_dtype):
        """Run the NumPy function ``fn`` on ``x`` outside the framework's graph.

        The result is an array of ``x``'s framework and device; ``out_shape`` and
        ``out_dtype`` describe it where the framework needs them before running
        (``jax.pure_callback``, ``tf.numpy_function``).
        """

    def make_rng(self, rng, like):
        """Normalise ``rng=`` (``None``, an ``int``, the framework's own generator or key,
        or a :class:`diffopt.random.Rng`) into a :class:`diffopt.random.Rng`."""

    def is_symbolic(self, x):
        """Whether ``x`` is being traced (``jax.jit``, ``tf.function``): its values are unknown to Python."""

    def to_numpy(self, x):
        """A NumPy copy of a concrete array."""

    def from_numpy(self, a, like):
        """The NumPy array ``a`` as an array of ``like``'s framework, on its device."""

    def fori_loop(self, lower, upper, body, carry):
        """``carry = body(i, carry)`` over ``range(lower, upper)``.

        ``lax.fori_loop`` for traced JAX values, ``tf.while_loop`` inside
        ``tf.function``, a Python loop elsewhere: a traced program does not grow
        with the number of iterations.
        """

    def map_leading(self, fn, leaves, size):
        """``fn`` on each leading-axis slice of the tuple ``leaves``, results stacked
        (``jax.vmap``, ``tf.vectorized_map``, a Python loop elsewhere)."""


class OptionalNames(Protocol):
    """Names a shim may define; the core checks for them."""

    KERNELS: Mapping[str, Callable[..., Any]]
    """Kernels, ``name -> function``: faster paths that a family declares it may use
    (:class:`diffopt.sorting._kernels.SortingKernels`,
    :class:`diffopt._kernels.SampleKernels`), under the declared names and parameters.
    Each returns ``None`` where it does not apply (the family's generic code runs)."""

    def on_device(self, x):
        """Whether the concrete array ``x`` lies off the host (a GPU): the core then does
        not read its value (argument checks that would synchronise are skipped).
        Absent: the arrays are on the host."""

    def dynamic_size(self, x, axis):
        """The run-time size of an axis whose size is unknown while tracing
        (TensorFlow: ``tf.shape(x)[axis]``, for a Keras batch)."""

    def draw_with_key(self, kind, key, shape, dtype):
        """A draw of the distribution ``kind`` from a framework key (JAX: optax-style noise objects)."""

    def score_from_log_prob(self, log_prob, z):
        """``-∇ log_prob(z)`` for an elementwise log-density (JAX: optax-style noise objects)."""

    def score_derivative_from_log_prob(self, log_prob, z):
        """``-∂² log_prob(z)/∂z²`` elementwise (JAX: optax-style noise objects)."""

    def compiled_host_solve(self, solver, x, args, kwargs, out_dtype):
        """``solver(x, *args, **kwargs)`` for a :class:`diffopt.HostSolver` ``solver`` while a
        compiler traces ``x`` (torch: ``torch.compile``), as one op of the framework whose
        output shape is ``solver.traced_shape(x, args, kwargs)`` and dtype ``out_dtype`` (a
        name); the solver's result carries no gradient. Absent: ``host_call`` serves traced
        arrays too."""

    def held_state(self, holder, like):
        """While a compiler traces (torch: ``torch.compile``), the ``[3]`` float64 ``holder.state``
        (a Python-held state: :class:`diffopt.imle.AdaptiveTargetDistribution`) read when the
        compiled graph runs, on ``like``'s device. Absent (with :meth:`commit_held_state`): a traced
        call cannot update a Python-held state (it warns)."""

    def commit_held_state(self, holder, state, out):
        """``holder.commit(state)`` when the compiled graph runs; returns ``out`` (a copy), which
        the caller uses from then on, so that the commit is part of the graph."""


def _parameters(fn):
    return [p for p in inspect.signature(fn).parameters if p != "self"]


#: Required names: ``None`` for a value, else the parameter names of the function.
REQUIRED = {
    "NAME": None,
    "OPS": None,
    **{name: _parameters(getattr(Shim, name)) for name in (
        "custom_vjp", "host_call", "make_rng", "is_symbolic", "to_numpy", "from_numpy", "fori_loop", "map_leading")},
}

#: Optional names (:class:`OptionalNames`): the parameter names of the functions.
OPTIONAL = {name: _parameters(getattr(OptionalNames, name)) for name in (
    "draw_with_key", "dynamic_size", "on_device", "score_from_log_prob", "score_derivative_from_log_prob",
    "compiled_host_solve", "held_state", "commit_held_state")}


#: The kernel declarations of the families (:func:`declare_kernels`), by module and name.
_DECLARATIONS = {}


def declare_kernels(protocol):
    """Record ``protocol`` (a :class:`typing.Protocol` of kernels) as one family's declaration; returns it.

    A family declares its kernels next to itself (:mod:`diffopt.sorting._kernels`,
    :mod:`diffopt._kernels`) and registers them here when it is imported, so the
    contract imports no family (the arrow points from the families down to the
    backends). Importing :mod:`diffopt` imports every family before any shim is
    loaded and checked.
    """
    _DECLARATIONS[(protocol.__module__, protocol.__qualname__)] = protocol
    return protocol


def declarations():
    """The families' kernel declarations (:func:`declare_kernels`), ordered by module."""
    return [_DECLARATIONS[key] for key in sorted(_DECLARATIONS)]


def declared_kernels():
    """``name -> parameter names`` of every kernel a family declares (:func:`declarations`)."""
    return {name: _parameters(getattr(protocol, name))
            for protocol in declarations() for name in sorted(vars(protocol)) if not name.startswith("_")}


def _check_kernels(module):
    """Problems of ``module.KERNELS`` against :func:`declared_kernels`."""
    table = getattr(module, "KERNELS", None)
    if table is None:
        return []
    if not isinstance(table, Mapping):
        return ["KERNELS is not a mapping"]
    declared, problems = declared_kernels(), []
    for key, fn in table.items():
        if key not in declared:
            problems.append(f"KERNELS[{key!r}] is not a declared kernel (declared: {', '.join(sorted(declared))})")
        elif not callable(fn):
            problems.append(f"KERNELS[{key!r}] is not callable")
        elif _parameters(fn)[: len(declared[key])] != declared[key]:
            problems.append(f"KERNELS[{key!r}]{tuple(_parameters(fn))} does not take {tuple(declared[key])}")
    return problems


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
    problems += _check_kernels(module)
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


# --------------------------------------------------------- the docs page, generated from the above

#: The lines around the generated section of ``docs/backends.md``.
DOC_BEGIN = "<!-- generated from diffopt/backends/_contract.py by its update_page(): do not edit by hand -->"
DOC_END = "<!-- end of the generated section -->"


def _plain(text):
    """Docstring text as Markdown: reST roles and double backticks become inline code, one line per paragraph."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    return [" ".join(paragraph.split()) for paragraph in text.split("\n\n")]


def _entries(cls, names):
    """Markdown list items ``signature: docstring`` for ``names`` of the protocol ``cls``."""
    docs = _attribute_docs(cls)
    lines = []
    for name in names:
        value = getattr(cls, name, None)
        first, *rest = _plain(inspect.getdoc(value) if callable(value) else docs[name])
        label = f"{name}({', '.join(_parameters(value))})" if callable(value) else name
        lines.append(f"- `{label}`: {first}")
        lines += [f"  {paragraph}" for paragraph in rest]
    return lines


def _attribute_docs(cls):
    """The docstrings written under the annotated attributes of ``cls`` (read from its source)."""
    tree = ast.parse(inspect.getsource(cls)).body[0]
    docs = {}
    for node, after in zip(tree.body, tree.body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def markdown():
    """The "Shim contract" section of ``docs/backends.md``, generated from this module and the
    families' kernel declarations (between :data:`DOC_BEGIN` and :data:`DOC_END`)."""
    required = ["NAME", "OPS", *[n for n in REQUIRED if n not in ("NAME", "OPS")]]
    lines = [DOC_BEGIN, "", "## Shim contract", "", *_plain(inspect.getdoc(Shim))[1:], "",
             "Every shim module (`diffopt.backends.<framework>`) defines:", "", *_entries(Shim, required), "",
             "and may define:", "", *_entries(OptionalNames, ["KERNELS", *OPTIONAL]), ""]
    for protocol in declarations():
        names = sorted(n for n in vars(protocol) if not n.startswith("_"))
        summary = _plain(inspect.getdoc(protocol))[0].rstrip(".")
        lines += [f"{summary}, declared by `{protocol.__module__}.{protocol.__name__}`:", "",
                  *_entries(protocol, names), ""]
    adding = inspect.getdoc(sys.modules[__name__]).split("Adding a backend\n----------------\n")[1]
    lines += ["Adding a backend:", "", *_plain(re.sub(r"\n(?=\d\. )", "\n\n", adding)), "", DOC_END]
    return "\n".join(lines)


def update_page(path):
    """Rewrite the generated section of the Markdown page ``path`` (``docs/backends.md``); whether it changed."""
    with open(path, encoding="utf-8") as f:
        page = f.read()
    head, rest = page.split(DOC_BEGIN)
    new = head + markdown() + rest.split(DOC_END, 1)[1]
    if new != page:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
    return new != page
