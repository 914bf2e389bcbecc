"""Drop-in for the TensorFlow ``perturbations`` package's ``fenchel_young`` module.

``from perturbations import fenchel_young`` becomes
``from diffopt.perturbations import fenchel_young``. Its
``FenchelYoungLoss`` keeps the original's Keras calling convention,
``loss(y_true, y_pred)``, and value (‖y_σ(θ) − y‖², summed over the batch),
and works in ``model.compile(loss=...)``. The PyTorch port's module, called
``loss(theta, y_true)``, is :mod:`diffopt.perturbations.torch.fenchel_young`;
the modern :class:`diffopt.FenchelYoungLoss` returns the true Fenchel-Young loss.
"""

from diffopt.perturbations import perturbations
from diffopt.perturbations._dropin import KerasFenchelYoungLoss as FenchelYoungLoss

__all__ = ["FenchelYoungLoss", "perturbations"]
