"""Reference solvers used by examples and tests, with batch support.

``argmax_one_hot``, ``top_k_mask`` and ``ranking`` are written in autoray and
run natively in every framework (also under ``jit``/``vmap``/``tf.function``).
``shortest_path`` is a SciPy Dijkstra marked as a host solver.
``dag_shortest_path`` (PyEPO's grid shortest path on edge costs) is dynamic
programming on the right/down grid DAG, written once with autoray.
``knapsack_solver`` builds a host solver (SciPy's MILP) for 0/1 knapsacks.
"""

from __future__ import annotations

from concurrent.futures import Executor
import functools
import numbers

import autoray as ar
import numpy as np

from diffopt._typing import Array
from diffopt._ops import astype_in, do, first_max_mask, namespace, stable_argsort
from diffopt.host import HostSolver, host_solver

__all__ = [
    "argmax_one_hot", "top_k_mask", "ranking", "shortest_path", "grid_shortest_path",
    "grid_edges", "dag_shortest_path", "knapsack_solver",
]


def _check_axis(x, axis):
    """``axis`` as a non-negative int, or a ``ValueError`` naming it (before any work)."""
    ndim = len(x.shape)
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -ndim <= axis < ndim:
        raise ValueError(f"axis must be an integer in [-{ndim}, {ndim}) for x of shape {tuple(x.shape)}, "
                         f"got axis={axis!r}")
    return int(axis) % ndim


def argmax_one_hot(x: Array, axis: int = -1) -> Array:
    """One-hot vector of the (first) largest entry along ``axis``, in ``x``'s dtype.

    Written with autoray: runs natively in every framework, also under
    ``jit``/``vmap``/``tf.function``. Ties go to the first maximum. Its
    output is piecewise constant in ``x``: wrap it in
    :func:`diffopt.perturbed` for a gradient.

    Parameters
    ----------
    x : array
        Scores, any shape and framework.
    axis : int, default -1
        Axis of the argmax.

    Returns
    -------
    array
        Same shape, framework, dtype and device as ``x``: 1 at the argmax, 0 elsewhere.

    Raises
    ------
    ValueError
        If ``axis`` is not an axis of ``x`` or ``x`` has no entries along it.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import argmax_one_hot
    >>> argmax_one_hot(np.array([[1.0, 3.0, 2.0], [5.0, 5.0, 0.0]]))
    array([[0., 1., 0.],
           [1., 0., 0.]])
    """
    axis = _check_axis(x, axis)
    if x.shape[axis] == 0:
        raise ValueError(f"x has no entries along axis {axis} (shape {tuple(x.shape)}): no argmax")
    return first_max_mask(x, axis=axis)


def ranking(x: Array, axis: int = -1) -> Array:
    """0-based ascending ranks of the entries of ``x`` along ``axis``, in ``x``'s dtype.

    Ties are broken by position (the same as a stable sort). Written with
    autoray (runs natively in every framework); piecewise constant: wrap it
    in :func:`diffopt.perturbed` for a gradient, or use
    :func:`diffopt.sorting.soft_rank` for a deterministic relaxation.

    Parameters
    ----------
    x : array
        Values, any shape and framework.
    axis : int, default -1
        Axis along which to rank.

    Returns
    -------
    array
        Same shape, framework and dtype as ``x``: the rank of each entry
        (0 for the smallest).

    Raises
    ------
    ValueError
        If ``axis`` is not an axis of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import ranking
    >>> ranking(np.array([0.3, -1.0, 2.0, 0.3]))
    array([1., 0., 3., 2.])
    """
    axis = _check_axis(x, axis)
    xp = namespace(x)  # bound once: no lazy import of an autoray function under torch.compile
    order = stable_argsort(x, axis, xp=xp)
    # the inverse permutation (no ties: any argsort gives it; the stable one is the shim's kernel)
    return astype_in(xp, stable_argsort(order, axis, xp=xp), xp.get_dtype_name(x))


def top_k_mask(x: Array, k: int, axis: int = -1) -> Array:
    """Indicator of the ``k`` largest entries of ``x`` along ``axis``, in ``x``'s dtype.

    Ties are broken by position: of equal entries, the first ones are selected.

    Raises
    ------
    ValueError
        If ``axis`` is not an axis of ``x`` or ``k`` is not an integer in ``[1, n]``.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import top_k_mask
    >>> top_k_mask(np.array([[0.3, -1.0, 2.0, 0.5]]), 2)
    array([[0., 0., 1., 1.]])
    """
    axis = _check_axis(x, axis)
    n = x.shape[axis]
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, {n}] (the size of axis {axis}), got k={k!r}")
    rank_desc = ranking(-x, axis=axis)
    xp = namespace(x)
    return astype_in(xp, rank_desc < k, xp.get_dtype_name(x))


@functools.lru_cache(maxsize=32)
@functools.lru_cache(maxsize=32)
def _grid_graph(height, width, neighbourhood):
    """The grid's edges in CSR order: ``(indices, indptr)`` of a ``height × width`` grid with
    4 or 8 neighbours, rows sorted (the canonical form ``csr_matrix`` would build from the
    edge list), cached and read-only: one instance then pays no COO → CSR conversion."""
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if neighbourhood == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    src, dst = [], []
    for dr, dc in steps:
        r2, c2 = rows + dr, cols + dc
        ok = (r2 >= 0) & (r2 < height) & (c2 >= 0) & (c2 < width)
        src.append((rows * width + cols)[ok])
        dst.append((r2 * width + c2)[ok])
    src, dst = np.concatenate(src), np.concatenate(dst)
    order = np.lexsort((dst, src))
    indices = dst[order].astype(np.int32)
    indptr = np.searchsorted(src[order], np.arange(height * width + 1)).astype(np.int32)
    indices.flags.writeable = indptr.flags.writeable = False
    return indices, indptr


def grid_shortest_path(costs: Array, neighbourhood: int = 8) -> np.ndarray:
    """Shortest top-left → bottom-right path on one ``[H, W]`` cost map.

    Entering a cell costs its value (the start cell's cost is paid too), moves
    go to the 4 or 8 neighbours. Costs are clipped below at a tiny positive
    value, as Dijkstra needs non-negative weights.

    Parameters
    ----------
    costs : array_like, shape [H, W]
        Cost of entering each cell.
    neighbourhood : {8, 4}
        Moves to the 8 (with diagonals) or 4 neighbours.

    Returns
    -------
    numpy.ndarray
        ``[H, W]`` 0/1 indicator of the cells on the path.

    Raises
    ------
    ValueError
        If ``costs`` is not two-dimensional or holds NaN, or if every path
        crosses a cell of cost ``+inf``.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.solvers import grid_shortest_path
    >>> costs = np.array([[1.0, 9.0, 9.0],
    ...                   [1.0, 1.0, 9.0],
    ...                   [9.0, 1.0, 1.0]])
    >>> grid_shortest_path(costs, neighbourhood=4)
    array([[1., 0., 0.],
           [1., 1., 0.],
           [0., 1., 1.]])
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    costs = np.asarray(costs, dtype=np.float64)
    if costs.ndim != 2:
        raise ValueError(f"costs must be an [H, W] map, got shape {costs.shape}")
    if np.isnan(costs).any():
        raise ValueError("costs must not contain NaN")
    height, width = costs.shape
    scale = max(1.0, float(np.max(np.abs(costs))) if np.all(np.isfinite(costs)) else 1.0)
    weights = np.maximum(costs.ravel(), 1e-9 * scale)
    indices, indptr = _grid_graph(height, width, neighbourhood)
    n = height * width
    graph = csr_matrix((weights[indices], indices, indptr), shape=(n, n))
    dist, pred = dijkstra(graph, indices=0, return_predecessors=True)
    if not np.isfinite(dist[n - 1]):  # else the walk below would return the target cell alone
        raise ValueError("costs: every path from the top-left to the bottom-right cell crosses an infinite cost")
    path = np.zeros(n)
    node = n - 1
    while node >= 0:
        path[node] = 1.0
        node = pred[node]
    return path.reshape(height, width)


def _batched_shortest_path(costs, neighbourhood=8):
    costs = np.asarray(costs)
    if costs.ndim < 2:
        raise ValueError(f"costs must have shape [..., H, W], got {costs.shape}")
    flat = costs.reshape((-1,) + costs.shape[-2:])
    paths = [grid_shortest_path(c, neighbourhood) for c in flat]
    return np.stack(paths).reshape(costs.shape)


shortest_path = host_solver(_batched_shortest_path)
shortest_path.__doc__ = """Shortest paths on cost maps ``[..., H, W]`` (a host solver).

Each map is solved by :func:`grid_shortest_path` (Dijkstra, 8 neighbours,
top-left to bottom-right); the result is the ``[..., H, W]`` path indicator in
the input's framework and dtype. For a process pool or a cluster, wrap
:func:`grid_shortest_path` with ``host_solver(..., vectorized=False, executor=...)``.
"""


# -- the right/down grid DAG with edge costs (PyEPO's shortest path) ------------------------------


def _check_grid(grid):
    ok = isinstance(grid, (tuple, list)) and len(grid) == 2 and all(
        isinstance(g, numbers.Integral) and not isinstance(g, bool) and g >= 1 for g in grid)
    if not ok or tuple(grid) == (1, 1):
        raise ValueError(f"grid must be a pair (rows, columns) of integers >= 1, not (1, 1); got grid={grid!r}")
    return int(grid[0]), int(grid[1])


@functools.lru_cache(maxsize=32)
def _grid_edges(height, width):
    edges = []
    for i in range(height):
        edges += [(i * width + j, i * width + j + 1) for j in range(width - 1)]
        if i < height - 1:
            edges += [(i * width + j, (i + 1) * width + j) for j in range(width)]
    return tuple(edges)


def grid_edges(grid: tuple[int, int] = (5, 5)) -> tuple[tuple[int, int], ...]:
    """The edges ``(source, target)`` of the right/down grid DAG, in cost-vector order.

    Nodes are numbered row-major (``i * columns + j``). Row by row, the
    rightward edges of row ``i`` come first, then the downward edges from
    row ``i`` to row ``i + 1`` -- PyEPO's order (``pyepo.data.shortestpath``:
    a 5×5 grid has 40 edges).

    Parameters
    ----------
    grid : (int, int), default (5, 5)
        Rows and columns of nodes.

    Returns
    -------
    tuple of (int, int)
        ``(source, target)`` node pairs, ``E`` of them.

    Raises
    ------
    ValueError
        If ``grid`` is not a pair of positive integers (or is ``(1, 1)``).

    Examples
    --------
    >>> from diffopt.solvers import grid_edges
    >>> grid_edges((2, 2))
    ((0, 1), (0, 2), (1, 3), (2, 3))
    >>> len(grid_edges((5, 5)))
    40
    """
    return _grid_edges(*_check_grid(grid))


@functools.lru_cache(maxsize=32)
def _incoming(height, width):
    """Per node: its incoming edges as ``(predecessor, edge index)``, the edge from above first."""
    index = {e: k for k, e in enumerate(_grid_edges(height, width))}
    out = []
    for v in range(height * width):
        # dict.fromkeys: one column has v - width == v - 1, one edge to count once
        preds = [u for u in dict.fromkeys((v - width, v - 1)) if (u, v) in index]
        out.append(tuple((u, index[(u, v)]) for u in preds))
    return tuple(out)


def dag_shortest_path(costs: Array, grid: tuple[int, int] = (5, 5)) -> Array:
    """Shortest top-left → bottom-right path on the right/down grid DAG with edge costs.

    Vectorised over all leading axes and written once with autoray, so it runs
    natively in every framework (also under ``jit``/``vmap``/``tf.function``
    and ``torch.compile``). Dynamic programming in topological order (node
    ``v``'s distance is the smaller of "from above" and "from the left"; a tie
    goes to "from above"), then the chosen edges are traced back from the
    target with elementwise products only (no gathers). Costs may be negative
    (a DAG needs no Dijkstra), as in SPO+'s ``2θ̂ − c``.

    Parameters
    ----------
    costs : array, shape [..., E]
        Edge costs in the order of :func:`grid_edges` (``E = 40`` for 5×5).
    grid : (int, int), default (5, 5)
        Rows and columns of nodes.

    Returns
    -------
    array, shape [..., E]
        The 0/1 indicator of the path's edges, in ``costs``' framework and dtype.

    Raises
    ------
    ValueError
        If ``grid`` is not a pair of positive integers or ``costs``' last axis
        is not the number of edges.

    Examples
    --------
    On the 2×2 grid (edges ``0→1, 0→2, 1→3, 2→3``), right-then-down is cheaper:

    >>> import numpy as np
    >>> from diffopt.solvers import dag_shortest_path
    >>> dag_shortest_path(np.array([[1.0, 5.0, 1.0, 5.0]]), grid=(2, 2))
    array([[1., 0., 1., 0.]])
    """
    height, width = _check_grid(grid)
    edges = _grid_edges(height, width)
    shape = tuple(costs.shape)
    if len(shape) < 1 or shape[-1] != len(edges):
        raise ValueError(
            f"costs must have shape [..., {len(edges)}] (one cost per edge of the {height}x{width} grid), "
            f"got {shape}")
    c = do("reshape", costs, (-1, len(edges)))
    take = _dag_choices(c, _incoming(height, width))
    path = _trace_back(c, take, _incoming(height, width), len(edges))
    return do("reshape", path, shape)


def _dag_choices(c, incoming):
    """Per node, the weight (1 or 0 per instance, ``None`` = 1) of each incoming edge on its best path."""
    dtype = ar.get_dtype_name(c)
    dist = [do("zeros_like", c[:, 0])]
    take = [()]
    for preds in incoming[1:]:
        cands = [dist[u] + c[:, k] for u, k in preds]
        if len(cands) == 1:
            dist.append(cands[0])
            take.append((None,))
            continue
        up, left = cands
        pick_up = up <= left
        dist.append(do("where", pick_up, up, left))
        up_w = ar.astype(pick_up, dtype)
        take.append((up_w, 1.0 - up_w))
    return take


def _trace_back(c, take, incoming, num_edges):
    """Edge indicator ``[B, E]`` from the choices, walking back from the target."""
    n = len(incoming)
    on = [None] * n
    on[n - 1] = do("ones_like", c[:, 0])
    chosen = [None] * num_edges
    for v in range(n - 1, 0, -1):
        for (u, k), weight in zip(incoming[v], take[v]):
            e = on[v] if weight is None else on[v] * weight
            chosen[k] = e
            on[u] = e if on[u] is None else on[u] + e
    return do("stack", chosen, axis=-1)


# -- 0/1 knapsack on the host (SciPy's MILP) -----------------------------------------------------


def knapsack_solver(
    weights: Array, capacity: Array | float, *, executor: Executor | None = None, unit: float | None = None
) -> HostSolver:
    """A host solver for the (multi-dimensional) 0/1 knapsack: ``max ⟨values, x⟩, weights·x ≤ capacity``.

    Each instance is solved exactly by :func:`scipy.optimize.milp` (HiGHS);
    instances are mapped over the leading axis, optionally on ``executor``.
    With ``unit``, a one-dimensional knapsack whose weights and capacity are
    multiples of ``unit`` is solved instead by dynamic programming over the
    capacity, vectorised over the instances (exact, ``O(items · capacity/unit)``
    per instance; much faster than one MILP per instance for small problems).

    Parameters
    ----------
    weights : array_like, shape [m, n] or [n]
        Item weights (``m`` resource dimensions, ``n`` items), fixed across instances.
    capacity : array_like, shape [m] or scalar
        Capacity per dimension.
    executor : concurrent.futures.Executor, optional
        See :func:`diffopt.host_solver` (MILP only).
    unit : float, optional
        Grid of the weights and capacity for the dynamic program (e.g. 0.01),
        one weight dimension only.

    Returns
    -------
    HostSolver
        ``solver(values)`` with ``values`` ``[B, n]`` (any framework) returns
        the 0/1 selections ``[B, n]`` in ``values``' framework and dtype. It
        maximises: pass ``minimize=False`` to the estimators.

    Raises
    ------
    ValueError
        Bad shapes, negative weights or capacities.
    ImportError
        If SciPy is not installed.

    Examples
    --------
    Items of weights 1, 2, 3 and capacity 3: items 0 and 1 (value 2) beat item 2 (value 1.5).

    >>> import numpy as np
    >>> from diffopt.solvers import knapsack_solver
    >>> solver = knapsack_solver(np.array([1.0, 2.0, 3.0]), 3.0)
    >>> solver(np.array([[1.0, 1.0, 1.5]]))
    array([[1., 1., 0.]])
    >>> knapsack_solver(np.array([1.0, 2.0, 3.0]), 3.0, unit=1.0)(np.array([[1.0, 1.0, 1.5]]))
    array([[1., 1., 0.]])
    """
    import importlib.util

    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    cap = np.atleast_1d(np.asarray(capacity, dtype=np.float64))
    if w.ndim != 2 or w.shape[1] < 1:
        raise ValueError(f"weights must have shape [dims, items] or [items], got {np.shape(weights)}")
    if cap.shape != (w.shape[0],):
        raise ValueError(f"capacity must have shape ({w.shape[0]},) (one per weight dimension), got {cap.shape}")
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and np.all(np.isfinite(cap)) and np.all(cap >= 0)):
        raise ValueError("weights and capacity must be finite and >= 0")
    n = w.shape[1]

    def output_shape(shape):
        if shape[-1] != n:
            raise ValueError(f"values must have shape [B, {n}] (one value per item), got {shape}")
        return shape

    if unit is not None:
        return host_solver(_knapsack_dp_solver(w, cap, unit), output_shape=output_shape)
    if importlib.util.find_spec("scipy") is None:
        raise ImportError("knapsack_solver needs SciPy (pip install scipy), or unit= for the dynamic program")
    solve = functools.partial(_knapsack_one, w, cap)
    solve.__name__ = "knapsack"
    return host_solver(solve, vectorized=False, executor=executor, output_shape=output_shape)


def _knapsack_dp_solver(weights, capacity, unit):
    """``solve(values [B, n])`` by dynamic programming on the capacity grid of step ``unit``."""
    if isinstance(unit, bool) or not isinstance(unit, numbers.Real) or not unit > 0:
        raise ValueError(f"unit must be a positive number (the grid of the weights), got unit={unit!r}")
    if weights.shape[0] != 1:
        raise ValueError(f"unit= (dynamic programming) solves one weight dimension, got {weights.shape[0]}")
    w_units, cap_units = np.rint(weights[0] / unit), np.rint(capacity[0] / unit)
    if not (np.allclose(w_units * unit, weights[0]) and np.isclose(cap_units * unit, capacity[0])):
        raise ValueError(f"weights and capacity must be multiples of unit={unit}")
    w_units, cap_units = w_units.astype(np.int64), int(cap_units)

    def knapsack_dp(values):
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(w_units):
            raise ValueError(f"values must have shape [B, {len(w_units)}] (one value per item), got {values.shape}")
        return _knapsack_dp(w_units, cap_units, values)

    return knapsack_dp


def _knapsack_dp(w_units, cap, values):
    """0/1 knapsack by DP: ``best[b, j]`` = best value within capacity ``j``; then trace the choices back."""
    batch, n = values.shape
    best = np.zeros((batch, cap + 1))
    take = np.zeros((n, batch, cap + 1), dtype=bool)
    for i, wi in enumerate(w_units):
        if wi > cap:
            continue
        cand = np.full_like(best, -np.inf)
        cand[:, wi:] = best[:, :cap + 1 - wi] + values[:, i:i + 1]
        take[i] = cand > best
        best = np.maximum(best, cand)
    x = np.zeros((batch, n))
    j, rows = np.full(batch, cap), np.arange(batch)
    for i in range(n - 1, -1, -1):
        chosen = take[i, rows, j]
        x[:, i] = chosen
        j = j - chosen * w_units[i]
    return x


def _knapsack_one(weights, capacity, values):
    from scipy.optimize import Bounds, LinearConstraint, milp

    values = np.asarray(values, dtype=np.float64)
    if values.shape != (weights.shape[1],):
        raise ValueError(f"values must have shape [B, {weights.shape[1]}] (one value per item), "
                         f"got an instance of shape {values.shape}")
    res = milp(-values, constraints=LinearConstraint(weights, -np.inf, capacity),
               integrality=np.ones_like(values), bounds=Bounds(0, 1))
    if res.x is None:
        raise RuntimeError(f"knapsack: scipy.optimize.milp failed ({res.message})")
    return np.round(res.x)
