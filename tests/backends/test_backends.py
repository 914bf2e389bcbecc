"""The backend layer: custom gradients, host solvers, randomness, dtypes, errors.
"""

import subprocess
import sys

import autoray as ar
import numpy as np
import pytest

import diffopt
from diffopt._ops import do
from diffopt.backends import available, backend_name, get_backend
from diffopt.backends._contract import check_shim


X0 = np.array([0.3, -1.2, 2.0, 0.7])
W0 = np.array([1.0, 2.0, -3.0, 0.5])


def sin_pair():
    """y = sin(x)·w with a hand-written backward (no gradient for w)."""

    def fwd(x, w):
        return ar.do("sin", x) * w, (x, w)

    def bwd(res, g):
        x, w = res
        return g * ar.do("cos", x) * w, None

    return fwd, bwd


def two_output_pair():
    """(x², 3x) with a hand-written backward, to check tuple outputs."""

    def fwd(x):
        return (x * x, 3.0 * x), (x,)

    def bwd(res, g):
        (x,) = res
        g_sq, g_lin = g
        return (2.0 * x * g_sq + 3.0 * g_lin,)

    return fwd, bwd


def finite_difference(f, x, eps=1e-6):
    out = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = eps
        out.flat[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return out


def test_import_imports_no_framework():
    code = (
        "import sys, diffopt, diffopt.noise, diffopt.host, diffopt.solvers, diffopt.backends;"
        "bad=[m for m in ('torch','jax','tensorflow','cupy','autograd') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_available_lists_numpy_and_only_known_names():
    names = available()
    assert "numpy" in names
    assert set(names) <= {"numpy", "autograd", "torch", "jax", "tensorflow", "cupy"}


def test_backend_shims_expose_the_same_names(backend):
    # every name of the contract (diffopt.backends._contract; each shim module is also
    # checked directly in test_backends_contract.py, autograd's included)
    shim = get_backend(backend.asarray(X0))
    assert check_shim(shim, shim.NAME) == []
    expected = "numpy" if backend.name == "autograd" else backend.name  # plain arrays; boxes once traced
    assert shim.NAME == expected


def test_mixing_frameworks_is_a_type_error_naming_both(backend):
    if backend.name in ("numpy", "autograd"):
        pytest.skip("needs a second framework")
    x = backend.asarray(X0)
    with pytest.raises(TypeError, match=r"theta is a .* y_true is a"):
        backend_name(x, np.ones(4), argnames=("theta", "y_true"))


def test_custom_vjp_gradient_matches_finite_difference(grad_backend):
    b = grad_backend
    w = b.asarray(W0)

    def loss(x):
        f = get_backend(x).custom_vjp(*sin_pair())
        return ar.do("sum", f(x, w) ** 2)

    got = b.to_numpy(b.grad(loss, b.asarray(X0)))
    want = finite_difference(lambda v: np.sum((np.sin(v) * W0) ** 2), X0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_custom_vjp_tuple_outputs(grad_backend):
    b = grad_backend

    def loss(x):
        sq, lin = get_backend(x).custom_vjp(*two_output_pair())(x)
        return ar.do("sum", sq) + ar.do("sum", lin * lin)

    got = b.to_numpy(b.grad(loss, b.asarray(X0)))
    want = finite_difference(lambda v: np.sum(v**2) + np.sum(9 * v**2), X0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _grad_of_grad(b, f, x):
    """``d/dx sum(df/dx)`` for a scalar ``f``, with the framework's own nested autodiff."""
    if b.name == "torch":
        import torch

        x = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(x), x, create_graph=True)
        return torch.autograd.grad(g.sum(), x)[0]
    if b.name == "jax":
        import jax

        return jax.grad(lambda v: jax.grad(f)(v).sum())(x)
    if b.name == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = f(x)
            s = tf.reduce_sum(inner.gradient(y, x))
        return outer.gradient(s, x)
    import autograd
    import autograd.numpy as anp

    return autograd.grad(lambda v: anp.sum(autograd.grad(f)(v)))(x)


def test_custom_vjp_second_derivative_is_an_error(grad_backend):
    # differentiating a hand-written backward again would miss the residuals' dependence on x
    b = grad_backend
    w = b.asarray(W0)

    def loss(x):
        f = get_backend(x).custom_vjp(*sin_pair())
        return ar.do("sum", f(x, w) ** 2) + ar.do("sum", x**3)  # x**3: a second path to x

    with pytest.raises((NotImplementedError, RuntimeError), match="second-order"):
        _grad_of_grad(b, loss, b.asarray(X0))


def test_custom_vjp_jax_second_order_opt_in():
    jax = pytest.importorskip("jax")
    x, w = jax.numpy.asarray(X0), jax.numpy.asarray(W0)
    f = get_backend(x).custom_vjp(*sin_pair(), second_order=True)
    got = jax.grad(lambda v: jax.grad(lambda u: (f(u, w) ** 2).sum())(v).sum())(x)
    # d2/dx2 (w sin x)^2 = 2 w^2 cos(2x)
    np.testing.assert_allclose(np.asarray(got), 2 * W0**2 * np.cos(2 * X0), rtol=1e-5)


def test_custom_vjp_forward_only_backends_return_the_forward(backend):
    x = backend.asarray(X0)
    y = get_backend(x).custom_vjp(*sin_pair())(x, backend.asarray(W0))
    np.testing.assert_allclose(backend.to_numpy(y), np.sin(X0) * W0, rtol=1e-6)


def test_custom_vjp_under_compile(grad_backend):
    b = grad_backend
    if b.name == "autograd":
        pytest.skip("autograd has no compiler")
    w = b.asarray(W0)

    def loss(x):
        return do("sum", get_backend(x).custom_vjp(*sin_pair())(x, w))  # autoray's torch sum does not compile

    grad_fn = b.jit(lambda x: b.grad(loss, x)) if b.name != "torch" else (lambda x: b.grad(b.jit(loss), x))
    np.testing.assert_allclose(b.to_numpy(grad_fn(b.asarray(X0))), np.cos(X0) * W0, rtol=1e-5)


def test_custom_vjp_torch_func_grad_and_vmap():
    torch = pytest.importorskip("torch")
    f = get_backend(torch.ones(1)).custom_vjp(*sin_pair())
    w = torch.tensor(W0)
    xs = torch.tensor(np.stack([X0, X0 + 1.0]))
    grads = torch.func.vmap(torch.func.grad(lambda x: f(x, w).sum()))(xs)
    np.testing.assert_allclose(grads.numpy(), np.cos(xs.numpy()) * W0, rtol=1e-6)


def test_custom_vjp_jax_vmap_of_grad():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def loss(x, w):
        return jnp.sum(get_backend(x).custom_vjp(*sin_pair())(x, w))

    xs = jnp.asarray(np.stack([X0, X0 + 1.0]), dtype=jnp.float32)
    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(0, None)))(xs, jnp.asarray(W0, dtype=jnp.float32))
    np.testing.assert_allclose(np.asarray(grads), np.cos(np.asarray(xs)) * W0, rtol=1e-5)


# --- host solvers -------------------------------------------------------------------------


def _row_argmax_calls():
    calls = []

    @diffopt.host_solver
    def solver(a):
        calls.append(a.shape)
        assert isinstance(a, np.ndarray)
        return np.eye(a.shape[-1])[np.argmax(a, axis=-1)]

    return solver, calls


THETA = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 1.0]])
ARGMAX = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_host_solver_eager_keeps_framework_and_dtype(backend, dtype):
    backend.require(dtype)
    solver, calls = _row_argmax_calls()
    x = backend.asarray(THETA, dtype)
    y = solver(x)
    assert ar.infer_backend(y) == ar.infer_backend(x)
    assert ar.get_dtype_name(y) == dtype
    np.testing.assert_array_equal(backend.to_numpy(y), ARGMAX)
    assert calls == [(2, 3)]


def test_host_solver_under_compile(backend):
    if backend.name in ("numpy", "autograd", "cupy"):
        pytest.skip("no compiler")
    solver, calls = _row_argmax_calls()
    f = backend.jit(lambda x: solver(x) * 2.0)
    y = f(backend.asarray(THETA, "float32"))
    np.testing.assert_array_equal(backend.to_numpy(y), 2 * ARGMAX)
    assert tuple(y.shape) == (2, 3)


def test_host_solver_under_jax_vmap_runs_once_vectorised():
    jax = pytest.importorskip("jax")
    solver, calls = _row_argmax_calls()
    xs = jax.numpy.asarray(np.stack([THETA, -THETA]), dtype=jax.numpy.float32)
    out = jax.jit(jax.vmap(solver))(xs)
    np.testing.assert_array_equal(np.asarray(out[0]), ARGMAX)
    np.testing.assert_array_equal(np.asarray(out[1]), np.eye(3)[np.argmax(-THETA, axis=-1)])
    assert (4, 3) in calls  # the vmapped axis was merged into the instance axis


def test_host_solver_tf_function_keeps_static_shape():
    tf = pytest.importorskip("tensorflow")
    solver, _ = _row_argmax_calls()
    seen = []

    @tf.function
    def f(x):
        y = solver(x)
        seen.append(y.shape.as_list())
        return y

    f(tf.constant(THETA, dtype=tf.float32))
    assert seen == [[2, 3]]


def _one_instance_argmax(row, scale=1.0):
    return np.eye(row.shape[-1])[np.argmax(scale * row)]


@pytest.mark.parametrize("kind", ["none", "threads", "processes"])
def test_host_solver_per_instance_with_executor(kind):
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    pools = {"none": None, "threads": ThreadPoolExecutor(2), "processes": ProcessPoolExecutor(2)}
    pool = pools[kind]
    try:
        solver = diffopt.host_solver(_one_instance_argmax, vectorized=False, executor=pool)
        np.testing.assert_array_equal(solver(THETA), ARGMAX)
        np.testing.assert_array_equal(solver(THETA, scale=-1.0), np.eye(3)[np.argmin(THETA, axis=-1)])
    finally:
        if pool is not None:
            pool.shutdown()


def test_per_instance_solver_gets_the_instance_first_then_extra_arguments():
    seen = []

    def first_row_then_extras(row, shift, *, scale):
        seen.append((row.shape, shift, scale))
        return row * scale + shift

    solver = diffopt.host_solver(first_row_then_extras, vectorized=False)
    out = solver(np.array([[1.0, 2.0], [3.0, 4.0]]), 10.0, scale=2.0)
    np.testing.assert_array_equal(out, [[12.0, 14.0], [16.0, 18.0]])
    assert seen == [((2,), 10.0, 2.0)] * 2


class _LosesLastBlock:
    """An executor whose ``map`` silently drops the last block's result."""

    _max_workers = 2

    def map(self, fn, *iterables):
        return [fn(*args) for args in zip(*iterables)][:-1]


class _LosesWorker:
    """An executor whose third block's result raises, as dask's ``KilledWorker`` does."""

    _max_workers = 2

    def map(self, fn, *iterables):
        for i, args in enumerate(zip(*iterables)):
            if i == 2:
                raise ConnectionError("worker lost")
            yield fn(*args)


def test_host_solver_never_returns_a_short_batch_from_an_executor():
    theta = np.arange(12.0).reshape(6, 2)
    short = diffopt.host_solver(_one_instance_argmax, vectorized=False, executor=_LosesLastBlock())
    with pytest.raises(RuntimeError, match=r"_one_instance_argmax got 5 results for 6 instances"):
        short(theta)
    lost = diffopt.host_solver(_one_instance_argmax, vectorized=False, executor=_LosesWorker())
    with pytest.raises(RuntimeError, match=r"_one_instance_argmax: the executor returned no result for "
                                           r"instances 4\.\.4 \(ConnectionError: worker lost\)"):
        lost(theta)

def test_host_solver_on_a_dask_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            solver = diffopt.host_solver(_one_instance_argmax, vectorized=False, executor=client.get_executor())
            np.testing.assert_array_equal(solver(THETA), ARGMAX)


def test_host_solver_per_instance_works_for_every_backend(backend):
    solver = diffopt.host_solver(_one_instance_argmax, vectorized=False)
    y = solver(backend.asarray(THETA, "float32"))
    np.testing.assert_array_equal(backend.to_numpy(y), ARGMAX)


def test_host_solver_torch_float64_float32_and_device():
    torch = pytest.importorskip("torch")
    solver, _ = _row_argmax_calls()
    for dtype in (torch.float32, torch.float64):
        y = solver(torch.tensor(THETA, dtype=dtype))
        assert y.dtype == dtype and y.device.type == "cpu"
        np.testing.assert_array_equal(y.numpy(), ARGMAX)


def test_host_solver_rejects_non_numeric_results():
    bad = diffopt.host_solver(lambda a: np.array(["x"] * len(a)))
    with pytest.raises(TypeError, match="numeric"):
        bad(THETA)


def test_host_solver_rejects_bad_arguments():
    with pytest.raises(TypeError, match="fn must be callable"):
        diffopt.host_solver(3)
    with pytest.raises(TypeError, match="executor"):
        diffopt.host_solver(_one_instance_argmax, vectorized=False, executor=object())


# --- randomness ----------------------------------------------------------------------------


@pytest.mark.parametrize("noise", [diffopt.Normal(), diffopt.Gumbel()])
def test_same_seed_same_samples_other_seed_other_samples(backend, noise):
    like = backend.asarray(np.zeros(3), "float32")
    a = backend.to_numpy(noise.sample((64,), like, rng=7))
    b = backend.to_numpy(noise.sample((64,), like, rng=7))
    c = backend.to_numpy(noise.sample((64,), like, rng=8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_rng_key_replays_the_stream_and_fold_is_independent(backend):
    like = backend.asarray(np.zeros(3), "float32")
    r = diffopt.make_rng(11, like)
    first = backend.to_numpy(r.normal((5,)))
    second = backend.to_numpy(r.normal((5,)))
    replay = diffopt.make_rng(r.key, like)
    np.testing.assert_array_equal(backend.to_numpy(replay.normal((5,))), first)
    np.testing.assert_array_equal(backend.to_numpy(replay.normal((5,))), second)
    assert not np.allclose(first, second)
    f0 = backend.to_numpy(r.fold(0).normal((5,)))
    f1 = backend.to_numpy(r.fold(1).normal((5,)))
    np.testing.assert_array_equal(f0, backend.to_numpy(diffopt.make_rng(r.key, like).fold(0).normal((5,))))
    assert not np.allclose(f0, f1)


def test_native_generators_are_accepted():
    torch = pytest.importorskip("torch")
    like = torch.zeros(2)
    a = diffopt.Normal().sample((4,), like, rng=torch.Generator().manual_seed(3))
    b = diffopt.Normal().sample((4,), like, rng=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    g = np.random.default_rng(5)
    c = diffopt.Normal().sample((4,), np.zeros(2), rng=g)
    d = diffopt.Normal().sample((4,), np.zeros(2), rng=g)
    assert not np.allclose(c, d)


def test_jax_key_and_global_generators():
    jax = pytest.importorskip("jax")
    like = jax.numpy.zeros(2)
    a = diffopt.Normal().sample((4,), like, rng=jax.random.key(0))
    b = diffopt.Normal().sample((4,), like, rng=jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.random.seed(0)
    c = diffopt.Normal().sample((4,), like)
    np.random.seed(0)
    d = diffopt.Normal().sample((4,), like)
    np.testing.assert_array_equal(np.asarray(c), np.asarray(d))


def test_tf_generator_and_function():
    tf = pytest.importorskip("tensorflow")
    like = tf.zeros(2)
    a = diffopt.Gumbel().sample((4,), like, rng=tf.random.Generator.from_seed(1))
    b = diffopt.Gumbel().sample((4,), like, rng=tf.random.Generator.from_seed(1))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    f = tf.function(lambda x: diffopt.Normal().sample((4,), x))
    assert not np.allclose(f(like).numpy(), f(like).numpy())  # fresh noise per call, not frozen


def test_missing_jax_key_under_jit_is_a_clear_error():
    jax = pytest.importorskip("jax")
    with pytest.raises(ValueError, match=r"rng=jax.random.key"):
        jax.jit(lambda x: diffopt.Normal().sample((2,), x))(jax.numpy.ones(2))
    out = jax.jit(lambda x, k: diffopt.Normal().sample((2,), x, rng=k))(jax.numpy.ones(2), jax.random.key(1))
    assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), ("seed", TypeError), (1.5, TypeError)])
def test_bad_rng_is_rejected(backend, bad, exc):
    with pytest.raises(exc, match="rng"):
        diffopt.make_rng(bad, backend.asarray(np.zeros(2), "float32"))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_samples_keep_the_reference_dtype(backend, dtype):
    backend.require(dtype)
    like = backend.asarray(np.zeros(2), dtype)
    for noise in (diffopt.Normal(), diffopt.Gumbel()):
        z = noise.sample((1000,), like, rng=0)
        assert ar.get_dtype_name(z) == dtype
        assert np.all(np.isfinite(backend.to_numpy(z)))
    g = diffopt.make_rng(0, like).gamma((10,), 0.2)
    assert ar.get_dtype_name(g) == dtype and np.all(backend.to_numpy(g) >= 0)
