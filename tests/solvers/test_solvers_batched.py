"""The reference solvers: argmax, ranking, top-k and shortest paths against brute force.
"""

import numpy as np
import pytest

import diffopt


# --- reference solvers ---------------------------------------------------------------------


def test_argmax_one_hot_batched_and_first_of_ties(backend):
    x = np.array([[0.2, 1.0, 1.0, -3.0], [5.0, 0.0, 1.0, 2.0]])
    y = backend.to_numpy(diffopt.argmax_one_hot(backend.asarray(x, "float32")))
    np.testing.assert_array_equal(y, [[0, 1, 0, 0], [1, 0, 0, 0]])
    y0 = backend.to_numpy(diffopt.argmax_one_hot(backend.asarray(x, "float32"), axis=0))
    np.testing.assert_array_equal(y0, [[0, 1, 1, 0], [1, 0, 0, 1]])
    compiled = backend.to_numpy(backend.jit(diffopt.argmax_one_hot)(backend.asarray(x, "float32")))
    np.testing.assert_array_equal(compiled, y)


def test_ranking_and_top_k_match_numpy(backend):
    x = np.random.default_rng(0).normal(size=(3, 6))
    xb = backend.asarray(x, "float32")
    np.testing.assert_array_equal(backend.to_numpy(diffopt.ranking(xb)), np.argsort(np.argsort(x, -1), -1))
    mask = backend.to_numpy(diffopt.top_k_mask(xb, 2))
    want = np.zeros_like(x)
    np.put_along_axis(want, np.argsort(-x, -1)[:, :2], 1.0, axis=-1)
    np.testing.assert_array_equal(mask, want)


@pytest.mark.parametrize("k", [0, 7, 2.0])
def test_top_k_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be an integer in"):
        diffopt.top_k_mask(np.zeros((2, 6)), k)


def _brute_force_path_cost(costs):
    """Cheapest monotone-or-not path cost by Bellman-Ford on the 8-neighbour grid."""
    h, w = costs.shape
    dist = np.full((h, w), np.inf)
    dist[0, 0] = costs[0, 0]
    for _ in range(h * w):
        for r in range(h):
            for c in range(w):
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        r2, c2 = r + dr, c + dc
                        if (dr or dc) and 0 <= r2 < h and 0 <= c2 < w:
                            dist[r2, c2] = min(dist[r2, c2], dist[r, c] + costs[r2, c2])
    return dist[-1, -1]


def test_shortest_path_is_optimal_and_batched(backend):
    costs = np.random.default_rng(1).uniform(0.1, 2.0, size=(3, 5, 6))
    paths = backend.to_numpy(diffopt.shortest_path(backend.asarray(costs, "float32")))
    assert paths.shape == costs.shape
    for c, p in zip(costs, paths):
        assert p[0, 0] == 1 and p[-1, -1] == 1
        np.testing.assert_allclose((c * p).sum(), _brute_force_path_cost(c), rtol=1e-5)


def test_shortest_path_follows_a_cheap_corridor():
    costs = np.full((4, 4), 10.0)
    costs[0, :] = 1.0
    costs[:, -1] = 1.0
    path = diffopt.grid_shortest_path(costs)
    assert path.sum() == 6  # (0,0)-(0,2), a diagonal step to (1,3), then down
    assert np.all(path[costs > 1] == 0)
