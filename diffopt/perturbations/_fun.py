"""``make_perturbed_fun``: the ``optax.perturbations`` API on pytrees of any framework."""

from __future__ import annotations

from typing import Any, Callable
import functools
import math
import warnings

import autoray as ar

from diffopt._arrays import cast
from diffopt._call import ByReference, solver_name
from diffopt._typing import Array, NoiseLike, RngLike, Solver
from diffopt._checks import check_floating
from diffopt._ops import do, map_leading
from diffopt.backends import get_backend
from diffopt.noise import Gumbel
from diffopt.perturbations._perturbed import perturbed
from diffopt.perturbations._tree import tree_flatten, tree_unflatten

__all__ = ["make_perturbed_fun"]


class _DefaultScale(float):
    """The default noise scale 0.1, an object of its own: ``scale`` left out is told apart from
    ``scale=0.1`` given (then ``sigma=`` besides it is an error)."""

    def __repr__(self):
        return "0.1"


_DEFAULT_SCALE = _DefaultScale(0.1)


def make_perturbed_fun(
    fun: Solver,
    num_samples: int = 1000,
    scale: float | Array = _DEFAULT_SCALE,
    noise: NoiseLike = Gumbel(),
    use_baseline: bool = True,
    *,
    chunk_size: int | None = None,
    sigma: float | Array | None = None,
) -> Callable[[RngLike, Any], Any]:
    """A differentiable Monte-Carlo approximation f_σ(x) = E[fun(x + σZ)] of ``fun`` on pytrees.

    Drop-in for ``optax.perturbations.make_perturbed_fun``, for arrays of
    every framework: ``fun`` maps one (unbatched) pytree of arrays to a pytree
    of arrays; it is applied per sample (``jax.vmap`` for JAX, a loop
    elsewhere). Noise is drawn independently for every entry of every leaf.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> y`` on nested tuples / lists / dicts of arrays.
    num_samples : int, default 1000
    scale : float or scalar array, default 0.1
        The noise scale σ, the ``sigma`` of :func:`diffopt.perturbed` (an
        array is learnable). optax renames its ``sigma`` to ``scale``
        (optax #1342); this is the same third positional argument.
    noise : Noise or str, default Gumbel()
        A :class:`diffopt.Noise` (``optax``'s noise objects are not accepted:
        use ``diffopt.Gumbel()`` / ``diffopt.Normal()``).
    use_baseline : bool, default True
        Subtract ``fun(x)`` from the outputs in the gradient (the
        ``control_variate='value'`` of :func:`diffopt.perturbed`).
    chunk_size : int, optional
        See :func:`diffopt.perturbed`.
    sigma : float or scalar array, optional
        Deprecated alias of ``scale`` (keyword only): it works as ``scale``
        and issues a :class:`DeprecationWarning`.

    Returns
    -------
    callable
        ``fn(rng, x)``: the mean of ``fun`` over perturbations, a pytree like
        ``fun``'s output with floating leaves, differentiable in ``x`` by the
        score-function estimator. ``rng`` is a JAX key, an int seed, a
        framework generator or ``None`` (see :mod:`diffopt.random`).

    Raises
    ------
    TypeError
        For ``scale`` and ``sigma`` both given, or a ``fun`` that is not callable.
    ValueError
        As :func:`diffopt.perturbed` (bad ``scale``, ``num_samples``, noise).

    Examples
    --------
    >>> import numpy as np
    >>> import diffopt
    >>> fn = diffopt.make_perturbed_fun(lambda x: np.max(x, axis=-1), num_samples=100, scale=0.1)
    >>> fn(0, np.array([1.0, 3.0, 2.0])).shape      # E[max(x + 0.1 Z)], a scalar
    ()
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    scale = _scale(scale, sigma)
    settings = dict(num_samples=num_samples, sigma=scale, noise=noise, batched=False,
                    control_variate="value" if use_baseline else None, chunk_size=chunk_size)
    perturbed(_identity, **settings)  # validate now, before any call
    return _PerturbedFun(fun, settings)


def _scale(scale, sigma):
    """``scale``, or the deprecated ``sigma`` in its place (a warning; both given: an error).

    ``scale`` given is told apart from its default by identity with the default object."""
    if sigma is None:
        return _positive("scale", float(scale) if scale is _DEFAULT_SCALE else scale)
    if scale is not _DEFAULT_SCALE:
        raise TypeError("make_perturbed_fun: give the noise scale as scale= or as its deprecated alias "
                        "sigma=, not both")
    warnings.warn("make_perturbed_fun: sigma= is deprecated, use scale= (as optax renames it)",
                  DeprecationWarning, stacklevel=3)
    return _positive("sigma", sigma)


def _positive(name, value):
    """A number ``value`` checked positive and finite (a :class:`ValueError` naming ``name``);
    arrays are checked by :func:`diffopt.perturbed`."""
    if isinstance(value, (int, float)) and not (math.isfinite(value) and value > 0):
        raise ValueError(f"make_perturbed_fun: {name} must be a positive finite number, got {value!r}")
    return value


def _identity(x):
    return x


class _PerturbedFun(ByReference):
    """``fn(rng, x)`` of :func:`make_perturbed_fun`: a plain object (not a closure), so it
    pickles when ``fun`` does."""

    def __init__(self, fun, settings):
        functools.update_wrapper(self, fun)  # first: it copies fun's __dict__
        self.fun, self.settings = fun, settings

    def __call__(self, rng, x):
        fun, settings = self.fun, self.settings
        leaves, treedef = tree_flatten(x)
        _check_leaves(leaves)
        packed = _Packed(leaves)
        info = {}

        def solver(xs):
            rows = int(xs.shape[0])
            parts = packed.split(xs, rows)

            def one(sample):
                y_leaves, info["treedef"] = _checked_leaves(fun, fun(tree_unflatten(treedef, list(sample))))
                info["shapes"] = [tuple(int(d) for d in y.shape) for y in y_leaves]
                return tuple(y_leaves)

            ys = map_leading(one, parts, rows, like=xs)
            dtype = ar.get_dtype_name(xs)
            return do("concatenate", [ar.astype(do("reshape", y, (rows, -1)), dtype) for y in ys], axis=1)

        out = perturbed(solver, **settings)(packed.flat, rng=rng)
        return tree_unflatten(info["treedef"], _unpack(out, info["shapes"]))


def _checked_leaves(fun, out):
    """``tree_flatten(out)``: ``fun``'s output, an array or a pytree of arrays (a :class:`TypeError`
    naming ``fun`` for ``None``, a number, an empty tree)."""
    leaves, treedef = tree_flatten(out)
    if not leaves or not all(hasattr(leaf, "shape") for leaf in leaves):
        raise TypeError(f"make_perturbed_fun: fun {solver_name(fun)} must return an array or a pytree "
                        f"(tuple, list, dict) of arrays, got {type(out).__name__}")
    return leaves, treedef


def _check_leaves(leaves):
    if not leaves:
        raise ValueError("make_perturbed_fun: x has no array leaves")
    get_backend(*leaves, argnames=[f"leaf {i} of x" for i in range(len(leaves))])
    for i, leaf in enumerate(leaves):
        check_floating(f"leaf {i} of x", leaf)
        if any(d is None for d in leaf.shape):
            raise ValueError(
                f"leaf {i} of x has shape {tuple(leaf.shape)}, with a size unknown while tracing: "
                "make_perturbed_fun perturbs one instance, whose shape must be known (map it over a "
                "batch of unknown size, e.g. with tf.map_fn)"
            )


class _Packed:
    """All leaves of a pytree flattened and concatenated into one vector (a common dtype)."""

    def __init__(self, leaves):
        self.shapes = [tuple(int(d) for d in leaf.shape) for leaf in leaves]
        self.dtypes = [ar.get_dtype_name(leaf) for leaf in leaves]
        self.sizes = [math.prod(s) for s in self.shapes]
        dtype = max(self.dtypes, key=_precision)
        flat = [do("reshape", cast(leaf, dtype), (-1,)) for leaf in leaves]
        self.flat = flat[0] if len(flat) == 1 else do("concatenate", flat, axis=0)

    def split(self, xs, rows):
        """The rows ``[rows, D]`` cut back into leaves ``[rows, *shape]`` of their own dtypes."""
        parts, start = [], 0
        for shape, size, dtype in zip(self.shapes, self.sizes, self.dtypes):
            part = do("reshape", xs[:, start:start + size], (rows,) + shape)
            parts.append(cast(part, dtype))
            start += size
        return tuple(parts)


def _unpack(out, shapes):
    leaves, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        leaves.append(do("reshape", out[start:start + size], shape))
        start += size
    return leaves


def _precision(dtype):
    return {"float16": 0, "bfloat16": 1, "float32": 2, "float64": 3}.get(dtype, 2)
