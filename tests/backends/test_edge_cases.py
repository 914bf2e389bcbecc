"""Edge cases of every public op on every backend: non-finite parameters, NaN rows,
infinities, dtypes, empty batches, host solvers, threads, pickling, seeds, executors.
"""

import autoray as ar
import numpy as np
import pytest

import diffopt
from diffopt import imle as imle_mod
from diffopt.sorting import soft_permutation, soft_rank, soft_sort, soft_topk
from references import INF, NAN, X, top2


# ------------------------------------------------------------ non-finite parameters

_PARAMETER_CASES = [
    ("sigma", lambda x, v: diffopt.perturbed(diffopt.argmax_one_hot, sigma=v)(x, rng=0)),
    ("sigma", lambda x, v: diffopt.perturbed_max(diffopt.argmax_one_hot, sigma=v)(x, rng=0)),
    ("sigma", lambda x, v: diffopt.FenchelYoungLoss(diffopt.argmax_one_hot, sigma=v)(x, x, rng=0)),
    ("sigma", lambda x, v: diffopt.make_perturbed_fun(lambda a: a, sigma=v)(0, x)),
    ("temperature", lambda x, v: soft_sort(x, temperature=v)),
    ("temperature", lambda x, v: soft_rank(x, temperature=v)),
    ("temperature", lambda x, v: soft_topk(x, 2, temperature=v)),
    ("temperature", lambda x, v: soft_permutation(x, temperature=v)),
    ("input_noise_temperature", lambda x, v: imle_mod.imle(top2, input_noise_temperature=v)(x, rng=0)),
    ("target_noise_temperature", lambda x, v: imle_mod.imle(top2, target_noise_temperature=v)(x, rng=0)),
    ("input_noise_temperature", lambda x, v: imle_mod.aimle(top2, input_noise_temperature=v)(x, rng=0)),
    ("target_noise_temperature", lambda x, v: imle_mod.aimle(top2, target_noise_temperature=v)(x, rng=0)),
    ("noise_temperature", lambda x, v: imle_mod.ste(top2, noise_temperature=v)(x, rng=0)),
    ("location", lambda x, v: imle_mod.GumbelNoiseDistribution(location=v).sample(x.shape, x, 0)),
    ("scale", lambda x, v: imle_mod.GumbelNoiseDistribution(scale=v).sample(x.shape, x, 0)),
    ("k", lambda x, v: imle_mod.SumOfGammaNoiseDistribution(k=v).sample(x.shape, x, 0)),
]


@pytest.mark.parametrize("value", [INF, -INF, NAN])
@pytest.mark.parametrize("name, call", _PARAMETER_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(_PARAMETER_CASES)])
def test_non_finite_parameter_is_named(backend, name, call, value):
    x = backend.asarray(X, "float32")
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call(x, value)


# ------------------------------------------------------------------ NaN inputs

_NAN_OPS = {
    "soft_sort": lambda x: soft_sort(x, temperature=0.5),
    "soft_rank": lambda x: soft_rank(x, temperature=0.5),
    "soft_topk": lambda x: soft_topk(x, 2, temperature=0.5),
    "soft_permutation": lambda x: soft_permutation(x, temperature=0.5),
    "perturbed": lambda x: diffopt.perturbed(diffopt.argmax_one_hot, num_samples=8, sigma=0.5)(x, rng=1),
    "perturbed_max": lambda x: diffopt.perturbed_max(diffopt.argmax_one_hot, num_samples=8, sigma=0.5)(x, rng=1),
    "fenchel_young": lambda x: diffopt.FenchelYoungLoss(
        diffopt.argmax_one_hot, num_samples=8, sigma=0.5, reduction="none")(x, x * 0.0, rng=1),
    "imle": lambda x: imle_mod.imle(top2, noise_distribution=imle_mod.GumbelNoiseDistribution())(x, rng=1),
    "aimle": lambda x: imle_mod.aimle(top2, noise_distribution=imle_mod.GumbelNoiseDistribution())(x, rng=1),
    "ste": lambda x: imle_mod.ste(top2)(x, rng=1),
}


@pytest.mark.parametrize("name", list(_NAN_OPS))
def test_nan_makes_its_row_nan_and_leaves_the_others(backend, name):
    op = _NAN_OPS[name]
    x = X.copy()
    x[0, 1] = NAN
    out = backend.to_numpy(op(backend.asarray(x, "float32")))
    clean = backend.to_numpy(op(backend.asarray(x[1:], "float32")))
    assert np.isnan(out[0]).all(), out[0]
    assert not np.isnan(out[1]).any()
    # the same rng draws differ between a batch of 2 and of 1 for the random ops: compare the deterministic ones
    if name.startswith("soft_"):
        np.testing.assert_allclose(out[1:], clean, rtol=1e-5, atol=1e-6)


def test_infinities_are_not_nan(backend):
    x = backend.asarray([[INF, 1.0, -INF, 0.0]], "float32")
    assert np.isfinite(backend.to_numpy(soft_rank(x))).all()
    out = backend.to_numpy(diffopt.perturbed(diffopt.argmax_one_hot, num_samples=4)(x, rng=0))
    np.testing.assert_array_equal(out, [[1.0, 0.0, 0.0, 0.0]])


# ------------------------------------------------------------------ dtypes

_DTYPE_OPS = dict(_NAN_OPS)
_DTYPE_OPS["make_perturbed_fun"] = lambda x: diffopt.make_perturbed_fun(
    diffopt.argmax_one_hot, num_samples=8, sigma=0.5)(1, x)


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("name", list(_DTYPE_OPS))
def test_dtype_in_is_dtype_out(backend, name, dtype):
    backend.require(dtype)
    x = backend.asarray(X, dtype)
    out = _DTYPE_OPS[name](x)
    assert ar.get_dtype_name(out) == dtype
    assert np.isfinite(backend.to_numpy(out)).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["soft_sort", "soft_rank", "soft_topk", "perturbed", "fenchel_young", "imle"])
def test_half_precision_gradient_keeps_dtype(grad_backend, name, dtype):
    grad_backend.require(dtype)
    if grad_backend.name == "autograd" and dtype == "bfloat16":
        pytest.skip("HIPS autograd cannot box ml_dtypes' bfloat16 arrays")
    weights = grad_backend.asarray(np.arange(X.size).reshape(X.shape[0], -1)[:, : X.shape[1]] * 0.1, dtype)

    def loss(x):
        out = _DTYPE_OPS[name](x)
        return ar.do("sum", out * (weights if len(out.shape) == 2 else 1.0))

    g = grad_backend.grad(loss, grad_backend.asarray(X, dtype))
    assert ar.get_dtype_name(g) == dtype
    assert np.isfinite(grad_backend.to_numpy(g)).all()


@pytest.mark.parametrize("name", ["perturbed", "perturbed_max", "fenchel_young", "imle", "aimle", "ste"])
def test_estimators_name_an_instance_without_entries(backend, name):
    with pytest.raises(ValueError, match=r"theta has no entries per instance"):
        _NAN_OPS[name](backend.asarray(np.zeros((2, 0)), "float32"))


def test_estimators_on_an_empty_batch(backend):
    x = backend.asarray(np.zeros((0, 4)), "float32")
    assert tuple(_NAN_OPS["perturbed"](x).shape) == (0, 4)
    assert tuple(_NAN_OPS["imle"](x).shape) == (0, 4)


# ------------------------------------------------------------------ host solver shapes

@diffopt.host_solver(output_shape=lambda shape: shape)
def _declared_same_but_drops_a_column(a):
    return a[:, :-1]


@pytest.mark.parametrize("traced", [False, True])
def test_host_solver_output_shape_mismatch_is_named(backend, traced):
    x = backend.asarray(X, "float32")
    call = backend.jit(_declared_same_but_drops_a_column) if traced else _declared_same_but_drops_a_column
    if backend.name == "torch" and traced:
        pytest.skip("torch.compile runs host solvers eagerly: the untraced case covers it")
    with pytest.raises(Exception, match=r"output_shape") as info:
        out = call(x)
        backend.to_numpy(out)  # TF/JAX may raise when the value is fetched
    assert "_declared_same_but_drops_a_column" in str(info.value)


def test_host_solver_wrong_shape_in_tf_function_with_unknown_batch():
    tf = pytest.importorskip("tensorflow")

    @diffopt.host_solver
    def halve(a):
        return a[:, ::2]

    f = tf.function(halve, input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    with pytest.raises(Exception, match=r"output_shape"):
        f(tf.constant(X, tf.float32)).numpy()
    good = tf.function(diffopt.host_solver(halve.fn, output_shape=lambda s: (s[0], 2)),
                       input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    np.testing.assert_array_equal(good(tf.constant(X, tf.float32)).numpy(), X[:, ::2].astype(np.float32))


# ------------------------------------------------------------------ threads

_THREAD_OPS = {
    "soft_sort": lambda x: soft_sort(x, temperature=0.5),
    "soft_rank": lambda x: soft_rank(x, temperature=0.5),
    "perturbed": lambda x: diffopt.perturbed(diffopt.argmax_one_hot, num_samples=8, sigma=0.5)(x, rng=3),
    "imle": lambda x: imle_mod.imle(top2, noise_distribution=imle_mod.GumbelNoiseDistribution())(x, rng=3),
}


@pytest.mark.parametrize("name", list(_THREAD_OPS))
def test_ops_are_thread_safe(grad_backend, name):
    import sys
    from concurrent.futures import ThreadPoolExecutor

    op = _THREAD_OPS[name]
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(2, 5)) for _ in range(48 if grad_backend.name == "autograd" else 8)]
    weights = grad_backend.asarray(np.arange(10.0).reshape(2, 5), "float32")

    def grad(a):
        x = grad_backend.asarray(a, "float32")
        return grad_backend.to_numpy(grad_backend.grad(lambda v: ar.do("sum", op(v) * weights), x))

    serial = [grad(a) for a in inputs]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(8) as pool:
            threaded = list(pool.map(grad, inputs))
    finally:
        sys.setswitchinterval(interval)
    for s, t in zip(serial, threaded):
        np.testing.assert_array_equal(s, t)


# ------------------------------------------------------------------ pickling

def _sum_leaves(tree):
    return tree["a"] * 2.0


_PICKLED = {
    "perturbed": lambda: diffopt.perturbed(diffopt.argmax_one_hot, num_samples=8, sigma=0.5),
    "perturbed_max": lambda: diffopt.perturbed_max(diffopt.argmax_one_hot, num_samples=8, sigma=0.5),
    "imle": lambda: imle_mod.imle(top2, noise_distribution=imle_mod.SumOfGammaNoiseDistribution(2)),
    "aimle": lambda: imle_mod.aimle(top2),
    "ste": lambda: imle_mod.ste(top2),
}


@pytest.mark.parametrize("name", list(_PICKLED) + ["make_perturbed_fun"])
def test_call_forms_pickle_and_give_the_same_result(backend, name):
    import pickle

    x = backend.asarray(X, "float32")
    if name == "make_perturbed_fun":
        fn = diffopt.make_perturbed_fun(_sum_leaves, num_samples=8, sigma=0.5)
        again = pickle.loads(pickle.dumps(fn))
        a, b = fn(4, {"a": x})["a"] if False else fn(4, {"a": x}), again(4, {"a": x})
    else:
        fn = _PICKLED[name]()
        again = pickle.loads(pickle.dumps(fn))
        a, b = fn(x, rng=4), again(x, rng=4)
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    assert again.__name__ == fn.__name__


# ------------------------------------------------------------------ rng

@pytest.mark.parametrize("seed", [2**63, 2**64 + 5, -1])
def test_seeds_outside_int64_are_one_named_error(backend, seed):
    x = backend.asarray(X, "float32")
    with pytest.raises(ValueError, match=r"rng seed must be an int in \[0, 2\*\*63\)"):
        diffopt.perturbed(diffopt.argmax_one_hot, num_samples=2)(x, rng=seed)


def test_largest_seed_works_everywhere(backend):
    x = backend.asarray(X, "float32")
    a = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=4)(x, rng=2**63 - 1)
    b = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=4)(x, rng=2**63 - 1)
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


class _ForeignGenerator:
    """Stands for a generator of another framework."""


def test_generator_of_another_framework_is_named(backend):
    x = backend.asarray(X, "float32")
    with pytest.raises(TypeError, match=r"test_edge_cases\._ForeignGenerator"):
        diffopt.perturbed(diffopt.argmax_one_hot, num_samples=2)(x, rng=_ForeignGenerator())


# ------------------------------------------------------------------ per-instance solver results

@diffopt.host_solver(vectorized=False)
def _ragged(a):
    return a[: 1 + int(a[0] > 0.5)]


@diffopt.host_solver(vectorized=False)
def _text(a):
    return np.array(["x"] * len(a))


@pytest.mark.parametrize("solver, message", [(_ragged, r"_ragged .*different shapes.*instance \d+ gave \(\d,\)"),
                                             (_text, r"_text returned <U1 data")])
def test_bad_per_instance_results_name_the_solver(backend, solver, message):
    x = backend.asarray(X, "float32")
    with pytest.raises((ValueError, TypeError), match=message):
        diffopt.perturbed(solver, num_samples=2)(x, rng=0)


# ------------------------------------------------------------------ Keras / unknown batch size

_UNKNOWN_BATCH_OPS = {
    "soft_sort": lambda x: soft_sort(x, temperature=0.5),
    "soft_rank": lambda x: soft_rank(x, temperature=0.5),
    "soft_topk": lambda x: soft_topk(x, 2, temperature=0.5),
    "imle": lambda x: imle_mod.imle(top2, input_noise_temperature=0.0)(x, rng=0),
    "imle_gumbel_noise": lambda x: imle_mod.imle(top2, nb_samples=3)(x, rng=0),
    "imle_sum_of_gamma_noise": lambda x: imle_mod.imle(
        top2, noise_distribution=imle_mod.SumOfGammaNoiseDistribution(k=2), nb_samples=2)(x, rng=0),
    "aimle": lambda x: imle_mod.aimle(top2, nb_samples=2, target_distribution=imle_mod.TargetDistribution())(x, rng=0),
    "ste": lambda x: imle_mod.ste(top2)(x, rng=0),
    "perturbed": lambda x: diffopt.perturbed(diffopt.argmax_one_hot, num_samples=20, sigma=0.5)(x, rng=0),
    "perturbed_chunks_recompute": lambda x: diffopt.perturbed(
        top2, num_samples=20, sigma=0.5, chunk_size=7, residual="recompute", control_variate="mean")(x, rng=0),
    "perturbed_chunks_jacobian": lambda x: diffopt.perturbed(
        diffopt.argmax_one_hot, num_samples=20, sigma=0.5, noise="gumbel", chunk_size=7, residual="jacobian",
        control_variate="value")(x, rng=0),
    "perturbed_multiplicative": lambda x: diffopt.perturbed(
        top2, num_samples=20, sigma=0.5, chunk_size=7, multiplicative=True)(x + 3.0, rng=0),
    "perturbed_host_solver": lambda x: diffopt.perturbed(
        diffopt.host_solver(lambda a: (a == a.max(-1, keepdims=True)).astype(a.dtype)), num_samples=20,
        chunk_size=7)(x, rng=0),
    "perturbed_max": lambda x: diffopt.perturbed_max(diffopt.argmax_one_hot, num_samples=20, chunk_size=7)(x, rng=0),
    "fenchel_young": lambda x: diffopt.FenchelYoungLoss(
        diffopt.argmax_one_hot, num_samples=20, sigma=0.5, chunk_size=7, reduction="none")(
        x, ar.do("ones_like", x) * np.array([0.0, 1.0, 0.0, 0.0], np.float32), rng=0),
    "spo_plus_loss": lambda x: diffopt.spo_plus_loss(diffopt.argmax_one_hot, minimize=False, reduction="none")(
        x, x + 1.0, diffopt.argmax_one_hot(x + 1.0)),
    "blackbox": lambda x: diffopt.blackbox(diffopt.argmax_one_hot, minimize=False)(x),
}


@pytest.mark.parametrize("name", list(_UNKNOWN_BATCH_OPS))
def test_tf_function_with_unknown_batch_size(name):
    tf = pytest.importorskip("tensorflow")
    op = _UNKNOWN_BATCH_OPS[name]
    traced = tf.function(op, input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    x = tf.constant(X, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        eager, graph = op(x), traced(x)
        weights = tf.reshape(tf.sin(tf.range(tf.size(eager), dtype=tf.float32) + 1.0), eager.shape)
        le, lg = tf.reduce_sum(eager * weights), tf.reduce_sum(graph * weights)
    np.testing.assert_allclose(graph.numpy(), eager.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(lg, x).numpy(), tape.gradient(le, x).numpy(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ executors

def _singular_second():
    mats = np.stack([np.eye(2) * (i + 1.0) for i in range(6)])
    mats[4] = [[1.0, 2.0], [2.0, 4.0]]  # singular: np.linalg.inv fails on instance 4
    return mats


def _check_executor(executor):
    solver = diffopt.host_solver(np.linalg.inv, vectorized=False, executor=executor)
    # the solver's own exception type (``except np.linalg.LinAlgError`` catches it), the
    # solver and the instance in a note
    with pytest.raises(np.linalg.LinAlgError, match="Singular matrix") as info:
        solver(_singular_second())
    assert "raised by host solver inv on instance 4" in info.value.__notes__
    good = np.stack([np.eye(2) * (i + 1.0) for i in range(6)])
    for _ in range(2):  # the pool stays usable, every instance comes back in order
        np.testing.assert_allclose(solver(good), np.linalg.inv(good))


@pytest.mark.parametrize("kind", ["none", "threads", "processes"])
def test_executor_failure_names_the_instance_and_the_pool_survives(kind):
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    if kind == "none":
        _check_executor(None)
        return
    pool = ThreadPoolExecutor(2) if kind == "threads" else ProcessPoolExecutor(2)
    with pool:
        _check_executor(pool)


@pytest.mark.skipif("numpy" not in __import__("conftest").SELECTED, reason="runs in the numpy env only")
def test_executor_failure_on_a_dask_local_cluster():
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            _check_executor(client.get_executor())
