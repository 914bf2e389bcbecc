"""Argument validation shared by the estimators (raise before any work)."""

import math
import numbers

import autoray as ar

__all__ = [
    "check_positive", "check_nonnegative", "check_real", "check_int", "check_floating", "check_min_rank",
    "check_choice", "check_choice_or_none", "check_scale",
]


def check_real(name, value, minimum=None):
    """``value`` must be a finite real number (``>= minimum`` when given); returns it as a float.

    ``inf`` and ``nan`` are rejected: as a scale or temperature they turn every
    output into NaN or a constant without an error.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {name}={value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value!r}")
    return value


def check_positive(name, value):
    """``value`` must be a finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
    return value


def check_scale(name, value):
    """A number > 0 (returned as a float), or a floating scalar array > 0 (learnable: gets a gradient).

    An array's value is checked only where it is at hand: not traced by
    ``jax.jit`` or ``tf.function``, and on the host (reading a GPU scalar at
    every call would synchronise the device; there a value <= 0 is not caught). A NumPy
    scalar (``np.float64(0.5)``, a ``float`` subclass; ``np.float32``) is a number, on
    every framework.
    """
    if not hasattr(value, "shape") or isinstance(value, numbers.Real):
        return float(check_positive(name, value))
    from diffopt.backends import get_backend  # the checks are imported by the backends' users

    check_floating(name, value)
    if tuple(value.shape) != ():
        raise ValueError(f"{name} must be a number or a scalar array (shape ()), got shape {tuple(value.shape)}")
    shim = get_backend(value, argnames=(name,))
    on_device = getattr(shim, "on_device", None)
    if not shim.is_symbolic(value) and not (on_device and on_device(value)):
        check_positive(name, float(shim.to_numpy(value)))
    return value


def check_nonnegative(name, value):
    """``value`` must be a finite real number >= 0; returns it as a float."""
    return check_real(name, value, minimum=0.0)


def check_int(name, value, minimum=1):
    """``value`` must be an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value!r}")
    return int(value)


def check_floating(name, x):
    """``x`` must be an array of a floating dtype."""
    if not hasattr(x, "shape"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    dtype = ar.get_dtype_name(x)
    if not dtype.startswith(("float", "bfloat")):
        raise TypeError(f"{name} must have a floating dtype (e.g. float32), got {dtype}; cast it first")
    return x


def check_min_rank(name, x, rank, why=""):
    """``x`` must have at least ``rank`` dimensions."""
    if len(x.shape) < rank:
        raise ValueError(f"{name} must have at least {rank} dimension(s){why}, got shape {tuple(x.shape)}")
    return x


def check_choice(name, value, choices):
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {name}={value!r}")
    return value


def check_choice_or_none(name, value, choices):
    """``value`` must be ``None`` or one of ``choices``."""
    return value if value is None else check_choice(name, value, choices)


def check_sort_axis(x, axis):
    """``axis`` of ``x`` to sort along, as a non-negative int (``x`` needs a dimension)."""
    ndim = len(x.shape)
    if ndim == 0:
        raise ValueError("x must have at least one dimension to sort along, got a 0-d array")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -ndim <= axis < ndim:
        raise ValueError(f"axis must be an integer in [-{ndim}, {ndim}) for x of shape {tuple(x.shape)}, got axis={axis!r}")
    return int(axis) % ndim
