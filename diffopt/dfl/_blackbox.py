"""Solvers with a surrogate gradient: blackbox differentiation (DBB) and the negative identity (NID)."""

from __future__ import annotations

from typing import Callable
import functools

from diffopt._call import differentiable, resolve
from diffopt._typing import Array, Solver
from diffopt._checks import check_positive
from diffopt.dfl import _common

__all__ = ["blackbox", "negative_identity"]


class _Solve:
    """Forward of both estimators: ``w(θ)`` in θ's dtype."""

    def __init__(self, solver, minimize, backend, xp, dtype):
        self.solver, self.backend, self.xp, self.dtype = solver, backend, xp, dtype
        self.sign = 1.0 if minimize else -1.0

    def _solve(self, theta):
        return _common.solve(self.solver, theta, self.backend, self.xp)


class _Blackbox(_Solve):
    def __init__(self, solver, minimize, backend, xp, dtype, lambd):
        super().__init__(solver, minimize, backend, xp, dtype)
        self.lambd = lambd

    def fwd(self, theta):
        w = self._solve(theta)
        return w, (theta, w)

    def bwd(self, res, g):
        theta, w = res
        # minimisation: θ' = θ + λ·g, gradient (w(θ') − w(θ))/λ = −(w(θ) − w(θ'))/λ;
        # maximisation: θ' = θ − λ·g, gradient (w(θ) − w(θ'))/λ (the solver of −θ minimises)
        step = (self.sign * self.lambd) * _common.cast(g, self.dtype, self.xp)
        w_shift = self._solve(theta + step)
        return ((w_shift - w) * (self.sign / self.lambd),)


class _NegativeIdentity(_Solve):
    def fwd(self, theta):
        return self._solve(theta), ()

    def bwd(self, res, g):
        return (_common.cast(g, self.dtype, self.xp) * (-self.sign),)


def _wrap(solver, make):
    @functools.wraps(solver)
    def wrapper(theta):
        backend, xp = resolve(theta, argnames=("theta",))
        _common.check_costs("theta", theta, rank=1)
        op = make(backend, xp, xp.get_dtype_name(theta))
        return differentiable(backend, op.fwd, op.bwd)(theta)

    return wrapper


def blackbox(solver: Solver, lambd: float = 10.0, *, minimize: bool) -> Callable[[Array], Array]:
    r"""The solver with the interpolation gradient of Vlastelica et al. (ICLR 2020, "DBB").

    Forward: the decision ``w(θ) = solver(θ)``. Backward, for the incoming
    gradient ``g = ∂L/∂w``: one more solver call at the shifted costs
    ``θ' = θ + λ·g`` and the gradient ``−(w(θ) − w(θ'))/λ`` -- the gradient
    of a piecewise-linear interpolation of ``L(w(θ))``. For a maximising
    solver the shift is ``θ' = θ − λ·g`` and the gradient ``(w(θ) − w(θ'))/λ``
    (it is the minimiser of ``−θ``; PyEPO's ``blackboxOpt`` conventions).

    Parameters
    ----------
    solver : callable
        ``solver(costs) -> decisions`` (see :mod:`diffopt.dfl`).
    lambd : float, default 10.0
        Interpolation strength ``λ > 0``, in cost units per unit of
        gradient; larger values smooth more (Vlastelica et al. use 10-20).
    minimize : bool
        Whether ``solver`` minimises ``⟨costs, w⟩``.

    Returns
    -------
    callable
        ``wrapper(theta)``: ``θ`` ``[B, ...]`` (floating) → ``w(θ)``, in θ's
        framework and dtype, differentiable.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import argmax_one_hot, blackbox
    >>> cheapest = lambda c: argmax_one_hot(-c)  # a minimising solver: one-hot of the cheapest item
    >>> blackbox(cheapest, lambd=10.0, minimize=True)(np.array([[3.0, 1.0, 2.0]]))
    array([[0., 1., 0.]])
    """
    _common.check_solver(solver)
    _common.check_sense(minimize)
    lambd = float(check_positive("lambd", lambd))
    return _wrap(solver, lambda backend, xp, dtype: _Blackbox(solver, minimize, backend, xp, dtype, lambd))


def negative_identity(solver: Solver, *, minimize: bool) -> Callable[[Array], Array]:
    r"""The solver with the negative-identity gradient of Sahoo et al. (TMLR 2023, "NID").

    Forward: the decision ``w(θ) = solver(θ)``. Backward: the Jacobian of the
    solver is replaced by ``−I`` for a minimising solver (raising a cost
    lowers its use) and ``+I`` for a maximising one: the gradient is
    ``−∂L/∂w`` (resp. ``+∂L/∂w``), with no solver call.

    Parameters
    ----------
    solver : callable
        ``solver(costs) -> decisions`` (see :mod:`diffopt.dfl`).
    minimize : bool
        Whether ``solver`` minimises ``⟨costs, w⟩``.

    Returns
    -------
    callable
        ``wrapper(theta)``, as :func:`blackbox`.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import argmax_one_hot, negative_identity
    >>> cheapest = lambda c: argmax_one_hot(-c)  # a minimising solver: one-hot of the cheapest item
    >>> negative_identity(cheapest, minimize=True)(np.array([[3.0, 1.0, 2.0]]))
    array([[0., 1., 0.]])
    """
    _common.check_solver(solver)
    _common.check_sense(minimize)
    return _wrap(solver, lambda backend, xp, dtype: _NegativeIdentity(solver, minimize, backend, xp, dtype))
