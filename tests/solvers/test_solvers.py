"""Regression tests of :mod:`diffopt.solvers` (bugs found by property-based testing, issue 30)."""

import numpy as np
import pytest

from diffopt import argmax_one_hot, dag_shortest_path, grid_shortest_path, ranking, top_k_mask


def test_top_k_mask_axis_out_of_range_is_a_value_error_naming_axis(backend):
    x = backend.asarray(np.arange(6.0).reshape(2, 3), "float32")  # was IndexError: tuple index out of range
    with pytest.raises(ValueError, match=r"axis must be an integer in \[-2, 2\).*axis=2"):
        top_k_mask(x, 1, axis=2)
    with pytest.raises(ValueError, match="axis=-3"):
        ranking(x, axis=-3)
    with pytest.raises(ValueError, match="axis=2"):
        argmax_one_hot(x, axis=2)


def test_dag_shortest_path_on_a_one_column_grid(backend):
    # was [[0.]]: the edge from above and the edge from the left were the same edge
    y = dag_shortest_path(backend.asarray(np.array([[2.0]]), "float32"), grid=(2, 1))
    assert np.array_equal(backend.to_numpy(y), [[1.0]])
    y = dag_shortest_path(backend.asarray(np.array([[2.0, -1.0, 5.0]]), "float32"), grid=(4, 1))
    assert np.array_equal(backend.to_numpy(y), [[1.0, 1.0, 1.0]])


def test_ranking_breaks_long_runs_of_ties_by_position(backend):
    # torch's and NumPy's default argsort are not stable: 40 zeros were ranked out of order on torch
    x = backend.asarray(np.zeros((2, 40)), "float32")
    assert np.array_equal(backend.to_numpy(ranking(x)), np.tile(np.arange(40.0), (2, 1)))
    assert np.array_equal(backend.to_numpy(top_k_mask(x, 3)), np.tile(np.arange(40) < 3, (2, 1)).astype(float))


@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (1, 3)])
def test_grid_shortest_path_on_one_row_or_column_takes_every_cell(shape):
    assert np.array_equal(grid_shortest_path(np.full(shape, 2.0)), np.ones(shape))


def test_argmax_one_hot_of_an_empty_axis_is_a_value_error(backend):
    # was IndexError on torch ("Expected reduction dim 1 to have non-zero size"), ValueError from NumPy
    with pytest.raises(ValueError, match="no entries along axis 1"):
        argmax_one_hot(backend.asarray(np.zeros((2, 0)), "float32"))
    assert argmax_one_hot(backend.asarray(np.zeros((0, 3)), "float32")).shape == (0, 3)  # no rows: nothing to do


def test_grid_shortest_path_without_a_finite_path_is_a_value_error():
    # was [[0, 0], [0, 1]] (the target cell alone, not a path)
    with pytest.raises(ValueError, match="costs: every path .* crosses an infinite cost"):
        grid_shortest_path(np.array([[1.0, np.inf], [np.inf, 1.0]]), neighbourhood=4)
    with pytest.raises(ValueError, match="NaN"):
        grid_shortest_path(np.array([[1.0, np.nan], [1.0, 1.0]]))
    # a wall that leaves a finite path is walked around
    assert np.array_equal(grid_shortest_path(np.array([[1.0, np.inf], [1.0, 1.0]]), neighbourhood=4),
                          [[1.0, 0.0], [1.0, 1.0]])
    assert np.array_equal(grid_shortest_path(np.array([[1.0, np.inf], [np.inf, 1.0]]), neighbourhood=8),
                          [[1.0, 0.0], [0.0, 1.0]])
