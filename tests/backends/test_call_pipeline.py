"""The call pipeline shared by perturbations, I-MLE and DFL (:mod:`diffopt._call`): one checked
solver call with one set of errors naming the solver, one extra-array rule, and the reliability
of the wrappers (host-solver exceptions keep their type, pickling by reference, NumPy scalars)."""

import pickle
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

import diffopt
from diffopt import _call, backends
from diffopt._ops import do
from diffopt.imle import imle

THETA = np.array([[0.3, -1.2, 2.0, 0.1], [1.5, 0.2, -0.3, 0.9]])


# --- the three families, one solver rule ------------------------------------------------------

def _families(solver):
    """``name -> call(theta)`` running ``solver`` through each family's checked solver call."""
    return {
        "perturbed": lambda t: diffopt.perturbed(solver, num_samples=3)(t, rng=0),
        "imle": lambda t: imle(solver)(t, rng=0),
        "spo_plus_loss": lambda t: diffopt.spo_plus_loss(solver, minimize=True)(t, t, t),
        "blackbox": lambda t: diffopt.blackbox(solver, minimize=True)(t),
    }


ROLE = {"perturbed": "func", "imle": "function", "spo_plus_loss": "solver", "blackbox": "solver"}


def returns_none(x):
    return None


def returns_strings(x):
    return np.full(tuple(x.shape), "a")


def returns_complex(x):
    return np.asarray(x) + 1j


def returns_ragged(x):
    return np.array([np.zeros(2), np.zeros(3)] + [np.zeros(1)] * (len(x) - 2), dtype=object)


def returns_a_list(x):
    return [[0.0] * 4] * len(x)


def drops_the_leading_axis(x):
    return np.zeros(tuple(x.shape)[1:])


@pytest.mark.parametrize("family", list(ROLE))
@pytest.mark.parametrize("solver, error, what", [
    (returns_none, TypeError, "must return an array, got NoneType"),
    (returns_a_list, TypeError, "must return an array, got list"),
    (returns_strings, TypeError, r"returned str32 data; it must return real numbers"),
    (returns_complex, TypeError, r"returned complex128 data; it must return real numbers"),
    (returns_ragged, TypeError, r"returned object data; it must return real numbers"),
    (drops_the_leading_axis, ValueError, r"(leading \(instance\) axis|returned shape \(4,\))"),
])
def test_a_bad_solver_output_is_an_error_naming_the_solver(family, solver, error, what):
    with pytest.raises(error, match=f"{ROLE[family]} {solver.__name__} {what}" if what.startswith("must") else
                       f"{ROLE[family]} {solver.__name__} .*{what}"):
        _families(solver)[family](THETA)


@pytest.mark.parametrize("family", list(ROLE))
def test_another_frameworks_output_is_an_error_naming_the_solver(family):
    torch = pytest.importorskip("torch")

    def numpy_solver(x):
        return np.zeros(tuple(x.shape))

    with pytest.raises(TypeError, match=f"{ROLE[family]} numpy_solver returned a numpy array for torch input"):
        _families(numpy_solver)[family](torch.tensor(THETA))


def test_numpy_and_autograd_count_as_one_framework():
    """A NumPy solver output for autograd input is accepted by every family (and the reverse)."""
    autograd = pytest.importorskip("autograd")

    def numpy_argmax(x):
        return np.eye(4)[np.argmax(np.asarray(getattr(x, "_value", x)), axis=-1)]

    for family, call in _families(numpy_argmax).items():
        g = autograd.grad(lambda t: autograd.numpy.sum(call(t) * THETA))(THETA)
        assert g.shape == THETA.shape and np.all(np.isfinite(g)), family


def test_one_extra_array_rule():
    """Arrays of the call's framework travel (NumPy and autograd as one); numbers do not."""
    numpy_shim, autograd_shim = backends.load("numpy"), backends.load("autograd")
    assert _call.travels(np.zeros(2), numpy_shim) and _call.travels(np.zeros(2), autograd_shim)
    for constant in (1.0, 3, np.float64(2.0), "a", None, [1.0, 2.0]):
        assert not _call.travels(constant, numpy_shim), constant
    torch = pytest.importorskip("torch")
    assert not _call.travels(torch.zeros(2), numpy_shim)
    assert _call.travels(torch.zeros(2), backends.load("torch"))
    assert not _call.travels(np.zeros(2), backends.load("torch"))


def test_extra_arrays_reach_the_solver_in_every_family(backend):
    """An extra array of θ's framework reaches the solver unchanged (through the custom VJP)."""
    seen = []

    def shifted_argmax(x, shift):
        seen.append(backend.to_numpy(shift))
        return diffopt.argmax_one_hot(x + shift)

    shift = backend.asarray(np.array([0.0, 0.0, 0.0, 10.0]))
    theta = backend.asarray(THETA)
    out_p = diffopt.perturbed(shifted_argmax, num_samples=3, sigma=0.01)(theta, shift, rng=0)
    out_i = imle(shifted_argmax)(theta, shift, rng=0)
    np.testing.assert_array_equal(backend.to_numpy(out_p)[:, 3], 1.0)
    np.testing.assert_array_equal(backend.to_numpy(out_i)[:, 3], 1.0)
    assert seen and all(np.array_equal(s, [0.0, 0.0, 0.0, 10.0]) for s in seen)


def test_the_instance_shape_check_is_shared():
    for call in (lambda t: diffopt.perturbed(diffopt.argmax_one_hot)(t), lambda t: imle(diffopt.argmax_one_hot)(t)):
        with pytest.raises(ValueError, match=r"theta has no entries per instance: shape \(2, 0\)"):
            call(np.zeros((2, 0)))


# --- host solvers: the solver's own exception, with a note ------------------------------------

NOT_POSITIVE = -np.stack([np.eye(3), np.eye(3)])  # Cholesky fails on instance 0


@pytest.mark.parametrize("kind", ["none", "threads", "processes"])
def test_a_host_solver_error_keeps_its_type_through_perturbed_on_torch(kind):
    torch = pytest.importorskip("torch")
    pool = {"none": None, "threads": ThreadPoolExecutor(2), "processes": ProcessPoolExecutor(2)}[kind]
    try:
        cholesky = diffopt.host_solver(np.linalg.cholesky, vectorized=False, executor=pool)
        op = diffopt.perturbed(cholesky, num_samples=2, sigma=1e-3)
        with pytest.raises(np.linalg.LinAlgError, match="Matrix is not positive definite") as info:
            op(torch.tensor(NOT_POSITIVE), rng=0)
        assert "raised by host solver cholesky on instance 0" in info.value.__notes__
        good = torch.tensor(-NOT_POSITIVE)
        np.testing.assert_allclose(op(good, rng=0).numpy(), np.stack([np.eye(3)] * 2), atol=1e-2)
    finally:
        if pool is not None:
            pool.shutdown()


def test_a_solver_s_own_exception_class_is_kept():
    class Infeasible(Exception):
        pass

    def refuse(row):
        raise Infeasible("no feasible point")

    solver = diffopt.host_solver(refuse, vectorized=False, executor=ThreadPoolExecutor(1))
    with pytest.raises(Infeasible, match="no feasible point") as info:
        diffopt.perturbed(solver, num_samples=2)(THETA, rng=0)
    assert info.value.__notes__ == ["raised by host solver refuse on instance 0"]


# --- make_perturbed_fun --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, 1.5, ()])
def test_make_perturbed_fun_names_a_fun_returning_no_array(bad):
    def forgets_to_return(x):
        return bad

    fn = diffopt.make_perturbed_fun(forgets_to_return, num_samples=3)
    with pytest.raises(TypeError, match=f"fun forgets_to_return must return an array or a pytree .* got "
                                        f"{type(bad).__name__}"):
        fn(0, np.array([1.0, 2.0]))


# --- pickling decorated module-level functions by reference ------------------------------------


@diffopt.perturbed(num_samples=20, sigma=0.5)
def pickled_argmax(x):
    return diffopt.argmax_one_hot(x)


@imle(nb_samples=2)
def pickled_imle_argmax(x):
    return diffopt.argmax_one_hot(x)


def _pickled_fun(x):
    return np.max(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("wrapper", [pickled_argmax, pickled_imle_argmax])
def test_a_decorated_module_function_pickles_by_reference(wrapper):
    assert pickle.loads(pickle.dumps(wrapper)) is wrapper
    with ProcessPoolExecutor(1) as pool:
        remote = pool.submit(wrapper, THETA, rng=0).result()
    np.testing.assert_array_equal(remote, wrapper(THETA, rng=0))


def test_an_undecorated_wrapper_still_pickles_by_value():
    op = diffopt.perturbed(_pickled_fun, num_samples=5)
    copy = pickle.loads(pickle.dumps(op))
    assert copy is not op and copy.fn is _pickled_fun
    np.testing.assert_array_equal(copy(THETA, rng=0), op(THETA, rng=0))


# --- NumPy scalars as numbers -----------------------------------------------------------------


@pytest.mark.parametrize("sigma", [np.float64(0.5), np.float32(0.5)])
def test_a_numpy_scalar_sigma_is_a_number_on_every_backend(backend, sigma):
    theta = backend.asarray(THETA)
    reference = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=50, sigma=0.5)
    op = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=50, sigma=sigma)
    np.testing.assert_array_equal(backend.to_numpy(op(theta, rng=0)), backend.to_numpy(reference(theta, rng=0)))
    if backend.has_grad:
        weights = backend.asarray(np.arange(8.0).reshape(2, 4))
        grads = [backend.to_numpy(backend.grad(lambda t: do("sum", f(t, rng=0) * weights), theta))
                 for f in (op, reference)]
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


# --- one way to register forward and backward -------------------------------------------------

def _custom_vjp_calls(path):
    """``(line, source)`` of every call ``<something>.custom_vjp(...)`` in the file ``path``."""
    import ast

    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "custom_vjp"]


def test_every_family_registers_its_derivative_through_one_entry_point():
    """Outside the shims, only ``diffopt._call.differentiable`` calls a shim's ``custom_vjp``."""
    import os

    root = os.path.dirname(diffopt.__file__)
    direct, users = [], set()
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if not name.endswith(".py") or rel.startswith("backends") or rel == "_call.py":
                continue
            direct += [f"{rel}:{line}" for line in _custom_vjp_calls(path)]
            with open(path, encoding="utf-8") as f:
                if "differentiable(" in f.read():
                    users.add(rel.split(os.sep)[0])
    assert direct == []
    assert _custom_vjp_calls(os.path.join(root, "_call.py"))  # the entry point itself
    assert {"perturbations", "imle", "dfl", "sorting"} <= users


def test_every_estimator_family_goes_through_the_entry_point_at_run_time(monkeypatch):
    """A shim's ``custom_vjp`` is called from ``diffopt/_call.py`` only (recorded on one call of each)."""
    import sys

    shim = backends.get_backend(THETA)
    callers, original = [], shim.custom_vjp

    def recording(*args, **kwargs):
        callers.append(sys._getframe(1).f_code.co_filename)
        return original(*args, **kwargs)

    monkeypatch.setattr(shim, "custom_vjp", recording)
    for call in _families(diffopt.argmax_one_hot).values():
        call(THETA)
    diffopt.FenchelYoungLoss(diffopt.argmax_one_hot, num_samples=3)(THETA, THETA, rng=0)
    assert len(callers) == 5
    assert {c.replace("\\", "/").rsplit("/", 2)[-2:] == ["diffopt", "_call.py"] for c in callers} == {True}


@pytest.mark.parametrize("bad", [None, "yes", 1])
def test_the_entry_point_names_a_bad_second_order(bad):
    shim = backends.get_backend(THETA)
    with pytest.raises(TypeError, match="second_order must be a bool or a SecondOrder"):
        _call.differentiable(shim, lambda x: (x, ()), lambda r, g: (g,), second_order=bad)


def _scalar_parameter_cases(v):
    """``name -> f(x)`` for each public number parameter set to ``v`` (x: a [2, 4] batch)."""
    from diffopt import sorting as S
    from diffopt.imle import SumOfGammaNoiseDistribution, TargetDistribution, aimle, ste

    top2 = lambda t: diffopt.top_k_mask(t, 2)  # noqa: E731
    return {
        "perturbed sigma": lambda x: diffopt.perturbed(diffopt.argmax_one_hot, num_samples=3, sigma=v)(x, rng=0),
        "perturbed_max sigma": lambda x: diffopt.perturbed_max(diffopt.argmax_one_hot, num_samples=3, sigma=v)(x, rng=0),
        "FenchelYoungLoss sigma": lambda x: diffopt.FenchelYoungLoss(diffopt.argmax_one_hot, num_samples=3, sigma=v)(
            x, x, rng=0),
        "soft_sort temperature": lambda x: S.soft_sort(x, temperature=v),
        "soft_topk temperature": lambda x: S.soft_topk(x, 2, temperature=v),
        "projection_rank regularization_strength": lambda x: S.projection_rank(x, regularization_strength=v),
        "diff_argsort sigma": lambda x: S.diff_argsort(S.bitonic_matrices(4), x[0], sigma=v),
        "imle temperatures": lambda x: imle(top2, input_noise_temperature=v, target_noise_temperature=v)(x, rng=0),
        "imle alpha, beta": lambda x: imle(top2, TargetDistribution(alpha=v, beta=v))(x, rng=0),
        "imle sum-of-gamma k": lambda x: imle(top2, noise_distribution=SumOfGammaNoiseDistribution(k=v))(x, rng=0),
        "aimle temperature": lambda x: aimle(top2, input_noise_temperature=v)(x, rng=0),
        "ste temperature": lambda x: ste(top2, noise_temperature=v)(x, rng=0),
        "blackbox lambd": lambda x: diffopt.blackbox(diffopt.argmax_one_hot, lambd=v, minimize=True)(x),
    }


@pytest.mark.parametrize("scalar", [np.float32, np.float64, np.int64])
def test_every_number_parameter_takes_a_numpy_scalar_on_every_backend(backend, scalar):
    """A NumPy scalar (``np.float32(1)``, ``np.int64(1)``) is the number it holds for every number
    parameter of every family, on every backend: the same values as with the Python float."""
    x = backend.asarray(np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 0.0, -0.5, 0.25]]))
    with_numpy = _scalar_parameter_cases(scalar(1))
    for name, f in _scalar_parameter_cases(1.0).items():
        np.testing.assert_array_equal(backend.to_numpy(with_numpy[name](x)), backend.to_numpy(f(x)), err_msg=name)
