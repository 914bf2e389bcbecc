"""Drop-in for ``torch-adaptive-imle``'s ``imle.imle`` module.

``from imle.imle import imle`` becomes ``from diffopt.imle.imle import imle``,
with that package's positional order (``nb_marginal_samples`` fifth,
``theta_noise_temperature`` sixth). Calling the module itself calls
:func:`diffopt.imle.imle`, so importing it does not change what the package
name ``diffopt.imle.imle`` does.
"""

from diffopt.imle import wrapper as _wrapper
from diffopt.imle._core import callable_module, warn_adaptive_scale

__all__ = ["imle"]


def _no_save_path(path):
    if path is not None:
        raise ValueError("_gradient_save_path is not supported by diffopt; read the gradient from the "
                         "framework's autodiff instead")


def imle(function=None, target_distribution=None, noise_distribution=None, nb_samples=1, nb_marginal_samples=1,
         theta_noise_temperature=1.0, target_noise_temperature=1.0, _gradient_save_path=None,
         _is_minimization=False):
    """:func:`diffopt.imle.imle` with ``torch-adaptive-imle``'s signature.

    ``theta_noise_temperature`` is ``input_noise_temperature`` and
    ``_is_minimization`` is ``minimize``; ``_gradient_save_path`` must be ``None``.
    Returns the same wrapper (it also takes ``rng=``).
    """
    _no_save_path(_gradient_save_path)
    warn_adaptive_scale(target_distribution, nb_samples, nb_marginal_samples)
    return _wrapper.imle(function, target_distribution, noise_distribution, nb_samples,
                         input_noise_temperature=theta_noise_temperature,
                         target_noise_temperature=target_noise_temperature,
                         nb_marginal_samples=nb_marginal_samples, minimize=_is_minimization)


callable_module(__name__, _wrapper.imle)
