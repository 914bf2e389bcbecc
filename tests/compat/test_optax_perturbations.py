"""``optax.perturbations`` (v0.2.8), on ``from diffopt import perturbations``.

The cases of optax's ``_make_pert_test.py`` except ``test_hessian`` (second
derivatives: see the perturbations tests), with Monte-Carlo tolerances derived
from the sample count; and optax's noise API (``sample(key, shape, dtype)``,
``log_prob``), also with optax's own noise objects when optax is installed.
"""

import operator
from functools import partial

import numpy as np
import pytest
from compat_refs import Z

from diffopt import perturbations

N = 20_000


def one_hot_argmax(inputs):
    import jax
    import jax.numpy as jnp

    flat = jnp.reshape(inputs, (-1,))
    return jnp.reshape(jax.nn.one_hot(jnp.argmax(flat), flat.shape[0]), inputs.shape)


def argmax_tree(x):
    import jax

    return jax.tree.map(one_hot_argmax, x)


def leaves_close(got, want, atol):
    import jax

    got_leaves, got_def = jax.tree.flatten(got)
    want_leaves, want_def = jax.tree.flatten(want)
    assert got_def == want_def
    for g, w in zip(got_leaves, want_leaves):
        assert g.shape == w.shape
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=atol)


@pytest.mark.parametrize("xtype, sigma", [("tree", 0.5), ("flat", 1.0)])  # optax: both × both
def test_pert_argmax(jax_backend, xtype, sigma):
    import jax
    import jax.numpy as jnp

    key = jax.random.key(0)
    if xtype == "tree":
        key, k1, k2, k3, k4 = jax.random.split(key, 5)
        x = (jax.random.normal(k1, (4,)), {"k1": jax.random.normal(k2, (3,)), "k2": jax.random.normal(k3, (2,))},
             jax.random.normal(k4, (2,)))
    else:
        key, k1 = jax.random.split(key)
        x = jax.random.normal(k1, (20,))
    pert_argmax_fun = jax.jit(perturbations.make_perturbed_fun(argmax_tree, N, sigma))
    softmax_fun = lambda x: jax.tree.map(lambda z: jax.nn.softmax(z / sigma), x)  # noqa: E731
    # values: Bernoulli means (std ≤ 1/2); Jacobian: one-hot × Gumbel score/σ (score variance 1)
    leaves_close(pert_argmax_fun(key, x), softmax_fun(x), Z * 0.5 / np.sqrt(N))
    leaves_close(jax.jacobian(pert_argmax_fun, argnums=1)(key, x), jax.jacobian(softmax_fun)(x),
                 Z / (sigma * np.sqrt(N)))

    def pert_loss(key, inputs):
        out = pert_argmax_fun(key, inputs)
        return sum(jnp.sum(v**2 + jnp.cos(v)) for v in jax.tree.leaves(out))

    def exact_loss(inputs):
        return sum(jnp.sum(v**2 + jnp.cos(v)) for v in jax.tree.leaves(softmax_fun(inputs)))

    # |d/dy (y² + cos y)| ≤ 2 + 1 per entry, one entry hot per leaf
    leaves_close(jax.grad(jax.jit(pert_loss), argnums=1)(key, x), jax.grad(exact_loss)(x),
                 Z * 3 / (sigma * np.sqrt(N)))


def test_values_on_tree(jax_backend):
    import jax
    import jax.numpy as jnp

    key = jax.random.key(0)
    example_tree = [{"weights": jnp.ones(w), "biases": jnp.ones(b)} for w, b in (((13, 4), (13,)), ((8, 13), (8,)))]
    element = jnp.array([1.0, 2.0, 3.0, 4.0])
    element_tree = [element, {"a": jnp.ones_like(element), "b": jnp.zeros_like(element)}]

    def apply_both(tree, x):
        for layer in tree:
            x = jnp.dot(layer["weights"], x) + layer["biases"]
        return x

    def apply_element_tree(tree):
        out = jax.tree.map(partial(apply_both, tree), element_tree)
        out.append(sum(jnp.sum(leaf) for leaf in jax.tree.leaves(tree)))
        return out

    def loss(tree):
        tree_loss = jax.tree.map(lambda a, b: (a - b) ** 2, apply_element_tree(tree), apply_element_tree(example_tree))
        list_loss = jax.tree.reduce(operator.add, tree_loss)
        return jax.tree.map(lambda *leaves: sum(leaves) / len(leaves), list_loss)

    loss_pert = jax.jit(perturbations.make_perturbed_fun(loss, num_samples=100, sigma=0.1, noise=perturbations.Normal()))
    keys = jax.random.split(key, 3)
    random_tree = jax.tree.map(lambda leaf, k: jax.random.normal(k, leaf.shape), example_tree,
                               jax.tree.unflatten(jax.tree.structure(example_tree),
                                                  list(jax.random.split(keys[1], len(jax.tree.leaves(example_tree))))))
    np.testing.assert_array_less(loss_pert(keys[0], example_tree), loss_pert(keys[2], random_tree))


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_pert_linear_function(jax_backend, sigma):
    import jax

    key, k1, k2, k3 = jax.random.split(jax.random.key(0), 4)
    a, b, x = jax.random.normal(k1, (3, 2)), jax.random.normal(k2, (3,)), jax.random.normal(k3, (2,))
    linear = lambda x: a @ x + b  # noqa: E731
    fn = jax.jit(perturbations.make_perturbed_fun(linear, N, sigma, perturbations.Normal()))
    # with the baseline f(x), the estimator's terms are (A σz)·z/σ = A z z: std ≤ ‖A‖·√2 per entry
    scale = float(np.abs(np.asarray(a)).sum(axis=1).max()) * np.sqrt(2)
    np.testing.assert_allclose(fn(key, x), linear(x), atol=Z * scale * sigma / np.sqrt(N))
    np.testing.assert_allclose(jax.jacobian(fn, argnums=1)(key, x), a, atol=Z * scale / np.sqrt(N))


@pytest.mark.parametrize("sigma, noise", [(0.5, "gumbel"), (1.0, "normal")])  # optax: both × both
def test_pert_differentiable(jax_backend, sigma, noise):
    """The perturbed Jacobian of a smooth f equals E[∇f(x + σZ)] (a direct Monte-Carlo estimate)."""
    import jax
    import jax.numpy as jnp

    def f(x):
        x0, x1, x2 = x
        return jnp.stack([x0 * x1**2 * jnp.sin(x2 * x1 - x0) + jnp.cos(x0**3), x2 + x0 * jnp.sin(x1)])

    dist = perturbations.Gumbel() if noise == "gumbel" else perturbations.Normal()
    x, key = jnp.array([0.3, 0.4, 0.5]), jax.random.key(0)
    got = jax.jacobian(jax.jit(perturbations.make_perturbed_fun(f, N, sigma, dist)), argnums=1)(key, x)
    z = dist.sample(jax.random.key(1), (N, 3))
    direct = jax.vmap(jax.jacobian(f))(x + sigma * z)  # [N, 2, 3]
    # std of the score-function terms (f(x+σz) − f(x)) ∇ν(z)ᵀ/σ, from the same draws
    terms = (jax.vmap(f)(x + sigma * z) - f(x))[:, :, None] * dist.score(z)[:, None, :] / sigma
    tol = Z * (np.asarray(terms.std(0)) + np.asarray(direct.std(0))) / np.sqrt(N)
    np.testing.assert_array_less(np.abs(np.asarray(got) - np.asarray(direct.mean(0))), tol)


def test_fun_derivative_not_used(jax_backend):
    import jax
    import jax.numpy as jnp

    @jax.custom_jvp
    def f(x):
        return x

    @f.defjvp
    def _unused(primal_in, tangent_in):
        raise AssertionError("the derivative of f must not be used")

    g = jax.grad(perturbations.make_perturbed_fun(f, 10), argnums=1)(jax.random.key(0), jnp.array(0.0))
    assert np.isfinite(float(g))


def test_nonflat_shape(jax_backend):
    import jax

    fp = perturbations.make_perturbed_fun(lambda x: x[0, 0], 10)
    g = jax.grad(fp, argnums=1)(jax.random.key(0), jax.numpy.ones((1, 2)))
    assert g.shape == (1, 2) and np.all(np.isfinite(np.asarray(g)))


# ---------------------------------------------------------------------- the noise API

def test_noise_sample_and_log_prob_optax_convention(jax_backend):
    import jax
    import jax.numpy as jnp

    key = jax.random.key(3)
    for name, dist, draw in (("normal", perturbations.Normal(), jax.random.normal),
                             ("gumbel", perturbations.Gumbel(), jax.random.gumbel)):
        z = dist.sample(key, (4, 3), jnp.float32)
        assert z.shape == (4, 3) and z.dtype == jnp.float32
        np.testing.assert_array_equal(z, draw(key, (4, 3), jnp.float32))
        assert dist.sample(key).shape == ()  # optax's defaults: sample_shape=(), dtype=float
        want = -0.5 * z**2 if name == "normal" else -z - jnp.exp(-z)
        np.testing.assert_allclose(dist.log_prob(z), want, rtol=1e-6)
        # the score is -∇ log_prob, and diffopt's own convention still works
        np.testing.assert_allclose(dist.score(z), -jax.vmap(jax.grad(dist.log_prob))(z.ravel()).reshape(z.shape),
                                   rtol=1e-5, atol=1e-6)
        assert dist.sample((2, 5), jnp.zeros(1), 0).shape == (2, 5)
    with pytest.raises(TypeError, match="unexpected keyword"):
        perturbations.Normal().sample(key, (2,), shape=(3,))


def test_optax_noise_objects_accepted(jax_backend):
    optax_pert = pytest.importorskip("optax.perturbations")
    import jax
    import jax.numpy as jnp

    key = jax.random.key(0)
    for ours, theirs in ((perturbations.Normal(), optax_pert.Normal()), (perturbations.Gumbel(), optax_pert.Gumbel())):
        z = ours.sample(key, (6,), jnp.float32)
        np.testing.assert_array_equal(z, theirs.sample(key, (6,), jnp.float32))
        np.testing.assert_allclose(ours.log_prob(z), theirs.log_prob(z), rtol=1e-6)
    sigma = 0.5
    x = jnp.array([-0.6, 1.9, -0.2, 1.1, -1.0])
    fn = jax.jit(perturbations.make_perturbed_fun(one_hot_argmax, N, sigma, noise=optax_pert.Gumbel()))
    want = jax.nn.softmax(x / sigma)
    np.testing.assert_allclose(fn(key, x), want, atol=Z * 0.5 / np.sqrt(N))
    np.testing.assert_allclose(jax.jacobian(fn, argnums=1)(key, x), jax.jacobian(lambda v: jax.nn.softmax(v / sigma))(x),
                               atol=Z / (sigma * np.sqrt(N)))
    # optax's samplers are jax.random functions: other frameworks get a clear error
    with pytest.raises(TypeError, match="JAX key"):
        perturbations.make_perturbed_fun(lambda v: v, 10, 0.1, noise=optax_pert.Normal())(0, np.zeros(3))


# ---------------------------------------------------------------------- the optax notebook

def test_notebook_argmax_loss_and_gradient(jax_backend):
    import jax
    import jax.numpy as jnp

    n, sigma = 50_000, 0.5
    values = jnp.array([-0.6, 1.9, -0.2, 1.1, -1.0])
    argmax_one_hot = lambda x: jax.nn.one_hot(jnp.argmax(x, axis=-1), x.shape[-1])  # noqa: E731
    np.testing.assert_array_equal(argmax_one_hot(values), [0.0, 1.0, 0.0, 0.0, 0.0])
    pert_one_hot = perturbations.make_perturbed_fun(fun=argmax_one_hot, num_samples=n, sigma=sigma,
                                                    noise=perturbations.Gumbel())
    y_true = (jnp.arange(5) + 2) / jnp.sum(jnp.arange(5) + 2)

    def loss_simplex(v, rng):
        return jnp.sum((y_true - pert_one_hot(rng, v)) ** 2)

    def exact_loss(v):
        return jnp.sum((y_true - jax.nn.softmax(v / sigma)) ** 2)

    key = jax.random.key(1)
    # |∂loss/∂y| ≤ 2 per entry, one entry hot: Bernoulli std ≤ 1/2 for the value, 2/σ for the gradient
    np.testing.assert_allclose(loss_simplex(values, key), exact_loss(values), atol=Z * 2 * 0.5 / np.sqrt(n))
    np.testing.assert_allclose(jax.grad(loss_simplex)(values, key), jax.grad(exact_loss)(values),
                               atol=Z * 2 / (sigma * np.sqrt(n)))
    np.testing.assert_allclose(jax.nn.softmax(values / sigma), [0.00549293, 0.8152234, 0.01222475, 0.16459078,
                                                                0.00246813], rtol=1e-5)  # the notebook's softmax


def test_notebook_pytree_argmax_and_gradient_step(jax_backend):
    import jax
    import jax.numpy as jnp

    n, sigma = 50_000, 0.2  # the notebook passes sigma=SIGMA (0.2)
    tree_a = (jnp.array((0.1, 0.4, 0.5)), {"k1": jnp.array((0.1, 0.2)), "k2": jnp.array((0.1, 0.1))},
              jnp.array((0.4, 0.3, 0.2, 0.1)))
    argmax_tree = lambda x: jax.tree.map(lambda v: jax.nn.one_hot(jnp.argmax(v), v.shape[0]), x)  # noqa: E731
    want = (jnp.array([0.0, 0.0, 1.0]), {"k1": jnp.array([0.0, 1.0]), "k2": jnp.array([1.0, 0.0])},
            jnp.array([1.0, 0.0, 0.0, 0.0]))
    leaves_close(argmax_tree(tree_a), want, 0.0)
    pert_argmax_fun = jax.jit(perturbations.make_perturbed_fun(argmax_tree, num_samples=n, sigma=sigma))
    key = jax.random.key(0)
    softmax_tree = jax.tree.map(lambda v: jax.nn.softmax(v / sigma), tree_a)
    leaves_close(pert_argmax_fun(key, tree_a), softmax_tree, Z * 0.5 / np.sqrt(n))

    def pert_loss(inputs, rng):
        diffs = jax.tree.map(lambda x, y: jnp.sum((x - y) ** 2 / 4), argmax_tree(inputs), pert_argmax_fun(rng, inputs))
        return sum(jax.tree.leaves(diffs))

    exact = sum(jax.tree.leaves(jax.tree.map(lambda x, y: jnp.sum((x - y) ** 2 / 4), argmax_tree(tree_a),
                                             softmax_tree)))
    init_loss = pert_loss(tree_a, key)
    np.testing.assert_allclose(init_loss, exact, atol=Z * 4 * 0.5 / np.sqrt(n))
    grad = jax.grad(pert_loss)(tree_a, key)
    step = jax.tree.map(lambda x, g: x - 0.1 * g, tree_a, grad)
    assert pert_loss(step, key) < init_loss  # "a small step in the gradient direction reduces the value"
