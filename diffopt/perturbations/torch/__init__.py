"""Drop-in for the PyTorch port of ``perturbations`` (tuero/perturbations-differential-pytorch).

The port's two top-level modules: ``import perturbations`` becomes
``from diffopt.perturbations.torch import perturbations`` and
``import fenchel_young`` becomes ``from diffopt.perturbations.torch import fenchel_young``.
Nothing here imports torch; the functions work on arrays of every framework.
"""

from diffopt.perturbations.torch import fenchel_young, perturbations

__all__ = ["perturbations", "fenchel_young"]
