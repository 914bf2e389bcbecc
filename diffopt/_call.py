"""The call pipeline of the estimators that wrap a solver (perturbations, I-MLE, DFL).

A public call of :func:`~diffopt.perturbed`, :func:`~diffopt.imle.imle` or
:func:`~diffopt.spo_plus_loss` does the same few things around its solver, once:

1. :func:`resolve` finds the framework of its arrays: the shim (``custom_vjp``,
   ``host_call``, ``make_rng``) and the bound :class:`~diffopt._ops.Namespace`
   ``xp`` that the core then calls (``xp.sum``, ``xp.reshape``: no per-op look-up);
2. :func:`check_instance_shape` checks the instance shape (known, with entries);
3. :func:`split_extras` decides which extra solver arguments travel through the
   custom VJP (:func:`travels`: arrays of the call's framework) and which are constants;
4. :func:`call_solver` calls the solver and checks what it returned
   (:func:`check_output`), with one set of errors, each naming the solver;
5. :func:`differentiable` registers the op's forward and backward (first and
   second order) with the framework: the one entry point to a shim's ``custom_vjp``
   for every family (the sorting network and projection too).

The rng (``rng=``) becomes a stream once per call (:func:`diffopt.random.make_rng`,
called by the engines with the shim resolved here).
"""

import sys

from diffopt import _arrays, backends
from diffopt._arrays import same_shape, shape_of
from diffopt._ops import Namespace
from diffopt.backends import SecondOrder

__all__ = ["resolve", "bind", "check_instance_shape", "travels", "split_extras", "solver_name",
           "check_output", "call_solver", "cast", "differentiable", "ByReference"]

# dtype names a solver may return: real numbers (an estimator averages them)
_REAL = ("float", "bfloat", "int", "uint", "bool")


def bind(shim):
    """The :class:`~diffopt._ops.Namespace` of ``shim``'s framework (no array inspected)."""
    return Namespace(shim.NAME, shim.OPS)


def resolve(*arrays, argnames=None):
    """``(shim, xp)`` for the one framework of ``arrays`` (Python scalars and ``None`` ignored).

    One framework look-up per array; a :class:`TypeError` naming the arguments
    when they mix frameworks (NumPy with HIPS autograd counts as autograd).
    """
    shim = backends.get_backend(*arrays, argnames=argnames)
    return shim, bind(shim)


def cast(x, dtype, xp):
    """``x`` in dtype ``dtype`` (a name), through the bound namespace; ``x`` itself when it is."""
    return x if xp.get_dtype_name(x) == dtype else xp.astype(x, dtype)


def check_instance_shape(name, shape, lead):
    """The instance shape ``shape[lead:]``: known (only the batch axis may have an unknown size
    while tracing, e.g. a Keras batch) and with at least one entry."""
    inst = tuple(shape[lead:])
    if any(d is None for d in inst):
        raise ValueError(
            f"{name} has shape {tuple(shape)}: only its leading (batch) axis may have an unknown size "
            "while tracing; the instance shape must be known"
        )
    if any(d == 0 for d in inst):
        raise ValueError(
            f"{name} has no entries per instance: shape {tuple(shape)} (instance shape {inst}); "
            "a solver needs at least one value per instance"
        )
    return inst


def travels(a, shim):
    """Whether the extra solver argument ``a`` travels through the custom VJP (without a gradient).

    The one rule: an array (not a Python or NumPy scalar number) of the call's
    framework, NumPy and HIPS autograd counting as one, so that a traced value
    (a JAX tracer, a TF symbolic tensor) is passed to ``fwd``/``bwd`` and never
    captured. Anything else (numbers, strings, other frameworks' arrays) is a
    constant closed over by the solver call.
    """
    if not hasattr(a, "shape") or isinstance(a, (int, float, complex, bool)):
        return False
    try:
        return backends.is_array(a) and backends.same_framework(a, shim)
    except TypeError:
        return False


def split_extras(args, kwargs, shim):
    """The travelling arrays among ``args``/``kwargs`` and ``rebuild`` (see
    :func:`diffopt._arrays.split_arrays`)."""
    return _arrays.split_arrays(args, kwargs, lambda a: travels(a, shim))


def solver_name(fn):
    """The name errors give ``fn``: its ``__name__``, else its type's."""
    return getattr(fn, "__name__", type(fn).__name__)


def check_output(role, fn, out, x, shim, xp, *, expect="rows", framework=True):
    """Check the solver ``fn``'s output ``out`` for the input ``x``; returns ``out``.

    ``role`` is the argument the solver was given as (``func``, ``function``,
    ``solver``). Errors, each naming the solver: not an array (``None``, a
    list, ragged rows: :class:`TypeError`), not real numbers (strings, objects,
    complex: :class:`TypeError`), another framework's array (:class:`TypeError`;
    skipped when ``framework`` is false), and a shape that breaks ``expect``
    (:class:`ValueError`): ``"rows"`` keeps ``x``'s leading axis, ``"like"``
    has ``x``'s shape.
    """
    who = f"{role} {solver_name(fn)}"
    if not hasattr(out, "shape"):
        raise TypeError(f"{who} must return an array, got {type(out).__name__}")
    if framework and type(out) is not type(x) and not backends.same_framework(out, shim):
        raise TypeError(
            f"{who} returned a {backends.backend_name(out)} array for {shim.NAME} input; it must "
            "return an array of its input's framework (mark a NumPy solver with diffopt.host_solver)"
        )
    dtype = xp.get_dtype_name(out)
    if not dtype.startswith(_REAL):
        raise TypeError(f"{who} returned {dtype} data; it must return real numbers (floating, integer or bool)")
    got, want = shape_of(out), shape_of(x)
    if expect == "like" and not same_shape(got, want):
        raise ValueError(f"{who} returned shape {got} for input shape {want}; it must return one "
                         "solution per instance, shaped like its input")
    if expect == "rows" and (not got or not same_shape(got[:1], want[:1])):
        raise ValueError(f"{who} must keep the leading (instance) axis of its input: it got "
                         f"{want[0]} rows and returned shape {got}")
    return out


def call_solver(role, fn, x, args, kwargs, shim, xp, dtype, *, expect="rows", framework=True):
    """``fn(x, *args, **kwargs)``, checked (:func:`check_output`) and cast to ``dtype``."""
    out = fn(x, *args, **kwargs)
    check_output(role, fn, out, x, shim, xp, expect=expect, framework=framework)
    return cast(out, dtype, xp)


def differentiable(shim, fwd, bwd, *, second_order=False, jit=False):
    """The op ``f(*arrays)`` of ``shim``'s framework with the forward ``fwd`` and backward ``bwd``.

    The one way diffopt registers a hand-written derivative (every family calls
    this, never a shim's ``custom_vjp`` itself).

    The contract: ``fwd(*arrays) -> (out, residuals)``, ``out`` an array or a
    tuple of arrays, ``residuals`` a tuple (of arrays, or ``None``);
    ``bwd(residuals, g) -> cotangents``, one per argument of ``f`` (``None``:
    no gradient), ``g`` shaped like ``out``. Every array ``fwd``/``bwd`` use is
    an argument of ``f`` or a residual: they close over Python constants only
    (a JAX tracer or a TF symbolic tensor must not be captured).

    The second-order rule (stated here once): a derivative of ``f``'s gradient
    would silently miss how the residuals depend on the inputs, so it raises
    ``NotImplementedError`` unless ``second_order`` says how to take it:

    ``False``
        It raises (the default; e.g. I-MLE, the DFL losses, a learnable ``sigma``).
    a :class:`~diffopt.backends.SecondOrder`
        Every framework: the backward is an op of ``(g, arrays)`` whose own
        derivative is the given JVP and symmetric Hessian-vector product (the
        perturbed estimators' Monte-Carlo estimates). One-output ops only.
    ``True``
        JAX differentiates ``fwd`` and ``bwd`` themselves (correct when both are
        smooth JAX code, as the sorting network); the other frameworks raise.

    A third derivative always raises. ``jit=True`` compiles ``f`` where eager
    execution is slow (JAX; the others ignore it): for an op built once and
    reused (cached).

    Parameters
    ----------
    shim : module
        The framework's shim (:func:`resolve`).
    fwd, bwd : callable
        The pair above.
    second_order : bool or SecondOrder, optional
        How ``f``'s gradient is differentiated (above).
    jit : bool, optional
        Compile ``f`` (above).

    Returns
    -------
    callable
        ``f(*arrays)``, natively differentiable by the framework.
    """
    if not isinstance(second_order, (bool, SecondOrder)):
        raise TypeError(f"second_order must be a bool or a SecondOrder, got {type(second_order).__name__}")
    return shim.custom_vjp(fwd, bwd, jit=bool(jit), second_order=second_order)


class ByReference:
    """Mixin of the wrappers the decorators return (``@perturbed(...)``, ``@imle(...)``): pickled
    by reference when it is the module attribute its ``__module__``/``__qualname__`` name.

    A module-level ``def`` under such a decorator binds the module's name to the wrapper, whose
    ``__module__``/``__qualname__`` are the function's (:func:`functools.update_wrapper`); pickle
    then finds the wrapper itself there (so it can be sent to a process pool). Any other wrapper
    (``perturbed(fn)`` kept elsewhere) is pickled by value, its solver by reference.
    """

    def __reduce_ex__(self, protocol):
        module = sys.modules.get(getattr(self, "__module__", None) or "")
        target = module
        for part in str(getattr(self, "__qualname__", "")).split("."):
            target = getattr(target, part, None)
        if target is self:
            return self.__qualname__
        return super().__reduce_ex__(protocol)
