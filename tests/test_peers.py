"""The installed peer packages as references (the ``peers`` tox environment).

- ``differentiable_sorting``: diffopt's drop-in gives the same numbers (<= 1e-12).
- ``diffsort`` (Petersen et al.): the ``logistic``, ``cauchy`` and ``optimal``
  relaxations equal diffsort's at ``steepness = 1 / temperature``;
  ``reciprocal`` at ``steepness = 2 / temperature`` (diffsort's reciprocal
  sigmoid is ``(v + 1) / (v + 2)`` of ``v = steepness * gap``, diffopt's
  ``(2v' + 1) / (2v' + 2)`` of ``v' = gap / T``). Powers of two only: for other
  lengths diffsort drops the top wires of its network, diffopt pads with
  ``+inf``, so the two networks differ.
- ``optax.perturbations.make_perturbed_fun``: diffopt's estimator on the same
  noise draws gives the same value, gradient and Hessian (optax differentiates
  its magic-box estimator twice with JAX; diffopt's second-order estimate is
  Stein's identity on a replay of the draws, on JAX and on torch).
- PyEPO: every block of ``docs/switching/pyepo.md`` (SPO+, DBB, NID, DPO, PFYL,
  I-MLE, AI-MLE's first step, regret) gives PyEPO's value and gradient on the
  block's own inputs, with the same noise draws injected on both sides; I-MLE's
  gradient is PyEPO's divided by the number of samples (also two-sided).

Each test skips when its peer (or its framework, per ``DIFFOPT_TEST_BACKENDS``)
is absent, so the other environments stay green.
"""

import numpy as np
import pytest

from conftest import SELECTED


def _peer(module, framework):
    if framework not in SELECTED:
        pytest.skip(f"{framework} is not among DIFFOPT_TEST_BACKENDS")
    return pytest.importorskip(module)


# ----------------------------------------------------------- differentiable_sorting


@pytest.mark.parametrize("n", [2, 8, 32])
def test_dropin_equals_differentiable_sorting(n):
    ds = _peer("differentiable_sorting", "numpy")
    from diffopt import sorting

    rng = np.random.default_rng(n)
    x = rng.normal(size=n) * 3.0
    theirs_m, ours_m = ds.bitonic_matrices(n), sorting.bitonic_matrices(n)
    for a, b in zip(theirs_m, ours_m):
        for ma, mb in zip(a, b):
            np.testing.assert_array_equal(np.asarray(ma), np.asarray(mb))
    np.testing.assert_allclose(sorting.diff_sort(ours_m, x), ds.diff_sort(theirs_m, x), rtol=0, atol=1e-12)
    idx_t, idx_o = ds.bitonic_indices(n), sorting.bitonic_indices(n)
    np.testing.assert_allclose(sorting.diff_sort_indexed(idx_o, x), ds.diff_sort_indexed(idx_t, x), atol=1e-12)
    for transpose in (False, True):
        np.testing.assert_allclose(
            sorting.diff_argsort(ours_m, x, sigma=0.3, transpose=transpose),
            ds.diff_argsort(theirs_m, x, sigma=0.3, transpose=transpose), atol=1e-12)
        np.testing.assert_allclose(
            sorting.diff_argsort_indexed(idx_o, x, sigma=0.3, transpose=transpose),
            ds.diff_argsort_indexed(idx_t, x, sigma=0.3, transpose=transpose), atol=1e-12)
    woven_t, woven_o = ds.bitonic_woven_matrices(n), sorting.bitonic_woven_matrices(n)
    for beta in (0.0, 0.25):
        np.testing.assert_allclose(sorting.diff_sort_weave(woven_o, x, beta=beta),
                                   ds.diff_sort_weave(woven_t, x, beta=beta), atol=1e-12)
    X = rng.normal(size=(n, 3))
    key = lambda v: v @ np.array([1.0, -0.5, 0.25])  # noqa: E731
    np.testing.assert_allclose(sorting.vector_sort(ours_m, X, key, alpha=0.7),
                               ds.vector_sort(theirs_m, X, key, alpha=0.7), atol=1e-12)
    a, b = rng.normal(size=5), rng.normal(size=5)
    np.testing.assert_allclose(sorting.softmax(a, b, alpha=2.0), ds.softmax(a, b, alpha=2.0), atol=1e-12)
    np.testing.assert_allclose(sorting.smoothmax(a, b, alpha=2.0), ds.smoothmax(a, b, alpha=2.0), atol=1e-12)
    np.testing.assert_allclose(sorting.softmax_smooth(a, b, smooth=0.3), ds.softmax_smooth(a, b, smooth=0.3),
                               atol=1e-12)


def test_dropin_torch_equals_differentiable_sorting_torch():
    _peer("differentiable_sorting", "torch")
    dst = pytest.importorskip("differentiable_sorting.torch")
    import torch

    from diffopt.sorting import torch as ours

    x = torch.tensor(np.random.default_rng(1).normal(size=16) * 2.0, dtype=torch.float64)
    m_t = [[m.double() for m in layer] for layer in dst.bitonic_matrices(16)]
    m_o = [[m.double() for m in layer] for layer in ours.bitonic_matrices(16)]
    np.testing.assert_allclose(ours.diff_sort(m_o, x).numpy(), dst.diff_sort(m_t, x).numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.diff_argsort(m_o, x, sigma=0.2).numpy(),
                               dst.diff_argsort(m_t, x, sigma=0.2).numpy(), atol=1e-12)


# ----------------------------------------------------------------------- diffsort

# diffsort's 'optimal' sigmoid divides by |v| + 1e-10: agreement to ~1e-10 there.
_DIFFSORT = [("logistic", 1.0, 1e-12), ("cauchy", 1.0, 1e-12), ("optimal", 1.0, 1e-9), ("reciprocal", 2.0, 1e-12)]


@pytest.mark.parametrize("relaxation,factor,tol", _DIFFSORT, ids=[r for r, _, _ in _DIFFSORT])
@pytest.mark.parametrize("n", [8, 32])
def test_relaxations_equal_diffsort(relaxation, factor, tol, n):
    diffsort = _peer("diffsort", "torch")
    import torch

    from diffopt.sorting import soft_permutation, soft_sort

    x = np.random.default_rng(n).normal(size=(4, n))
    net = [tuple(torch.from_numpy(m) for m in layer) for layer in diffsort.networks.bitonic_network(n)]
    for temperature in (0.3, 2.0):
        sorted_t, perm_t = diffsort.functional.sort(net, torch.from_numpy(x), steepness=factor / temperature,
                                                    distribution=relaxation)
        np.testing.assert_allclose(soft_sort(x, temperature=temperature, relaxation=relaxation),
                                   sorted_t.numpy(), rtol=0, atol=tol)
        # diffsort's X maps inputs to sorted outputs as x @ X: diffopt's matrix is its transpose.
        np.testing.assert_allclose(soft_permutation(x, temperature=temperature, relaxation=relaxation),
                                   perm_t.numpy().transpose(0, 2, 1), rtol=0, atol=tol)


# ------------------------------------------------------------- optax.perturbations


class _Draws:
    """A diffopt noise whose draws are given: ``[N, 1, D]`` rows, the score of ``base``."""

    def __init__(self, draws, base):
        self.draws, self.base = draws, base

    def sample(self, shape, like, rng=None):
        assert tuple(shape) == tuple(self.draws.shape), (shape, self.draws.shape)
        return self.draws

    def score(self, z):
        return self.base.score(z)

    def score_derivative(self, z):
        return self.base.score_derivative(z)


@pytest.mark.parametrize("noise_name", ["normal", "gumbel"])
@pytest.mark.parametrize("use_baseline", [True, False])
def test_make_perturbed_fun_equals_optax(noise_name, use_baseline):
    optax = _peer("optax", "jax")
    import jax
    import jax.numpy as jnp
    from optax import perturbations as op

    import diffopt

    def fun(tree):
        a, b = tree["a"], tree["b"]
        return {"hot": jax.nn.one_hot(jnp.argmax(a), 3, dtype=a.dtype), "sq": jnp.sum(b**2 * a[:2])}

    num_samples, sigma = 7, 0.4
    theirs_noise = {"normal": op.Normal(), "gumbel": op.Gumbel()}[noise_name]
    ours_base = {"normal": diffopt.Normal(), "gumbel": diffopt.Gumbel()}[noise_name]
    with jax.enable_x64(True):  # float64 inside this test only, never globally
        x = {"a": jnp.array([0.3, -0.2, 0.1]), "b": jnp.array([[1.0, -2.0], [0.5, 0.25]])}
        key = jax.random.key(3)
        keys = jax.random.split(key, num_samples)
        draws = jax.vmap(lambda k: optax.tree.random_like(k, x, sampler=theirs_noise.sample))(keys)
        flat = jnp.concatenate([draws["a"].reshape(num_samples, -1), draws["b"].reshape(num_samples, -1)], axis=1)
        ours = diffopt.make_perturbed_fun(fun, num_samples=num_samples, sigma=sigma,
                                          noise=_Draws(flat[:, None, :], ours_base), use_baseline=use_baseline)
        theirs = op.make_perturbed_fun(fun, num_samples=num_samples, sigma=sigma, noise=theirs_noise,
                                       use_baseline=use_baseline)
        weights = jnp.array([0.7, -1.3, 2.1])

        def loss(f):
            return lambda tree: jnp.sum(f(key, tree)["hot"] * weights) + 0.3 * f(key, tree)["sq"]

        out_o, out_t = ours(key, x), theirs(key, x)
        for name in ("hot", "sq"):
            np.testing.assert_allclose(np.asarray(out_o[name]), np.asarray(out_t[name]), rtol=0, atol=1e-10)
        g_o, g_t = jax.grad(loss(ours))(x), jax.grad(loss(theirs))(x)
        for name in ("a", "b"):
            assert np.abs(np.asarray(g_t[name])).max() > 1e-3  # a non-trivial gradient is compared
            np.testing.assert_allclose(np.asarray(g_o[name]), np.asarray(g_t[name]), rtol=0, atol=1e-10)


@pytest.mark.parametrize("use_baseline", [True, False])
def test_make_perturbed_fun_hessian_equals_optax(use_baseline):
    """optax's own Hessian case (``test_pert_close_array``): argmax, σ = 1, x = [1, 2, 3, 4],
    loss Σ y² + cos y; jax.hessian of both on the same draws, and torch's Hessian too."""
    optax = _peer("optax", "jax")
    import jax
    import jax.numpy as jnp
    from optax import perturbations as op

    import diffopt

    def argmax_tree(x):
        return jax.nn.one_hot(jnp.argmax(x), x.shape[0], dtype=x.dtype)

    num_samples, sigma = 1000, 1.0
    with jax.enable_x64(True):  # float64 inside this test only, never globally
        x = jnp.array([1.0, 2.0, 3.0, 4.0])
        key = jax.random.key(0)
        keys = jax.random.split(key, num_samples)
        draws = jax.vmap(lambda k: optax.tree.random_like(k, x, sampler=op.Gumbel().sample))(keys)
        noise = _Draws(draws[:, None, :], diffopt.Gumbel())
        ours = diffopt.make_perturbed_fun(argmax_tree, num_samples, sigma, noise=noise, use_baseline=use_baseline)
        theirs = op.make_perturbed_fun(argmax_tree, num_samples, sigma, noise=op.Gumbel(), use_baseline=use_baseline)

        def loss(f):
            def value(v):
                y = f(key, v)
                return jnp.sum(y**2 + jnp.cos(y))

            return value

        h_t = np.asarray(jax.hessian(loss(theirs))(x))
        assert np.abs(h_t).max() > 1e-2  # a non-trivial Hessian is compared
        np.testing.assert_allclose(np.asarray(jax.hessian(loss(ours))(x)), h_t, rtol=0, atol=1e-10)
        np.testing.assert_allclose(np.asarray(jax.jacrev(jax.jacrev(loss(ours)))(x)), h_t, rtol=0, atol=1e-10)
        draws_np = np.array(draws)  # a writable copy
    if "torch" not in SELECTED:
        return
    torch = pytest.importorskip("torch")
    t_noise = _Draws(torch.from_numpy(draws_np[:, None, :]), diffopt.Gumbel())

    def t_argmax(v):
        return torch.nn.functional.one_hot(torch.argmax(v), v.shape[0]).to(v.dtype)

    t_ours = diffopt.make_perturbed_fun(t_argmax, num_samples, sigma, noise=t_noise, use_baseline=use_baseline)

    def t_loss(v):
        y = t_ours(0, v)
        return torch.sum(y**2 + torch.cos(y))

    h_torch = torch.autograd.functional.hessian(t_loss, torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    np.testing.assert_allclose(h_torch.numpy(), h_t, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- PyEPO
# docs/switching/pyepo.md: every mapping block runs here beside PyEPO on identical inputs (the
# block's own costs, and for the stochastic estimators the same noise draws, injected on both
# sides), and the block's loss and gradient equal PyEPO's. PyEPO divides by its step plus 1e-7
# (`_EPS`), hence the relative tolerance.

PYEPO_PAGE = __import__("pathlib").Path(__file__).resolve().parent.parent / "docs" / "switching" / "pyepo.md"
PYEPO_B, PYEPO_S, PYEPO_D = 8, 10, 40


def _pyepo_blocks():
    import re

    text = PYEPO_PAGE.read_text(encoding="utf-8")
    out = {}
    for section in re.split(r"^### ", text, flags=re.M)[1:]:
        name = section.split("`")[1]
        blocks = re.findall(r"^```python[ \t]*\n(.*?)^```", section, flags=re.M | re.S)
        if blocks:
            out[name] = blocks[0]
    return out


def _fixed_noises(torch, noise):
    """The same draws for diffopt (its two noise conventions) and for PyEPO's ``distribution``."""
    import diffopt

    class FixedNormal(diffopt.Normal):  # diffopt's engine asks for [S, B, d]
        def sample(self, shape, like, rng=None):
            assert tuple(shape) == (PYEPO_S, PYEPO_B, PYEPO_D), shape
            return torch.as_tensor(noise.transpose(1, 0, 2).copy(), dtype=like.dtype)

    class FixedImle:  # diffopt's imle asks for [B·S, d], each instance's samples together
        def sample(self, shape, like, rng=None):
            return torch.as_tensor(noise.reshape(tuple(shape)), dtype=like.dtype)

    class FixedPyepo:  # PyEPO's implicitMLE asks for size=(B, S, d)
        def sample(self, size, device=None, dtype=None):
            return torch.as_tensor(noise.reshape(tuple(size)), dtype=dtype)

    return FixedNormal(), FixedImle(), FixedPyepo()


PYEPO_SUBSTITUTIONS = {  # the page's noise arguments and what the test injects instead
    "perturbedOpt": ('noise="normal"', "noise=FIXED_NORMAL"),
    "perturbedFenchelYoung": ('noise="normal"', "noise=FIXED_NORMAL"),
    "implicitMLE": ("SumOfGammaNoiseDistribution(k=5, nb_iterations=10)", "FIXED_IMLE"),
    "adaptiveImplicitMLE": ("SumOfGammaNoiseDistribution(k=5, nb_iterations=10)", "FIXED_IMLE"),
}


def _pyepo_side(name, pf, metric, torch, model, ns, fixed_pyepo):
    """PyEPO's value and gradient for the block ``name`` on the block's own inputs."""
    c, w, z = ns["c"], ns["w"], ns["z"]
    theta = ns["theta"].detach().clone().requires_grad_(True)

    def regret_of(w_hat):
        return ((w_hat * c).sum(-1) - z).mean()

    if name == "regret":
        data = torch.utils.data.TensorDataset(theta.detach(), c, w, z.reshape(-1, 1))
        loader = torch.utils.data.DataLoader(data, batch_size=3)
        normalized = metric.regret(lambda x: x, model, loader)
        per_instance = metric.regret(lambda x: x, model, loader, reduction="none")
        return (normalized, np.asarray(per_instance)), None
    if name == "SPOPlus":
        loss = pf.SPOPlus(model)(theta, c, w, z.reshape(-1, 1))
    elif name == "perturbedFenchelYoung":
        loss = pf.perturbedFenchelYoung(model, n_samples=PYEPO_S, sigma=1.0)(theta, w)
    else:
        layer = {"blackboxOpt": lambda: pf.blackboxOpt(model, lambd=10),
                 "negativeIdentity": lambda: pf.negativeIdentity(model),
                 "perturbedOpt": lambda: pf.perturbedOpt(model, n_samples=PYEPO_S, sigma=1.0),
                 "implicitMLE": lambda: pf.implicitMLE(model, n_samples=PYEPO_S, sigma=1.0, lambd=10,
                                                       distribution=fixed_pyepo),
                 "adaptiveImplicitMLE": lambda: pf.adaptiveImplicitMLE(model, n_samples=PYEPO_S, sigma=1.0,
                                                                       distribution=fixed_pyepo)}[name]()
        loss = regret_of(layer(theta))
    loss.backward()
    return loss.detach(), theta.grad


@pytest.mark.parametrize("name", ["SPOPlus", "blackboxOpt", "negativeIdentity", "perturbedOpt",
                                  "perturbedFenchelYoung", "implicitMLE", "adaptiveImplicitMLE", "regret"])
def test_pyepo_page_reproduces_pyepo(name, monkeypatch):
    torch = _peer("torch", "torch")
    pyepo = pytest.importorskip("pyepo")
    pytest.importorskip("ortools")
    import pyepo.func as pf
    import pyepo.metric as metric
    from pyepo.model import ort

    blocks = _pyepo_blocks()
    assert set(blocks) >= {"SPOPlus", "blackboxOpt", "negativeIdentity", "perturbedOpt", "perturbedFenchelYoung",
                           "implicitMLE", "adaptiveImplicitMLE", "regret"}, sorted(blocks)
    rng = np.random.default_rng(7)
    normal = rng.normal(size=(PYEPO_B, PYEPO_S, PYEPO_D))
    gamma = pf.utils.sumGammaDistribution(kappa=5).sample(size=(PYEPO_B, PYEPO_S, PYEPO_D))
    gamma = np.asarray(gamma.numpy() if hasattr(gamma, "numpy") else gamma, dtype=np.float64)
    noise = gamma if "MLE" in name else normal
    fixed_normal, fixed_imle, fixed_pyepo = _fixed_noises(torch, noise)

    code = blocks[name]
    if name in PYEPO_SUBSTITUTIONS:
        old, new = PYEPO_SUBSTITUTIONS[name]
        assert code.count(old) == 1, f"the {name} block no longer passes {old}"
        code = code.replace(old, new)
    torch.manual_seed(3)
    ns = {"__name__": "pyepo_page", "FIXED_NORMAL": fixed_normal, "FIXED_IMLE": fixed_imle}
    exec(compile(code, f"{PYEPO_PAGE.name}: {name}", "exec"), ns)  # noqa: S102 - the page is ours

    if name in ("perturbedOpt", "perturbedFenchelYoung"):  # PyEPO draws torch.randn(B, S, d)
        monkeypatch.setattr(torch, "randn", lambda *a, **k: torch.as_tensor(normal, dtype=k.get("dtype")))
    value, grad = _pyepo_side(name, pf, metric, torch, ort.shortestPathModel(grid=(5, 5)), ns, fixed_pyepo)
    if name == "regret":
        np.testing.assert_allclose(float(ns["r"]), value[0], rtol=1e-8)
        np.testing.assert_allclose(ns["per_instance"].numpy(), value[1].reshape(-1), rtol=1e-8, atol=1e-10)
        return
    # OR-tools' solutions are exact, its objective is summed in another order: 1e-7
    np.testing.assert_allclose(ns["loss"].detach().numpy(), value.numpy(), rtol=1e-7)
    mine = (ns["grad"] if "grad" in ns else ns["theta"].grad).numpy()  # I-MLE: the block's S × grad
    assert np.abs(grad.numpy()).max() > 0, "PyEPO's gradient is zero: the comparison would be empty"
    np.testing.assert_allclose(mine, grad.numpy(), rtol=1e-6, atol=1e-12)


def test_pyepo_two_sided_imle_is_symmetric_aimle_over_s():
    torch = _peer("torch", "torch")
    pytest.importorskip("pyepo")
    pytest.importorskip("ortools")
    import pyepo.func as pf
    from pyepo.model import ort

    import diffopt
    from diffopt.imle import TargetDistribution, aimle

    rng = np.random.default_rng(11)
    noise = rng.normal(size=(PYEPO_B, PYEPO_S, PYEPO_D))
    _, fixed_imle, fixed_pyepo = _fixed_noises(torch, noise)
    theta_np = rng.normal(size=(PYEPO_B, PYEPO_D))
    g = torch.as_tensor(rng.normal(size=(PYEPO_B, PYEPO_D)))
    theirs = torch.tensor(theta_np, requires_grad=True)
    pf.implicitMLE(ort.shortestPathModel(grid=(5, 5)), n_samples=PYEPO_S, sigma=1.0, lambd=10,
                   distribution=fixed_pyepo, two_sides=True)(theirs).backward(g)
    layer = aimle(diffopt.dag_shortest_path, TargetDistribution(alpha=1.0, beta=10.0 * PYEPO_S, do_gradient_scaling=True),
                  fixed_imle, nb_samples=PYEPO_S, minimize=True, symmetric_perturbation=True)
    mine = torch.tensor(theta_np, requires_grad=True)
    layer(mine).reshape(PYEPO_B, PYEPO_S, PYEPO_D).mean(1).backward(g)
    assert theirs.grad.abs().max() > 0
    np.testing.assert_allclose(PYEPO_S * mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-6, atol=1e-12)
