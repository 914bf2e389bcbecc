"""Portable numerical helpers composed from autoray primitives.

autoray does not translate ``logsumexp``, ``sigmoid``, ``softplus`` or
``one_hot`` for every framework; they are composed here once.
"""

import autoray as ar

__all__ = [
    "logsumexp", "softmax", "sigmoid", "softplus", "logaddexp", "first_max_mask",
    "fori_loop", "map_leading",
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
    """One-hot mask of the first maximum of ``x`` along ``axis``, in ``x``'s dtype."""
    hit = ar.astype(x == ar.do("max", x, axis=axis, keepdims=True), ar.get_dtype_name(x))
    first = ar.do("cumsum", hit, axis=axis)
    return hit * ar.astype(first == 1, ar.get_dtype_name(x))


def _where_dispatcher(cond, *args, **kwargs):
    """Choose ``where``'s backend from all its arguments, not just ``cond``.

    ``cond`` is often a plain NumPy bool array (e.g. ``box >= 0`` under HIPS
    autograd), which would send autograd boxes to NumPy's ``where``.
    """
    return ar.autoray.infer_backend_multi(cond, *args)


ar.autoray.register_dispatch("where", _where_dispatcher)


# --- loops and per-sample maps (registered once per framework) -------------------------

def _python_fori_loop(lower, upper, body, carry):
    for i in range(lower, upper):
        carry = body(i, carry)
    return carry


def _jax_fori_loop(lower, upper, body, carry):
    import jax

    if not any(isinstance(c, jax.core.Tracer) for c in jax.tree_util.tree_leaves(carry)):
        # concrete (eager) values: dispatch op by op rather than compile a loop body per call
        return _python_fori_loop(lower, upper, body, carry)
    return jax.lax.fori_loop(lower, upper, body, carry)


def _python_map_leading(fn, leaves, size):
    rows = [fn(tuple(leaf[i] for leaf in leaves)) for i in range(size)]
    return tuple(ar.do("stack", list(col), axis=0) for col in zip(*rows))


def _jax_map_leading(fn, leaves, size):
    import jax

    del size
    return tuple(jax.vmap(fn)(tuple(leaves)))


def _tf_map_leading(fn, leaves, size):
    import tensorflow as tf

    del size
    return tuple(tf.vectorized_map(fn, tuple(leaves)))


for _name in ("numpy", "autograd", "torch", "tensorflow", "cupy"):
    ar.register_function(_name, "diffopt_fori_loop", _python_fori_loop)
    ar.register_function(_name, "diffopt_map_leading", _python_map_leading)
for _name in ("jax", "jaxlib"):
    ar.register_function(_name, "diffopt_fori_loop", _jax_fori_loop)
    ar.register_function(_name, "diffopt_map_leading", _jax_map_leading)
del _name
ar.register_function("tensorflow", "diffopt_map_leading", _tf_map_leading)


def fori_loop(lower, upper, body, carry, like):
    """``carry = body(i, carry)`` for ``i`` in ``range(lower, upper)``.

    A Python loop, except for traced JAX values where it is
    ``jax.lax.fori_loop`` (one traced body instead of an unrolled loop under
    ``jit``). ``carry`` is a
    tuple of arrays whose shapes and dtypes ``body`` keeps.
    """
    return ar.do("diffopt_fori_loop", lower, upper, body, carry, like=like)


def map_leading(fn, leaves, size, like):
    """Apply ``fn`` to each slice ``i < size`` of the leading axis of ``leaves``.

    ``fn`` maps a tuple of arrays (the ``i``-th slices of ``leaves``) to a
    tuple of arrays; the results are stacked on a new leading axis:
    ``jax.vmap`` for JAX, ``tf.vectorized_map`` for TensorFlow (which falls
    back to a loop for ops it cannot vectorise), a Python loop elsewhere
    (``fn`` then need not be vectorisable).
    """
    return ar.do("diffopt_map_leading", fn, tuple(leaves), size, like=like)
