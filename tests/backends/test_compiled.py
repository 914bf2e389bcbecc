"""Compiled equals eager: jax.jit, jax.vmap, tf.function, torch.compile, torch.func.vmap.

For the same rng, outputs and gradients of the compiled or vectorised call
equal the eager ones to float32 rounding (not merely "sum to one" or "finite").
Cases, one or more per family: ``perturbed`` (several chunks and a remainder,
so the chunk loop is compiled), ``perturbed_max`` and ``fenchel_young`` (the
envelope-theorem backward), ``imle``/``aimle``/``ste`` (noise and a second
solver call in the backward), ``soft_sort``, ``soft_rank``, ``soft_topk`` and
``soft_permutation`` (hand-written and autodiff backwards). torch.compile uses
the ``aot_eager`` backend (inductor's C++ compile is slow on two cores).
"""

import numpy as np
import pytest

import diffopt
from diffopt._ops import do  # autoray's own torch translations do not compile
from diffopt.imle import GumbelNoiseDistribution, TargetDistribution, aimle, imle, ste
from diffopt.sorting import soft_permutation, soft_rank, soft_sort, soft_topk

TOL = 2e-5
THETA = np.array([[0.3, -0.2, 0.9, 0.1, -0.5], [-0.1, 0.2, 0.15, -0.4, 0.05]], dtype=np.float32)
W = np.random.default_rng(0).normal(size=THETA.shape).astype(np.float32)

_PERTURBED = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=50, sigma=0.4, noise="gumbel",
                               control_variate="mean", chunk_size=20)
_IMLE = imle(lambda x: diffopt.top_k_mask(x, 2), TargetDistribution(beta=3.0), GumbelNoiseDistribution(),
             nb_samples=2)
_AIMLE = aimle(lambda x: diffopt.top_k_mask(x, 2), TargetDistribution(beta=3.0), GumbelNoiseDistribution(),
               nb_samples=2, symmetric_perturbation=True)
_STE = ste(diffopt.argmax_one_hot, GumbelNoiseDistribution(), noise_temperature=0.5, nb_samples=2)
_PMAX = diffopt.perturbed_max(diffopt.argmax_one_hot, num_samples=30, sigma=0.4, noise="gumbel", chunk_size=20)
_FY = diffopt.FenchelYoungLoss(diffopt.argmax_one_hot, num_samples=30, sigma=0.4, noise="normal", chunk_size=20,
                               reduction="none")
Y = np.eye(5, dtype=np.float32)[[2, 0]]
CASES = ["perturbed", "perturbed_max", "fenchel_young", "imle", "aimle", "ste",
         "soft_sort", "soft_rank", "soft_topk", "soft_permutation"]


def _sample_mean(z, t):
    """``[B·S, d]`` estimator output -> ``[B, d]`` mean over the S samples."""
    return do("mean", do("reshape", z, (int(t.shape[0]), -1, int(t.shape[-1]))), axis=1)


def _cases(y):
    """name -> f(theta, key): ``[2, 5]`` in, ``[2, 5]`` or ``[2]`` out; ``y``: the labels ``Y`` of theta's framework."""
    return {
        "perturbed": lambda t, k: _PERTURBED(t, rng=k),
        "perturbed_max": lambda t, k: _PMAX(t, rng=k),
        "fenchel_young": lambda t, k: _FY(t, y, rng=k),
        "imle": lambda t, k: _sample_mean(_IMLE(t, rng=k), t),
        "aimle": lambda t, k: _sample_mean(_AIMLE(t, rng=k), t),
        "ste": lambda t, k: _sample_mean(_STE(t, rng=k), t),
        "soft_sort": lambda t, k: soft_sort(t, temperature=0.3),
        "soft_rank": lambda t, k: soft_rank(t, temperature=0.3, relaxation="cauchy"),
        "soft_topk": lambda t, k: soft_topk(t, 2, temperature=0.3, relaxation="logistic"),
        "soft_permutation": lambda t, k: soft_permutation(t, temperature=0.3)[:, 1],
    }


def _weighted_sum(y, w):
    return do("sum", y * (w if len(y.shape) == 2 else w[:, 0]))


def _key(backend, seed=3):
    if backend.name == "jax":
        import jax

        return jax.random.key(seed)
    return seed


@pytest.mark.parametrize("case", CASES)
def test_compiled_equals_eager(grad_backend, case):
    backend = grad_backend
    if backend.name == "autograd":
        pytest.skip("HIPS autograd has no compiler")
    if backend.name == "torch" and case.startswith("soft_"):
        pytest.skip("torch: tests/sorting/test_compiled_sorting.py (the same ops and relaxations, "
                    "fullgraph, also the temperature's gradient)")
    f = _cases(backend.asarray(Y))[case]
    theta, w, key = backend.asarray(THETA), backend.asarray(W), _key(backend)

    def loss(t, k):
        return _weighted_sum(f(t, k), w)

    def grad_of(t, k):
        return backend.grad(lambda u: loss(u, k), t)

    eager_y, eager_g = backend.to_numpy(f(theta, key)), backend.to_numpy(grad_of(theta, key))
    if backend.name == "torch":
        comp = backend.jit(f)
        comp_y = backend.to_numpy(comp(theta, key))
        comp_g = backend.to_numpy(backend.grad(lambda u: _weighted_sum(comp(u, key), w), theta))
    else:
        comp_y = backend.to_numpy(backend.jit(f)(theta, key))
        comp_g = backend.to_numpy(backend.jit(grad_of)(theta, key))
    assert np.abs(eager_g).max() > 1e-3  # a gradient that could differ
    np.testing.assert_allclose(comp_y, eager_y, rtol=0, atol=TOL)
    np.testing.assert_allclose(comp_g, eager_g, rtol=0, atol=TOL)


# ------------------------------------------------------------------------ vmap

_ROW_PERTURBED = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=50, sigma=0.4, noise="gumbel",
                                   batched=False, chunk_size=20)
_ROW_PMAX = diffopt.perturbed_max(diffopt.argmax_one_hot, num_samples=30, sigma=0.4, noise="gumbel", batched=False)
_ROW_FY = diffopt.FenchelYoungLoss(diffopt.argmax_one_hot, num_samples=30, sigma=0.4, batched=False)


def _row_cases(y):
    """Unbatched functions of one row ``t [5]`` (same rng for every row): ``[5]`` or ``[]`` out."""
    return {
        "perturbed": lambda t, k: _ROW_PERTURBED(t, rng=k),
        "perturbed_max": lambda t, k: _ROW_PMAX(t, rng=k),
        "fenchel_young": lambda t, k: _ROW_FY(t, y[0], rng=k),
        "imle": lambda t, k: do("mean", _IMLE(t[None], rng=k), axis=0),
        "aimle": lambda t, k: do("mean", _AIMLE(t[None], rng=k), axis=0),
        "ste": lambda t, k: do("mean", _STE(t[None], rng=k), axis=0),
        "soft_sort": lambda t, k: soft_sort(t, temperature=0.3),
        "soft_rank": lambda t, k: soft_rank(t, temperature=0.3, relaxation="cauchy"),
        "soft_topk": lambda t, k: soft_topk(t, 2, temperature=0.3, relaxation="logistic"),
        "soft_permutation": lambda t, k: soft_permutation(t, temperature=0.3)[1],
    }


def _row_weighted_sum(y, w):
    return do("sum", y * (w if len(y.shape) == 1 else w[0]))


@pytest.mark.parametrize("case", CASES)
def test_jax_vmap_equals_row_by_row(case):
    jax = pytest.importorskip("jax")
    from conftest import SELECTED

    if "jax" not in SELECTED:
        pytest.skip("jax is not among DIFFOPT_TEST_BACKENDS")
    jnp = jax.numpy
    f = _row_cases(jnp.asarray(Y))[case]
    key = jax.random.key(5)
    theta, w = jnp.asarray(THETA), jnp.asarray(W)

    def loss(t, wi):
        return _row_weighted_sum(f(t, key), wi)

    rows_y = np.stack([np.asarray(f(t, key)) for t in theta])
    rows_g = np.stack([np.asarray(jax.grad(loss)(t, wi)) for t, wi in zip(theta, w)])
    np.testing.assert_allclose(np.asarray(jax.vmap(lambda t: f(t, key))(theta)), rows_y, rtol=0, atol=TOL)
    np.testing.assert_allclose(np.asarray(jax.vmap(jax.grad(loss))(theta, w)), rows_g, rtol=0, atol=TOL)
    assert np.abs(rows_g).max() > 1e-3


@pytest.mark.parametrize("case", CASES)
def test_torch_func_vmap_equals_row_by_row(case):
    """randomness="same": the seeded draws are the same in every slice, as in the row-by-row calls."""
    torch = pytest.importorskip("torch")
    from conftest import SELECTED

    if "torch" not in SELECTED:
        pytest.skip("torch is not among DIFFOPT_TEST_BACKENDS")
    f = _row_cases(torch.tensor(Y))[case]
    theta, w = torch.tensor(THETA), torch.tensor(W)

    def loss(t, wi):
        return _row_weighted_sum(f(t, 0), wi)

    rows_y = torch.stack([f(t, 0) for t in theta])
    rows_g = torch.stack([torch.func.grad(loss)(t, wi) for t, wi in zip(theta, w)])
    vmapped = torch.func.vmap(lambda t: f(t, 0), randomness="same")(theta)
    np.testing.assert_allclose(vmapped.numpy(), rows_y.numpy(), rtol=0, atol=TOL)
    grads = torch.func.vmap(torch.func.grad(loss), randomness="same")(theta, w)
    np.testing.assert_allclose(grads.numpy(), rows_g.numpy(), rtol=0, atol=TOL)
    assert rows_g.abs().max() > 1e-3


def test_jax_soft_sort_compiles_once_for_any_temperature():
    """A sweep of temperatures costs one compilation (the temperature is an input, not a constant)."""
    jax = pytest.importorskip("jax")
    from conftest import SELECTED

    if "jax" not in SELECTED:
        pytest.skip("jax is not among DIFFOPT_TEST_BACKENDS")
    from diffopt.backends import get_backend
    from diffopt.sorting._modern import _compiled, _soft_sort_rows

    x = jax.numpy.asarray(np.random.default_rng(1).normal(size=(2, 11)).astype(np.float32))
    shim = get_backend(x)
    # the whole op, jitted once per configuration (axis 1, ascending, cauchy, a number temperature)
    compiled = _compiled(_soft_sort_rows, shim.NAME, shim, 1, False, "cauchy", False)
    before = compiled._cache_size()
    outs = [np.asarray(soft_sort(x, temperature=t, relaxation="cauchy")) for t in (0.3, 0.31, 0.5, 2.0)]
    assert compiled._cache_size() == max(before, 1)  # at most one compilation for four temperatures
    assert not np.allclose(outs[0], outs[-1])  # the temperature does reach the network


# --------------------------------------------------------- shapes known only at trace time


_FY = diffopt.FenchelYoungLoss(diffopt.argmax_one_hot, num_samples=20, sigma=0.5, chunk_size=7)


def test_jax_abstract_shapes():
    """``jax.eval_shape`` and ``jit(...).lower`` on ``ShapeDtypeStruct``s (no values at all)."""
    jax = pytest.importorskip("jax")
    from conftest import SELECTED

    if "jax" not in SELECTED:
        pytest.skip("jax is not among DIFFOPT_TEST_BACKENDS")
    jnp, key = jax.numpy, jax.random.key(0)
    spec = jax.ShapeDtypeStruct((3, 5), jnp.float32)
    out = jax.eval_shape(lambda t: _PERTURBED(t, rng=key), spec)
    assert (out.shape, out.dtype) == ((3, 5), jnp.float32)
    grad = jax.eval_shape(jax.grad(lambda t: _FY(t, jax.nn.one_hot(jnp.argmax(t, -1), 5), rng=key)), spec)
    assert (grad.shape, grad.dtype) == ((3, 5), jnp.float32)
    lowered = jax.jit(lambda t: _PERTURBED(t, rng=key)).lower(spec)
    assert lowered.out_info.shape == (3, 5)
    theta = jnp.asarray(np.linspace(-1.0, 1.0, 15).reshape(3, 5), jnp.float32)  # the lowered program's values
    np.testing.assert_allclose(np.asarray(lowered.compile()(theta)), np.asarray(_PERTURBED(theta, rng=key)), atol=TOL)


@pytest.mark.parametrize("estimator", ["perturbed", "perturbed-recompute", "fenchel_young"])
def test_jax_chunk_loop_is_one_traced_body(estimator):
    """Under ``jax.jit`` the middle chunks run as one traced loop body (forward, and the replay in the
    backward): the jaxpr of value and gradient does not grow with ``num_samples`` (TensorFlow's graph:
    ``test_perturbations.py::test_tf_graph_size_does_not_grow_with_the_number_of_chunks``)."""
    jax = pytest.importorskip("jax")
    from conftest import SELECTED

    if "jax" not in SELECTED:
        pytest.skip("jax is not among DIFFOPT_TEST_BACKENDS")
    theta, key, y = jax.numpy.asarray(THETA), jax.random.key(3), jax.numpy.asarray(Y)
    sizes = []
    for n in (3 * 20 + 7, 9 * 20 + 7):  # 3 and 9 chunks of 20, and a remainder
        kw = dict(num_samples=n, sigma=0.4, chunk_size=20)
        if estimator == "fenchel_young":
            loss = diffopt.FenchelYoungLoss(diffopt.argmax_one_hot, **kw)
            f = lambda t: loss(t, y, rng=key)  # noqa: E731
        else:
            residual = "recompute" if estimator.endswith("recompute") else "auto"
            pert = diffopt.perturbed(diffopt.argmax_one_hot, residual=residual, **kw)
            f = lambda t: (pert(t, rng=key) * W).sum()  # noqa: E731
        text = str(jax.make_jaxpr(jax.value_and_grad(f))(theta))
        assert "scan[" in text or "while[" in text  # lax.fori_loop: a scan for static bounds
        sizes.append(len(text.splitlines()))
    assert sizes[0] == sizes[1], sizes


def test_torch_compile_dynamic_batch_does_not_recompile():
    """``torch.compile(dynamic=True)`` of a Fenchel-Young loss (the perturbed engine, chunked):
    batch sizes 3, 5, 7 give eager's numbers, and no new graph is compiled for the third
    (the first two may specialise; perturbed alone behaves the same, measured, not run: CI time)."""
    torch = pytest.importorskip("torch")
    from conftest import SELECTED

    if "torch" not in SELECTED:
        pytest.skip("torch is not among DIFFOPT_TEST_BACKENDS")
    import torch._dynamo

    def f(t):
        return _FY(t, torch.nn.functional.one_hot(t.argmax(-1), 5).to(t.dtype), rng=0)

    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(f, dynamic=True, backend=counting)
    seen, rng = [], np.random.default_rng(1)
    for batch in (3, 5, 7):
        x = torch.tensor(rng.normal(size=(batch, 5)), dtype=torch.float32, requires_grad=True)
        y = compiled(x)
        (g,) = torch.autograd.grad((y * torch.arange(1.0, y.numel() + 1).reshape(y.shape)).sum(), x)
        x_eager = x.detach().requires_grad_()
        y_eager = f(x_eager)
        (g_eager,) = torch.autograd.grad((y_eager * torch.arange(1.0, y.numel() + 1).reshape(y.shape)).sum(), x_eager)
        np.testing.assert_allclose(y.detach().numpy(), y_eager.detach().numpy(), rtol=TOL, atol=TOL)
        np.testing.assert_allclose(g.numpy(), g_eager.numpy(), rtol=TOL, atol=TOL)
        seen.append(len(graphs))
    torch._dynamo.reset()
    assert seen[1] == seen[2], seen


def test_torch_compile_where_does_not_break_the_graph():
    """The core's ``where`` reads its backend from one data operand (autoray's
    ``infer_backend_multi`` broke torch.compile's graph at every call): the core's
    where-based helpers compile with ``fullgraph=True``, and soft_sort's graph breaks
    (``torch._dynamo.explain``) come from none of them."""
    torch = pytest.importorskip("torch")
    from torch import _dynamo

    from diffopt._ops import logsumexp, sigmoid, where_fill

    def helpers(v):
        return sigmoid(v) + logsumexp(v)[:, None] + where_fill(v > 0.5, 0.0, v)

    x = torch.as_tensor(THETA)
    eager = helpers(x)  # autoray imports its torch functions on first use (a graph break of its own)
    _dynamo.reset()
    try:
        compiled = torch.compile(helpers, backend="eager", fullgraph=True)(x)
        np.testing.assert_allclose(compiled.numpy(), eager.numpy(), rtol=1e-6)
        explained = _dynamo.explain(lambda v: soft_sort(v, temperature=0.3))(x)
    finally:
        _dynamo.reset()
    frames = [f"{fr.filename}:{fr.name}" for b in explained.break_reasons for fr in (b.user_stack or ())]
    assert not [f for f in frames if "infer_backend_multi" in f], frames
