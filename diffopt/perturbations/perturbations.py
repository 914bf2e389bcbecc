"""Drop-in for the ``perturbations`` package's ``perturbations`` module.

``from perturbations import perturbations`` becomes
``from diffopt.perturbations import perturbations``.
"""

from diffopt.perturbations._perturbed import perturbed

__all__ = ["perturbed"]
