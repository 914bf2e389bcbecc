"""``diffopt._demo.frameworks``: the examples' and demo's framework helpers, on every backend."""

import os

import numpy as np
import pytest

from diffopt._demo import frameworks as fw
from diffopt._ops import do

A = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
B = np.array([[2.0, 3.0, -1.0], [0.5, -2.0, 1.0]])


def _name(backend):
    """The demo's name of this test backend (HIPS autograd is the demo's 'numpy')."""
    if backend.name in ("numpy", "cupy"):
        pytest.skip("the demo differentiates NumPy with autograd (the 'autograd' case) and has no CuPy")
    return "numpy" if backend.name == "autograd" else backend.name


def test_value_and_grad_is_the_closed_form(backend):
    """f(a, b, c) = Σ a² b: ∂a = 2ab, ∂b = a², and the unused c gets zeros (not None)."""
    name = _name(backend)
    c = np.ones(4)
    value, (ga, gb, gc) = fw.value_and_grad(lambda a, b, c: do("sum", a * a * b), [A, B, c], name, dtype="float64")
    rtol = 1e-12 if backend.supports("float64") else 1e-6  # JAX without x64 computes in float32
    assert value == pytest.approx(float((A * A * B).sum()), rel=rtol)
    np.testing.assert_allclose(ga, 2 * A * B, rtol=rtol)
    np.testing.assert_allclose(gb, A * A, rtol=rtol)
    np.testing.assert_array_equal(gc, np.zeros(4))
    g = fw.grad(lambda a: do("sum", a * a * a), A, name)  # float32 by default
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, 3 * A * A, rtol=1e-6)


def test_to_backend_and_back(backend):
    name = _name(backend)
    x = fw.to_backend(A, name, dtype="float64")
    assert type(x) is type(backend.asarray(A))  # the framework's own array type
    out = fw.to_numpy(x)
    assert isinstance(out, np.ndarray)
    assert out.dtype == (np.float64 if backend.supports("float64") else np.float32)
    np.testing.assert_array_equal(out, A)
    assert fw.to_numpy(fw.to_backend(A, name)).dtype == np.float32
    assert fw.has_grad(name)


def test_to_backend_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="unknown backend 'mxnet'"):
        fw.to_backend(A, "mxnet")


def test_resolve_backends(monkeypatch):
    monkeypatch.setattr(fw, "installed", lambda name: name in ("numpy", "jax", "autograd"))
    assert fw.installed_backends() == ["numpy", "jax"]
    assert fw.resolve_backends("all") == ["numpy", "jax"]
    assert fw.resolve_backends(" jax , numpy") == ["numpy", "jax"]  # BACKENDS order, spaces ignored
    with pytest.raises(ValueError, match="unknown backend.*mxnet"):
        fw.resolve_backends("numpy,mxnet")
    with pytest.raises(ValueError, match="unknown backend"):
        fw.resolve_backends(",")
    with pytest.raises(ValueError, match="torch not installed"):
        fw.resolve_backends("torch")
    assert fw.has_grad("numpy") and not fw.has_grad("torch")


def test_installed_looks_up_without_importing():
    assert fw.installed("numpy") and not fw.installed("no_such_framework_here")


def test_prepare_quiets_tensorflow(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    fw.prepare(["numpy"])
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    fw.prepare(["tensorflow"])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    fw.prepare(["tensorflow"])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"  # a user's setting is kept


def test_load_quietly_hides_start_up_lines_and_survives_a_broken_framework(monkeypatch, capfd):
    """Lines written to file descriptor 2 while a framework starts are dropped; stderr works afterwards,
    and a framework that fails to start is left for the checks to report (no crash here)."""
    started = []

    def noisy(name):
        started.append(name)
        os.write(2, b"I0000 00:00:1 port.cc:153] oneDNN custom operations are on\n")
        raise ImportError(f"{name} is broken")

    monkeypatch.setattr(fw, "_initialise", noisy)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # restored after the test (prepare keeps a user's value)
    fw.load_quietly(["numpy", "tensorflow", "jax"])
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert started == ["jax", "tensorflow"]  # the frameworks named, in a safe order, numpy needs no start
    assert "oneDNN" not in err and "after" in err
