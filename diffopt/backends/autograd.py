"""HIPS autograd shim: NumPy code with gradients through ``primitive``/``defvjp``."""

import importlib
import threading

import numpy as np
from autograd.extend import defvjp_argnums, primitive
from autograd.tracer import getval

from diffopt.backends import numpy as _np_shim
from diffopt.backends.numpy import _fused
from diffopt.backends._common import SECOND_ORDER_MESSAGE, second_order_spec, stable_argsort_of

NAME = "autograd"


def _promote_float(x):
    """An integer ``x`` as float64 by arithmetic (``x * 1.0``): autograd's ``astype`` VJP casts
    the gradient back to the input's integer dtype (all zeros)."""
    return x * 1.0


# autoray's autograd translations serve, plus the core's ``xp.stop_gradient`` and ``xp.erf``
OPS = {"stop_gradient": getval, "erf": lambda x: importlib.import_module("autograd.scipy.special").erf(x)}
# kernels declared by diffopt.sorting._kernels: the fused sort, and the promotion
# :mod:`diffopt.sorting._dropin` asks for before ``astype``
KERNELS = {"sorting_fused": _fused.numpy_fused, "promote_float": _promote_float,
           "stable_argsort": stable_argsort_of("autograd")}

make_rng = _np_shim.make_rng
is_symbolic = _np_shim.is_symbolic
fori_loop = _np_shim.fori_loop
map_leading = _np_shim.map_leading
from_numpy = _np_shim.from_numpy


def to_numpy(x):
    """The value of an autograd box (or array) as a NumPy array."""
    return np.asarray(getval(x))


def _arrays(values):
    """``values`` with Python numbers as 0-d arrays: autograd unboxes a traced Python float
    (``autograd.grad(f)(0.5)``, e.g. a learnable ``sigma``) to the float itself, which the core
    would no longer see as an array."""
    return tuple(v if hasattr(v, "shape") else np.asarray(v) for v in values)


@primitive
def _first_order_only(c, *inputs):
    """``c`` (a cotangent), tied to the inputs of the op it came from; its derivative raises."""
    return c


def _no_second_order(argnums, ans, args, kwargs):
    def vjp(g):
        raise NotImplementedError(SECOND_ORDER_MESSAGE.format(framework="autograd", hint="."))

    return vjp


defvjp_argnums(_first_order_only, _no_second_order)


def custom_vjp(fwd, bwd, jit=False, second_order=False):
    """Register ``(fwd, bwd)`` as an autograd primitive (see :mod:`diffopt.backends`).

    autograd builds the VJP right after the forward runs, so the residuals of
    the latest forward are read from a one-slot store then (one per thread). Differentiating
    the returned cotangents again raises ``NotImplementedError``.

    With ``second_order`` a :class:`~diffopt.backends.SecondOrder`, each cotangent is
    instead an op of ``(g, *arrays)`` whose own derivative is that estimate.
    ``jit`` is accepted for a uniform signature and ignored here.
    """
    store = threading.local()  # one slot per thread: f may be cached and shared (soft_sort)
    spec = second_order_spec(second_order)

    @primitive
    def f(*arrays):
        out, store.res = fwd(*_arrays(arrays))
        return out

    def vjp_maker(argnums, ans, arrays, kwargs):
        res, arrays = store.res, _arrays(arrays)

        def vjp(g):
            if spec is not None and not isinstance(g, tuple):
                return tuple(_backward_op(g, *arrays, index=i, spec=spec, bwd=bwd, res=res, none=[]) for i in argnums)
            grads = bwd(res, g)
            return tuple(
                np.zeros_like(arrays[i]) if grads[i] is None else _first_order_only(grads[i], *arrays) for i in argnums
            )

        return vjp

    defvjp_argnums(f, vjp_maker)
    return f


@primitive
def _backward_op(g, *arrays, index, spec, bwd, res, none):
    """Cotangent ``index`` of ``bwd(res, g)``, an op of ``(g, *arrays)`` differentiable by ``spec``.

    A ``None`` cotangent (an argument without gradient) is a constant zero array, and ``none``
    records that, so that its derivative is zero without asking ``spec`` (as in the other shims,
    which leave such cotangents out of the op).
    """
    c = bwd(res, g)[index]
    none.append(c is None)
    return np.zeros_like(arrays[index]) if c is None else c


def _backward_op_vjp(argnums, ans, args, kwargs):
    g, arrays = args[0], args[1:]
    spec, res, index = kwargs["spec"], kwargs["res"], kwargs["index"]

    def vjp(u):
        if kwargs["none"][-1]:
            return tuple(np.zeros_like(args[i]) for i in argnums)
        ts = tuple(u if j == index else None for j in range(len(arrays)))
        grads = (spec.jvp(arrays, res, ts),) + tuple(spec.hvp(arrays, res, g, ts))
        # a third derivative raises
        return tuple(
            np.zeros_like(args[i]) if grads[i] is None else _first_order_only(grads[i], *args) for i in argnums
        )

    return vjp


defvjp_argnums(_backward_op, _backward_op_vjp)


def host_call(fn, x, out_shape, out_dtype):
    """Call ``fn`` on the value of ``x`` (the result carries no gradient)."""
    return np.asarray(fn(to_numpy(x)), dtype=out_dtype)

