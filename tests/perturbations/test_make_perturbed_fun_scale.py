"""``make_perturbed_fun(scale=)`` and its deprecated alias ``sigma=`` (optax #1342 / PR #1662)."""

import warnings

import autoray as ar
import numpy as np
import pytest
from scipy import integrate

import diffopt
from diffopt import make_perturbed_fun

N = 400
Z_TOL = 4.0


def relu_sum(x):
    return ar.do("sum", ar.do("maximum", x, 0.0 * x))


def _gumbel_relu_moments(scale, d):
    """Mean and std of Σ_i max(scale·Z_i, 0) over d standard Gumbel Z_i (quadrature)."""
    density = lambda z: np.exp(-z - np.exp(-z))  # noqa: E731
    m1 = integrate.quad(lambda z: z * density(z), 0, np.inf)[0]
    m2 = integrate.quad(lambda z: z * z * density(z), 0, np.inf)[0]
    return d * scale * m1, scale * np.sqrt(d * (m2 - m1**2))


@pytest.mark.parametrize("spelling", ["scale", "positional", "sigma"])
def test_the_noise_scale_is_used_under_each_spelling(backend, spelling):
    scale = 0.3  # not the default 0.1: the value must reach the estimator
    if spelling == "sigma":
        with pytest.warns(DeprecationWarning, match="sigma= is deprecated, use scale="):
            fn = make_perturbed_fun(relu_sum, N, sigma=scale)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # scale= warns about nothing
            fn = make_perturbed_fun(relu_sum, N, scale) if spelling == "positional" else \
                make_perturbed_fun(relu_sum, N, scale=scale)
    mean, std = _gumbel_relu_moments(scale, 3)
    out = float(backend.to_numpy(fn(0, backend.asarray(np.zeros(3), dtype="float32"))))
    assert abs(out - mean) < Z_TOL * std / np.sqrt(N)


def test_sigma_equals_scale_on_the_same_seed():
    x = np.array([0.2, -0.1, 0.4])
    with pytest.warns(DeprecationWarning):
        old = make_perturbed_fun(relu_sum, N, sigma=0.3)(5, x)
    new = make_perturbed_fun(relu_sum, N, scale=0.3)(5, x)
    assert float(old) == float(new)
    assert float(make_perturbed_fun(relu_sum, N, scale=0.6)(5, x)) != float(new)


@pytest.mark.parametrize("call", [
    lambda: make_perturbed_fun(relu_sum, N, scale=0.1, sigma=0.2),
    lambda: make_perturbed_fun(relu_sum, N, 0.3, sigma=0.2),
    lambda: diffopt.make_perturbed_fun(relu_sum, scale=0.1, sigma=0.1),
])
def test_both_spellings_is_a_type_error_naming_them(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an error, not a warning first
        with pytest.raises(TypeError, match="scale=.*sigma="):
            call()


def test_the_warning_points_at_the_caller_and_leaves_the_filters_alone():
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_perturbed_fun(relu_sum, N, sigma=0.2)
    assert [w.category for w in caught] == [DeprecationWarning]
    assert caught[0].filename == __file__
    assert warnings.filters == filters


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), float("inf")])
def test_bad_scale_is_named(bad):
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        make_perturbed_fun(relu_sum, N, scale=bad)
    with pytest.raises(ValueError, match="sigma must be a positive finite number"), pytest.warns(DeprecationWarning):
        make_perturbed_fun(relu_sum, N, sigma=bad)
