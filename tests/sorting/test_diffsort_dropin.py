"""The diffsort drop-in (:mod:`diffopt.sorting.diffsort`).

References: diffsort itself where installed (values, permutation matrices and
gradients in float64, random and edge inputs); everywhere, the closed forms of
a network (``sorted = x @ P``, columns of ``P`` sum to 1, a steep network sorts)
and finite differences, on every backend, compiled where the framework compiles.
"""

import autoray
import numpy as np
import pytest

from diffopt.sorting.diffsort import DISTRIBUTIONS, DiffSortNet, bitonic_network, odd_even_network

NETWORKS = ("bitonic", "odd_even")


def _inputs(n, rng):
    return {
        "random": rng.normal(size=(3, n)),
        "ties": rng.integers(0, 3, size=(3, n)).astype(float),
        "constant": np.full((2, n), 1.5),
        "large": 1e4 * rng.normal(size=(2, n)),
    }


@pytest.mark.parametrize("kind", NETWORKS)
@pytest.mark.parametrize("n", [2, 3, 5, 8, 13])
def test_equals_diffsort(kind, n):
    torch = pytest.importorskip("torch")
    diffsort = pytest.importorskip("diffsort")
    rng = np.random.default_rng(n)
    for dist in DISTRIBUTIONS:
        ref = diffsort.DiffSortNet(kind, n, steepness=3.0, art_lambda=0.3, distribution=dist)
        mine = DiffSortNet(kind, n, steepness=3.0, art_lambda=0.3, distribution=dist)
        for case, x in _inputs(n, rng).items():
            w, big_w = rng.normal(size=x.shape), rng.normal(size=x.shape + (n,))
            grads, outs = [], []
            for net in (ref, mine):
                xt = torch.tensor(x, requires_grad=True)
                values, perm = net(xt)
                loss = (values * torch.tensor(w)).sum() + (perm * torch.tensor(big_w)).sum()
                grads.append(torch.autograd.grad(loss, xt)[0].numpy())
                outs.append((values.detach().numpy(), perm.detach().numpy()))
            scale = 1e-6 * max(1.0, np.abs(x).max())
            np.testing.assert_allclose(outs[1][0], outs[0][0], atol=scale, rtol=0, err_msg=f"{dist} {case}")
            np.testing.assert_allclose(outs[1][1], outs[0][1], atol=1e-6, rtol=0, err_msg=f"{dist} {case}")
            np.testing.assert_allclose(grads[1], grads[0], atol=1e-6 * max(1.0, np.abs(grads[0]).max()),
                                       rtol=0, err_msg=f"{dist} {case}")


@pytest.mark.parametrize("kind", NETWORKS)
def test_network_closed_forms(backend, kind):
    """``x @ P`` is the relaxed sort, ``P``'s columns sum to 1, steep networks sort; every backend, compiled."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 6))
    with backend.float64():
        for dist in ("cauchy", "logistic_phi", "gaussian"):
            net = DiffSortNet(kind, 6, steepness=2.0, distribution=dist)
            values, perm = (backend.to_numpy(a) for a in backend.jit(net)(backend.asarray(x)))
            np.testing.assert_allclose(np.einsum("...i,...ij->...j", x, perm), values, atol=1e-10)
            np.testing.assert_allclose(perm.sum(axis=-2), 1.0, atol=1e-10)
            np.testing.assert_allclose(values.sum(axis=-1), x.sum(axis=-1), atol=1e-10)
            steep = DiffSortNet(kind, 6, steepness=1e7, distribution=dist)(backend.asarray(x))[0]
            np.testing.assert_allclose(backend.to_numpy(steep), np.sort(x, axis=-1), atol=1e-5)


def test_gradient_finite_differences(grad_backend):
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(2, 5)), rng.normal(size=(2, 5, 5))
    net = DiffSortNet("bitonic", 5, steepness=1.5, distribution="logistic_phi")
    with grad_backend.float64():
        wt = grad_backend.asarray(w)

        def f(z):
            values, perm = net(z)
            return autoray.do("sum", perm * wt) + autoray.do("sum", values * values)

        g = grad_backend.to_numpy(grad_backend.grad(f, grad_backend.asarray(x)))

    def fn(z):
        values, perm = net(z)
        return float((perm * w).sum() + (values * values).sum())

    fd = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = 1e-6
        fd[i] = (fn(x + e) - fn(x - e)) / 2e-6
    np.testing.assert_allclose(g, fd, atol=1e-6)


def test_networks_sort_every_permutation():
    """Both networks with exact comparators sort all orderings of n = 1..6 (0/1 principle in small)."""
    import itertools

    for n in range(1, 7):
        for layers in (bitonic_network(n), odd_even_network(n)):
            for p in itertools.permutations(range(n)):
                v = np.array(p)
                for a, b, lo, hi, keep in layers:
                    out = v.copy()
                    out[lo], out[hi] = np.minimum(v[a], v[b]), np.maximum(v[a], v[b])
                    v = out
                assert list(v) == list(range(n)), (n, p)


def test_bad_arguments():
    with pytest.raises(ValueError, match="sorting_network_type"):
        DiffSortNet("bubble", 4)
    with pytest.raises(ValueError, match="size"):
        DiffSortNet("bitonic", 0)
    with pytest.raises(ValueError, match="distribution"):
        DiffSortNet("bitonic", 4, distribution="sigmoid")
    with pytest.raises(ValueError, match="interpolation_type"):
        DiffSortNet("bitonic", 4, interpolation_type="logistic", distribution="gaussian")
    with pytest.raises(TypeError, match="steepness"):
        DiffSortNet("bitonic", 4, steepness="10")
    with pytest.raises(ValueError, match="size=4"):
        DiffSortNet("bitonic", 4)(np.zeros((2, 3)))
    with pytest.raises(TypeError):
        DiffSortNet("bitonic", 4)(np.zeros((2, 4), dtype=int))
    assert DiffSortNet("odd_even", 3, interpolation_type="logistic").distribution == "logistic"
    net = DiffSortNet("bitonic", 2)
    assert net.to("cpu") is net and net.eval() is net
