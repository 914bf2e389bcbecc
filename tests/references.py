"""Shared references of the test suite: fixed noise draws and random streams, hand-written NumPy
references of the estimators and of the sorting network, closed forms and comparison helpers.

Every test folder imports it by name (``from references import ...``): ``tests/`` is on
``sys.path`` (setup.cfg ``pythonpath = tests``). It holds no tests.
"""

import collections
import traceback

import autoray
import autoray as ar
import autoray.autoray as autoray_core
import numpy as np
import pytest

import diffopt
from diffopt._ops import first_max_mask
from diffopt.random import Rng


# --- from test_exact.py ---

TOL = 1e-10


def close(backend, got, want, tol=TOL):
    got = backend.to_numpy(got)
    assert got.dtype == np.float64, got.dtype
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


class FixedNoise(diffopt.Noise):
    """Draws given by the test: rows of ``block`` repeated to the requested length."""

    def __init__(self, block, backend, score):
        self.block, self.backend, self._score = np.asarray(block, dtype=np.float64), backend, score

    def draws(self, n):
        reps = -(-n // self.block.shape[0])
        return np.concatenate([self.block] * reps)[:n]

    def sample(self, shape, like, rng=None):
        shape = tuple(int(d) for d in shape)
        assert shape[1:] == self.block.shape[1:], (shape, self.block.shape)
        return self.backend.asarray(self.draws(shape[0]), ar.get_dtype_name(like))

    def score(self, z):
        return self._score(z)


# ------------------------------------------------------------------ perturbed

B, D, N, CHUNK, SIGMA = 2, 4, 7, 3, 0.3


# ------------------------------------------------------------------- I-MLE family

S, M = 2, 2  # samples and marginal samples


def ref_imle_solver(x):
    return np.eye(x.shape[-1])[x.argmax(-1)] + 0.1 * x


def ref_imle(theta, eps, dy, *, kind, alpha=1.0, beta=1.0, scaling=False, adaptive=False, t_in=1.0, t_tgt=1.0,
             samples=S, marginal=1, minimize=False, symmetric=False, solve=ref_imle_solver):
    """Forward ``[B·T, D]`` and gradient ``[B, D]`` (Niepert et al. 2021; Minervini et al. 2023).

    Returns also the I-MLE difference ``[B, S, D]`` (for the adaptive update).
    """
    b, t, d = eps.shape
    theta3 = np.repeat(theta[:, None], t, axis=1)
    z = solve(theta3 + t_in * eps)
    dy3 = dy.reshape(b, t, d)
    if kind == "ste":
        return z.reshape(b * t, d), dy3.mean(1), None
    lam = beta * np.linalg.norm(theta3) / np.linalg.norm(dy3) if adaptive else beta
    step = lam * dy3 if minimize else -lam * dy3  # θ' = αθ − λ dy (maximise), αθ + λ dy (minimise)
    right = solve(alpha * theta3 + step + t_tgt * eps)
    if kind == "imle":
        left = z
    else:
        left = solve(alpha * theta3 - (step if symmetric else 0.0) + t_tgt * eps)
    diff = (left - right).reshape(b, samples, marginal, d).mean(2)
    if symmetric:
        diff = diff / 2.0
    if adaptive:
        diff_scaled = diff / lam
    elif scaling:
        diff_scaled = diff / beta
    else:
        diff_scaled = diff
    grad = diff_scaled.mean(1)
    return z.reshape(b * t, d), (-grad if minimize else grad), diff


def _imle_inputs(seed, marginal=1):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(B, D))
    eps = rng.gumbel(size=(B, S * marginal, D))
    dy = rng.normal(size=(B * S * marginal, D)) * 2.0
    return theta, eps, dy


def ref_beta_update(state, ratio, *, step, momentum, decay, target_norm):
    beta, grad_norm, previous = state
    grad_norm = decay * grad_norm + (1.0 - decay) * ratio
    update = momentum * previous + (step if grad_norm < target_norm else -step)
    return max(beta + update, 0.0), grad_norm, update


# ---------------------------------------------------------------------- noise


class FixedRng(Rng):
    """An :class:`~diffopt.random.Rng` returning given uniforms, normals and gammas."""

    def __init__(self, like, backend, uniform=None, normal=None, gamma=None):
        super().__init__(0, like)
        self.backend, self.u, self.n, self.g = backend, uniform, normal, gamma
        self.alphas = []

    def _arr(self, a, shape, dtype):
        assert tuple(a.shape) == tuple(shape), (a.shape, shape)
        return self.backend.asarray(a, dtype)

    def _uniform(self, shape, dtype):
        return self._arr(self.u, shape, dtype)

    def _normal(self, shape, dtype):
        return self._arr(self.n, shape, dtype)

    def _gamma(self, shape, alpha, dtype):
        self.alphas.append(alpha)
        return self._arr(self.g, shape, dtype)

    def fold(self, index):
        return self


# ---------------------------------------------------------------------- soft sorting

SIGMOIDS = {  # weight f(v) of the smaller input in the smaller output, v = gap / T (Petersen et al.)
    "logistic": lambda v: 1.0 / (1.0 + anp_exp(-v)),
    "cauchy": lambda v: 0.5 + anp_arctan(v) / np.pi,
    "reciprocal": lambda v: 1.0 - 0.5 / (1.0 + v),
    "optimal": lambda v: 0.5 + v if v <= 0.25 else 1.0 - 1.0 / (16.0 * v),
}


def anp_exp(v):
    import autograd.numpy as anp

    return anp.exp(v)


def anp_arctan(v):
    import autograd.numpy as anp

    return anp.arctan(v)


def comparators(big_n):
    """``(a, b, descending)`` of the bitonic sorting network on ``big_n = 2**k`` wires, in order."""
    k = big_n.bit_length() - 1
    for stage in range(k):
        for j in range(stage + 1):
            m = 1 << (stage - j)
            for a in range(big_n):
                if not a & m:
                    yield a, a + m, bool((a >> (stage + 1)) & 1)


def ref_network(x, relaxation, temperature):
    """Relaxed bitonic sort of the list ``x`` (padded with +inf to a power of two) and its mixing matrix.

    Written with Python scalars so that HIPS autograd differentiates it; returns
    ``(values [big_n], P [big_n, big_n])`` with ``P[j, i]`` the weight of input ``i``
    at sorted position ``j``.
    """
    import autograd.numpy as anp

    n = len(x)
    big_n = 1 << (n - 1).bit_length()
    vals = list(x) + [np.inf] * (big_n - n)
    rows = list(np.eye(big_n))
    for a, b, descending in comparators(big_n):
        p, q = vals[a], vals[b]
        small, large = (a, b) if p <= q else (b, a)
        s, l = vals[small], vals[large]
        if not np.isfinite(s) or not np.isfinite(l):
            lo, hi, leak = s, l, 0.0
        else:
            v = (l - s) / temperature
            if relaxation == "logsumexp":
                hi = temperature * anp.logaddexp(p / temperature, q / temperature)
                lo = p + q - hi
                leak = 1.0 / (1.0 + anp.exp(v))
            else:
                f = SIGMOIDS[relaxation](v)
                lo, hi, leak = f * s + (1.0 - f) * l, (1.0 - f) * s + f * l, 1.0 - f
        r_lo = (1.0 - leak) * rows[small] + leak * rows[large]
        r_hi = leak * rows[small] + (1.0 - leak) * rows[large]
        (vals[a], vals[b]), (rows[a], rows[b]) = ((hi, lo), (r_hi, r_lo)) if descending else ((lo, hi), (r_lo, r_hi))
    return anp.stack(vals), anp.stack(rows)


def ref_sorting(x, relaxation, temperature, op, k=2):
    """Reference of one sorting op on one row ``x`` (autograd-differentiable)."""
    import autograd.numpy as anp

    n = len(x)
    if op == "sort":
        return ref_network(x, relaxation, temperature)[0][:n]
    if op == "sort_desc":
        return -ref_network(-x, relaxation, temperature)[0][:n]
    if op == "topk":
        return anp.sum(ref_network(-x, relaxation, temperature)[1][:k, :n], axis=0)
    _, p = ref_network(x, relaxation, temperature)
    if op == "rank":
        return anp.dot(anp.arange(p.shape[0], dtype=float), p[:, :n])
    return p[:n, :n]  # perm


# --- from test_hessians.py ---


# ----------------------------------------------------------------- helpers


def hessian(backend, f, x):
    """Hessian ``[x.size, x.size]`` of the scalar ``f`` at ``x`` by the framework's own API."""
    size = int(np.prod(x.shape))
    if backend.name == "jax":  # compiled: op-by-op JAX is several times slower here
        import jax

        return np.asarray(jax.jit(jax.hessian(f))(x)).reshape(size, size)
    if backend.name == "torch":
        import torch

        return torch.autograd.functional.hessian(f, x).reshape(size, size).numpy()
    if backend.name == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = f(x)
            g = inner.gradient(y, x)
        return outer.jacobian(g, x).numpy().reshape(size, size)
    import autograd

    return np.asarray(autograd.hessian(f)(x)).reshape(size, size)


# ------------------------------------------------- statistical: closed forms, finite differences

THETA = np.array([0.3, -0.2, 0.5, 0.1])


# --- from test_edge_cases.py ---

INF, NAN = float("inf"), float("nan")
X = np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 0.0, -0.5, 0.25]])
DY_4 = np.array([[0.0, 1.0, -1.0, 0.0], [1.0, 0.0, 0.0, -1.0]])


def top2(x):
    return diffopt.top_k_mask(x, 2)


# --- soft sorting checks shared by tests/sorting/test_edge_cases.py and tests/sorting/test_exact.py ---


def check_soft_sort_of_the_largest_finite_values(backend, relaxation, n):
    """``soft_sort`` of float32's ``±finfo.max`` (n entries) stays finite, the extremes in place; ``+inf`` stays ``+inf``."""
    from diffopt.sorting import soft_sort

    big = float(np.finfo(np.float32).max)
    values = np.array([big, 1.0, -big, 0.0][:n], dtype=np.float32)
    out = backend.to_numpy(soft_sort(backend.asarray(values), relaxation=relaxation))
    assert np.isfinite(out).all(), out
    np.testing.assert_allclose(out[[0, -1]], [-big, big], rtol=1e-6)
    # infinities still sort as infinities
    values[1] = INF
    out = backend.to_numpy(soft_sort(backend.asarray(values), relaxation=relaxation))
    assert out[-1] == INF and np.isfinite(out[:-1]).all(), out


# --- gradients with respect to two arguments (tests/imle/) ---


def grad2(backend, f, x, s):
    """Gradients of the scalar ``f(x, s)`` with respect to both arguments."""
    name = backend.name
    if name == "torch":
        import torch

        x, s = (v.detach().clone().requires_grad_(True) for v in (x, s))
        return torch.autograd.grad(f(x, s), (x, s))
    if name == "jax":
        import jax

        return jax.grad(f, argnums=(0, 1))(x, s)
    if name == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch([x, s])
            y = f(x, s)
        return tape.gradient(y, [x, s])
    import autograd

    return autograd.grad(lambda xs: f(*xs))((x, s))


# --- closed forms and solvers shared by tests/perturbations/ ---


def softmax(x, sigma=1.0):
    """softmax(x/σ) on the last axis: the Gumbel-perturbed argmax in closed form."""
    e = np.exp(x / sigma - np.max(x / sigma, axis=-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def solver(x):
    """Discrete and continuous parts: D + 1 outputs for D inputs (out != in); ``ref_solver`` in NumPy."""
    return ar.do("concatenate", [first_max_mask(x), 0.5 * ar.do("sum", x * x, axis=-1, keepdims=True)], axis=-1)


def ref_solver(x):
    return np.concatenate([np.eye(x.shape[-1])[x.argmax(-1)], 0.5 * (x * x).sum(-1, keepdims=True)], axis=-1)


# ----------------------------------------------------------- framework look-ups (issue 30, resolve once)

#: At most this many framework look-ups (``autoray.infer_backend`` calls) per warm public call.
LIMIT = 5


class LookupCounter:
    """Counts :func:`autoray.infer_backend` calls of one warm call (autoray's own callers read it
    from its module: both names are patched); ``calls`` holds them by caller (``file:line``)."""

    def __init__(self):
        self.calls = collections.Counter()

    def count(self, fn):
        """The look-ups of ``fn()`` run a second time (the first warms shims, caches, JAX)."""
        fn()
        self.calls.clear()
        with pytest.MonkeyPatch.context() as mp:
            original = autoray_core.infer_backend

            def counting(x):
                frame = traceback.extract_stack(limit=2)[0]
                self.calls[f"{frame.filename}:{frame.lineno}"] += 1
                return original(x)

            mp.setattr(autoray, "infer_backend", counting)
            mp.setattr(autoray_core, "infer_backend", counting)
            fn()
        return sum(self.calls.values())


def torch_value_and_grad(f, theta):
    """``f(t)`` and its gradient at ``t = torch.tensor(theta)``, both detached (the torch.compile tests)."""
    import torch

    t = torch.tensor(theta, requires_grad=True)
    value = f(t)
    (grad,) = torch.autograd.grad(value, t)
    return value.detach(), grad


# --- torch.compile tests (tests/*/test_compiled*.py) ---

#: The instances the torch.compile tests differentiate (two rows of five).
COMPILE_THETA = np.array([[0.3, -0.2, 0.9, 0.1, -0.5], [-0.1, 0.2, 0.15, -0.4, 0.05]])


def torch_for_compile_tests():
    """``torch``, or skip the calling test module when torch is missing or not selected
    (call it at module level, before anything that needs torch)."""
    torch = pytest.importorskip("torch")
    from conftest import SELECTED

    if "torch" not in SELECTED:
        pytest.skip("torch is not among the selected backends", allow_module_level=True)
    return torch


def fullgraph(f, dynamic=False):
    """``torch.compile(f)`` as one graph (``fullgraph=True``: any graph break raises), ``aot_eager``:
    the backward is compiled too; ``dynamic=False`` keeps an int seed a constant of the graph."""
    import torch

    torch._dynamo.reset()
    return torch.compile(f, backend="aot_eager", fullgraph=True, dynamic=dynamic)


def assert_compiled_equals_eager(f, theta=COMPILE_THETA):
    """``fullgraph(f)``'s value and gradient at ``theta`` equal eager's exactly (and the gradient
    is not zero: one that could differ); returns eager's ``(value, gradient)``."""
    eager = torch_value_and_grad(f, theta)
    compiled = torch_value_and_grad(fullgraph(f), theta)
    assert float(eager[1].abs().max()) > 1e-3
    for c, e in zip(compiled, eager):
        np.testing.assert_array_equal(c.numpy(), e.numpy())
    return eager


def last_line_of_a_fresh_process(code):
    """The last line ``code`` prints when run by a fresh Python process (which must succeed):
    the first diffopt call of a process may be a compiled one."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]
