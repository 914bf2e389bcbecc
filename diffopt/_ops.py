"""diffopt's private op table, and portable helpers composed from it.

:func:`do` is the one way the core calls an array function: it looks the name
up in the table of the shim of the arrays' framework (each shim's ``OPS``
dict, see :mod:`diffopt.backends`) and falls back to :func:`autoray.do`.
diffopt never registers anything with autoray, so autoray behaves for the
user exactly as it did before ``import diffopt``.

autoray does not translate ``logsumexp``, ``sigmoid``, ``softplus`` or
``one_hot`` for every framework; they are composed here once.
"""

import contextlib
import math

import autoray as ar
import numpy as np

from diffopt import _kernels, backends

__all__ = [
    "Namespace",
    "namespace",
    "do",
    "astype",
    "kernel",
    "logsumexp", "softmax", "sigmoid", "softplus", "logaddexp", "first_max_mask",
    "fori_loop", "map_leading", "nan_rows", "where_fill", "quiet_numpy", "constant",
    "sum_samples", "inner_samples", "add_scaled",
    "shim_in", "astype_in", "constant_in", "where_fill_in", "quiet_numpy_in", "nan_rows_in",
]


# Names whose backend is read from the first element of their first argument (a sequence).
_JOIN = frozenset({"concatenate", "stack"})
# Names whose backend is read from their data operands, not the condition: ``where``'s
# ``cond`` is often a plain NumPy bool array (e.g. ``box >= 0`` under HIPS autograd), which
# must not send autograd boxes or tensors to NumPy's ``where``.
_SELECT = frozenset({"where"})


def _dispatch(name, args, like):
    """The autoray backend name that ``do(name, *args, like=like)`` runs on.

    One array is inspected, with :func:`autoray.infer_backend` (cached per
    class, which ``torch.compile`` traces without a graph break; autoray's
    ``infer_backend_multi`` breaks the graph): the first argument, the first
    element of a joined sequence, or ``where``'s first data operand (``a`` in
    ``where(cond, a, b)``, else ``b`` when ``a`` is a Python scalar).
    """
    if like is not None:
        return like if isinstance(like, str) else ar.infer_backend(like)
    first = args[0]
    if name in _SELECT:
        first = args[1] if hasattr(args[1], "shape") else args[2]
    elif name in _JOIN and isinstance(first, (list, tuple)) and first:
        first = first[0]
    return ar.infer_backend(first)


class Namespace:
    """The array functions of one framework, resolved without looking at any array.

    ``xp.name`` is the shim's op ``name`` (its ``OPS`` table) where it has one,
    else autoray's function for that backend (:func:`autoray.get_lib_fn`). A
    public call resolves its framework once (:func:`namespace`) and passes the
    namespace down, so the core's cost in backend look-ups does not grow with
    the size of the problem. Nothing is written on attribute access (a write
    while ``torch.compile`` traces the reading frame would trip its guards).

    Examples
    --------
    >>> import numpy as np
    >>> xp = namespace(np.ones(3))
    >>> xp.name, float(xp.sum(xp.exp(np.zeros(3))))
    ('numpy', 3.0)
    """

    __slots__ = ("name", "_table")

    def __init__(self, name, table):
        self.name = name
        self._table = table

    def __getattr__(self, fn):
        if fn.startswith("__"):
            raise AttributeError(fn)
        op = self._table.get(fn)
        return op if op is not None else ar.get_lib_fn(self.name, fn)

    def __repr__(self):
        return f"Namespace({self.name!r})"


def namespace(like):
    """The :class:`Namespace` of ``like``'s framework (``like``: an array or a backend name).

    One :func:`autoray.infer_backend` call for an array; none for a name.
    """
    name = like if isinstance(like, str) else ar.infer_backend(like)
    return Namespace(name, backends.ops(name))


def do(name, *args, like=None, **kwargs):
    """Call the array function ``name`` on ``args``, like :func:`autoray.do`.

    The backend is inferred from the first argument (the first element of a
    joined sequence; ``where``'s first data operand) or given by ``like``. The
    shim of that framework is asked first (its ``OPS`` table: translations
    that autoray lacks or ``torch.compile`` rejects; kernels are in ``KERNELS``,
    see :func:`kernel`); any other name goes to :func:`autoray.do` unchanged.
    """
    backend = _dispatch(name, args, like)
    fn = backends.ops(backend).get(name)
    if fn is not None:
        return fn(*args, **kwargs)
    if name in _SELECT and like is None:
        like = backend
    return ar.do(name, *args, like=like, **kwargs)


def astype(x, dtype_name):
    """``x`` cast to the dtype named ``dtype_name`` (like :func:`autoray.astype`).

    The shim's ``astype`` where it has one: autoray resolves dtype names lazily,
    through caches that ``torch.compile`` does not read (an import, a graph break).
    """
    fn = backends.ops(ar.infer_backend(x)).get("astype")
    return ar.astype(x, dtype_name) if fn is None else fn(x, dtype_name)


def kernel(name, like=None, *, xp=None):
    """The shim kernel ``name`` for ``like``'s framework (or the bound namespace ``xp``'s),
    or ``None`` if it has none.

    Kernels are entries of a shim's ``KERNELS`` table under the names a family
    declares; this is the look-up of the core's sample helpers
    (:class:`diffopt._kernels.SampleKernels`: ``sum_samples``, ``add_scaled``;
    :class:`diffopt._kernels.OrderKernels`: ``stable_argsort``), and
    an undeclared name is a ``ValueError`` (the sorting family asks through
    :func:`diffopt.sorting._kernels.kernel`). The core calls its generic code
    where this is ``None``. With ``xp`` no array is inspected.
    """
    if name not in _kernels.NAMES:
        raise ValueError(f"{name!r} is not a kernel declared by diffopt._kernels "
                         f"(declared: {', '.join(sorted(_kernels.NAMES))})")
    return backends.kernels(xp.name if xp is not None else ar.infer_backend(like)).get(name)


def stable_argsort(x, axis, *, xp=None):
    """``argsort`` of ``x`` along ``axis`` with ties kept in their order of position.

    The shim's ``stable_argsort`` kernel (each framework spells "stable" its own
    way), else the framework's ``argsort`` (stable already: CuPy). ``xp``: the
    bound namespace of ``x``'s framework (none: inferred from ``x``).
    """
    xp = namespace(x) if xp is None else xp
    fast = kernel("stable_argsort", xp=xp)
    return xp.argsort(x, axis=axis) if fast is None else fast(x, axis)


def sum_samples(x, *, xp=None):
    """``sum(x, axis=0)``: the sum over the leading (sample) axis of ``x``.

    The shim's ``sum_samples`` kernel where it has one and it applies (eager
    CPU torch: a vector-matrix product with ones), else the generic ``sum``.
    ``xp``: the bound namespace of ``x``'s framework (none: inferred from ``x``).
    """
    xp = namespace(x) if xp is None else xp
    fast = kernel("sum_samples", xp=xp)
    out = None if fast is None else fast(x)
    return xp.sum(x, axis=0) if out is None else out


def inner_samples(f, g, *, xp=None):
    """``einsum('nbo,bo->nb', f, g)``: each sample's inner product with ``g`` ``[B, out]``.

    ``f`` is ``[n, B, out]``, instance-major in memory as the engine makes it:
    ``einsum`` is then one matrix-vector product per instance, with no kernel.
    """
    return (namespace(f) if xp is None else xp).einsum("nbo,bo->nb", f, g)


def add_scaled(a, b, scale, *, xp=None):
    """``a + scale * b``, laid out in the logical order of the result.

    The shim's ``add_scaled`` kernel where it has one and it applies (eager CPU
    torch, which would otherwise lay the result out like a transposed ``b``); the
    engine reshapes the result to solver rows without a copy.
    """
    fast = kernel("add_scaled", b, xp=xp)
    out = None if fast is None else fast(a, b, scale)
    return a + scale * b if out is None else out


def constant(a, like):
    """The NumPy array ``a`` as an array of ``like``'s framework, device and dtype.

    Through the shim's ``from_numpy`` (on ``like``'s device; under ``torch.compile``
    a constant of the graph), not autoray's ``asarray``.
    """
    out = backends.get_backend(like).from_numpy(a, like)
    return astype(out, ar.get_dtype_name(like))


def quiet_numpy(like):
    """A context silencing NumPy's warnings for ``inf - inf``, overflow and ``1 / 0``.

    ``np.errstate`` for eager arrays; nothing while ``like`` is traced
    (``torch.compile`` cannot trace ``np.errstate``, and no traced framework computes
    in NumPy).
    """
    if backends.get_backend(like).is_symbolic(like):
        return contextlib.nullcontext()
    return np.errstate(invalid="ignore", over="ignore", divide="ignore")


def logsumexp(x, axis=-1, keepdims=False):
    """``log(sum(exp(x), axis))`` without overflow."""
    m = do("max", x, axis=axis, keepdims=True)
    m = do("where", do("isfinite", m), m, do("zeros_like", m))
    out = do("log", do("sum", do("exp", x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else do("squeeze", out, axis=axis)


def softmax(x, axis=-1):
    """``exp(x) / sum(exp(x), axis)``, stable."""
    return do("exp", x - logsumexp(x, axis=axis, keepdims=True))


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``, stable for large ``|x|``."""
    e = do("exp", -do("abs", x))
    return do("where", x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(x):
    """``log(1 + exp(x))``, stable for large ``|x|``."""
    return do("maximum", x, 0.0 * x) + do("log1p", do("exp", -do("abs", x)))


def logaddexp(a, b):
    """``log(exp(a) + exp(b))``, stable."""
    m = do("maximum", a, b)
    return m + softplus(-do("abs", a - b))


def first_max_mask(x, axis=-1, *, xp=None):
    """One-hot mask of the first maximum of ``x`` along ``axis``, in ``x``'s dtype.

    ``argmax`` compared with the positions along ``axis`` (a ``cumsum`` of ones,
    made on ``x``'s device): faster than ``one_hot`` in torch. ``xp``: the bound
    namespace of ``x``'s framework (none: inferred from ``x``).
    """
    xp = namespace(x) if xp is None else xp
    idx = xp.expand_dims(xp.argmax(x, axis=axis), axis)
    # positions counted on x's device (autoray's ``arange(like=x)`` makes a host tensor for torch)
    positions = xp.cumsum(xp.astype(xp.ones_like(x), xp.get_dtype_name(idx)), axis=axis) - 1
    return xp.astype(idx == positions, xp.get_dtype_name(x))


def nan_rows(x, out, *, xp=None):
    """``out`` with row ``i`` set to NaN wherever row ``i`` of ``x`` holds a NaN.

    The one NaN rule of diffopt: a NaN anywhere in an instance makes that
    instance's whole result NaN (``x`` is ``[B, ...]``, ``out`` is ``[B, ...]``
    with the same ``B``; infinities are left alone). Cheap: one ``isnan`` and
    one reduction over ``x``. ``xp``: the bound namespace (none: inferred from ``x``).
    """
    size = math.prod([int(d) for d in x.shape[1:]])  # a list: torch.compile does not pass a generator to prod
    if size == 0:
        return out
    xp = namespace(x) if xp is None else xp
    flat = xp.reshape(x, (-1, size))
    flags = xp.astype(flat != flat, "float32")  # not isnan: TF's NumPy isnan fails on bfloat16
    bad = xp.reshape(xp.max(flags, axis=1) > 0, (-1,) + (1,) * (len(out.shape) - 1))
    return where_fill(bad, float("nan"), out, xp=xp)


def where_fill(cond, value, x, *, xp=None):
    """``where(cond, value, x)`` in ``x``'s dtype.

    The Python scalar ``value`` is given ``x``'s dtype first: TensorFlow's
    NumPy-style ``where`` would promote bfloat16 with a Python float to float64.
    """
    if xp is None:
        return do("where", cond, do("full_like", x, value), x, like=x)
    return xp.where(cond, xp.full_like(x, value), x)


# --- loops and per-sample maps: each backend shim provides its own ------------------------


def fori_loop(lower, upper, body, carry, like, shim=None):
    """``carry = body(i, carry)`` for ``i`` in ``range(lower, upper)``.

    A Python loop, except for traced JAX values where it is
    ``jax.lax.fori_loop`` (one traced body instead of an unrolled loop under
    ``jit``) and inside ``tf.function`` where it is ``tf.while_loop`` (the
    index is then a traced int32 scalar). ``carry`` is a
    tuple of arrays whose shapes and dtypes ``body`` keeps. ``shim``: ``like``'s shim,
    when the caller has resolved it (then no array is inspected).
    """
    return (backends.get_backend(like) if shim is None else shim).fori_loop(lower, upper, body, carry)


def map_leading(fn, leaves, size, like):
    """Apply ``fn`` to each slice ``i < size`` of the leading axis of ``leaves``.

    ``fn`` maps a tuple of arrays (the ``i``-th slices of ``leaves``) to a
    tuple of arrays; the results are stacked on a new leading axis:
    ``jax.vmap`` for JAX, ``tf.vectorized_map`` for TensorFlow (which falls
    back to a loop for ops it cannot vectorise), a Python loop elsewhere
    (``fn`` then need not be vectorisable).
    """
    return backends.get_backend(like).map_leading(fn, tuple(leaves), size)


# --- forms taking a namespace resolved once (:func:`namespace`): no array is inspected ------


def shim_in(xp):
    """The shim module of the namespace ``xp``'s framework (see :mod:`diffopt.backends`)."""
    return backends.load(backends.shim_name(xp.name))


def astype_in(xp, x, dtype_name):
    """:func:`astype` in the namespace ``xp``: ``x`` cast to the dtype named ``dtype_name``.

    The shim's ``astype`` where it has one, else autoray's for ``xp``'s backend, given
    that backend's dtype (autoray's generic ``astype`` would infer it from ``x`` again).
    """
    fn = xp.astype
    if fn is ar.astype:
        return x.astype(ar.to_backend_dtype(dtype_name, like=xp.name))
    return fn(x, dtype_name)


def constant_in(xp, a, like):
    """:func:`constant` in the namespace ``xp``: the NumPy ``a`` on ``like``'s device, in its dtype."""
    return astype_in(xp, shim_in(xp).from_numpy(a, like), ar.get_dtype_name(like))


def where_fill_in(xp, cond, value, x):
    """:func:`where_fill` in the namespace ``xp``: ``where(cond, value, x)`` in ``x``'s dtype."""
    return xp.where(cond, xp.full_like(x, value), x)


def quiet_numpy_in(xp, like):
    """:func:`quiet_numpy` in the namespace ``xp``."""
    if shim_in(xp).is_symbolic(like):
        return contextlib.nullcontext()
    return np.errstate(invalid="ignore", over="ignore", divide="ignore")


def nan_rows_in(xp, x, out):
    """:func:`nan_rows` in the namespace ``xp``: rows of ``out`` NaN where ``x``'s row holds a NaN."""
    size = math.prod([int(d) for d in x.shape[1:]])  # a list: torch.compile does not pass a generator to prod
    if size == 0:
        return out
    flat = xp.reshape(x, (-1, size))
    flags = astype_in(xp, flat != flat, "float32")  # not isnan: TF's NumPy isnan fails on bfloat16
    bad = xp.reshape(xp.max(flags, axis=1) > 0, (-1,) + (1,) * (len(out.shape) - 1))
    return where_fill_in(xp, bad, float("nan"), out)
