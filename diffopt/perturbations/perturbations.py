"""Drop-in for the TensorFlow ``perturbations`` package's ``perturbations`` module.

``from perturbations import perturbations`` becomes
``from diffopt.perturbations import perturbations``. ``perturbed`` works on
arrays of every framework; ``sample_noise_with_gradients(noise, shape)``
draws TensorFlow tensors, as the original (``like=`` picks another framework).
"""

from diffopt.perturbations._dropin import _GUMBEL, _NORMAL, SUPPORTED_NOISES, noise_sampler
from diffopt.perturbations._perturbed import perturbed

sample_noise_with_gradients = noise_sampler("tensorflow")
sample_noise_with_gradients.__module__ = __name__

__all__ = ["perturbed", "sample_noise_with_gradients", "SUPPORTED_NOISES", "_GUMBEL", "_NORMAL"]
