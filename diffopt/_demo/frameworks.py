"""Pick a framework by name, move NumPy data in and out, differentiate with its own autodiff.

Every helper imports its framework inside the function, so importing this
module imports none. ``'numpy'`` computes values with NumPy arrays and
gradients with HIPS autograd (whose traced arrays are NumPy arrays too).
"""

import contextlib
import importlib.util
import os
import sys

import numpy as np

__all__ = [
    "BACKENDS",
    "installed",
    "installed_backends",
    "resolve_backends",
    "prepare",
    "load_quietly",
    "to_backend",
    "to_numpy",
    "value_and_grad",
    "grad",
]

#: Names accepted by ``--backend``, in the order ``all`` runs them.
BACKENDS = ("numpy", "torch", "jax", "tensorflow")


def installed(name):
    """Whether the framework ``name`` can be imported (nothing is imported).

    Parameters
    ----------
    name : str
        One of :data:`BACKENDS` or ``'autograd'``.

    Returns
    -------
    bool
    """
    return importlib.util.find_spec(name) is not None


def installed_backends():
    """The names in :data:`BACKENDS` whose framework is installed.

    Returns
    -------
    list of str
    """
    return [name for name in BACKENDS if installed(name)]


def resolve_backends(spec):
    """Turn ``--backend`` (a name, ``'all'`` or a comma list) into installed names.

    Parameters
    ----------
    spec : str
        ``'all'``, one name from :data:`BACKENDS`, or several joined by commas.

    Returns
    -------
    list of str
        Names in :data:`BACKENDS` order.

    Raises
    ------
    ValueError
        For an unknown name, or a named framework that is not installed.
    """
    if spec == "all":
        return installed_backends()
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise ValueError(f"unknown backend(s) {unknown or spec!r}; choose from {', '.join(BACKENDS)} or 'all'")
    missing = [n for n in names if not installed(n)]
    if missing:
        raise ValueError(f"backend(s) {', '.join(missing)} not installed here; installed: {installed_backends()} "
                         f'(add: pip install "pydiffopt[{",".join(missing)}]")')
    return [n for n in BACKENDS if n in names]


def prepare(names):
    """Import what ``names`` need, in a safe order (torch before TensorFlow).

    Parameters
    ----------
    names : list of str
    """
    if "torch" in names and "tensorflow" in names:
        import torch  # noqa: F401  (torch must be loaded before TensorFlow in one process)
    if "tensorflow" in names:
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _native_stderr_silenced():
    """The process's file descriptor 2 on ``os.devnull`` for the block (Python's ``sys.stderr`` too).

    TensorFlow ≥ 2.19 logs from C++ (absl) before ``TF_CPP_MIN_LOG_LEVEL`` is read
    ("oneDNN custom operations are on", "Could not find cuda drivers", "failed call to
    cuInit"), so only the descriptor itself can hide those lines. Exceptions still
    propagate; their traceback is printed after the descriptor is restored.
    """
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _initialise(name):
    """Import ``name`` and create its CPU/GPU platforms (where the start-up messages are logged)."""
    if name == "jax":
        import jax

        jax.devices()
    elif name == "tensorflow":
        import tensorflow as tf

        tf.config.list_physical_devices()
        tf.constant(0.0) + 1.0
    elif name == "torch":
        import torch  # noqa: F401


def load_quietly(names):
    """Import and start the frameworks in ``names`` without their start-up log lines.

    For the ``diffopt`` command's own process only (it changes the process's
    stderr for the duration of the imports, and ``TF_CPP_MIN_LOG_LEVEL``
    through :func:`prepare`); library code never calls it.

    Parameters
    ----------
    names : list of str
        Installed names of :data:`BACKENDS`.
    """
    prepare(names)
    with _native_stderr_silenced():
        for name in (n for n in ("torch", "jax", "tensorflow") if n in names):
            try:
                _initialise(name)
            except Exception:  # a broken install: the checks import it again and report the error
                pass


def has_grad(name):
    """Whether gradients can be taken for ``name`` (NumPy needs autograd).

    Parameters
    ----------
    name : str

    Returns
    -------
    bool
    """
    return installed("autograd") if name == "numpy" else installed(name)


def to_backend(a, name, dtype="float32"):
    """A ``name`` array holding the NumPy data ``a``.

    Parameters
    ----------
    a : array_like
    name : str
        One of :data:`BACKENDS`.
    dtype : str, default 'float32'

    Returns
    -------
    array
    """
    a = np.asarray(a, dtype=dtype)
    if name == "numpy":
        return a
    if name == "torch":
        import torch

        return torch.from_numpy(a.copy())
    if name == "jax":
        import jax.numpy as jnp

        return jnp.asarray(a)
    if name == "tensorflow":
        import tensorflow as tf

        return tf.convert_to_tensor(a)
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def to_numpy(x):
    """A NumPy copy of any framework's (concrete) array.

    Parameters
    ----------
    x : array
        NumPy, autograd box value, torch, JAX or TensorFlow.

    Returns
    -------
    numpy.ndarray
    """
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        return np.asarray(x.numpy())
    return np.asarray(getattr(x, "_value", x))


def value_and_grad(f, xs, name, dtype="float32"):
    """Value of the scalar ``f(*arrays)`` and its gradients, by ``name``'s own autodiff.

    The NumPy inputs ``xs`` are moved to ``name``, ``f`` is called on them
    (``torch`` backward, ``jax.value_and_grad``, ``tf.GradientTape``, or
    ``autograd`` for ``'numpy'``), and everything comes back as NumPy.

    Parameters
    ----------
    f : callable
        ``f(*arrays) -> scalar`` array of the framework.
    xs : list of numpy.ndarray
        Points to differentiate at.
    name : str
        One of :data:`BACKENDS`.
    dtype : str, default 'float32'

    Returns
    -------
    value : float
    grads : list of numpy.ndarray
        One per input, in ``xs`` order.
    """
    return _GRADS[name](f, [np.asarray(x, dtype=dtype) for x in xs], dtype)


def grad(f, x, name, dtype="float32"):
    """Gradient of the scalar ``f(x)`` at the NumPy point ``x`` (see :func:`value_and_grad`).

    Returns
    -------
    numpy.ndarray
    """
    return value_and_grad(f, [x], name, dtype)[1][0]


def _grad_autograd(f, xs, dtype):
    import autograd

    argnums = tuple(range(len(xs)))
    value, grads = autograd.value_and_grad(lambda *a: f(*a), argnums)(*xs)
    return float(value), [np.asarray(g, dtype=dtype) for g in grads]


def _grad_torch(f, xs, dtype):
    import torch

    leaves = [torch.from_numpy(x.copy()).requires_grad_(True) for x in xs]
    value = f(*leaves)
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    return float(value.detach()), [_zero_if_none(g, x) for g, x in zip(grads, xs)]


def _grad_jax(f, xs, dtype):
    import jax

    value, grads = jax.value_and_grad(lambda *a: f(*a), tuple(range(len(xs))))(*[jax.numpy.asarray(x) for x in xs])
    return float(value), [np.asarray(g) for g in grads]


def _grad_tensorflow(f, xs, dtype):
    import tensorflow as tf

    leaves = [tf.convert_to_tensor(x) for x in xs]
    with tf.GradientTape() as tape:
        for leaf in leaves:
            tape.watch(leaf)
        value = f(*leaves)
    grads = tape.gradient(value, leaves)
    return float(value.numpy()), [_zero_if_none(g, x) for g, x in zip(grads, xs)]


def _zero_if_none(g, x):
    return np.zeros_like(x) if g is None else to_numpy(g)


_GRADS = {"numpy": _grad_autograd, "torch": _grad_torch, "jax": _grad_jax, "tensorflow": _grad_tensorflow}
