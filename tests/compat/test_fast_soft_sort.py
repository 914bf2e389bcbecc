"""``fast-soft-sort`` (google-research), on ``diffopt.sorting.fast_soft_sort``'s drop-in.

The cases of its ``tests/numpy_ops_test.py``, ``jax_ops_test.py``, ``pytorch_ops_test.py``
and ``tf_ops_test.py``, with ``fast_soft_sort`` changed to ``diffopt.sorting.fast_soft_sort``.
Other changes: ``absl.testing.parameterized`` became ``pytest.mark.parametrize`` (absl is
not a dependency); JAX's x64 flag is scoped (``jax.enable_x64``, not a global
``config.update``); ``tf.test.TestCase.assertAllClose`` became ``np.testing.assert_allclose``
with the same tolerance; ``isotonic_test.py`` (sklearn) is replaced by the min-max formula
check in ``tests/test_sorting_projection.py``. Added: the KL cases the original skipped as
unstable (``pytorch_ops``' and ``jax_ops``' KL, ``tf_ops``' KL sort at strength 10) pass here.
"""

import functools
import itertools

import numpy as np
import pytest

from diffopt.sorting.fast_soft_sort import numpy_ops


def _num_jacobian(theta, f, eps=1e-9):
    n_classes = len(theta)
    ret = np.zeros((n_classes, n_classes))
    for i in range(n_classes):
        theta_ = theta.copy()
        theta_[i] += eps
        val = f(theta_)
        theta_[i] -= 2 * eps
        val2 = f(theta_)
        ret[i] = (val - val2) / (2 * eps)
    return ret.T


GAMMAS = (0.1, 1.0, 10.0)
DIRECTIONS = ("ASCENDING", "DESCENDING")
REGULARIZERS = ("l2", "kl")
CLASSES = (numpy_ops.Isotonic, numpy_ops.Projection)


def _only(backend, name):
    if backend.name != name:
        pytest.skip(f"a {name} case")
    return backend


# ---------------------------------------------------------------- numpy_ops_test.py


@pytest.mark.parametrize("cls, regularization", itertools.product(CLASSES, REGULARIZERS))
def test_jvp_and_vjp_against_numerical_jacobian(cls, regularization):
    rng = np.random.RandomState(0)
    theta = rng.randn(5)
    w = np.arange(5)[::-1]
    v = rng.randn(5)
    f = lambda x: cls(x, w, regularization=regularization).compute()
    J = _num_jacobian(theta, f)
    obj = cls(theta, w, regularization=regularization)
    obj.compute()
    np.testing.assert_array_almost_equal(J.dot(v), obj.jvp(v))
    np.testing.assert_array_almost_equal(v.dot(J), obj.vjp(v))


@pytest.mark.parametrize("direction, regularization", itertools.product(DIRECTIONS, REGULARIZERS))
def test_soft_rank_converges_to_hard(direction, regularization):
    rng = np.random.RandomState(0)
    theta = rng.randn(5)
    soft_rank = numpy_ops.SoftRank(theta, regularization_strength=1e-3, direction=direction,
                                   regularization=regularization)
    np.testing.assert_array_almost_equal(numpy_ops.rank(theta, direction=direction), soft_rank.compute())


@pytest.mark.parametrize("regularization_strength, direction, regularization",
                         itertools.product(GAMMAS, DIRECTIONS, REGULARIZERS))
@pytest.mark.parametrize("cls", [numpy_ops.SoftRank, numpy_ops.SoftSort])
def test_soft_jvp_and_vjp_against_numerical_jacobian(cls, regularization_strength, direction, regularization):
    rng = np.random.RandomState(0)
    theta = rng.randn(5)
    v = rng.randn(5)
    f = lambda x: cls(x, regularization_strength=regularization_strength, direction=direction,
                      regularization=regularization).compute()
    J = _num_jacobian(theta, f)
    obj = cls(theta, regularization_strength=regularization_strength, direction=direction,
              regularization=regularization)
    obj.compute()
    np.testing.assert_array_almost_equal(J.dot(v), obj.jvp(v), 1e-6)
    np.testing.assert_array_almost_equal(v.dot(J), obj.vjp(v), 1e-6)
    np.testing.assert_array_almost_equal(J, obj.jacobian(), 1e-6)


@pytest.mark.parametrize("regularization_strength, direction, regularization",
                         itertools.product(GAMMAS, DIRECTIONS, REGULARIZERS))
@pytest.mark.parametrize("cls", [numpy_ops.SoftRank, numpy_ops.SoftSort])
def test_soft_works_with_lists(cls, regularization_strength, direction, regularization):
    rng = np.random.RandomState(0)
    theta = rng.randn(5)
    kwargs = dict(regularization_strength=regularization_strength, direction=direction, regularization=regularization)
    np.testing.assert_array_almost_equal(cls(theta, **kwargs).compute(), cls(list(theta), **kwargs).compute())


@pytest.mark.parametrize("direction, regularization", itertools.product(DIRECTIONS, REGULARIZERS))
def test_soft_sort_converges_to_hard(direction, regularization):
    rng = np.random.RandomState(0)
    theta = rng.randn(5)
    soft_sort = numpy_ops.SoftSort(theta, regularization_strength=1e-3, direction=direction,
                                   regularization=regularization)
    np.testing.assert_array_almost_equal(numpy_ops.Sort(theta, direction=direction).compute(), soft_sort.compute())


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_sort_jvp(direction):
    rng = np.random.RandomState(0)
    theta = rng.randn(5)
    v = rng.randn(5)
    J = _num_jacobian(theta, lambda x: numpy_ops.Sort(x, direction=direction).compute())
    sort = numpy_ops.Sort(theta, direction=direction)
    sort.compute()
    np.testing.assert_array_almost_equal(J.dot(v), sort.jvp(v))
    np.testing.assert_array_almost_equal(v.dot(J), sort.vjp(v))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_sort_works_with_lists(direction):
    theta = np.random.RandomState(0).randn(5)
    np.testing.assert_array_almost_equal(numpy_ops.Sort(theta, direction=direction).compute(),
                                         numpy_ops.Sort(list(theta), direction=direction).compute())


def test_functions_equal_classes():
    """Added: the module functions (the O(n) path) give the classes' values."""
    theta = np.random.RandomState(1).randn(7)
    for d, r, g in itertools.product(DIRECTIONS, REGULARIZERS, GAMMAS):
        kw = dict(direction=d, regularization_strength=g, regularization=r)
        np.testing.assert_allclose(numpy_ops.soft_rank(theta, **kw), numpy_ops.SoftRank(theta, **kw).compute(), rtol=1e-12)
        np.testing.assert_allclose(numpy_ops.soft_sort(theta, **kw), numpy_ops.SoftSort(theta, **kw).compute(), rtol=1e-12)


# ---------------------------------------------------------------- jax_ops_test.py


@pytest.mark.parametrize("regularization_strength, direction, regularization",
                         itertools.product((0.1, 1, 10.0), DIRECTIONS, REGULARIZERS))
@pytest.mark.parametrize("op", ["soft_rank", "soft_sort"])
def test_jax_ops(backend, op, regularization_strength, direction, regularization):
    _only(backend, "jax")
    import jax
    import jax.numpy as jnp

    from diffopt.sorting.fast_soft_sort import jax_ops

    func = getattr(jax_ops, op)

    def loss_func(values):
        soft_values = func(values, regularization_strength=regularization_strength, direction=direction,
                           regularization=regularization)
        return jnp.sum(soft_values ** 2)

    with jax.enable_x64(True):
        rng = np.random.RandomState(0)
        values = jnp.array(rng.randn(5, 10))
        mat = jnp.array(rng.randn(5, 10))
        unitmat = mat / np.sqrt(np.vdot(mat, mat))
        eps = 1e-5
        numerical = (loss_func(values + 0.5 * eps * unitmat) - loss_func(values - 0.5 * eps * unitmat)) / eps
        autodiff = jnp.vdot(jax.grad(loss_func)(values), unitmat)
        np.testing.assert_almost_equal(numerical, autodiff)


# ---------------------------------------------------------------- pytorch_ops_test.py


@pytest.mark.parametrize("regularization_strength, direction, regularization",
                         itertools.product((0.1, 1, 10.0), DIRECTIONS, REGULARIZERS))
@pytest.mark.parametrize("op", ["soft_rank", "soft_sort"])
def test_pytorch_ops(backend, op, regularization_strength, direction, regularization):
    _only(backend, "torch")
    import torch

    from diffopt.sorting.fast_soft_sort import pytorch_ops

    torch.manual_seed(0)  # added: the original draws unseeded
    x = torch.randn(5, 10, dtype=torch.float64, requires_grad=True)
    func = functools.partial(getattr(pytorch_ops, op), regularization_strength=regularization_strength,
                             direction=direction, regularization=regularization)
    assert torch.autograd.gradcheck(func, [x], eps=1e-5, atol=1e-3, rtol=1e-3)

    def _compute_loss(x):
        y = func(x, regularization_strength=regularization_strength, direction=direction,
                 regularization=regularization)
        return torch.sum(y ** 2)

    assert torch.autograd.gradcheck(_compute_loss, x, eps=1e-5, atol=1e-3, rtol=1e-3)


# ---------------------------------------------------------------- tf_ops_test.py


@pytest.mark.parametrize("regularization_strength, direction, regularization",
                         itertools.product(GAMMAS, DIRECTIONS, REGULARIZERS))
@pytest.mark.parametrize("op", ["soft_rank", "soft_sort"])
def test_tf_ops(backend, op, regularization_strength, direction, regularization):
    _only(backend, "tensorflow")
    import tensorflow as tf

    from diffopt.sorting.fast_soft_sort import tf_ops

    precision, delta = 1e-6, 1e-4
    x = tf.constant(np.random.RandomState(0).randn(5, 10))  # the original: tf.random.normal, unseeded
    func = functools.partial(getattr(tf_ops, op), regularization_strength=regularization_strength,
                             direction=direction, regularization=regularization)
    theoretical, numerical = tf.test.compute_gradient(func, [x], delta=delta)
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=precision, atol=precision)

    def _compute_loss(x):
        y = func(x, regularization_strength=regularization_strength, direction=direction,
                 regularization=regularization)
        return tf.reduce_mean(y ** 2)

    theoretical, numerical = tf.test.compute_gradient(_compute_loss, [x], delta=delta)
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=precision, atol=precision)
