""""Write your prototype once" (docs/prototype.md): the page's own code block, written against
``autoray.numpy``, runs unchanged on every backend with the framework's default dtype and keeps
the framework's graph.

The block is read from the page at each run (the block that is not marked ``# not run``), so an
edit to the page is what gets tested.
"""

import math
import pathlib
import re

import numpy as np
import pytest
import autoray
from autoray import get_dtype_name
from autoray import numpy as anp

import diffopt

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "prototype.md"
X = np.array([[0.3, -1.2, 2.0, 0.7, -0.1], [1.5, 0.2, -0.8, 0.9, 0.0]])
W = np.arange(5.0)
# the dtype a framework gives a Python list of floats (what a user's tensor has by default)
DEFAULT_DTYPE = {"numpy": "float64", "autograd": "float64", "torch": "float32", "jax": "float32",
                 "tensorflow": "float32"}


def _page_namespace():
    """Run the page's code block(s) (all but the ``# not run`` ones); return their namespace."""
    text = PAGE.read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"^```python[ \t]*\n(.*?)^```", text, flags=re.M | re.S)
              if not b.startswith("# not run")]
    assert blocks, "docs/prototype.md has no runnable python block"
    namespace = {"__name__": "prototype_page"}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102 - the page is ours
    return namespace


def _default_array(name, data):
    """``data`` as the framework makes it from a Python list: its default float dtype."""
    rows = np.asarray(data).tolist()
    if name == "torch":
        import torch

        return torch.tensor(rows)
    if name == "jax":
        import jax.numpy as jnp

        return jnp.array(rows)
    if name == "tensorflow":
        import tensorflow as tf

        return tf.constant(rows)
    return np.array(rows)


def _finite_differences(f, x, h=1e-6):
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = h
        grad[idx] = (float(f(x + step)) - float(f(x - step))) / (2 * h)
    return grad


def test_the_page_block_is_what_runs():
    from diffopt.sorting import soft_sort

    loss = _page_namespace()["loss"]
    # what the page says the block computes, written here in plain NumPy around the same call
    want = np.mean(soft_sort(X, axis=-1, temperature=0.5) @ W)
    np.testing.assert_allclose(float(loss(X)), want, rtol=1e-12)
    # and it is not the unsorted weighted mean (a block that dropped the sort would give that)
    assert abs(float(loss(X)) - float(np.mean(X @ W))) > 0.1


def test_page_prototype_runs_unchanged_with_the_default_dtype(grad_backend):
    loss = _page_namespace()["loss"]
    value = float(loss(X))
    grad = _finite_differences(loss, X)
    x = _default_array(grad_backend.name, X)
    assert autoray.get_dtype_name(x) == DEFAULT_DTYPE[grad_backend.name]
    out = loss(x)
    assert autoray.get_dtype_name(out) == autoray.get_dtype_name(x), "the loss left the input's dtype"
    assert autoray.infer_backend(out) == autoray.infer_backend(x)
    rtol = 1e-5 if DEFAULT_DTYPE[grad_backend.name] == "float32" else 1e-10
    np.testing.assert_allclose(grad_backend.to_numpy(out), value, rtol=rtol)
    g = grad_backend.grad(loss, x)  # TF: None here if the prototype left the tape
    assert g is not None
    assert autoray.get_dtype_name(g) == autoray.get_dtype_name(x)
    np.testing.assert_allclose(grad_backend.to_numpy(g), grad, rtol=1e-3, atol=1e-4)


def test_perturbed_prototype_matches_softmax_closed_form(grad_backend):
    # Gumbel-perturbed argmax has the closed form E[y] = softmax(θ/σ).
    sigma, n = 0.5, 4000
    pert = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=n, sigma=sigma, noise="gumbel")

    def loss(theta):
        y = pert(theta, rng=0)
        w = anp.astype(anp.asarray(W, like=theta), get_dtype_name(theta))
        return anp.mean(anp.sum(y * w, axis=-1))

    p = np.exp(X / sigma) / np.exp(X / sigma).sum(-1, keepdims=True)
    expected = float(np.mean(p @ W))
    # std of the per-row weighted one-hot, averaged over 2 rows of n samples each
    std = math.sqrt(float(np.mean(p @ W**2 - (p @ W) ** 2)) / (2 * n))
    theta = _default_array(grad_backend.name, X)
    got = float(grad_backend.to_numpy(loss(theta)))
    assert abs(got - expected) < 5 * std
    g = grad_backend.grad(loss, theta)
    assert g is not None and np.all(np.isfinite(grad_backend.to_numpy(g)))
    assert grad_backend.to_numpy(g).shape == X.shape


@pytest.mark.parametrize("fn", ["mean", "sum"])
def test_autoray_numpy_dispatches_to_the_framework(backend, fn):
    from diffopt.sorting import soft_sort

    x = backend.asarray(X, "float32")
    out = getattr(anp, fn)(soft_sort(x, temperature=0.5), axis=-1)
    assert type(out).__module__.split(".")[0] == type(x).__module__.split(".")[0]
    np.testing.assert_allclose(backend.to_numpy(out), getattr(np, fn)(soft_sort(X, temperature=0.5), axis=-1),
                               rtol=1e-5)
