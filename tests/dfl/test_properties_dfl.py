"""Property-based tests (hypothesis) of the decision-focused losses and metrics, on every backend.

For an exact solver ``w(c) = argmin_w ⟨c, w⟩`` over a finite set (the k-subsets,
the monotone paths of a grid: the solvers are exact, see
``tests/solvers/test_properties_solvers.py``):

* regret ``⟨c, w(θ̂)⟩ − z* >= 0``, and ``= 0`` for ``θ̂ = c``;
* SPO+ is an upper bound of the regret: with ``w = w(θ̂)`` in its max,
  ``ℓ >= ⟨c − 2θ̂, w(θ̂)⟩ + 2⟨θ̂, w*⟩ − z* = regret + 2(⟨θ̂, w*⟩ − ⟨θ̂, w(θ̂)⟩) >= regret``;
  ``ℓ(c, c) = 0``; its gradient is ``2(w* − w(2θ̂ − c))`` (entries in
  ``{-2, 0, 2}``, rows summing to 0 for a fixed number of selected items).

Costs are small multiples of 1/2, so every objective is exact in floating point.
"""

import autoray as ar
import numpy as np
import pytest

from _properties import check, dtypes, st
from diffopt import dag_shortest_path, grid_edges, normalized_regret, regret, spo_plus_loss, top_k_mask


def _top_k(k, minimize):
    return (lambda c: top_k_mask(-c, k)) if minimize else (lambda c: top_k_mask(c, k))


PROBLEMS = {  # name: (solver factory (minimize) -> solver, number of cost entries, items chosen per row)
    "top2of4": (lambda minimize: _top_k(2, minimize), 4, 2),
    "top1of3": (lambda minimize: _top_k(1, minimize), 3, 1),
    "path3x2": (lambda minimize: (lambda c: dag_shortest_path(c if minimize else -c, grid=(3, 2))),
                len(grid_edges((3, 2))), 3),
}


@st.composite
def instances(draw, size):
    b = draw(st.integers(1, 3))
    cost = st.integers(-6, 10).map(lambda v: v / 2)
    theta = draw(st.lists(cost, min_size=b * size, max_size=b * size))
    c = draw(st.lists(cost, min_size=b * size, max_size=b * size))
    return np.asarray(theta).reshape(b, size), np.asarray(c).reshape(b, size)


def _np(backend, x):
    return np.asarray(backend.to_numpy(x), dtype=np.float64)


def test_spo_plus_bounds_the_regret_which_is_nonnegative(backend):
    def body(data, name, minimize):
        make, size, _ = PROBLEMS[name]
        solver = make(minimize)
        dtype = data.draw(st.sampled_from(dtypes(backend, ("float32", "float64"))), label="dtype")
        theta, c = data.draw(instances(size), label="theta, c")
        with backend.float64():
            th, ca = backend.asarray(theta, dtype), backend.asarray(c, dtype)
            w_true = solver(ca)
            r = _np(backend, regret(solver, th, ca, minimize=minimize))
            r_given = _np(backend, regret(solver, th, ca, ar.do("sum", ca * w_true, axis=-1), minimize=minimize))
            loss = _np(backend, spo_plus_loss(solver, minimize=minimize, reduction="none")(th, ca, w_true))
            r_self = _np(backend, regret(solver, ca, ca, minimize=minimize))
            loss_self = _np(backend, spo_plus_loss(solver, minimize=minimize, reduction="none")(ca, ca, w_true))
            z = (c * _np(backend, w_true)).sum(-1)
            nr = float(_np(backend, normalized_regret(solver, th, ca, minimize=minimize)))
        assert r.shape == loss.shape == (theta.shape[0],)
        assert np.all(r >= 0) and np.array_equal(r, r_given)
        assert np.all(loss >= r)
        assert np.array_equal(r_self, np.zeros_like(r_self)) and np.array_equal(loss_self, np.zeros_like(loss_self))
        assert np.isclose(nr, r.sum() / (np.abs(z).sum() + 1e-8), rtol=1e-6)  # PyEPO's 1e-8: finite for z* = 0

    check(backend, 20, dict(data=st.data(), name=st.sampled_from(sorted(PROBLEMS)), minimize=st.booleans()), body)


def test_spo_plus_gradient_is_twice_the_difference_of_two_decisions(grad_backend):
    def body(data, name, minimize):
        backend = grad_backend
        make, size, chosen = PROBLEMS[name]
        solver = make(minimize)
        theta, c = data.draw(instances(size), label="theta, c")
        with backend.float64():
            th, ca = backend.asarray(theta, "float64"), backend.asarray(c, "float64")
            w_true = solver(ca)
            loss = spo_plus_loss(solver, minimize=minimize, reduction="sum")
            g = _np(backend, backend.grad(lambda a: loss(a, ca, w_true), th))
            w_spo = _np(backend, solver(backend.asarray(2 * theta - c, "float64")))
        sign = 1.0 if minimize else -1.0
        assert g.shape == theta.shape and np.all(_np(backend, w_true).sum(-1) == chosen)
        assert np.array_equal(g, sign * 2 * (_np(backend, w_true) - w_spo))
        assert set(np.unique(g)) <= {-2.0, 0.0, 2.0} and np.all(g.sum(-1) == 0)

    check(grad_backend, 20, dict(data=st.data(), name=st.sampled_from(sorted(PROBLEMS)),
        minimize=st.booleans()), body)


@pytest.mark.parametrize("minimize", [True, False])
def test_minimize_must_be_a_bool(minimize):
    with pytest.raises(TypeError, match="minimize"):
        spo_plus_loss(_top_k(1, minimize), minimize=int(minimize))
    with pytest.raises((TypeError, ValueError), match="reduction"):
        spo_plus_loss(_top_k(1, minimize), minimize=minimize, reduction="avg")
