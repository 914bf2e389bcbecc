"""The projection family on CUDA arrays: the numba.cuda PAV kernel (issue 27, item 4).

* Here, without a GPU: the kernel runs in numba's CUDA simulator, in a subprocess (the
  simulator is switched on by an environment variable, which must not leak into this
  process), against the host kernel; and CPU tensors keep the host path.
* Under ``tox -e gpu`` (a CUDA GPU, numba's CUDA target): torch CUDA tensors and CuPy
  arrays through :func:`~diffopt.sorting.projection_sort` / ``projection_rank``, values and
  gradients against the same call on the CPU, the kernel seen to run, results on the device.
"""

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import diffopt.sorting as ds
from diffopt.sorting._kernels import kernel
from diffopt._ops import namespace

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CASES = list(itertools.product((ds.projection_sort, ds.projection_rank), ("l2", "kl"), (False, True)))
X = np.random.default_rng(4).standard_normal((6, 9)) * 2.0
X[0, 3:6] = X[0, 0]  # ties


def test_kernel_in_numba_cuda_simulator():
    pytest.importorskip("numba")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=os.pathsep.join(
        [p for p in (ROOT, os.environ.get("PYTHONPATH")) if p]))
    done = subprocess.run([sys.executable, os.path.join(HERE, "_cuda_pav_sim.py")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("ok")


def test_cpu_tensors_keep_the_host_path():
    torch = pytest.importorskip("torch")
    a = torch.zeros(2, 3, device="cpu", dtype=torch.float64)
    assert kernel("sorting_pav_device", namespace("torch"))(a, a, False) is None
    assert kernel("sorting_pav_device_vjp", namespace("torch"))(a, a, a, a, True) is None


# ------------------------------------------------------------------ on a GPU (tox -e gpu)


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    from diffopt.backends import _cuda_pav

    if not _cuda_pav.available():
        pytest.skip("numba's CUDA target is not usable")
    return torch


def _value_and_grad(torch, op, reg, descending, device, strength):
    x = torch.tensor(X, dtype=torch.float64, device=device, requires_grad=True)
    eps = torch.tensor(strength, dtype=torch.float64, device=device, requires_grad=True)
    out = op(x, regularization_strength=eps, regularization=reg, descending=descending)
    weights = torch.linspace(-1.0, 2.0, X.size, dtype=torch.float64, device=device).reshape(X.shape)
    (out * weights).sum().backward()
    return out, x.grad, eps.grad


@pytest.mark.parametrize("op, reg, descending", CASES)
def test_torch_cuda_matches_cpu(op, reg, descending, monkeypatch):
    torch = _torch_cuda()
    from diffopt.backends.torch import KERNELS

    calls = []
    for name in ("sorting_pav_device", "sorting_pav_device_vjp"):  # spies: the GPU kernels ran
        spy = lambda *args, _f=KERNELS[name], _n=name: calls.append(_n) or _f(*args)
        monkeypatch.setitem(KERNELS, name, spy)
    got = _value_and_grad(torch, op, reg, descending, "cuda", 0.8)
    want = _value_and_grad(torch, op, reg, descending, "cpu", 0.8)
    assert calls.count("sorting_pav_device") == 1 and calls.count("sorting_pav_device_vjp") == 1
    assert got[0].is_cuda and got[1].is_cuda
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.detach().cpu().numpy(), w.detach().cpu().numpy(), rtol=1e-10, atol=1e-10)


def test_torch_cuda_float32_on_a_side_stream():
    torch = _torch_cuda()
    x = torch.tensor(X, dtype=torch.float32, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got = ds.projection_rank(x, regularization_strength=0.5, regularization="kl")
    stream.synchronize()
    want = ds.projection_rank(X.astype(np.float32), regularization_strength=0.5, regularization="kl")
    assert got.dtype == torch.float32 and got.is_cuda
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op, reg, descending", CASES)
def test_cupy_matches_numpy(op, reg, descending):
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            pytest.skip("CuPy sees no CUDA GPU")
    except Exception:  # no driver
        pytest.skip("CuPy sees no CUDA GPU")
    from diffopt.backends import _cuda_pav

    if not _cuda_pav.available():
        pytest.skip("numba's CUDA target is not usable")
    fast = kernel("sorting_pav_device", namespace("cupy"))
    a = cupy.asarray(X)
    assert fast(a, a, reg == "kl") is not None  # the GPU kernel, not the host copy
    got = op(cupy.asarray(X), regularization_strength=0.8, regularization=reg, descending=descending)
    want = op(X, regularization_strength=0.8, regularization=reg, descending=descending)
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(got), want, rtol=1e-10, atol=1e-10)
