"""Implicit MLE for every framework: :func:`imle`, :func:`aimle`, :func:`ste`.

Drop-in for ``torch-imle``: ``diffopt.imle.wrapper``, ``diffopt.imle.target``
and ``diffopt.imle.noise`` mirror ``imle.wrapper``, ``imle.target`` and
``imle.noise``; the same objects work on NumPy+autograd, torch, JAX and
TensorFlow arrays.
"""

from diffopt.imle.noise import BaseNoiseDistribution, GumbelNoiseDistribution, SumOfGammaNoiseDistribution
from diffopt.imle.target import AdaptiveTargetDistribution, BaseTargetDistribution, TargetDistribution
from diffopt.imle.wrapper import aimle, imle, ste

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
