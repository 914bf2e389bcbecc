"""Drop-in for the ``perturbations`` package's ``fenchel_young`` module.

``from perturbations import fenchel_young`` becomes
``from diffopt.perturbations import fenchel_young``.
"""

from diffopt.perturbations._fenchel_young import FenchelYoungLoss, perturbed_max

__all__ = ["FenchelYoungLoss", "perturbed_max"]
