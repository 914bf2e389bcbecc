"""Perturbed optimizers (Berthet et al., 2020) for arrays of every framework.

Drop-in for the TensorFlow ``perturbations`` package, its PyTorch port
(``perturbed``, ``FenchelYoungLoss``) and ``optax.perturbations``
(``make_perturbed_fun``, ``Gumbel``, ``Normal``): change the import line.

- :func:`perturbed`: y_σ(θ) = E[f(θ + σZ)], Jacobian by the score function
  (additive or multiplicative noise, control variates, chunked sampling).
- :func:`perturbed_max`: F_σ(θ) = E[max_y ⟨θ + σZ, y⟩], gradient y_σ(θ).
- :class:`FenchelYoungLoss`: F_σ(θ) − ⟨θ, y⟩, gradient y_σ(θ) − y.
- :func:`make_perturbed_fun`: ``fn(rng, x)`` on pytrees.

The originals' module names are kept: ``_GUMBEL``, ``_NORMAL``,
``SUPPORTED_NOISES`` and ``sample_noise_with_gradients(noise, shape)``
(NumPy draws here unless ``like=`` is given; TensorFlow in
:mod:`diffopt.perturbations.perturbations`, torch in
:mod:`diffopt.perturbations.torch.perturbations`).
"""

from diffopt.noise import Gumbel, Noise, Normal
from diffopt.perturbations._dropin import _GUMBEL, _NORMAL, SUPPORTED_NOISES, noise_sampler
from diffopt.perturbations._fenchel_young import FenchelYoungLoss, perturbed_max
from diffopt.perturbations._fun import make_perturbed_fun
from diffopt.perturbations._perturbed import perturbed

sample_noise_with_gradients = noise_sampler("numpy")
sample_noise_with_gradients.__module__ = __name__

__all__ = ["perturbed", "perturbed_max", "FenchelYoungLoss", "make_perturbed_fun", "Gumbel", "Normal", "Noise",
           "sample_noise_with_gradients", "SUPPORTED_NOISES"]
