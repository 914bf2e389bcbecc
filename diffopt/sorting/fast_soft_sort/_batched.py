"""``soft_rank`` / ``soft_sort`` with fast-soft-sort's signature, for every framework."""

from diffopt.sorting._projection import projection_rank, projection_sort

__all__ = ["soft_rank", "soft_sort", "check_direction"]


def check_direction(direction):
    """``True`` for ``'DESCENDING'``; a ``ValueError`` for anything but ``'ASCENDING'``/``'DESCENDING'``."""
    if direction not in ("ASCENDING", "DESCENDING"):
        raise ValueError(f"direction should be either 'ASCENDING' or 'DESCENDING', got {direction!r}")
    return direction == "DESCENDING"


def soft_rank(values, direction="ASCENDING", regularization_strength=1.0, regularization="l2"):
    """Soft ranks (1-based) along the last axis (see :func:`diffopt.sorting.projection_rank`)."""
    descending = check_direction(direction)
    return projection_rank(values, -1, regularization_strength=regularization_strength,
                           regularization=regularization, descending=descending) + 1.0


def soft_sort(values, direction="ASCENDING", regularization_strength=1.0, regularization="l2"):
    """Soft sort along the last axis (see :func:`diffopt.sorting.projection_sort`)."""
    return projection_sort(values, -1, regularization_strength=regularization_strength, regularization=regularization,
                           descending=check_direction(direction))
