"""Mechanics shared by :func:`imle`, :func:`aimle` and :func:`ste` (autoray only).

Shapes: θ is ``[B, *inst]``; the solver sees ``[B·T, *inst]`` with
``T = nb_samples · nb_marginal_samples`` (instance-major: the ``T`` samples
of instance ``b`` are rows ``b·T … b·T+T-1``).
"""

import sys
import types
import warnings

from diffopt import _call
from diffopt._arrays import same_shape, size
from diffopt._call import cast
from diffopt._checks import check_floating, check_int, check_min_rank
from diffopt.noise import draw, get_sampler


# -- validation ----------------------------------------------------------------------
def check_function(function):
    """The solver must be callable."""
    if not callable(function):
        raise TypeError(f"function must be a callable solver, got {type(function).__name__}")
    return function


def check_noise(noise):
    """``None`` (no noise) or a noise object: ``sample(shape, like, rng)``, or
    ``torch-imle``'s ``sample(shape)`` (see :func:`diffopt.noise.get_sampler`)."""
    if noise is not None and not callable(getattr(noise, "sample", None)):
        raise TypeError(
            "noise_distribution must be None or a noise object with sample(shape, like, rng) "
            f"(e.g. diffopt.imle.SumOfGammaNoiseDistribution), got {type(noise).__name__}"
        )
    return noise if noise is None else get_sampler(noise, "noise_distribution")


def check_target(target):
    """An object with the :class:`~diffopt.imle.target.BaseTargetDistribution` interface."""
    for method in ("step", "params", "scale"):
        if not callable(getattr(target, method, None)):
            raise TypeError(
                "target_distribution must be a diffopt.imle.TargetDistribution or "
                f"AdaptiveTargetDistribution (missing {method}()), got {type(target).__name__}"
            )
    from diffopt.imle.target import BaseTargetDistribution

    if getattr(type(target), "step", None) is BaseTargetDistribution.step:
        raise TypeError(
            f"target_distribution {type(target).__name__} does not implement step(theta, dy, beta=None) "
            "(a target written for torch-imle, with params(theta, dy)/process(theta, dy, gradient) only, is "
            "not supported): implement step (the λ of θ' = αθ − λ·dy) and, if needed, scale(gradient, lam)"
        )
    return target


def check_samples(nb_samples, nb_marginal_samples=1):
    """Both counts are integers >= 1."""
    return check_int("nb_samples", nb_samples), check_int("nb_marginal_samples", nb_marginal_samples)


def check_theta(theta):
    """θ is a floating array with a leading batch axis; returns its ``(shim, xp)``
    (:func:`diffopt._call.resolve`)."""
    check_floating("theta", theta)
    check_min_rank("theta", theta, 1, " (a leading batch axis [B, ...])")
    _call.check_instance_shape("theta", tuple(theta.shape), 1)
    return _call.resolve(theta, argnames=("theta",))


# -- shapes --------------------------------------------------------------------------
class Layout:
    """Shapes of one call: batch ``B``, samples ``S``, marginal samples ``M``; ``xp`` the
    call's bound namespace."""

    def __init__(self, theta, nb_samples, nb_marginal, shim, xp):
        shape = tuple(theta.shape)
        self.xp = xp
        self.batch = shape[0]
        # the batch's size for noise draws: an int, or a traced size (an unknown Keras batch)
        self.batch_size = size(theta, 0, shim)
        self.inst = tuple(shape[1:])
        self.samples = nb_samples
        self.marginal = nb_marginal
        self.total = nb_samples * nb_marginal
        self.dtype = xp.get_dtype_name(theta)

    @property
    def noise_shape(self):
        """``[B, T, *inst]``."""
        return (self.batch_size, self.total) + self.inst

    def flat(self, x):
        """``[B, T, *inst]`` → ``[B·T, *inst]``."""
        return self.xp.reshape(x, (-1,) + self.inst)

    def split(self, x):
        """``[B·T, *inst]`` → ``[B, T, *inst]``."""
        return self.xp.reshape(x, (-1, self.total) + self.inst)

    def marginalise(self, x):
        """``[B, T, *inst]`` → ``[B, S, *inst]``, averaging the marginal samples."""
        if self.marginal == 1:
            return x
        x = self.xp.reshape(x, (-1, self.samples, self.marginal) + self.inst)
        return self.xp.mean(x, axis=2)

    def expand(self, theta):
        """θ ``[B, *inst]`` → ``[B, 1, *inst]``."""
        return self.xp.expand_dims(theta, 1)

    def repeat(self, theta):
        """θ ``[B, *inst]`` → ``[B, T, *inst]`` (each instance repeated ``T`` times)."""
        x = self.expand(theta)
        if self.total == 1:
            return x
        return self.xp.tile(x, (1, self.total) + (1,) * len(self.inst))


# -- noise ---------------------------------------------------------------------------
def sample_noise(noise, theta, layout, rng):
    """ε of shape ``[B, T, *inst]``: drawn from ``noise``, or zeros when it is ``None``."""
    if noise is None:
        return layout.xp.zeros_like(layout.repeat(theta))
    eps = draw(noise, layout.noise_shape, theta, rng)
    expected = (layout.batch, layout.total) + layout.inst  # static: None for an unknown batch
    if not same_shape(eps.shape, expected):
        raise ValueError(
            f"noise_distribution.sample returned shape {tuple(eps.shape)}, expected {expected}"
        )
    return cast(eps, layout.dtype, layout.xp)


# -- solver --------------------------------------------------------------------------
def solve_stacked(function, inputs, args, shim, xp, dtype):
    """Solve several ``[B·T, ...]`` inputs with ONE checked solver call on their concatenation
    (:func:`diffopt._call.call_solver`: one solution per row, shaped like its input, in θ's dtype)."""
    x = inputs[0] if len(inputs) == 1 else xp.concatenate(inputs, axis=0)
    z = _call.call_solver("function", function, x, args, {}, shim, xp, dtype, expect="like")
    if len(inputs) == 1:
        return [z]
    n = size(inputs[0], 0, shim)
    return [z[i * n:(i + 1) * n] for i in range(len(inputs))]


# -- the differentiable op -----------------------------------------------------------
def warn_frozen_state():
    """A traced backward cannot update a Python-held adaptive state."""
    warnings.warn(
        "AdaptiveTargetDistribution: the backward pass is being traced (jax.jit / tf.function), "
        "so beta cannot be updated in place and stays at its traced value; pass "
        "target_state=target.init_state(like) and use the gradient w.r.t. target_state as the "
        "new state (see diffopt.imle.AdaptiveTargetDistribution)",
        RuntimeWarning,
        stacklevel=3,
    )


class _CallableModule(types.ModuleType):
    """A drop-in module named like a function of the package (``imle.aimle.aimle``).

    Importing ``diffopt.imle.aimle`` rebinds the package attribute
    ``diffopt.imle.aimle`` from the function to the module; calling the
    module calls the package's function (not the module's drop-in one), so
    ``from diffopt.imle import aimle`` means the same either way.
    """

    _package_function = None

    def __call__(self, *args, **kwargs):
        return self._package_function(*args, **kwargs)


def callable_module(name, package_function):
    """Make the module ``name`` callable as ``package_function``."""
    module = sys.modules[name]
    module.__class__ = _CallableModule
    module._package_function = staticmethod(package_function).__func__


def warn_adaptive_scale(target, nb_samples, nb_marginal_samples):
    """The drop-in paths warn where diffopt's adaptive step deliberately differs from torch-adaptive-imle's."""
    total = nb_samples * nb_marginal_samples
    if getattr(target, "adaptive", False) and isinstance(total, int) and total > 1:
        warnings.warn(
            f"AdaptiveTargetDistribution with S={total} samples per instance: diffopt takes the norms of "
            "λ = β‖θ‖/‖dy‖ over the whole [B·S, ...] stack, so its λ is √S times torch-adaptive-imle's "
            "(which uses ‖θ‖ of the unrepeated θ) and does not change with S; see the README's "
            "compatibility table",
            UserWarning,
            stacklevel=3,
        )
