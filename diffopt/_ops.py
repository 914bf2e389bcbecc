"""Portable numerical helpers composed from autoray primitives.

autoray does not translate ``logsumexp``, ``sigmoid``, ``softplus`` or
``one_hot`` for every framework; they are composed here once.
"""

import math

import autoray as ar

from diffopt.backends import get_backend

__all__ = [
    "logsumexp", "softmax", "sigmoid", "softplus", "logaddexp", "first_max_mask",
    "fori_loop", "map_leading", "nan_rows", "where_fill",
]


def logsumexp(x, axis=-1, keepdims=False):
    """``log(sum(exp(x), axis))`` without overflow."""
    m = ar.do("max", x, axis=axis, keepdims=True)
    m = ar.do("where", ar.do("isfinite", m), m, ar.do("zeros_like", m))
    out = ar.do("log", ar.do("sum", ar.do("exp", x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else ar.do("squeeze", out, axis=axis)


def softmax(x, axis=-1):
    """``exp(x) / sum(exp(x), axis)``, stable."""
    return ar.do("exp", x - logsumexp(x, axis=axis, keepdims=True))


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``, stable for large ``|x|``."""
    e = ar.do("exp", -ar.do("abs", x))
    return ar.do("where", x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(x):
    """``log(1 + exp(x))``, stable for large ``|x|``."""
    return ar.do("maximum", x, 0.0 * x) + ar.do("log1p", ar.do("exp", -ar.do("abs", x)))


def logaddexp(a, b):
    """``log(exp(a) + exp(b))``, stable."""
    m = ar.do("maximum", a, b)
    return m + softplus(-ar.do("abs", a - b))


def first_max_mask(x, axis=-1):
    """One-hot mask of the first maximum of ``x`` along ``axis``, in ``x``'s dtype.

    ``argmax`` compared with the positions along ``axis`` (a ``cumsum`` of ones,
    made on ``x``'s device): faster than ``one_hot`` in torch.
    """
    idx = ar.do("expand_dims", ar.do("argmax", x, axis=axis), axis)
    # positions counted on x's device (autoray's ``arange(like=x)`` makes a host tensor for torch)
    positions = ar.do("cumsum", ar.astype(ar.do("ones_like", x), ar.get_dtype_name(idx)), axis=axis) - 1
    return ar.astype(idx == positions, ar.get_dtype_name(x))


def nan_rows(x, out):
    """``out`` with row ``i`` set to NaN wherever row ``i`` of ``x`` holds a NaN.

    The one NaN rule of diffopt: a NaN anywhere in an instance makes that
    instance's whole result NaN (``x`` is ``[B, ...]``, ``out`` is ``[B, ...]``
    with the same ``B``; infinities are left alone). Cheap: one ``isnan`` and
    one reduction over ``x``.
    """
    size = math.prod(int(d) for d in x.shape[1:])
    if size == 0:
        return out
    flat = ar.do("reshape", x, (-1, size))
    flags = ar.astype(flat != flat, "float32")  # not isnan: TF's NumPy isnan fails on bfloat16
    bad = ar.do("reshape", ar.do("max", flags, axis=1) > 0, (-1,) + (1,) * (len(out.shape) - 1))
    return where_fill(bad, float("nan"), out)


def where_fill(cond, value, x):
    """``where(cond, value, x)`` in ``x``'s dtype.

    The Python scalar ``value`` is given ``x``'s dtype first: TensorFlow's
    NumPy-style ``where`` would promote bfloat16 with a Python float to float64.
    """
    return ar.do("where", cond, ar.do("full_like", x, value), x)


def _where_dispatcher(cond, *args, **kwargs):
    """Choose ``where``'s backend from all its arguments, not just ``cond``.

    ``cond`` is often a plain NumPy bool array (e.g. ``box >= 0`` under HIPS
    autograd), which would send autograd boxes to NumPy's ``where``.
    """
    return ar.autoray.infer_backend_multi(cond, *args)


ar.autoray.register_dispatch("where", _where_dispatcher)


# --- loops and per-sample maps: each backend shim provides its own ------------------------


def fori_loop(lower, upper, body, carry, like):
    """``carry = body(i, carry)`` for ``i`` in ``range(lower, upper)``.

    A Python loop, except for traced JAX values where it is
    ``jax.lax.fori_loop`` (one traced body instead of an unrolled loop under
    ``jit``). ``carry`` is a
    tuple of arrays whose shapes and dtypes ``body`` keeps.
    """
    return get_backend(like).fori_loop(lower, upper, body, carry)


def map_leading(fn, leaves, size, like):
    """Apply ``fn`` to each slice ``i < size`` of the leading axis of ``leaves``.

    ``fn`` maps a tuple of arrays (the ``i``-th slices of ``leaves``) to a
    tuple of arrays; the results are stacked on a new leading axis:
    ``jax.vmap`` for JAX, ``tf.vectorized_map`` for TensorFlow (which falls
    back to a loop for ops it cannot vectorise), a Python loop elsewhere
    (``fn`` then need not be vectorisable).
    """
    return get_backend(like).map_leading(fn, tuple(leaves), size)
