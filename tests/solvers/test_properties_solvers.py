"""Property-based tests (hypothesis) of the reference solvers of :mod:`diffopt.solvers`, on every backend.

References are independent of the code under test: NumPy's stable ``argsort``
for ranks and masks, brute force over all monotone paths of small grids for
:func:`~diffopt.solvers.dag_shortest_path`, Bellman-Ford relaxation over the
cells for :func:`~diffopt.solvers.grid_shortest_path`, and enumeration of all
``2**n`` selections for :func:`~diffopt.solvers.knapsack_solver`.
"""

import itertools
import math

import numpy as np
import pytest

from _properties import SETTINGS, check, dtypes, given, settings, st
from diffopt import argmax_one_hot, dag_shortest_path, grid_edges, grid_shortest_path, knapsack_solver, ranking
from diffopt import shortest_path, top_k_mask

def run(backend, dtype, fn, x):
    """``fn(x as a backend array of dtype)`` as NumPy (JAX's float64 scoped), and its dtype name."""
    import autoray as ar

    with backend.float64():
        out = fn(backend.asarray(x, dtype))
        return np.asarray(backend.to_numpy(out), dtype=np.float64), ar.get_dtype_name(out)


@st.composite
def arrays(draw, max_dims=3, max_side=5):
    """Small arrays with many ties (integers) and a few fractions, and an axis of them."""
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=1, max_size=max_dims)))
    entry = st.one_of(st.integers(-3, 3).map(float), st.floats(-8.0, 8.0, width=16, allow_nan=False))
    x = np.asarray(draw(st.lists(entry, min_size=math.prod(shape), max_size=math.prod(shape))), dtype=np.float64)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return x.reshape(shape), axis


def stable_ranks(x, axis):
    """0-based ranks along ``axis``, ties by position (NumPy's stable sort)."""
    return np.argsort(np.argsort(x, axis=axis, kind="stable"), axis=axis, kind="stable")


# ------------------------------------------------------------------- argmax, ranking, top-k


def test_argmax_one_hot_is_one_hot_at_the_first_maximum(backend):
    def body(data):
        dtype = data.draw(st.sampled_from(dtypes(backend)), label="dtype")
        x, axis = data.draw(arrays(), label="x, axis")
        x = x.astype(np.float16).astype(np.float64) if dtype in ("float16", "bfloat16") else x
        x = np.round(x) if dtype == "bfloat16" else x  # exactly representable: the reference sees the same data
        y, out_dtype = run(backend, dtype, lambda a: argmax_one_hot(a, axis=axis), x)
        assert out_dtype == dtype and y.shape == x.shape
        expect = np.moveaxis(np.eye(x.shape[axis])[np.argmax(x, axis=axis)], -1, axis)
        assert np.array_equal(y, expect)

    check(backend, 25, dict(data=st.data()), body)


def test_ranking_is_the_stable_permutation(backend):
    def body(data):
        dtype = data.draw(st.sampled_from(dtypes(backend)), label="dtype")
        x, axis = data.draw(arrays(), label="x, axis")
        x = np.round(x)  # every dtype holds small integers exactly
        r, out_dtype = run(backend, dtype, lambda a: ranking(a, axis=axis), x)
        assert out_dtype == dtype
        n = x.shape[axis]
        assert np.array_equal(np.sort(r, axis=axis), np.broadcast_to(
            np.arange(n).reshape([-1 if i == axis % x.ndim else 1 for i in range(x.ndim)]), x.shape))
        assert np.array_equal(r, stable_ranks(x, axis))

    check(backend, 25, dict(data=st.data()), body)


def test_top_k_mask_selects_k_largest_first_of_ties(backend):
    def body(data):
        dtype = data.draw(st.sampled_from(dtypes(backend)), label="dtype")
        x, axis = data.draw(arrays(), label="x, axis")
        x = np.round(x)
        k = data.draw(st.integers(1, x.shape[axis]), label="k")
        m, out_dtype = run(backend, dtype, lambda a: top_k_mask(a, k, axis=axis), x)
        assert out_dtype == dtype
        assert set(np.unique(m)) <= {0.0, 1.0}
        assert np.array_equal(m.sum(axis=axis), np.full(np.delete(x.shape, axis % x.ndim), k))
        chosen_min = np.where(m == 1, x, np.inf).min(axis=axis)
        others_max = np.where(m == 0, x, -np.inf).max(axis=axis)
        assert np.all(chosen_min >= others_max)
        assert np.array_equal(m, (stable_ranks(-x, axis) < k).astype(float))

    check(backend, 25, dict(data=st.data()), body)


BAD_AXIS = st.one_of(st.integers(2, 9), st.integers(-9, -3), st.just(True), st.just(1.0), st.just(None))


def test_bad_axis_raises_a_value_error_naming_it(backend):
    def body(axis):
        x = backend.asarray(np.arange(6.0).reshape(2, 3), "float32")
        for fn in (lambda: top_k_mask(x, 1, axis=axis), lambda: ranking(x, axis=axis),
                   lambda: argmax_one_hot(x, axis=axis)):
            with pytest.raises(ValueError, match="axis"):
                fn()

    check(backend, 10, dict(axis=BAD_AXIS), body)


def test_bad_k_raises_a_value_error_naming_it(backend):
    def body(k):
        with pytest.raises(ValueError, match="k"):
            top_k_mask(backend.asarray(np.zeros((2, 3)), "float32"), k)

    check(backend, 10, dict(
        k=st.one_of(st.integers(max_value=0), st.integers(4, 50), st.just(True), st.just(1.0), st.just("1"))), body)


# ------------------------------------------------------------------------------ grid DAG


GRIDS = [(h, w) for h in range(1, 5) for w in range(1, 5) if (h, w) != (1, 1)]


def monotone_paths(h, w):
    """Edge-index sets of every right/down path from node 0 to node ``h * w - 1`` (brute force)."""
    index = {e: i for i, e in enumerate(grid_edges((h, w)))}
    paths = []
    for downs in itertools.combinations(range(h + w - 2), h - 1):
        node, edges = 0, []
        for step in range(h + w - 2):
            nxt = node + w if step in downs else node + 1
            edges.append(index[(node, nxt)])
            node = nxt
        paths.append(edges)
    return paths


def test_dag_shortest_path_is_a_shortest_monotone_path(backend):
    def body(data, grid):
        dtype = data.draw(st.sampled_from(dtypes(backend)), label="dtype")
        num_edges = len(grid_edges(grid))
        batch = data.draw(st.integers(1, 3), label="batch")
        costs = data.draw(st.lists(st.integers(-5, 9), min_size=batch * num_edges, max_size=batch * num_edges),
                          label="costs")
        costs = np.asarray(costs, dtype=np.float64).reshape(batch, num_edges) / 2  # negative costs allowed, ties
        y, out_dtype = run(backend, dtype, lambda c: dag_shortest_path(c, grid=grid), costs)
        assert out_dtype == dtype and y.shape == costs.shape
        paths = monotone_paths(*grid)
        for b in range(batch):
            chosen = sorted(np.flatnonzero(y[b]).tolist())
            assert set(np.unique(y[b])) <= {0.0, 1.0}
            assert chosen in [sorted(p) for p in paths], f"not a monotone path: {chosen}"
            assert costs[b, chosen].sum() == min(costs[b, p].sum() for p in paths)

    check(backend, 25, dict(data=st.data(), grid=st.sampled_from(GRIDS)), body)


@pytest.mark.parametrize("grid", [(2, 1), (3, 1), (5, 1), (1, 2), (1, 4)])
def test_dag_shortest_path_on_one_row_or_column_takes_every_edge(backend, grid):
    # issue 30: a one-column grid returned no path ([[0.]] for grid=(2, 1))
    num_edges = max(grid) - 1
    y, _ = run(backend, "float32", lambda c: dag_shortest_path(c, grid=grid), np.full((2, num_edges), 3.0))
    assert np.array_equal(y, np.ones((2, num_edges)))


def test_dag_shortest_path_rejects_the_one_node_grid():
    with pytest.raises(ValueError, match="grid"):
        dag_shortest_path(np.zeros((1, 0)), grid=(1, 1))


# ------------------------------------------------------------------- grid (Dijkstra) and knapsack


def cheapest_cost(costs, neighbourhood):
    """Least total cost of entering the cells of a path from (0, 0) to (H-1, W-1), by Bellman-Ford."""
    h, w = costs.shape
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)] + ([(1, 1), (1, -1), (-1, 1), (-1, -1)] if neighbourhood == 8 else [])
    dist = np.full((h, w), np.inf)
    dist[0, 0] = costs[0, 0]
    for _ in range(h * w):
        for r, c in itertools.product(range(h), range(w)):
            for dr, dc in steps:
                if 0 <= r + dr < h and 0 <= c + dc < w:
                    dist[r + dr, c + dc] = min(dist[r + dr, c + dc], dist[r, c] + costs[r + dr, c + dc])
    return dist[-1, -1]


def is_connected_path(path, neighbourhood):
    """Whether the cells marked in ``path`` form a chain from (0, 0) to the last cell."""
    cells = {tuple(c) for c in np.argwhere(path == 1)}
    reach, todo = {(0, 0)}, [(0, 0)]
    while todo:
        r, c = todo.pop()
        for dr, dc in itertools.product((-1, 0, 1), repeat=2):
            if (abs(dr) + abs(dc) == 1 or neighbourhood == 8) and (r + dr, c + dc) in cells - reach:
                reach.add((r + dr, c + dc))
                todo.append((r + dr, c + dc))
    last = (path.shape[0] - 1, path.shape[1] - 1)
    return (0, 0) in cells and last in reach


@SETTINGS
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 4)), neighbourhood=st.sampled_from([4, 8]),
       data=st.data())
def test_grid_shortest_path_is_a_cheapest_connected_path(shape, neighbourhood, data):
    costs = np.asarray(data.draw(st.lists(st.integers(1, 9), min_size=math.prod(shape), max_size=math.prod(shape)),
                                 label="costs"), dtype=np.float64).reshape(shape)
    path = grid_shortest_path(costs, neighbourhood=neighbourhood)
    assert path.shape == shape and set(np.unique(path)) <= {0.0, 1.0}
    assert is_connected_path(path, neighbourhood)
    assert (costs * path).sum() == cheapest_cost(costs, neighbourhood)


def test_shortest_path_is_grid_shortest_path_per_map(backend):
    costs = np.random.default_rng(0).integers(1, 9, size=(3, 4, 5)).astype(np.float64)
    y, out_dtype = run(backend, "float32", shortest_path, costs)
    assert out_dtype == "float32"
    assert np.array_equal(y, np.stack([grid_shortest_path(c) for c in costs]))


@settings(SETTINGS, max_examples=15)
@given(data=st.data(), n=st.integers(1, 6), batch=st.integers(1, 3))
def test_knapsack_solvers_are_optimal_and_feasible(data, n, batch):
    weights = np.asarray(data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n), label="weights"), float)
    capacity = float(data.draw(st.integers(0, 12), label="capacity"))
    values = np.asarray(data.draw(st.lists(st.integers(-3, 9), min_size=n * batch, max_size=n * batch),
                                  label="values"), float).reshape(batch, n)
    best = [max(values[b] @ np.asarray(s) for s in itertools.product((0, 1), repeat=n)
                if weights @ np.asarray(s) <= capacity) for b in range(batch)]
    for solver in (knapsack_solver(weights, capacity), knapsack_solver(weights, capacity, unit=1.0)):
        x = solver(values)
        assert set(np.unique(x)) <= {0.0, 1.0}
        assert np.all(x @ weights <= capacity)
        assert np.allclose((x * values).sum(-1), best)
