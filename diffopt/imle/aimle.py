"""Drop-in path for the adaptive variant's ``imle.aimle`` module.

The module is callable as :func:`diffopt.imle.aimle` itself, so importing it
does not shadow the package's ``aimle`` function.
"""

from diffopt.imle._core import callable_module
from diffopt.imle.wrapper import aimle

__all__ = ["aimle"]

callable_module(__name__)
