"""Drop-in for ``torch-adaptive-imle``'s ``imle.aimle`` module.

``from imle.aimle import aimle`` becomes ``from diffopt.imle.aimle import aimle``,
with that package's positional order and default target
(``TargetDistribution(alpha=1.0, beta=1.0)``; pass an
``AdaptiveTargetDistribution`` for the adaptive step). Calling the module
itself calls :func:`diffopt.imle.aimle`, so importing it does not change what
the package name ``diffopt.imle.aimle`` does.
"""

from diffopt.imle import wrapper as _wrapper
from diffopt.imle._core import callable_module, warn_adaptive_scale
from diffopt.imle.target import TargetDistribution

__all__ = ["aimle"]


def aimle(function=None, target_distribution=None, noise_distribution=None, nb_samples=1, nb_marginal_samples=1,
          theta_noise_temperature=1.0, target_noise_temperature=1.0, symmetric_perturbation=False,
          _is_minimization=False):
    """:func:`diffopt.imle.aimle` with ``torch-adaptive-imle``'s signature and default target.

    ``theta_noise_temperature`` is ``input_noise_temperature`` and
    ``_is_minimization`` is ``minimize``. Without a target the original's
    ``TargetDistribution(alpha=1.0, beta=1.0)`` is used (the modern
    :func:`diffopt.imle.aimle` defaults to an adaptive one).
    """
    if target_distribution is None:
        target_distribution = TargetDistribution(alpha=1.0, beta=1.0)
    warn_adaptive_scale(target_distribution, nb_samples, nb_marginal_samples)
    return _wrapper.aimle(function, target_distribution, noise_distribution, nb_samples,
                          input_noise_temperature=theta_noise_temperature,
                          target_noise_temperature=target_noise_temperature,
                          nb_marginal_samples=nb_marginal_samples, minimize=_is_minimization,
                          symmetric_perturbation=symmetric_perturbation)


callable_module(__name__, _wrapper.aimle)
