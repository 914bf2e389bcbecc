"""Reference solvers used by examples and tests, with batch support.

``argmax_one_hot``, ``top_k_mask`` and ``ranking`` are written in autoray and
run natively in every framework (also under ``jit``/``vmap``/``tf.function``).
``shortest_path`` is a SciPy Dijkstra marked as a host solver.
"""

import functools
import numbers

import autoray as ar
import numpy as np

from diffopt._ops import first_max_mask
from diffopt.backends import get_backend
from diffopt.host import host_solver

__all__ = ["argmax_one_hot", "top_k_mask", "ranking", "shortest_path", "grid_shortest_path"]


def argmax_one_hot(x, axis=-1):
    """One-hot vector of the (first) largest entry along ``axis``, in ``x``'s dtype."""
    get_backend(x)  # loads the shim (and its autoray registrations) for x's framework
    return first_max_mask(x, axis=axis)


def ranking(x, axis=-1):
    """0-based ascending ranks of the entries of ``x`` along ``axis``, in ``x``'s dtype.

    Ties are broken by position (the same as a stable sort).
    """
    get_backend(x)
    order = ar.do("argsort", x, axis=axis)
    return ar.astype(ar.do("argsort", order, axis=axis), ar.get_dtype_name(x))


def top_k_mask(x, k, axis=-1):
    """Indicator of the ``k`` largest entries of ``x`` along ``axis``, in ``x``'s dtype.

    Raises
    ------
    ValueError
        If ``k`` is not an integer in ``[1, n]``.
    """
    get_backend(x)
    n = x.shape[axis]
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, {n}] (the size of axis {axis}), got k={k!r}")
    rank_desc = ranking(-x, axis=axis)
    return ar.astype(rank_desc < k, ar.get_dtype_name(x))


@functools.lru_cache(maxsize=32)
def _grid_graph(height, width, neighbourhood):
    """Edges (src, dst) of a ``height × width`` grid with 4 or 8 neighbours."""
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
    return np.concatenate(src), np.concatenate(dst)


def grid_shortest_path(costs, neighbourhood=8):
    """Shortest top-left → bottom-right path on one ``[H, W]`` cost map.

    Entering a cell costs its value (the start cell's cost is paid too), moves
    go to the 4 or 8 neighbours. Costs are clipped below at a tiny positive
    value, as Dijkstra needs non-negative weights.

    Returns
    -------
    numpy.ndarray
        ``[H, W]`` 0/1 indicator of the cells on the path.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    costs = np.asarray(costs, dtype=np.float64)
    if costs.ndim != 2:
        raise ValueError(f"costs must be an [H, W] map, got shape {costs.shape}")
    height, width = costs.shape
    scale = max(1.0, float(np.max(np.abs(costs))) if np.all(np.isfinite(costs)) else 1.0)
    weights = np.maximum(costs.ravel(), 1e-9 * scale)
    src, dst = _grid_graph(height, width, neighbourhood)
    n = height * width
    graph = csr_matrix((weights[dst], (src, dst)), shape=(n, n))
    _, pred = dijkstra(graph, indices=0, return_predecessors=True)
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
