"""Drop-in for ``jaxopt.perturbations`` (jaxopt is deprecated), on arrays of every framework.

``from jaxopt import perturbations`` becomes
``from diffopt.perturbations import jaxopt as perturbations``: the same
functions, signatures and calling convention ``fn(inputs, rng)`` (the
instance first, then the key; unbatched, ``jax.vmap`` it over a batch as with
jaxopt).

- :func:`make_perturbed_argmax`: y_σ(θ) = E[argmax_fun(θ + σZ)], its Jacobian
  by the score function (1/σ)·E[argmax_fun(θ + σZ) ∇ν(Z)ᵀ].
- :func:`make_perturbed_max`: F_σ(θ) = E[⟨θ + σZ, argmax_fun(θ + σZ)⟩],
  gradient y_σ(θ) (on the same samples).
- :func:`make_perturbed_fun`: y_σ for any ``fun`` (jaxopt's general form).
- :class:`Normal`, :class:`Gumbel`: the noises (:mod:`diffopt.noise`).

With ``control_variate=True`` the Jacobian subtracts ``argmax_fun(θ)`` from the
outputs, as jaxopt does.
"""

from __future__ import annotations

from typing import Any, Callable
import inspect

import autoray as ar

from diffopt._arrays import cast
from diffopt._ops import map_leading
from diffopt._typing import NoiseLike, RngLike, Solver
from diffopt.noise import Gumbel, Noise, Normal
from diffopt.perturbations._fenchel_young import perturbed_max
from diffopt.perturbations._fun import _positive, make_perturbed_fun as make_perturbed_fun_optax

__all__ = ["make_perturbed_argmax", "make_perturbed_max", "make_perturbed_fun", "Normal", "Gumbel"]


def make_perturbed_argmax(argmax_fun: Solver, num_samples: int = 1000, sigma: float = 0.1,
                          noise: NoiseLike = Gumbel(), control_variate: bool = False) -> Callable[[Any, RngLike], Any]:
    """The perturbed argmax y_σ(θ) = E[argmax_fun(θ + σZ)], differentiable (``jaxopt`` signature).

    Parameters
    ----------
    argmax_fun : callable
        ``argmax_fun(theta) -> y`` on one instance (``y`` of ``theta``'s shape).
    num_samples : int, default 1000
    sigma : float, default 0.1
    noise : Noise or str, default Gumbel()
        A :class:`diffopt.Noise` (this module's ``Normal()`` / ``Gumbel()``), or
        a noise of jaxopt's convention (``sample(seed, sample_shape)`` and
        ``log_prob``: jaxopt's own, ``distrax`` distributions; JAX inputs only).
    control_variate : bool, default False
        Subtract ``argmax_fun(theta)`` in the Jacobian estimate.

    Returns
    -------
    callable
        ``fn(inputs, rng)``: y_σ(inputs), differentiable in ``inputs``;
        ``rng`` a JAX key, an int seed, a framework generator or ``None``.

    Raises
    ------
    ValueError, TypeError
        As :func:`diffopt.perturbed` (bad ``sigma``, ``num_samples``, noise).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.perturbations import jaxopt as perturbations
    >>> one_hot = lambda x: np.eye(x.shape[-1])[np.argmax(x)]
    >>> fn = perturbations.make_perturbed_argmax(one_hot, num_samples=100, sigma=0.5)
    >>> y = fn(np.array([0.0, 1.0, 0.5]), 0)
    >>> y.shape, bool(np.isclose(y.sum(), 1.0))
    ((3,), True)
    """
    _check_fun("argmax_fun", argmax_fun, sigma)
    return _KeyLast(make_perturbed_fun_optax(argmax_fun, num_samples, sigma, _noise(noise), bool(control_variate)))


def make_perturbed_fun(fun: Solver, num_samples: int = 1000, sigma: float = 0.1,
                       noise: NoiseLike = Gumbel(), control_variate: bool = False) -> Callable[[Any, RngLike], Any]:
    """The perturbed function E[fun(θ + σZ)], differentiable (``jaxopt`` signature).

    As :func:`make_perturbed_argmax`, for any ``fun`` mapping one instance to
    an array of any shape.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.perturbations import jaxopt as perturbations
    >>> fn = perturbations.make_perturbed_fun(lambda x: np.maximum(x, 0.0), num_samples=100, sigma=0.1)
    >>> fn(np.array([-1.0, 2.0]), 0).shape
    (2,)
    """
    _check_fun("fun", fun, sigma)
    return _KeyLast(make_perturbed_fun_optax(fun, num_samples, sigma, _noise(noise), bool(control_variate)))


def make_perturbed_max(argmax_fun: Solver, num_samples: int = 1000, sigma: float = 0.1,
                       noise: NoiseLike = Gumbel()) -> Callable[[Any, RngLike], Any]:
    """The perturbed max F_σ(θ) = E[⟨θ + σZ, argmax_fun(θ + σZ)⟩] (``jaxopt`` signature).

    Its gradient is the perturbed argmax y_σ(θ), estimated on the same samples
    (the key ``rng`` given to both gives the same draws).

    Parameters
    ----------
    argmax_fun, num_samples, sigma, noise
        As :func:`make_perturbed_argmax`.

    Returns
    -------
    callable
        ``fn(inputs, rng)``: a scalar F_σ(inputs).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.perturbations import jaxopt as perturbations
    >>> one_hot = lambda x: np.eye(x.shape[-1])[np.argmax(x)]
    >>> fn = perturbations.make_perturbed_max(one_hot, num_samples=100, sigma=1e-6)
    >>> bool(np.isclose(fn(np.array([0.0, 1.0, 0.5]), 0), 1.0, atol=1e-4))
    True
    """
    _check_fun("argmax_fun", argmax_fun, sigma)
    wrapper = perturbed_max(_PerSample(argmax_fun), num_samples, sigma, _noise(noise), batched=False)
    return _KeyLast(lambda rng, inputs: wrapper(inputs, rng=rng))


def _noise(noise):
    """jaxopt's noise convention (``sample(seed, sample_shape)``, ``log_prob``: jaxopt's own
    classes, ``distrax`` distributions) as optax's (``sample(key, sample_shape, dtype)``), which
    :func:`diffopt.noise.get_noise` takes; anything else as it is."""
    sample = getattr(noise, "sample", None)
    if isinstance(noise, (str, type, Noise)) or not callable(sample) or not callable(getattr(noise, "log_prob", None)):
        return noise
    try:
        takes_seed = "seed" in inspect.signature(sample).parameters
    except (TypeError, ValueError):
        return noise
    return _SeedNoise(noise) if takes_seed else noise


class _SeedNoise:
    """A jaxopt-convention noise seen through optax's ``sample(key, sample_shape, dtype)``."""

    def __init__(self, noise):
        self.noise = noise
        self.name = type(noise).__name__

    def sample(self, key, sample_shape, dtype=None):
        z = self.noise.sample(seed=key, sample_shape=tuple(sample_shape))
        return z if dtype is None else z.astype(dtype)

    def log_prob(self, x):
        return self.noise.log_prob(x)


def _check_fun(name, fun, sigma):
    if not callable(fun):
        raise TypeError(f"{name} must be callable, got {type(fun).__name__}")
    _positive("sigma", sigma)


class _KeyLast:
    """``fn(inputs, rng)``: jaxopt's argument order over ``fn(rng, inputs)`` (optax's)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, inputs, rng=None):
        return self.fn(rng, inputs)


class _PerSample:
    """A solver on stacked samples ``[N, ...]`` applying ``fun`` to each (``jax.vmap`` for JAX,
    a loop elsewhere), its outputs cast to the samples' dtype."""

    def __init__(self, fun):
        self.fun = fun

    def __call__(self, xs):
        ys = map_leading(lambda sample: (self.fun(sample[0]),), (xs,), int(xs.shape[0]), like=xs)
        return cast(ys[0], ar.get_dtype_name(xs))
