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
