"""Drop-in path for ``torch-adaptive-imle``'s ``imle.imle`` module.

``from imle.imle import imle`` becomes ``from diffopt.imle.imle import imle``.
The module is callable as :func:`diffopt.imle.imle` itself, so importing it
does not shadow the package's ``imle`` function.
"""

from diffopt.imle._core import callable_module
from diffopt.imle.wrapper import imle

__all__ = ["imle"]

callable_module(__name__)
