"""A 9-node directed acyclic graph, its shortest-path solver and the 6→8 gradient ascent.

The path runs from node 0 to node 8; :data:`TOPOLOGICAL_ORDER` lists the
nodes so that every edge goes forward. The last four edges (6→8, 6→5, 5→4, 4→8) form the top-right
corner whose costs are learned: the optimal path goes round the corner
6→5→4→8 (cost 0.3) rather than straight along 6→8 (cost 0.4), and gradient
ascent on the perturbed solution lifts the weight of the 6→8 edge.
"""

import autoray as ar
import numpy as np

from diffopt.host import host_solver

__all__ = [
    "EDGES",
    "POSITIONS",
    "FIXED_COSTS",
    "INITIAL_CORNER_COSTS",
    "EDGE_6_8",
    "edge_costs_to_weights",
    "dag_shortest_path",
    "all_paths",
    "corner_weight_fn",
    "gradient_ascent",
]

#: ``(source, target)`` of every edge.
EDGES = np.array([
    (0, 1), (0, 2), (0, 3), (1, 3), (2, 3), (1, 4), (2, 7), (3, 7), (7, 6), (3, 6),
    (6, 8), (6, 5), (5, 4), (4, 8),
])
#: Costs of the ten fixed edges (all but the last four).
FIXED_COSTS = np.array([0.3, 0.2, 0.35, 0.1, 0.15, 1.2, 0.45, 0.2, 0.2, 0.5])
#: Starting costs of the corner edges 6→8, 6→5, 5→4, 4→8.
INITIAL_CORNER_COSTS = np.array([0.4, 0.1, 0.1, 0.1])
#: Index of the edge 6→8 in :data:`EDGES`.
EDGE_6_8 = 10
#: Drawing positions ``(x, y)`` of the nodes.
POSITIONS = np.array([(0, 0), (0, 2), (1, 0), (1, 1), (3, 3), (2, 3), (2, 2), (2, 1), (3, 2)], dtype=float)
NUM_NODES = 9
#: The nodes in an order where every edge points forward.
TOPOLOGICAL_ORDER = (0, 1, 2, 3, 7, 6, 5, 4, 8)


def edge_costs_to_weights(corner, fixed):
    """All edge costs: the fixed ones followed by the four corner costs.

    Parameters
    ----------
    corner : array, shape [4]
        Costs of 6→8, 6→5, 5→4, 4→8 (any framework; gradients flow).
    fixed : array, shape [10]
        :data:`FIXED_COSTS` in ``corner``'s framework.

    Returns
    -------
    array, shape [14]
    """
    return ar.do("concatenate", (fixed, corner), axis=0, like=corner)


@host_solver
def dag_shortest_path(weights):
    """Shortest 0→8 paths for a batch of edge-cost vectors (dynamic programming).

    Parameters
    ----------
    weights : numpy.ndarray, shape [N, 14]
        Edge costs in :data:`EDGES` order (negative costs are fine: the graph is acyclic).

    Returns
    -------
    numpy.ndarray, shape [N, 14]
        0/1 indicator of the edges on each shortest path.
    """
    n = weights.shape[0]
    dist = np.full((n, NUM_NODES), np.inf)
    dist[:, 0] = 0.0
    best = np.full((n, NUM_NODES), -1)
    for node in TOPOLOGICAL_ORDER[1:]:
        incoming = np.flatnonzero(EDGES[:, 1] == node)
        cand = dist[:, EDGES[incoming, 0]] + weights[:, incoming]
        pick = np.argmin(cand, axis=1)
        dist[:, node] = cand[np.arange(n), pick]
        best[:, node] = incoming[pick]
    return _backtrack(best)


def _backtrack(best):
    """Edge indicators from the best incoming edge of every node."""
    n = best.shape[0]
    path = np.zeros((n, len(EDGES)))
    rows, node = np.arange(n), np.full(n, NUM_NODES - 1)
    for _ in range(NUM_NODES - 1):
        live = node != 0
        if not live.any():
            break
        edge = best[rows[live], node[live]]
        path[rows[live], edge] = 1.0
        node[live] = EDGES[edge, 0]
    return path


def all_paths():
    """Every 0→8 path of the graph, by depth-first search (the brute-force reference of the solver).

    Returns
    -------
    numpy.ndarray, shape [P, 14]
        0/1 edge indicators, one row per path.
    """
    found = []

    def walk(node, edges):
        if node == NUM_NODES - 1:
            found.append(np.isin(np.arange(len(EDGES)), edges).astype(float))
        for e in np.flatnonzero(EDGES[:, 0] == node):
            walk(EDGES[e, 1], edges + [e])

    walk(0, [])
    return np.array(found)


def corner_weight_fn(perturbed_path, fixed):
    """The weight of edge 6→8 in the perturbed path, as a function of the corner costs.

    Parameters
    ----------
    perturbed_path : callable
        ``diffopt.perturbed(dag_shortest_path, batched=False, ...)``.
    fixed : array
        :data:`FIXED_COSTS` in the framework used.

    Returns
    -------
    callable
        ``f(corner, rng=None) -> (weight, paths)``.
    """

    def f(corner, rng=None):
        paths = perturbed_path(edge_costs_to_weights(corner, fixed), rng=rng)
        return paths[EDGE_6_8], paths

    return f


def gradient_ascent(weight_and_grad, steps=30, lr=0.01, progress=None):
    """Gradient ascent on the corner costs to lift the 6→8 weight.

    Parameters
    ----------
    weight_and_grad : callable
        ``(corner numpy [4], step) -> (weight float, gradient numpy [4])``.
    steps : int, default 30
    lr : float, default 0.01
    progress : callable, optional
        Wraps the step range (e.g. ``tqdm``).

    Returns
    -------
    corner : numpy.ndarray
        Final corner costs.
    history : list of float
        The 6→8 weight before each step.
    first_grad : numpy.ndarray
        The gradient at the starting costs.
    """
    corner = INITIAL_CORNER_COSTS.astype(np.float32)
    history, first_grad = [], None
    for step in (progress or iter)(range(steps)):
        weight, g = weight_and_grad(corner, step)
        first_grad = g if first_grad is None else first_grad
        history.append(weight)
        corner = corner + lr * g
    return corner, history, first_grad
