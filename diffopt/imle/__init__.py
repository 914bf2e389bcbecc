"""Implicit MLE for every framework: :func:`imle`, :func:`aimle`, :func:`ste`.

Drop-in for ``torch-imle``: ``diffopt.imle.wrapper``, ``diffopt.imle.target``
and ``diffopt.imle.noise`` mirror ``imle.wrapper``, ``imle.target`` and
``imle.noise``; the same objects work on NumPy+autograd, torch, JAX and
TensorFlow arrays.
"""

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
