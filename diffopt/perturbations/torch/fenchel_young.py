"""Drop-in for the PyTorch port's ``fenchel_young`` module.

Its ``FenchelYoungLoss`` keeps the port's calling convention,
``loss(input_tensor, y_true, *args)``, and value (‖y_σ(θ) − y‖² per instance,
unreduced). The TensorFlow package's Keras loss, called ``loss(y_true,
y_pred)``, is :mod:`diffopt.perturbations.fenchel_young`.
"""

from diffopt.perturbations._dropin import TorchFenchelYoungLoss as FenchelYoungLoss
from diffopt.perturbations.torch import perturbations

__all__ = ["FenchelYoungLoss", "perturbations"]
