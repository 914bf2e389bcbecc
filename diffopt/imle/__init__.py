"""Implicit MLE for every framework: :func:`imle`, :func:`aimle`, :func:`ste`.

Drop-in for ``torch-imle``: ``diffopt.imle.wrapper``, ``diffopt.imle.target``
and ``diffopt.imle.noise`` mirror ``imle.wrapper``, ``imle.target`` and
``imle.noise``; the same objects work on NumPy+autograd, torch, JAX and
TensorFlow arrays.

The package itself is callable: ``diffopt.imle(...)`` is ``diffopt.imle.imle(...)``
(the same call, as a function or a decorator), so ``diffopt.imle`` reads like
``diffopt.perturbed``; ``diffopt.imle.aimle``, ``diffopt.imle.ste`` and the
submodules are reached as attributes as before.

Examples
--------
>>> import numpy as np
>>> import diffopt
>>> top2 = diffopt.imle(lambda t: diffopt.top_k_mask(t, 2), nb_samples=3)
>>> top2(np.array([[0.5, 2.0, -1.0, 1.0]]))                    # no noise: 3 copies of the top 2
array([[0., 1., 0., 1.],
       [0., 1., 0., 1.],
       [0., 1., 0., 1.]])
"""

from diffopt.imle._core import callable_module
from diffopt.imle.noise import BaseNoiseDistribution, GumbelNoiseDistribution, SumOfGammaNoiseDistribution
from diffopt.imle.target import AdaptiveTargetDistribution, BaseTargetDistribution, TargetDistribution
# The drop-in modules ``diffopt.imle.imle`` and ``diffopt.imle.aimle`` are loaded
# first, so that the package names ``imle`` and ``aimle`` are bound to the
# functions below whatever the user imports later (a submodule imported for the
# first time would otherwise replace the package attribute of the same name).
from diffopt.imle import aimle as _aimle_module, imle as _imle_module  # noqa: F401  isort: skip
from diffopt.imle.wrapper import aimle, imle, ste  # isort: skip

__all__ = [
    "imle",
    "aimle",
    "ste",
    "BaseTargetDistribution",
    "TargetDistribution",
    "AdaptiveTargetDistribution",
    "BaseNoiseDistribution",
    "GumbelNoiseDistribution",
    "SumOfGammaNoiseDistribution",
]

# ``diffopt.imle(...)`` calls :func:`imle`: this package's module object becomes callable
# (the class of this one module only, the one the drop-in submodules use; nothing global).
callable_module(__name__, imle)
