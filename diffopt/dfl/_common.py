"""Validation and solver calls shared by the decision-focused estimators (autoray only)."""

import math

from diffopt import _call
from diffopt._arrays import shape_of
from diffopt._call import cast
from diffopt._checks import check_choice, check_floating, check_min_rank
from diffopt._dtypes import compute_dtype

REDUCTIONS = ("mean", "sum", "none")


def check_solver(solver):
    """The solver must be callable."""
    if not callable(solver):
        raise TypeError(f"solver must be callable (solver(costs) -> decisions), got {type(solver).__name__}")
    return solver


def check_sense(minimize):
    """``minimize`` must be a bool: the sign of every estimator depends on it."""
    if not isinstance(minimize, bool):
        raise TypeError(f"minimize must be True (the solver minimises ⟨costs, w⟩) or False (it maximises), "
                        f"got {minimize!r}")
    return minimize


def check_reduction(reduction):
    return check_choice("reduction", reduction, REDUCTIONS)


def check_costs(name, x, rank=1):
    """A floating array with at least ``rank`` dimensions."""
    check_floating(name, x)
    why = " (a leading batch axis [B, ...])" if rank > 1 else ""
    return check_min_rank(name, x, rank, why)


def check_like(name, x, ref_name, ref):
    """``x`` must be an array shaped like ``ref``."""
    if not hasattr(x, "shape"):
        raise TypeError(f"{name} must be an array shaped like {ref_name}, got {type(x).__name__}")
    if shape_of(x) != shape_of(ref):
        raise ValueError(f"{name} must have {ref_name}'s shape {shape_of(ref)}, got {shape_of(x)}")
    return x


def check_objective(name, z, ref_name, ref):
    """``z`` holds one objective per instance: shape ``[B]`` or ``[B, 1]``."""
    if not hasattr(z, "shape"):
        raise TypeError(f"{name} must be an array of one objective per instance, got {type(z).__name__}")
    batch = shape_of(ref)[0]
    if shape_of(z) not in ((batch,), (batch, 1)):
        raise ValueError(f"{name} must have shape ({batch},) or ({batch}, 1) (one objective per instance "
                         f"of {ref_name}), got {shape_of(z)}")
    return z


def rowsum(x, xp):
    """Sum over all axes but the first: ``[B, ...]`` → ``[B]``."""
    return xp.sum(xp.reshape(x, (-1, math.prod(shape_of(x)[1:]))), axis=-1)


def solve(solver, costs, shim, xp):
    """``solver(costs)``, checked (:func:`diffopt._call.call_solver`) to be one decision per
    instance, shaped like the costs, in their dtype."""
    return _call.call_solver("solver", solver, costs, (), {}, shim, xp, xp.get_dtype_name(costs), expect="like")


def work_dtype(x, xp):
    """The dtype sums are made in: float32 for half-precision inputs."""
    return compute_dtype(xp.get_dtype_name(x))
