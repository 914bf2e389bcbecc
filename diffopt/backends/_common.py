"""Pieces shared by the shims (no framework imports)."""

from __future__ import annotations

import numbers
from typing import Any, Callable

import numpy as np

from diffopt.backends._rng import rng_type_error, seed_from_numpy

_SEED_BOUND = 2**63 - 1


def as_tuple(out):
    """``out`` as a tuple, and whether it was one."""
    if isinstance(out, tuple):
        return out, True
    return (out,), False


def check_int_seed(rng):
    """Validate an ``int`` seed and return it.

    One rule on every backend: ``0 <= rng < 2**63`` (what JAX's and TensorFlow's
    int64 seeds hold); anything else is a ``ValueError`` naming ``rng``.
    """
    if not 0 <= rng < 2**63:
        raise ValueError(f"rng seed must be an int in [0, 2**63), got rng={rng}")
    return int(rng)


def numpy_seed(rng, framework):
    """A Python seed from ``None`` (NumPy's global state), an int or a NumPy generator."""
    if rng is None:
        return seed_from_numpy(np.random)
    if isinstance(rng, numbers.Integral):
        return check_int_seed(rng)
    if isinstance(rng, (np.random.Generator, np.random.RandomState)):
        return seed_from_numpy(rng)
    raise rng_type_error(framework, rng)


SECOND_ORDER_MESSAGE = (
    "diffopt: second-order derivatives through this operation are not supported on the "
    "{framework} backend: its gradient is a hand-written backward pass, and differentiating "
    "that again would silently miss how its saved values depend on the inputs{hint}"
)


class SecondOrder:
    """How a hand-written backward is differentiated once more (``custom_vjp``'s ``second_order``).

    The backward ``bwd(res, g)`` of an op ``y = op(*arrays)`` is linear in the
    cotangent ``g``; seen as a function of ``(arrays, g)`` it has two derivatives,
    which the op supplies as Monte-Carlo (or exact) estimates:

    ``jvp(arrays, res, ts)``
        The op's Jacobian applied to the tangents ``ts`` (one array or ``None``
        per array argument): the derivative of ``bwd`` with respect to ``g``,
        transposed. Returns the output tangent.
    ``hvp(arrays, res, g, ts)``
        The derivative of ``bwd(res, g)`` with respect to the arrays in the
        direction ``ts``: the Hessian of ``<g, op(arrays)>`` applied to ``ts``,
        one array or ``None`` per array argument. It must be symmetric (a Hessian
        estimate), so that it serves forward mode (JAX) and reverse mode alike.

    ``None`` in ``ts`` is a zero tangent. The shims pass one only for an array whose
    cotangent from ``bwd`` is ``None`` (no gradient: nothing to differentiate), and
    HIPS autograd, which differentiates one cotangent at a time, for the arrays other
    than that cotangent's. So an op whose backward gives a cotangent to its first
    array alone (every diffopt op) always gets that array's tangent.

    Only single-output ops are supported; a derivative of these derivatives (third
    order) raises ``NotImplementedError``.

    Parameters
    ----------
    jvp : callable
        ``jvp(arrays, res, ts)``, as above.
    hvp : callable
        ``hvp(arrays, res, g, ts)``, as above.

    Examples
    --------
    A linear op ``y = 2 x`` has Jacobian ``2 I`` and Hessian 0:

    >>> import numpy as np
    >>> from diffopt.backends import SecondOrder
    >>> so = SecondOrder(jvp=lambda arrays, res, ts: 2 * ts[0],
    ...                  hvp=lambda arrays, res, g, ts: [np.zeros_like(ts[0])])
    >>> so.jvp((np.ones(2),), None, [np.array([1.0, 3.0])])
    array([2., 6.])
    """

    def __init__(self, jvp: Callable[..., Any], hvp: Callable[..., Any]) -> None:
        self.jvp, self.hvp = jvp, hvp


def second_order_spec(second_order, n_outputs=1):
    """``second_order`` if it is a :class:`SecondOrder` (for a one-output op), else ``None``."""
    return second_order if isinstance(second_order, SecondOrder) and n_outputs == 1 else None


def forward_only(fwd, bwd, jit=False, second_order=False):
    """``custom_vjp`` for frameworks without autodiff: run the forward, drop residuals."""
    del bwd, jit, second_order

    def f(*arrays):
        return fwd(*arrays)[0]

    return f


def stable_argsort_of(backend):
    """The ``stable_argsort`` kernel of a framework whose ``argsort`` (through autoray) takes
    NumPy's ``kind="stable"`` (NumPy, HIPS autograd, TensorFlow's NumPy API)."""
    import autoray as ar

    def stable_argsort(x, axis):
        return ar.do("argsort", x, axis=axis, kind="stable", like=backend)

    return stable_argsort


def never_symbolic(x):
    """``is_symbolic`` of a framework without tracing: its arrays are always concrete."""
    return False


def fori_loop(lower, upper, body, carry):
    """``carry = body(i, carry)`` for ``i`` in ``range(lower, upper)``: a Python loop."""
    for i in range(lower, upper):
        carry = body(i, carry)
    return carry


def map_leading(fn, leaves, size):
    """``fn`` on each leading-axis slice of ``leaves``, results stacked: a Python loop."""
    import autoray as ar

    rows = [fn(tuple(leaf[i] for leaf in leaves)) for i in range(size)]
    return tuple(ar.do("stack", list(col), axis=0) for col in zip(*rows))
