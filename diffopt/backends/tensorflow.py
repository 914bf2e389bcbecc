"""TensorFlow shim: ``tf.custom_gradient``; host solvers through ``tf.numpy_function``."""

import numbers

import numpy as np
import tensorflow as tf

from diffopt.backends import _common
from diffopt.backends._common import (
    SECOND_ORDER_MESSAGE, as_tuple, check_int_seed, numpy_seed, second_order_spec,
)
from diffopt.backends._rng import Rng, rng_type_error

NAME = "tensorflow"
OPS = {"stop_gradient": tf.stop_gradient, "erf": tf.math.erf}  # the core's names autoray lacks for TF
KERNELS = {"stable_argsort": _common.stable_argsort_of("tensorflow")}  # declared by diffopt._kernels
_SEED_HIGH = 2**62


@tf.custom_gradient
def _first_order_only(c, *inputs):
    """``c`` (a cotangent), tied to the inputs of the op it came from; its gradient raises."""

    def grad(dy):
        raise NotImplementedError(SECOND_ORDER_MESSAGE.format(framework="tensorflow", hint="."))

    return tf.identity(c), grad


def custom_vjp(fwd, bwd, jit=False, second_order=False):
    """See :mod:`diffopt.backends`. Works eagerly and inside ``tf.function``.

    ``jit`` is ignored here. The inputs are cut from ``fwd`` (``stop_gradient``),
    so a gradient of the gradient (nested tapes) raises, unless ``second_order`` is
    a :class:`~diffopt.backends.SecondOrder`: the backward then runs as an op of
    ``(g, inputs)`` whose own gradient is that estimate.
    """
    spec = second_order_spec(second_order)

    @tf.custom_gradient
    def f(*arrays):
        # stop_gradient: an active GradientTape must not record (and keep alive) fwd's intermediates
        out, res = fwd(*(tf.stop_gradient(a) for a in arrays))
        outs, is_tuple = as_tuple(out)

        def grad(*upstream):
            gs = tuple(tf.zeros_like(o) if g is None else g for o, g in zip(outs, upstream))
            if spec is not None and not is_tuple:
                return list(_backward_op(spec, bwd, res, gs[0], arrays))
            cot = bwd(res, gs if is_tuple else gs[0])
            return [None if c is None else _first_order_only(tf.convert_to_tensor(c), *arrays) for c in cot]

        return out, grad

    return f


def _backward_op(spec, bwd, res, g, arrays):
    """``bwd(res, g)`` recorded as one op of ``(g, *arrays)`` whose gradient is ``spec``'s."""
    mask = []

    @tf.custom_gradient
    def back(g, *arrays):
        cot = bwd(res, g)
        mask.extend(c is not None for c in cot)
        outs = [tf.convert_to_tensor(c) for c in cot if c is not None]

        def grad(*us):
            us = iter(us)
            ts = tuple(next(us) if m else None for m in mask)
            d_g = spec.jvp(arrays, res, ts)
            d_arrays = spec.hvp(arrays, res, g, ts)
            # a third derivative raises
            return [None if c is None else _first_order_only(tf.convert_to_tensor(c), g, *arrays)
                    for c in (d_g, *d_arrays)]

        return outs, grad

    outs = iter(back(g, *arrays))
    return tuple(next(outs) if m else None for m in mask)


class TfRng(Rng):
    """Stream of stateless ops; ``key`` is an int64 seed tensor of shape ``[2]``."""

    def __init__(self, key, like):
        super().__init__(key, like)
        self._count = 0

    def _seed(self):
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self.key, 2 * self._count)

    def _normal(self, shape, dtype):
        return tf.random.stateless_normal(shape, seed=self._seed(), dtype=dtype)

    def _uniform(self, shape, dtype):
        return tf.random.stateless_uniform(shape, seed=self._seed(), dtype=dtype)

    def _gamma(self, shape, alpha, dtype):
        return tf.random.stateless_gamma(shape, seed=self._seed(), alpha=alpha, dtype=dtype)

    def fold(self, index):
        return TfRng(tf.random.experimental.stateless_fold_in(self.key, 2 * index + 1), self.like)


def make_rng(rng, like):
    """See :mod:`diffopt.backends`; ``None`` draws a seed with TF's global (stateful) RNG."""
    if rng is None:
        key = tf.random.uniform([2], maxval=_SEED_HIGH, dtype=tf.int64)
    elif isinstance(rng, numbers.Integral):
        key = tf.constant([check_int_seed(rng), 0], dtype=tf.int64)
    elif isinstance(rng, tf.random.Generator):
        key = rng.make_seeds(1)[:, 0]
    elif tf.is_tensor(rng) and rng.dtype.is_integer and rng.shape == (2,):
        key = tf.cast(rng, tf.int64)
    elif isinstance(rng, (np.random.Generator, np.random.RandomState)):
        key = tf.constant([numpy_seed(rng, NAME), 0], dtype=tf.int64)
    else:
        raise rng_type_error(NAME, rng)
    return TfRng(key, like)


def is_symbolic(x):
    """Whether ``x`` is a graph tensor (inside ``tf.function``)."""
    return not tf.executing_eagerly() or tf.is_symbolic_tensor(x)


def dynamic_size(x, axis):
    """The size of ``x`` along ``axis`` as a scalar int32 tensor (``tf.shape``: known at run time)."""
    return tf.shape(x)[axis]


def on_device(x):
    """Whether the eager tensor ``x`` lies on a device other than the host CPU."""
    return "CPU" not in (getattr(x, "device", "") or "CPU").upper()


def to_numpy(x):
    """A NumPy copy of an eager tensor."""
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def host_call(fn, x, out_shape, out_dtype):
    """Run ``fn`` eagerly, or through ``tf.numpy_function`` in a graph (static shape kept)."""
    tout = tf.as_dtype(out_dtype)
    np_out = tout.as_numpy_dtype
    if not is_symbolic(x):
        out = np.asarray(fn(to_numpy(x)), dtype=np_out)
        return tf.convert_to_tensor(out)
    if x.dtype == tf.bfloat16:
        x = tf.cast(x, tf.float32)

    def call(a):
        return np.asarray(fn(a), dtype=np_out)

    y = tf.numpy_function(call, [x], tout, stateful=False)
    y.set_shape(out_shape)
    return y


def fori_loop(lower, upper, body, carry):
    """``tf.while_loop`` inside ``tf.function`` (one traced body: the graph does not grow with
    the number of iterations); a Python loop eagerly. ``body`` gets the index as an int32
    tensor in a graph."""
    if tf.executing_eagerly() or upper <= lower:
        return _common.fori_loop(lower, upper, body, carry)

    def cond(i, *_):
        return i < upper

    def step(i, *values):
        return (i + 1,) + tuple(body(i, tuple(values)))

    return tuple(tf.while_loop(cond, step, (tf.constant(lower, tf.int32),) + tuple(carry))[1:])


def map_leading(fn, leaves, size):
    """``fn`` on each leading-axis slice, vectorised by ``tf.vectorized_map``
    (which falls back to a loop for ops it cannot vectorise)."""
    del size
    return tuple(tf.vectorized_map(fn, tuple(leaves)))


def from_numpy(a, like):
    """``a`` (NumPy) as a TensorFlow tensor."""
    return tf.convert_to_tensor(a)
