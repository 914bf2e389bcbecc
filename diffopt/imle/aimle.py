"""Drop-in path for the adaptive variant's ``imle.aimle`` module.

Importing this module makes Python bind ``diffopt.imle.aimle`` to it, shadowing
the function of the same name; the module is therefore callable and forwards
to :func:`diffopt.imle.wrapper.aimle`, so ``diffopt.imle.aimle(...)`` works
whether or not this module was imported.
"""

import sys
import types

from diffopt.imle.wrapper import aimle

__all__ = ["aimle"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return aimle(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
