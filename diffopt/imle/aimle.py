"""Drop-in path for the adaptive variant's ``imle.aimle`` module."""

from diffopt.imle.wrapper import aimle

__all__ = ["aimle"]
