"""JAX shim: ``jax.custom_vjp``; host solvers through ``jax.pure_callback``."""

import functools
import numbers

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

from diffopt.backends import _common
from diffopt.backends.jax import _projection, _sorting
from diffopt.backends._common import SECOND_ORDER_MESSAGE, SecondOrder, check_int_seed, numpy_seed
from diffopt.backends._rng import Rng, rng_type_error

NAME = "jax"
# autoray's JAX translations serve, plus the core's ``xp.stop_gradient`` and ``xp.erf``
OPS = {"stop_gradient": jax.lax.stop_gradient, "erf": jax.scipy.special.erf}
# Kernels, under the names their family declares (diffopt.sorting._kernels)
KERNELS = {
    # the transports of ranks, top-k and permutations, looped (diffopt.sorting._soft.network_transport)
    "sorting_transport": _sorting.transport,
    # soft_sort's network and its backward, looped (diffopt.sorting._soft.sorter)
    "sorting_network": _sorting.network,
    "sorting_network_pull": _sorting.pull,
    # the projection's isotonic solve, traced (diffopt.sorting._projection.isotonic)
    "sorting_isotonic": _projection.isotonic,
    # compile a function built once per configuration and reused (sorting's transports)
    "jit": lambda fn: jax.jit(fn),
    "stable_argsort": lambda x, axis: jnp.argsort(x, axis=axis, stable=True),
}


@jax.custom_jvp
def _first_order_only(x):
    """Identity whose derivative raises: JAX differentiates a ``custom_vjp``'s
    forward pass only for a derivative of its gradient."""
    return x


@_first_order_only.defjvp
def _first_order_only_jvp(primals, tangents):
    raise NotImplementedError(SECOND_ORDER_MESSAGE.format(
        framework="jax", hint=" (jax.hessian, a jvp or grad of a gradient)."))


def custom_vjp(fwd, bwd, jit=False, second_order=False):
    """See :mod:`diffopt.backends`. Works under ``jit``, ``vmap`` and ``grad``.

    With ``jit=True`` the function is compiled (``jax.jit``): eager JAX runs op
    by op, which is slow for long networks of small ops; for a function that
    the caller builds once and reuses. With ``second_order=True`` JAX may
    differentiate ``fwd`` and ``bwd`` for derivatives of the gradient; with a
    :class:`~diffopt.backends.SecondOrder` the backward is a ``custom_jvp`` op
    that uses its estimates (see :func:`_with_second_order`); otherwise that
    raises ``NotImplementedError``.
    """

    if isinstance(second_order, SecondOrder):
        f = _with_second_order(fwd, bwd, second_order)
        return jax.jit(f) if jit else f

    @jax.custom_vjp
    def f(*arrays):
        return fwd(*arrays)[0]

    def f_fwd(*arrays):
        if not second_order:
            arrays = tuple(_first_order_only(a) for a in arrays)
        return fwd(*arrays)

    def f_bwd(res, g):
        return tuple(bwd(res, g))

    f.defvjp(f_fwd, f_bwd)
    return jax.jit(f) if jit else f


def _is_float(a):
    return jnp.issubdtype(a.dtype, jnp.inexact)


def _stop(a):
    return jax.lax.stop_gradient(a) if _is_float(a) else a


def _with_second_order(fwd, bwd, spec):
    """``custom_vjp`` whose backward is a ``custom_jvp`` op of ``(g, arrays)``.

    ``fwd`` runs on ``stop_gradient`` inputs (JAX never differentiates the solver);
    its output gets ``spec.jvp`` as its tangent, and the inputs are kept as residuals, so that a derivative of the gradient
    (``jax.hessian`` = ``jacfwd(jacrev)``, ``jacrev(jacrev)``, ``jvp`` of ``grad``)
    reaches the backward op, whose JVP is ``bwd(res, t_g) + spec.hvp(arrays, res, g, t)``
    (linear in the tangents, so JAX also transposes it for reverse-over-reverse).
    """

    @jax.custom_jvp
    def back(g, arrays, res):
        return tuple(bwd(res, g))

    @back.defjvp
    def back_jvp(primals, tangents):
        g, arrays, res = primals
        t_g, t_arrays, _ = tangents
        # a derivative of this rule (third order) raises instead of differentiating the solver
        arrays = tuple(_first_order_only(a) if _is_float(a) else a for a in arrays)
        g = _first_order_only(g)
        out = tuple(bwd(res, g))
        ts = tuple(t if _is_float(a) else None for a, t in zip(arrays, t_arrays))
        from_g = tuple(bwd(res, t_g))
        from_arrays = tuple(spec.hvp(arrays, res, g, ts))
        t_out = tuple(
            None if o is None else _add(o, a, b) for o, a, b in zip(out, from_g, from_arrays)
        )
        return out, t_out

    @jax.custom_jvp
    def with_tangent(out, arrays, res):
        return out

    @with_tangent.defjvp
    def with_tangent_jvp(primals, tangents):
        out, arrays, res = primals
        _, t_arrays, _ = tangents
        arrays = tuple(_first_order_only(a) if _is_float(a) else a for a in arrays)
        ts = tuple(t if _is_float(a) else None for a, t in zip(arrays, t_arrays))
        return out, spec.jvp(arrays, res, ts).astype(out.dtype)

    @jax.custom_vjp
    def f(*arrays):
        return fwd(*arrays)[0]

    def f_fwd(*arrays):
        out, res = fwd(*(_stop(a) for a in arrays))
        res = tuple(res)
        # the output's tangent (forward mode over this forward pass) is spec.jvp
        return with_tangent(out, tuple(arrays), res), (tuple(arrays), res)

    def f_bwd(saved, g):
        arrays, res = saved
        return back(g, arrays, res)

    f.defvjp(f_fwd, f_bwd)
    return f


def _add(like, a, b):
    parts = [p.astype(like.dtype) for p in (a, b) if p is not None]
    return sum(parts[1:], parts[0]) if parts else jnp.zeros_like(like)


def _under_jit(x):
    """Whether ``x`` is (or wraps) a value being staged out by ``jit``."""
    while isinstance(x, jax.core.Tracer):
        inner = None
        for attr in ("primal", "val"):
            inner = getattr(x, attr, None)
            if inner is not None:
                break
        if inner is None:
            return True
        x = inner
    return not isinstance(x, (jax.Array, np.ndarray, np.generic, int, float))


def is_symbolic(x):
    """Whether ``x`` is a tracer (``jit``, ``vmap``, ``grad``): its values are not at hand."""
    return isinstance(x, jax.core.Tracer)


def _is_key(k):
    if not hasattr(k, "dtype"):
        return False
    if jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key):
        return True
    return k.dtype == jnp.uint32 and k.shape[-1:] == (2,)


class JaxRng(Rng):
    """Stream over a JAX key: each draw splits the key."""

    def __init__(self, key, like):
        super().__init__(key, like)
        self._state = key

    def _sub(self):
        self._state, sub = jax.random.split(self._state)
        return sub

    def _normal(self, shape, dtype):
        return jax.random.normal(self._sub(), shape, dtype=dtype)

    def _uniform(self, shape, dtype):
        return jax.random.uniform(self._sub(), shape, dtype=dtype)

    def _gamma(self, shape, alpha, dtype):
        return gamma_bulk(self._sub(), shape, alpha, dtype)

    def fold(self, index):
        return JaxRng(jax.random.fold_in(self.key, index), self.like)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def gamma_bulk(key, shape, alpha, dtype):
    """Gamma(``alpha``, 1) draws by Marsaglia and Tsang's rejection method, proposed in bulk.

    Jitted with ``shape``, ``alpha`` and ``dtype`` static: one compile per combination.
    Eagerly, the ``while_loop`` below with its fresh closures would be traced and compiled
    again on every call (measured 1.4 s per Sum-of-Gamma draw of 100 numbers; 5 ms jitted);
    under an outer ``jax.jit`` this is inlined.

    The same exact method as ``jax.random.gamma``, which runs it element by element
    (a per-element key and a vmapped ``while_loop``: ~50x a normal draw on CPU).
    Here one round draws normals and uniforms for the whole array; the rejected
    entries (under 5%) are gathered into a buffer of a fixed eighth of the size and
    proposed again until none is left. ``alpha < 1`` uses ``Gamma(alpha + 1) U^(1/alpha)``.
    """
    n = int(np.prod(shape, dtype=np.int64))
    boost = alpha < 1.0
    d = (alpha + 1.0 if boost else alpha) - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    key, first, kboost = jax.random.split(key, 3)

    def propose(k, size):
        kx, ku = jax.random.split(k)
        x = jax.random.normal(kx, (size,), dtype=dtype)
        u = jax.random.uniform(ku, (size,), dtype=dtype)
        v = (1.0 + c * x) ** 3
        safe_v = jnp.where(v > 0, v, 1.0)
        ok = (v > 0) & (jnp.log(u) < 0.5 * x * x + d - d * safe_v + d * jnp.log(safe_v))
        return ok, d * safe_v

    ok, out = propose(first, n)
    cap = min(n, max(64, n // 8))

    def cond(state):
        return jnp.any(state[1])

    def body(state):
        k, left, out = state
        k, sub = jax.random.split(k)
        idx = jnp.nonzero(left, size=cap, fill_value=n)[0]
        ok_c, y = propose(sub, cap)
        valid = idx < n
        take = ok_c & valid
        out = out.at[idx].set(jnp.where(take, y, out.at[idx].get(mode="fill", fill_value=0)), mode="drop")
        left = left.at[idx].set(~take & valid, mode="drop")
        return k, left, out

    _, _, out = jax.lax.while_loop(cond, body, (key, ~ok, out))
    if boost:
        u = jax.random.uniform(kboost, (n,), dtype=dtype)
        out = out * (1.0 - u) ** (1.0 / alpha)
    return out.reshape(shape)


def make_rng(rng, like):
    """See :mod:`diffopt.backends`. Under ``jax.jit`` a key is required."""
    if rng is None:
        if _under_jit(like):
            raise ValueError(
                "rng=None under jax.jit would freeze the noise into the compiled function: "
                "pass rng=jax.random.key(seed) (a new key per step) to the call"
            )
        key = jax.random.key(numpy_seed(None, NAME))
    elif isinstance(rng, numbers.Integral):
        key = jax.random.key(check_int_seed(rng))
    elif _is_key(rng):
        key = rng
    elif isinstance(rng, (np.random.Generator, np.random.RandomState)):
        key = jax.random.key(numpy_seed(rng, NAME))
    elif isinstance(rng, jax.core.Tracer):
        raise TypeError(
            f"rng is a traced value ({rng.aval.str_short()} under jax.jit or another JAX transformation), "
            "not a key: a seed cannot be read from a traced value; pass a key, rng=jax.random.key(seed) "
            "(a new one per step, e.g. from jax.random.split), or a Python int that is not traced"
        )
    else:
        raise rng_type_error(NAME, rng)
    return JaxRng(key, like)


def on_device(x):
    """Whether the concrete array ``x`` lies on a device other than the host CPU."""
    return any(d.platform != "cpu" for d in x.devices())


def to_numpy(x):
    """A NumPy copy of a concrete ``x``."""
    return np.asarray(x)


def host_call(fn, x, out_shape, out_dtype):
    """Run ``fn`` on the host: directly when concrete, else via ``jax.pure_callback``.

    Under ``vmap`` the callback receives the vmapped axes in front; they are
    merged into the solver's leading (instance) axis so the solver still runs
    once, vectorised.
    """
    if not is_symbolic(x):
        return jnp.asarray(np.asarray(fn(np.asarray(x))), dtype=out_dtype)
    base_ndim = x.ndim
    out_shape = tuple(out_shape)

    def callback(a):
        a = np.asarray(a)
        lead = a.shape[: a.ndim - base_ndim]
        flat = a.reshape((-1,) + a.shape[len(lead) + 1:]) if lead else a
        out = np.asarray(fn(flat))
        return out.reshape(lead + out_shape).astype(out_dtype, copy=False)

    method = "expand_dims" if base_ndim >= 1 else "sequential"
    spec = jax.ShapeDtypeStruct(out_shape, out_dtype)
    return jax.pure_callback(callback, spec, x, vmap_method=method)


def fori_loop(lower, upper, body, carry):
    """``jax.lax.fori_loop`` for traced carries (one traced body under ``jit``);
    a Python loop for concrete ones (no compilation per call)."""
    if not any(isinstance(c, jax.core.Tracer) for c in jax.tree_util.tree_leaves(carry)):
        return _common.fori_loop(lower, upper, body, carry)
    return jax.lax.fori_loop(lower, upper, body, carry)


def map_leading(fn, leaves, size):
    """``fn`` on each leading-axis slice, vectorised by ``jax.vmap``."""
    del size
    return tuple(jax.vmap(fn)(tuple(leaves)))


def draw_with_key(kind, key, shape, dtype):
    """``jax.random.<kind>(key, shape, dtype)``: optax's ``noise.sample(key, sample_shape, dtype)``."""
    return getattr(jax.random, kind)(key, tuple(shape), dtype)


def score_from_log_prob(log_prob, z):
    """``-∇ log_prob(z)`` for an elementwise log-density (optax's noise objects)."""
    return -jax.grad(lambda v: jnp.sum(log_prob(v)))(z)


def score_derivative_from_log_prob(log_prob, z):
    """``-∂² log_prob(z)/∂z²`` elementwise (the diagonal Hessian of an elementwise log-density)."""
    grad = jax.grad(lambda v: jnp.sum(log_prob(v)))
    return -jax.jvp(grad, (z,), (jnp.ones_like(z),))[1]


def from_numpy(a, like):
    """``a`` (NumPy) as a JAX array."""
    return jnp.asarray(a)
