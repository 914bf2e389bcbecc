"""Edge cases on every backend: non-finite parameters, NaN rows, empty and degenerate inputs,
dtypes, threads, pickling, seeds, executors (README "Edge cases")."""

import math

import autoray as ar
import numpy as np
import pytest

import diffopt
from diffopt import imle as imle_mod
from diffopt.sorting import soft_permutation, soft_rank, soft_sort, soft_topk

INF, NAN = float("inf"), float("nan")
X = np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 0.0, -0.5, 0.25]])


def top2(x):
    return diffopt.top_k_mask(x, 2)


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


@pytest.mark.parametrize("sigma", [0.0, -1.0, INF, NAN])
def test_diff_argsort_sigma_must_be_positive(backend, sigma):
    from diffopt.sorting import bitonic_matrices, diff_argsort

    x = backend.asarray([0.5, -1.0, 2.0, 0.0], "float32")
    with pytest.raises(ValueError, match=r"\bsigma\b"):
        diff_argsort(bitonic_matrices(4), x, sigma=sigma)



def test_importing_the_aimle_module_keeps_aimle_callable():
    import diffopt.imle.aimle  # noqa: F401  (binds diffopt.imle.aimle to the module)

    op = imle_mod.aimle(top2, input_noise_temperature=0.0)
    np.testing.assert_array_equal(op(X, rng=0), top2(X))


# ------------------------------------------------------------------ NaN inputs

_NAN_OPS = {
    "soft_sort": lambda x: soft_sort(x, temperature=0.5),
    "soft_rank": lambda x: soft_rank(x, temperature=0.5),
    "soft_topk": lambda x: soft_topk(x, 2, temperature=0.5),
    "soft_permutation": lambda x: soft_permutation(x, temperature=0.5),
    "perturbed": lambda x: diffopt.perturbed(diffopt.argmax_one_hot, num_samples=8, sigma=0.5)(x, rng=1),
    "perturbed_max": lambda x: diffopt.perturbed_max(diffopt.argmax_one_hot, num_samples=8, sigma=0.5)(x, rng=1),
    "fenchel_young": lambda x: diffopt.FenchelYoungLoss(
        diffopt.argmax_one_hot, num_samples=8, sigma=0.5, reduction="none")(x, diffopt.argmax_one_hot(x * 0 + 1), rng=1),
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


def test_soft_rank_of_a_nan_row_is_nan_not_out_of_range(backend):
    ranks = backend.to_numpy(soft_rank(backend.asarray([NAN, 1.0, 0.0, 2.0, 3.0], "float32")))
    assert np.isnan(ranks).all(), ranks


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
    weights = grad_backend.asarray(np.arange(X.size).reshape(X.shape[0], -1)[:, : X.shape[1]] * 0.1, dtype)

    def loss(x):
        out = _DTYPE_OPS[name](x)
        return ar.do("sum", out * (weights if len(out.shape) == 2 else 1.0))

    g = grad_backend.grad(loss, grad_backend.asarray(X, dtype))
    assert ar.get_dtype_name(g) == dtype
    assert np.isfinite(grad_backend.to_numpy(g)).all()
