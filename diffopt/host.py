"""Bring NumPy solvers into every framework: :func:`host_solver`."""

from __future__ import annotations

from typing import Any, Callable
from concurrent.futures import Executor
import functools
import os

import autoray
import numpy as np

from diffopt._typing import Array, Shape, Solver
from diffopt._dtypes import HALF
from diffopt.backends import get_backend

__all__ = ["host_solver", "HostSolver"]

def _to_host_input(a):
    a = np.asarray(a)
    if a.dtype.name in HALF:
        a = a.astype(np.float32)
    return a


def _check_result(out, name):
    out = np.asarray(out)
    if out.dtype == object or not (np.issubdtype(out.dtype, np.number) or out.dtype == bool):
        raise TypeError(f"host solver {name} returned {out.dtype} data; it must return a numeric NumPy array")
    return out


class HostSolver:
    """A NumPy solver callable on arrays of any framework.

    Created by :func:`host_solver` (prefer it: it is also a decorator).
    Calling the object on a torch/JAX/TensorFlow/CuPy array runs ``fn`` on
    the host and returns the result in the caller's framework, device and
    dtype; ``solver.numpy_call(a, ...)`` runs it on NumPy arrays alone.

    Parameters
    ----------
    fn : callable
        ``fn(a, *args, **kwargs) -> numpy.ndarray``.
    vectorized, executor, output_shape, output_dtype
        See :func:`host_solver`.

    Attributes
    ----------
    fn : callable
        The wrapped solver (its name and docstring are copied onto the object).
    vectorized : bool
    executor : concurrent.futures.Executor or None

    Raises
    ------
    TypeError
        If ``fn`` is not callable or ``executor`` has no ``map``.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import HostSolver
    >>> def nearest_integer(a):
    ...     return np.round(a)
    >>> solver = HostSolver(nearest_integer)
    >>> solver(np.array([[0.2, 1.7], [2.5, -0.6]]))
    array([[ 0.,  2.],
           [ 2., -1.]])
    """

    def __init__(
        self,
        fn: Solver | None,
        vectorized: bool = True,
        executor: Executor | None = None,
        output_shape: Shape | Callable[[Shape], Shape] | None = None,
        output_dtype: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if executor is not None and not callable(getattr(executor, "map", None)):
            raise TypeError("executor must be a concurrent.futures.Executor (an object with .map)")
        self.fn = fn
        self.vectorized = bool(vectorized)
        self.executor = executor
        self.output_shape = output_shape
        self.output_dtype = output_dtype
        self._shapes = {}
        functools.update_wrapper(self, fn)

    def __repr__(self):
        return f"host_solver({getattr(self.fn, '__name__', self.fn)!r}, vectorized={self.vectorized})"

    def numpy_call(self, a: Array, *args: Any, **kwargs: Any) -> np.ndarray:
        """Run the solver on the NumPy array ``a`` (leading axis = instances)."""
        a = _to_host_input(a)
        name = getattr(self.fn, "__name__", "fn")
        if self.vectorized:
            return _check_result(self.fn(a, *args, **kwargs), name)
        if a.ndim == 0:
            raise ValueError(f"host solver {name} (vectorized=False) needs a leading instance axis")
        if len(a) == 0:
            raise ValueError(f"host solver {name} got an empty leading axis")
        one = functools.partial(_with_extras, self.fn, args, kwargs) if (args or kwargs) else self.fn
        if self.executor is None:
            solved = [_solve_block(one, 0, a)]
        else:
            blocks = np.array_split(a, min(len(a), 2 * _workers(self.executor)))
            starts = np.cumsum([0] + [len(b) for b in blocks[:-1]]).tolist()
            solved = _map_blocks(self.executor, one, starts, blocks, name)
        rows = [_check_result(r, name) for r in _unpack_blocks(solved, name)]
        if len(rows) != len(a):  # a block came back short: never return a partial batch
            raise RuntimeError(f"host solver {name} got {len(rows)} results for {len(a)} instances")
        return _stack(rows, name)

    def traced_shape(self, x: Array, args: tuple = (), kwargs: dict | None = None) -> tuple:
        """The output shape for the input ``x`` (traced or not) and the extra arguments ``args``/``kwargs``.

        Declared (``output_shape``), else probed once per input shape on zeros
        (cached); an input with an unknown batch size gives its own shape. A
        framework asks for it before the solver runs (``jax.pure_callback``,
        ``tf.numpy_function``, the fake of torch's ``diffopt::host_solve``).

        Examples
        --------
        >>> import numpy as np
        >>> from diffopt import host_solver
        >>> first = host_solver(lambda a: a[:, :1])
        >>> first.traced_shape(np.zeros((4, 3)))
        (4, 1)
        """
        kwargs = {} if kwargs is None else kwargs
        shape = tuple(int(d) if d is not None else None for d in x.shape)
        if self.output_shape is not None:
            out = self.output_shape(shape) if callable(self.output_shape) else self.output_shape
            return tuple(out)
        if None in shape:
            return shape
        key = (shape, args, tuple(sorted(kwargs.items()))) if _hashable(args, kwargs) else None
        if key is not None and key in self._shapes:
            return self._shapes[key]
        probe = self.numpy_call(np.zeros(shape, dtype=np.float32), *args, **kwargs).shape
        if key is not None:
            self._shapes[key] = probe
        return probe

    def __call__(self, x: Array, *args: Any, **kwargs: Any) -> Array:
        """Solve on ``x`` (any framework); the result has ``x``'s framework, device, dtype."""
        backend = get_backend(x)
        args = tuple(_host_arg(a, backend) for a in args)
        kwargs = {k: _host_arg(v, backend) for k, v in kwargs.items()}
        compiled = getattr(backend, "compiled_host_solve", None)
        if compiled is not None and backend.is_symbolic(x):  # torch.compile: one op, no host code traced
            return compiled(self, x, args, kwargs, self.output_dtype or _dtype_name(x))
        fn = (lambda a: self.numpy_call(a, *args, **kwargs)) if (args or kwargs) else self.numpy_call
        traced = backend.is_symbolic(x)
        shape = self.traced_shape(x, args, kwargs) if traced or self.output_shape is not None else None
        if shape is not None:
            fn = functools.partial(_checked_shape, fn, tuple(shape), self.output_shape is not None,
                                   getattr(self.fn, "__name__", "fn"))
        return backend.host_call(fn, x, shape, self.output_dtype or _dtype_name(x))


def _checked_shape(fn, expected, declared, name, a):
    """``fn(a)``, whose shape must be the one the traced graph was built with.

    ``expected`` is the output shape for the traced input (declared by
    ``output_shape`` or probed); the leading (instance) axis follows ``a``
    (JAX merges vmapped axes into it). A mismatch would otherwise flow on with a
    wrong static shape (TensorFlow) or fail as an opaque callback error (JAX).
    """
    out = fn(a)
    got = tuple(out.shape)
    want = (a.shape[0],) + tuple(expected[1:]) if expected else ()
    if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
        source = ("its output_shape=" if declared else
                  "the shape found by a probe on zeros, or the input's for an unknown batch size "
                  "(declare output_shape=),")
        raise ValueError(
            f"host solver {name} returned shape {got} for input shape {tuple(a.shape)}, but "
            f"{source} gives {want} under tracing; fix output_shape or the solver"
        )
    return out


def _stack(rows, name):
    """The per-instance results as one array; they must all have one shape."""
    shapes = {r.shape for r in rows}
    if len(shapes) > 1:
        first = rows[0].shape
        bad = next(i for i, r in enumerate(rows) if r.shape != first)
        raise ValueError(
            f"host solver {name} (vectorized=False) returned results of different shapes: "
            f"instance 0 gave {first}, instance {bad} gave {rows[bad].shape}; every instance "
            "must return the same shape"
        )
    return np.stack(rows)


def _workers(executor):
    """Worker count of an executor (``os.cpu_count()`` when it does not say)."""
    return int(getattr(executor, "_max_workers", None) or os.cpu_count() or 1)


class _Failure:
    """An instance's exception, returned (not raised) by a worker: a raised one would make
    some executors (dask) cancel the other tasks and poison the next call."""

    def __init__(self, index, error):
        self.index = index
        self.error = error


def _solve_block(one, start, block):
    """Solve the instances of ``block`` (``start`` = index of its first) one by one (one task
    per block, not per instance); stops at the first failure."""
    out = []
    for i, r in enumerate(block):
        try:
            out.append(one(r))
        except Exception as error:  # reported with its instance index by _unpack_blocks
            out.append(_Failure(start + i, error))
            break
    return out


def _with_extras(fn, args, kwargs, row):
    """``fn(row, *args, **kwargs)``: the instance first, as documented (a plain
    ``partial(fn, *args)`` would put the extra positional arguments in front)."""
    return fn(row, *args, **kwargs)


def _map_blocks(executor, one, starts, blocks, name):
    """The blocks' results from ``executor``, in order. A block the executor loses (a
    worker killed beyond the cluster's retries: dask's ``KilledWorker``, a broken process
    pool) is an error naming the solver and the block's instances, never a missing row."""
    solved = []
    try:
        for block in executor.map(functools.partial(_solve_block, one), starts, blocks):
            solved.append(block)
    except Exception as error:
        first = starts[len(solved)]
        last = first + len(blocks[len(solved)]) - 1
        raise RuntimeError(
            f"host solver {name}: the executor returned no result for instances {first}..{last} "
            f"({type(error).__name__}: {error})"
        ) from error
    return solved


def _unpack_blocks(solved, name):
    """The results of every block, in order; the first failure re-raised with its own type
    (``except np.linalg.LinAlgError`` still catches it), the solver and instance in a note."""
    rows = [r for block in solved for r in block]
    for r in rows:
        if isinstance(r, _Failure):
            r.error.add_note(f"raised by host solver {name} on instance {r.index}")
            raise r.error
    return rows


def _dtype_name(x):
    return autoray.get_dtype_name(x)


def _hashable(args, kwargs):
    try:
        hash((args, tuple(sorted(kwargs.items()))))
        return True
    except TypeError:
        return False


def _host_arg(a, backend):
    """Extra solver arguments travel as NumPy/Python values."""
    if isinstance(a, (np.ndarray, np.generic, int, float, bool, str, type(None))):
        return a
    try:
        other = get_backend(a)
    except TypeError:
        return a
    if other.is_symbolic(a):
        raise TypeError(
            "extra arguments of a host solver must be concrete (NumPy or Python values); "
            f"got a traced {other.NAME} array"
        )
    return other.to_numpy(a)


def host_solver(
    fn: Solver | None = None,
    *,
    vectorized: bool = True,
    executor: Executor | None = None,
    output_shape: Shape | Callable[[Shape], Shape] | None = None,
    output_dtype: str | None = None,
) -> HostSolver | Callable[[Solver], HostSolver]:
    """Mark a NumPy solver so that every framework can call it.

    The marked solver receives NumPy arrays whose leading axis holds the
    problem instances, and returns a NumPy array with the same leading axis.
    Called on a torch/jax/tf/cupy array it runs on the host and its result
    comes back in the caller's framework, device and dtype: torch through a
    host copy, TensorFlow through ``tf.numpy_function`` (works in
    ``tf.function``), JAX through ``jax.pure_callback`` (works under ``jit``
    and ``vmap``; vmapped axes are merged into the instance axis, so the
    solver still runs once per call). Solver results carry no gradient: pass
    the marked solver to :func:`diffopt.perturbed`, :func:`diffopt.imle.imle`,
    ... to get one.

    Parameters
    ----------
    fn : callable
        ``fn(a, *args, **kwargs) -> numpy.ndarray``. Extra arguments are
        passed as NumPy/Python values.
    vectorized : bool, default True
        ``False`` if ``fn`` solves one instance: it is then mapped over the
        leading axis.
    executor : concurrent.futures.Executor, optional
        With ``vectorized=False``, run the per-instance calls on it (threads,
        processes, or ``dask.distributed.Client.get_executor()``). Instances
        are sent in blocks (two per worker), not one task each. Threads help
        only for solvers that release the GIL (compiled code).
    output_shape : tuple or callable, optional
        Result shape (or ``input_shape -> shape``), needed only when tracing
        (``jit``/``tf.function``); by default found by one probe call on zeros
        per input shape.
    output_dtype : str, optional
        Result dtype; default: the input's dtype.

    Returns
    -------
    HostSolver
        Usable as a decorator (``@host_solver`` or ``@host_solver(...)``).

    Examples
    --------
    >>> import numpy as np
    >>> import diffopt
    >>> @diffopt.host_solver(vectorized=False)         # one instance at a time
    ... def best_of(costs):
    ...     out = np.zeros_like(costs)
    ...     out[np.argmin(costs)] = 1.0
    ...     return out
    >>> best_of(np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]]))
    array([[0., 1., 0.],
           [1., 0., 0.]])
    """
    def wrap(f):
        return HostSolver(f, vectorized, executor, output_shape, output_dtype)

    return wrap if fn is None else wrap(fn)
