"""Regret of predicted costs: the extra true cost of the decisions they lead to."""

from __future__ import annotations

from diffopt._call import resolve
from diffopt._typing import Array, Solver
from diffopt.dfl import _common

__all__ = ["regret", "normalized_regret"]

#: Added to the denominator of :func:`normalized_regret`, as PyEPO does (``pyepo.utils._EPS``,
#: used by ``pyepo.metric.regret``; 1e-8 in PyEPO 2.2.7): a batch whose optimal objectives are
#: all 0 gives a finite value (0 when the regret is 0), not NaN.
EPS = 1e-8


def _parts(solver, theta_pred, c_true, z_true, minimize):
    """Per-instance regret ``[B]`` and the true optimal objectives ``[B]``, in the work dtype."""
    _common.check_solver(solver)
    _common.check_sense(minimize)
    backend, xp = resolve(theta_pred, c_true, z_true, argnames=("theta_pred", "c_true", "z_true"))
    _common.check_costs("theta_pred", theta_pred, rank=2)
    _common.check_costs("c_true", c_true, rank=2)
    _common.check_like("c_true", c_true, "theta_pred", theta_pred)
    if z_true is not None:
        _common.check_objective("z_true", z_true, "theta_pred", theta_pred)
    cd = _common.work_dtype(theta_pred, xp)
    c = _common.cast(c_true, cd, xp)
    w_hat = _common.cast(_common.solve(solver, theta_pred, backend, xp), cd, xp)
    if z_true is None:
        z = _common.rowsum(c * _common.solve(solver, c, backend, xp), xp)
    else:
        z = xp.reshape(_common.cast(z_true, cd, xp), (-1,))
    obj = _common.rowsum(c * w_hat, xp)
    return (obj - z if minimize else z - obj), z, xp


def regret(
    solver: Solver,
    theta_pred: Array,
    c_true: Array,
    z_true: Array | None = None,
    *,
    minimize: bool,
) -> Array:
    """Regret of each prediction: ``⟨c, w(θ̂)⟩ − z*`` (``z* − ⟨c, w(θ̂)⟩`` when maximising).

    Parameters
    ----------
    solver : callable
        ``solver(costs) -> decisions`` (see :mod:`diffopt.dfl`).
    theta_pred, c_true : arrays, shape [B, ...]
        Predicted and true costs.
    z_true : array, shape [B] or [B, 1], optional
        True optimal objectives; default: solved from ``c_true``.
    minimize : bool
        Whether ``solver`` minimises.

    Returns
    -------
    array, shape [B]
        In ``theta_pred``'s framework (float32 for half-precision input); ``>= 0``
        when the solver is exact. Ties in ``w(θ̂)`` are broken by the solver.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import argmax_one_hot, regret
    >>> cheapest = lambda c: argmax_one_hot(-c)  # a minimising solver: one-hot of the cheapest item
    >>> c_true = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    >>> theta = np.array([[3.0, 1.0, 2.0], [0.0, 9.0, 9.0]])
    >>> regret(cheapest, theta, c_true, minimize=True)  # cost 2 instead of 1; optimal
    array([1., 0.])
    """
    r, _, _ = _parts(solver, theta_pred, c_true, z_true, minimize)
    return r


def normalized_regret(solver: Solver, theta_pred: Array, c_true: Array, z_true: Array | None = None, *,
                      minimize: bool) -> Array:
    """Normalised regret of a batch: ``Σ_i regret_i / (Σ_i |z*_i| + ε)`` (PyEPO's ``regret``).

    Same arguments as :func:`regret`; returns a scalar array. ``ε`` is :data:`EPS`
    (1e-8, PyEPO's): when every optimal objective is 0 the value stays finite
    (0 for no regret) instead of NaN.

    Parameters
    ----------
    solver, theta_pred, c_true, z_true, minimize
        As in :func:`regret`.

    Returns
    -------
    array, shape []
        The batch's normalised regret, in ``theta_pred``'s framework.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import argmax_one_hot, normalized_regret
    >>> cheapest = lambda c: argmax_one_hot(-c)  # a minimising solver: one-hot of the cheapest item
    >>> c_true, theta = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), np.array([[3.0, 1.0, 2.0], [0.0, 9.0, 9.0]])
    >>> round(float(normalized_regret(cheapest, theta, c_true, minimize=True)), 6)  # (1 + 0) / (1 + 4 + 1e-8)
    0.2
    """
    r, z, xp = _parts(solver, theta_pred, c_true, z_true, minimize)
    return xp.sum(r) / (xp.sum(xp.abs(z)) + EPS)
