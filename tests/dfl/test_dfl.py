"""Decision-focused learning (SPO+, DBB, NID, regret) and its solvers, on every backend.

The small cases are computed by hand: a "pick one item" solver on three items
(``w(θ) = one-hot argmin θ`` or ``argmax θ``), a 2×2 grid, a 3-item knapsack.
"""

import functools
import itertools

import autoray as ar
import numpy as np
import pytest

import diffopt
from diffopt import blackbox, dag_shortest_path, grid_edges, negative_identity, normalized_regret, regret, spo_plus_loss
from diffopt._ops import do  # autoray's own torch translations do not compile


def pick_min(x):
    return diffopt.argmax_one_hot(-x)


def pick_max(x):
    return diffopt.argmax_one_hot(x)


C = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
PRED = np.array([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0]])


def _optimum(c, minimize):
    w = np.zeros_like(c)
    w[np.arange(len(c)), (np.argmin if minimize else np.argmax)(c, axis=1)] = 1.0
    return w, (w * c).sum(axis=1)


def _np(backend, x):
    return np.asarray(backend.to_numpy(x), dtype=np.float64)


# -- SPO+ --------------------------------------------------------------------------------
@pytest.mark.parametrize("minimize, solver, losses, grad0", [
    # min: q = 2θ̂ − c = [5, 0, 1] → w(q) = e1; loss = −0 + 2·θ̂₀ − z* = 6 − 1; ∇ = 2(e0 − e1)
    (True, pick_min, [5.0, 0.0], [2.0, -2.0, 0.0]),
    # max: w* = e2, z* = 3; w(q) = e0, max = 5; loss = 5 − 2·θ̂₂ + 3 = 4; ∇ = 2(e0 − e2)
    (False, pick_max, [4.0, 0.0], [2.0, 0.0, -2.0]),
])
def test_spo_plus_value_and_subgradient_by_hand(grad_backend, minimize, solver, losses, grad0):
    b = grad_backend
    w, z = _optimum(C, minimize)
    c_b, w_b, z_b = b.asarray(C), b.asarray(w), b.asarray(z[:, None])
    per = spo_plus_loss(solver, minimize=minimize, reduction="none")
    np.testing.assert_allclose(_np(b, per(b.asarray(PRED), c_b, w_b, z_b)), losses)
    loss = spo_plus_loss(solver, minimize=minimize)  # mean over the batch
    np.testing.assert_allclose(_np(b, loss(b.asarray(PRED), c_b, w_b)), np.mean(losses))
    g = _np(b, b.grad(lambda t: loss(t, c_b, w_b, z_b), b.asarray(PRED)))
    np.testing.assert_allclose(g, [np.array(grad0) / 2, [0.0, 0.0, 0.0]])


def test_spo_plus_values_on_numpy(backend):
    """Forward on every backend (NumPy included), the z_true default and 'sum'."""
    w, z = _optimum(C, True)
    loss = spo_plus_loss(pick_min, minimize=True, reduction="sum")
    got = loss(backend.asarray(PRED), backend.asarray(C), backend.asarray(w), backend.asarray(z))
    assert ar.infer_backend(got) == ar.infer_backend(backend.asarray(C))
    np.testing.assert_allclose(_np(backend, got), 5.0)


def test_spo_plus_upper_bounds_the_regret_on_the_grid(backend):
    rs = np.random.RandomState(0)
    c, pred = rs.rand(16, 40) + 0.1, rs.randn(16, 40)
    w = _np(backend, dag_shortest_path(backend.asarray(c)))
    z = (c * w).sum(axis=1)
    spo = _np(backend, spo_plus_loss(dag_shortest_path, minimize=True, reduction="none")(
        backend.asarray(pred), backend.asarray(c), backend.asarray(w), backend.asarray(z)))
    reg = _np(backend, regret(dag_shortest_path, backend.asarray(pred), backend.asarray(c), minimize=True))
    assert np.all(reg >= -1e-9) and np.all(spo >= reg - 1e-9) and np.any(reg > 0)


# -- DBB and NID -------------------------------------------------------------------------
@pytest.mark.parametrize("minimize, solver, dy, lambd, expected", [
    # min, θ = [1, 2, 3], w = e0, ∂L/∂w = e0: θ' = θ + 2·e0 = [3, 2, 3] → e1; ∇ = (e1 − e0)/2
    (True, pick_min, [1.0, 0.0, 0.0], 2.0, [-0.5, 0.5, 0.0]),
    # λ = 0.5: θ' = [1.5, 2, 3] still picks e0: zero gradient
    (True, pick_min, [1.0, 0.0, 0.0], 0.5, [0.0, 0.0, 0.0]),
    # max, w = e2, ∂L/∂w = e2: θ' = θ − 2·e2 = [1, 2, 1] → e1; ∇ = (e2 − e1)/2
    (False, pick_max, [0.0, 0.0, 1.0], 2.0, [0.0, -0.5, 0.5]),
])
def test_blackbox_interpolation_gradient_by_hand(grad_backend, minimize, solver, dy, lambd, expected):
    b = grad_backend
    theta, dy_b = b.asarray(np.array([[1.0, 2.0, 3.0]])), b.asarray(np.array([dy]))
    layer = blackbox(solver, lambd, minimize=minimize)
    w, _ = _optimum(np.array([[1.0, 2.0, 3.0]]), minimize)
    np.testing.assert_array_equal(_np(b, layer(theta)), w)
    g = _np(b, b.grad(lambda t: do("sum", layer(t) * dy_b), theta))
    np.testing.assert_allclose(g, [expected])


@pytest.mark.parametrize("minimize, sign", [(True, -1.0), (False, 1.0)])
def test_negative_identity_gradient(grad_backend, minimize, sign):
    b = grad_backend
    dy = np.array([[0.5, -2.0, 1.0], [3.0, 0.0, -1.0]])
    layer = negative_identity(pick_min if minimize else pick_max, minimize=minimize)
    np.testing.assert_array_equal(_np(b, layer(b.asarray(C))), _optimum(C, minimize)[0])
    dy_b = b.asarray(dy)
    g = _np(b, b.grad(lambda t: do("sum", layer(t) * dy_b), b.asarray(C)))
    np.testing.assert_array_equal(g, sign * dy)


def test_dtype_and_framework_are_kept(grad_backend):
    b = grad_backend
    for dtype in ("float32", "float64"):
        if not b.supports(dtype):
            continue
        theta = b.asarray(PRED, dtype)
        for layer in (blackbox(pick_min, minimize=True), negative_identity(pick_min, minimize=True)):
            out = layer(theta)
            assert ar.get_dtype_name(out) == dtype and ar.infer_backend(out) == ar.infer_backend(theta)
            np.testing.assert_array_equal(b.to_numpy(out), np.eye(3)[PRED.argmin(-1)])  # forward: the solver's
            g = b.grad(lambda t: do("sum", layer(t) * theta), theta)
            assert ar.get_dtype_name(g) == dtype
        loss = spo_plus_loss(pick_min, minimize=True)(theta, b.asarray(C, dtype), b.asarray(C * 0, dtype))
        assert ar.get_dtype_name(loss) == dtype


# -- metrics -----------------------------------------------------------------------------
@pytest.mark.parametrize("minimize, solver, per, normalized", [
    # min: θ̂₀ picks e1 (cost 2, optimum 1): regret 1; θ̂₁ = c: 0; Σ|z*| = 2
    (True, pick_min, [1.0, 0.0], 0.5),
    # max: θ̂₀ picks e0 (value 1, optimum 3): regret 2; Σ|z*| = 6
    (False, pick_max, [2.0, 0.0], 2.0 / 6.0),
])
def test_regret_by_hand(backend, minimize, solver, per, normalized):
    pred, c = backend.asarray(PRED), backend.asarray(C)
    np.testing.assert_allclose(_np(backend, regret(solver, pred, c, minimize=minimize)), per)
    got = normalized_regret(solver, pred, c, minimize=minimize)
    np.testing.assert_allclose(_np(backend, got), normalized, rtol=1e-6)
    z = backend.asarray(_optimum(C, minimize)[1])
    np.testing.assert_allclose(_np(backend, normalized_regret(solver, pred, c, z, minimize=minimize)),
                               normalized, rtol=1e-6)


def test_normalized_regret_of_zero_optima_is_finite_as_pyepo(backend):
    """Every optimal objective 0: PyEPO adds 1e-8 to the denominator (``pyepo.utils._EPS``), so the
    value is finite (0 / 1e-8 = 0 without regret, 1 / 1e-8 with regret 1), never NaN."""
    c = backend.asarray(np.array([[0.0, 1.0], [0.0, 2.0]]))  # the cheapest item is free: z* = 0
    no_regret = normalized_regret(pick_min, c, c, minimize=True)
    one = normalized_regret(pick_min, backend.asarray(np.array([[1.0, 0.0], [0.0, 1.0]])), c, minimize=True)
    assert float(_np(backend, no_regret)) == 0.0
    np.testing.assert_allclose(_np(backend, one), 1.0 / 1e-8, rtol=1e-6)


def test_normalized_regret_matches_pyepo_s_normalisation():
    """The same denominator as the installed PyEPO's (its ``normalize_regret`` and ``_EPS``)."""
    common = pytest.importorskip("pyepo.metric._common")
    from diffopt.dfl import _metrics

    assert _metrics.EPS == pytest.importorskip("pyepo.utils")._EPS
    pred, c = np.array([[0.0, 1.0], [2.0, 0.0]]), np.array([[3.0, 1.0], [2.0, 5.0]])
    r = regret(pick_min, pred, c, minimize=True)
    z = _optimum(c, True)[1]
    assert float(normalized_regret(pick_min, pred, c, minimize=True)) == pytest.approx(
        common.normalize_regret(float(r.sum()), float(np.abs(z).sum())), rel=1e-12)


# -- the grid DAG shortest path and the knapsack ------------------------------------------
def _all_paths(height, width):
    index = {e: k for k, e in enumerate(grid_edges((height, width)))}
    paths = []
    for downs in itertools.combinations(range(height + width - 2), height - 1):
        ind, v = np.zeros(len(index)), 0
        for step in range(height + width - 2):
            u = v + width if step in downs else v + 1
            ind[index[(v, u)]], v = 1.0, u
        paths.append(ind)
    return np.array(paths)


def test_grid_edges_follow_pyepo_order():
    edges = grid_edges((5, 5))
    assert len(edges) == 40
    assert edges[:9] == ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (1, 6), (2, 7), (3, 8), (4, 9))
    assert edges[-4:] == ((20, 21), (21, 22), (22, 23), (23, 24))
    assert grid_edges((2, 2)) == ((0, 1), (0, 2), (1, 3), (2, 3))


def test_dag_shortest_path_by_hand_and_by_enumeration(backend):
    # 2×2: right-then-down uses edges 0 and 2, down-then-right edges 1 and 3
    got = dag_shortest_path(backend.asarray(np.array([[1.0, 5.0, 1.0, 5.0], [5.0, 1.0, 5.0, 1.0]])), grid=(2, 2))
    np.testing.assert_array_equal(_np(backend, got), [[1, 0, 1, 0], [0, 1, 0, 1]])
    rs = np.random.RandomState(1)
    for grid in ((3, 4), (5, 5)):
        paths = _all_paths(*grid)
        costs = rs.randn(4, 3, paths.shape[1])  # negative costs too, and two leading axes
        got = _np(backend, dag_shortest_path(backend.asarray(costs), grid=grid))
        best = paths[np.argmin(costs @ paths.T, axis=-1)]
        np.testing.assert_array_equal(got, best)


def test_dag_shortest_path_ties_give_one_valid_path(backend):
    got = _np(backend, dag_shortest_path(backend.asarray(np.zeros((2, 40)))))
    assert any((p == got[0]).all() for p in _all_paths(5, 5))


def test_dag_shortest_path_under_the_compiler(backend):
    costs = np.random.RandomState(2).rand(3, 12)
    got = backend.jit(lambda c: dag_shortest_path(c, grid=(3, 3)))(backend.asarray(costs))
    paths = _all_paths(3, 3)
    np.testing.assert_array_equal(_np(backend, got), paths[np.argmin(costs @ paths.T, axis=1)])


def test_knapsack_host_solver(backend):
    pytest.importorskip("scipy")
    # weights 3, 4, 5, capacity 7: {0, 1} (value 9) beats {2} (3); a second dimension excludes
    # item 1, leaving {0} (4) against {2} (3); for the values [1, 1, 9], {2} wins both
    solver = diffopt.knapsack_solver([[3.0, 4.0, 5.0]], 7.0)
    values = backend.asarray(np.array([[4.0, 5.0, 3.0], [1.0, 1.0, 9.0]]))
    np.testing.assert_array_equal(_np(backend, solver(values)), [[1, 1, 0], [0, 0, 1]])
    two = diffopt.knapsack_solver([[3.0, 4.0, 5.0], [0.0, 2.0, 0.0]], [7.0, 1.0])
    np.testing.assert_array_equal(_np(backend, two(values)), [[1, 0, 0], [0, 0, 1]])


def test_spo_plus_with_the_knapsack_under_the_compiler(grad_backend):
    pytest.importorskip("scipy")
    b = grad_backend
    solver = diffopt.knapsack_solver([[3.0, 4.0, 5.0]], 7.0)
    c = np.array([[4.0, 5.0, 6.0]])
    w, z = np.array([[1.0, 1.0, 0.0]]), np.array([9.0])
    loss = spo_plus_loss(solver, minimize=False)
    c_b, w_b, z_b = b.asarray(c), b.asarray(w), b.asarray(z)
    # θ̂ = [1, 1, 9]: q = 2θ̂ − c = [−2, −3, 12] → {2}, max 12; loss = 12 − 2·2 + 9 = 17; ∇ = 2(e2 − w*)
    step = b.jit(lambda t: b.grad(lambda x: loss(x, c_b, w_b, z_b), t))
    g = _np(b, step(b.asarray(np.array([[1.0, 1.0, 9.0]]))))
    np.testing.assert_allclose(g, [[-2.0, -2.0, 2.0]])
    np.testing.assert_allclose(_np(b, loss(b.asarray(np.array([[1.0, 1.0, 9.0]])), c_b, w_b, z_b)), 17.0)


def test_blackbox_gradient_under_the_compiler(grad_backend):
    b = grad_backend
    layer = blackbox(functools.partial(dag_shortest_path, grid=(3, 3)), 5.0, minimize=True)
    costs = np.random.RandomState(3).rand(2, 12)
    c_b = b.asarray(costs)
    step = b.jit(lambda t: b.grad(lambda x: do("sum", layer(x) * c_b), t))
    g = _np(b, step(b.asarray(costs)))
    # θ' = θ + 5·∂L/∂w = 6c: the same path, so the gradient is exactly zero; then from θ = −c
    np.testing.assert_array_equal(g, np.zeros_like(costs))
    g = _np(b, step(b.asarray(-costs)))
    paths = _all_paths(3, 3)
    w, w2 = (paths[np.argmin(cc @ paths.T, axis=1)] for cc in (-costs, 4.0 * costs))
    np.testing.assert_allclose(g, (w2 - w) / 5.0, atol=1e-6)
    assert np.abs(g).sum() > 0


def test_torch_vmap_matches_row_by_row_calls():
    torch = pytest.importorskip("torch")
    layer = blackbox(dag_shortest_path, 3.0, minimize=True)
    theta = torch.from_numpy(np.random.RandomState(4).rand(3, 2, 40))
    dy = torch.from_numpy(np.random.RandomState(5).randn(2, 40))
    grads = torch.func.vmap(torch.func.grad(lambda t: (layer(t) * dy).sum()))(theta)
    for i in range(3):
        t = theta[i].clone().requires_grad_(True)
        (layer(t) * dy).sum().backward()
        np.testing.assert_allclose(grads[i].numpy(), t.grad.numpy())


def test_jax_vmap_of_the_spo_plus_gradient():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    loss = spo_plus_loss(pick_min, minimize=True)
    w, _ = _optimum(C, True)
    grads = jax.vmap(jax.grad(lambda t: loss(t, jnp.asarray(C), jnp.asarray(w))))(jnp.stack([jnp.asarray(PRED)] * 2))
    np.testing.assert_allclose(np.asarray(grads)[1], [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])


# -- training a linear model on a toy shortest path ---------------------------------------
def _toy_data(n, rs, grid=(3, 3)):
    """Costs c = (x·Bᵀ/√5 + 1)² + 0.2 of 5 features (PyEPO's generator, degree 2, no noise)."""
    x = rs.randn(n, 5)
    bmat = rs.binomial(1, 0.5, (len(grid_edges(grid)), 5))
    return x, (x @ bmat.T / np.sqrt(5) + 1.0) ** 2 + 0.2


@pytest.mark.parametrize("method, lr, bound", [("spo+", 0.1, 0.3), ("nid", 0.1, 0.3), ("dbb", 1.0, 0.75)])
def test_training_a_linear_model_reduces_regret(grad_backend, method, lr, bound):
    """40 steps of gradient descent on a linear model, 64 instances of a 3×3 grid shortest path."""
    b, grid = grad_backend, (3, 3)
    x, c = _toy_data(64, np.random.RandomState(6), grid)

    def solver(costs):
        return dag_shortest_path(costs, grid=grid)

    x_b, c_b = b.asarray(x), b.asarray(c)
    w_b = solver(c_b)
    spo = spo_plus_loss(solver, minimize=True)
    layer = (blackbox(solver, 10.0, minimize=True) if method == "dbb"
             else negative_identity(solver, minimize=True))

    def loss(weights):
        pred = do("matmul", x_b, weights)
        if method == "spo+":
            return spo(pred, c_b, w_b)
        return do("mean", do("sum", layer(pred) * c_b, axis=-1))  # the decision's true cost

    def score(weights):
        return float(_np(b, normalized_regret(solver, b.asarray(x @ weights), c_b, minimize=True)))

    weights = np.random.RandomState(0).randn(5, c.shape[1])
    start = score(weights)
    for _ in range(40):
        weights = weights - lr * _np(b, b.grad(loss, b.asarray(weights)))
    assert start > 0.3 and score(weights) < bound * start


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("make, exc, name", [
    (lambda: spo_plus_loss(pick_min, minimize=1), TypeError, "minimize"),
    (lambda: spo_plus_loss(pick_min), TypeError, "minimize"),
    (lambda: spo_plus_loss(pick_min, minimize=True, reduction="avg"), ValueError, "reduction"),
    (lambda: spo_plus_loss("solver", minimize=True), TypeError, "solver"),
    (lambda: blackbox(pick_min, 0.0, minimize=True), ValueError, "lambd"),
    (lambda: blackbox(pick_min, "10", minimize=True), TypeError, "lambd"),
    (lambda: negative_identity(pick_min, minimize=None), TypeError, "minimize"),
    (lambda: dag_shortest_path(np.zeros((2, 40)), grid=(5, 0)), ValueError, "grid"),
    (lambda: dag_shortest_path(np.zeros((2, 39))), ValueError, "costs"),
    (lambda: diffopt.knapsack_solver([[1.0, 2.0]], [1.0, 2.0]), ValueError, "capacity"),
    (lambda: diffopt.knapsack_solver([[1.0, -2.0]], 1.0), ValueError, "weights"),
    (lambda: diffopt.knapsack_solver([[1.0], [2.0]], [1.0, 2.0], unit=0.5), ValueError, "unit"),
    (lambda: diffopt.knapsack_solver([1.0], 2.0, unit=0.0), ValueError, "unit"),
])
def test_bad_arguments(make, exc, name):
    with pytest.raises(exc, match=name):
        make()


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return pick_min(x)


def test_bad_call_arguments_fail_before_the_solver(backend):
    solver = Counting()
    loss = spo_plus_loss(solver, minimize=True)
    pred, c = backend.asarray(PRED), backend.asarray(C)
    with pytest.raises(TypeError, match="theta_pred"):
        loss(backend.asarray(np.array([[1, 2, 3]]), "int32"), c[:1], c[:1])
    with pytest.raises(ValueError, match="theta_pred"):
        loss(backend.asarray(np.array([1.0, 2.0, 3.0])), c[0], c[0])
    with pytest.raises(ValueError, match="w_true"):
        loss(pred, c, c[:, :2])
    with pytest.raises(ValueError, match="z_true"):
        loss(pred, c, c, backend.asarray(np.zeros(3)))
    with pytest.raises(TypeError, match="theta"):
        blackbox(solver, minimize=True)(backend.asarray(np.array([[1, 2, 3]]), "int32"))
    with pytest.raises(ValueError, match="c_true"):
        regret(solver, pred, c[:, :2], minimize=True)
    if backend.name not in ("numpy", "autograd"):
        with pytest.raises(TypeError, match="different frameworks"):
            loss(pred, C, c)
    assert solver.calls == 0


def test_solver_returning_the_wrong_shape_or_type(backend):
    with pytest.raises(ValueError, match=r"solver <lambda> returned shape \(2, 2\) for input shape \(2, 3\)"):
        negative_identity(lambda x: x[:, :2], minimize=True)(backend.asarray(PRED))
    if backend.name not in ("numpy", "autograd"):
        with pytest.raises(TypeError, match="solver <lambda> returned a numpy array"):
            blackbox(lambda x: np.zeros((2, 3)), minimize=True)(backend.asarray(PRED))


def test_knapsack_dynamic_program_matches_enumeration(backend):
    rs = np.random.RandomState(7)
    weights = rs.choice(np.arange(300, 800), 8) / 100.0  # PyEPO's weight grid: multiples of 0.01
    solver = diffopt.knapsack_solver(weights, 12.0, unit=0.01)
    values = rs.randn(5, 8) + 0.5  # negative values too: never taken
    subsets = np.array(list(itertools.product([0.0, 1.0], repeat=8)))
    feasible = subsets[subsets @ weights <= 12.0 + 1e-9]
    best = feasible[np.argmax(values @ feasible.T, axis=1)]
    got = _np(backend, solver(backend.asarray(values)))
    np.testing.assert_allclose((got * values).sum(1), (best * values).sum(1))
    assert np.all(got @ weights <= 12.0 + 1e-9)
    with pytest.raises(ValueError, match="unit"):
        diffopt.knapsack_solver([3.005], 12.0, unit=0.01)
