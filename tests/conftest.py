"""The ``backend`` fixture: every behavioural test runs once per installed framework.

``DIFFOPT_TEST_BACKENDS=numpy,torch`` narrows the set; frameworks that are not
installed (and CuPy without a GPU) are skipped, never failed.
"""

import contextlib
import importlib
import importlib.util
import os

import numpy as np
import pytest

from diffopt.backends import SHIMS

ALL = tuple(SHIMS)  # diffopt's one list of frameworks


def _wanted():
    raw = os.environ.get("DIFFOPT_TEST_BACKENDS", "")
    names = [n.strip() for n in raw.split(",") if n.strip()] or list(ALL)
    unknown = set(names) - set(ALL)
    if unknown:
        raise pytest.UsageError(f"DIFFOPT_TEST_BACKENDS has unknown names {sorted(unknown)}")
    return names


def _cupy_usable():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CUDA driver / no device: CuPy tests skip
        return False


def _import_order(names):
    # torch must be imported before TensorFlow in one process.
    if "torch" in names and "tensorflow" in names and importlib.util.find_spec("torch"):
        importlib.import_module("torch")


class Backend:
    """Test helper for one framework (see the module docstring)."""

    has_grad = True

    def __init__(self, name):
        self.name = name

    def float64(self):
        """Context in which this framework makes float64 arrays (JAX's x64 flag is scoped, never global)."""
        return contextlib.nullcontext()

    def __repr__(self):
        return self.name

    def asarray(self, a, dtype=None):
        """A framework array from NumPy data (dtype name, default: kept)."""
        a = np.asarray(a)
        return self._asarray(a, dtype or a.dtype.name)

    def grad(self, f, x):
        """Gradient of the scalar function ``f`` at ``x`` by the framework's own autodiff."""
        raise NotImplementedError

    def supports(self, dtype):
        """Whether arrays of ``dtype`` can be made (JAX without x64 has no float64)."""
        try:
            made = self.asarray(np.zeros(1), dtype)
        except (TypeError, ValueError):
            return False
        import autoray

        return autoray.get_dtype_name(made) == dtype

    def require(self, dtype):
        """Skip the test unless ``dtype`` is available."""
        if not self.supports(dtype):
            pytest.skip(f"{self.name} has no {dtype} here")

    def jit(self, f):
        """The framework's compiler applied to ``f`` (identity where there is none)."""
        return f

    def to_numpy(self, x):
        return np.asarray(x)


class NumpyBackend(Backend):
    has_grad = False

    def _asarray(self, a, dtype):
        return a.astype(dtype)

    def grad(self, f, x):
        pytest.skip("numpy arrays have no autodiff (use the autograd backend)")


class AutogradBackend(NumpyBackend):
    has_grad = True

    def grad(self, f, x):
        import autograd

        return autograd.grad(f)(x)


class TorchBackend(Backend):
    def _asarray(self, a, dtype):
        import torch

        return torch.as_tensor(a.astype(np.float32) if dtype == "bfloat16" else a).to(getattr(torch, dtype))

    def to_numpy(self, x):
        x = x.detach()
        return (x.float() if x.dtype.is_floating_point and x.itemsize < 4 else x).cpu().numpy()

    def grad(self, f, x):
        import torch

        x = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(x), x)
        return g

    def jit(self, f):
        import torch

        return torch.compile(f, backend="aot_eager")


class JaxBackend(Backend):
    def float64(self):
        # No cache clearing: compiled functions must survive the scope change
        # (tests/backends/test_jax_x64.py checks that they do).
        import jax

        return jax.enable_x64(True)

    def _asarray(self, a, dtype):
        import jax.numpy as jnp

        return jnp.asarray(a, dtype=dtype)

    def to_numpy(self, x):
        return np.asarray(x).astype(np.float32) if x.dtype.itemsize < 4 and "float" in x.dtype.name else np.asarray(x)

    def grad(self, f, x):
        import jax

        return jax.grad(f)(x)

    def jit(self, f):
        import jax

        return jax.jit(f)


class TensorflowBackend(Backend):
    def _asarray(self, a, dtype):
        import tensorflow as tf

        return tf.cast(tf.convert_to_tensor(a), getattr(tf, dtype))

    def to_numpy(self, x):
        import tensorflow as tf

        if x.dtype in (tf.float16, tf.bfloat16):
            x = tf.cast(x, tf.float32)
        return x.numpy()

    def grad(self, f, x):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f(x)
        return tape.gradient(y, x)

    def jit(self, f):
        import tensorflow as tf

        return tf.function(f)


class CupyBackend(NumpyBackend):
    def _asarray(self, a, dtype):
        import cupy

        return cupy.asarray(a, dtype=dtype)

    def to_numpy(self, x):
        import cupy

        return cupy.asnumpy(x)


_CLASSES = {
    "numpy": NumpyBackend,
    "autograd": AutogradBackend,
    "torch": TorchBackend,
    "jax": JaxBackend,
    "tensorflow": TensorflowBackend,
    "cupy": CupyBackend,
}

SELECTED = _wanted()
_import_order(SELECTED)


def _use_device(device):
    """``DIFFOPT_TEST_DEVICE=cuda`` (``tox -e gpu``): torch tensors are made on that device by
    default, and JAX must see a GPU; without one the run stops instead of testing the CPU."""
    if "torch" in SELECTED and importlib.util.find_spec("torch"):
        import torch

        if not torch.cuda.is_available():
            raise pytest.UsageError(f"DIFFOPT_TEST_DEVICE={device} but torch sees no CUDA device")
        torch.set_default_device(device)
    if "jax" in SELECTED and importlib.util.find_spec("jax"):
        import jax

        if jax.default_backend() != "gpu":
            raise pytest.UsageError(f"DIFFOPT_TEST_DEVICE={device} but JAX runs on {jax.default_backend()}")


if os.environ.get("DIFFOPT_TEST_DEVICE"):
    _use_device(os.environ["DIFFOPT_TEST_DEVICE"])


def _params():
    out = []
    for name in ALL:
        if name not in SELECTED:
            continue
        reason = None
        if importlib.util.find_spec(name) is None:
            reason = f"{name} is not installed"
        elif name == "cupy" and not _cupy_usable():
            reason = "cupy needs a CUDA GPU"
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        out.append(pytest.param(name, id=name, marks=marks))
    return out


@pytest.fixture(params=_params())
def backend(request):
    """One installed framework: see :class:`Backend`."""
    return _CLASSES[request.param](request.param)


@pytest.fixture
def grad_backend(backend):
    """Like ``backend``, skipping frameworks without autodiff (numpy, cupy)."""
    if not backend.has_grad:
        pytest.skip(f"{backend.name} arrays have no autodiff")
    return backend
