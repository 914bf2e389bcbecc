"""The SPO+ loss (Elmachtoub & Grigas, "Smart 'Predict, then Optimize'", Management Science 2022)."""

from __future__ import annotations

from typing import Callable

from diffopt._call import differentiable, resolve
from diffopt._typing import Array, Solver
from diffopt.dfl import _common

__all__ = ["spo_plus_loss"]


class _SPOPlus:
    """The (forward, backward) pair of one call: arrays in, arrays out, autoray only."""

    def __init__(self, solver, minimize, backend, xp, dtype, shape):
        self.solver, self.backend, self.xp = solver, backend, xp
        self.sign = 1.0 if minimize else -1.0
        self.dtype, self.shape = dtype, shape
        self.n_data = 3

    def fwd(self, theta, c, w, z=None):
        xp = self.xp
        cd = _common.work_dtype(theta, xp)
        t, c, w = (_common.cast(a, cd, xp) for a in (theta, c, w))
        z = _common.rowsum(c * w, xp) if z is None else xp.reshape(_common.cast(z, cd, xp), (-1,))
        q = 2.0 * t - c
        w_hat = _common.solve(self.solver, q, self.backend, xp)
        # minimisation: −min_w⟨2θ̂ − c, w⟩ + 2⟨θ̂, w*⟩ − z*; maximisation: the same with every sign flipped
        loss = self.sign * (2.0 * _common.rowsum(t * w, xp) - _common.rowsum(q * w_hat, xp) - z)
        return _common.cast(loss, self.dtype, xp), (w - w_hat,)

    def bwd(self, res, g):
        (diff,) = res
        xp = self.xp
        g = _common.cast(g, xp.get_dtype_name(diff), xp)
        g = xp.reshape(g, (-1,) + (1,) * (len(self.shape) - 1))
        grad = _common.cast((2.0 * self.sign) * g * diff, self.dtype, xp)
        return (grad,) + (None,) * self.n_data


def spo_plus_loss(solver: Solver, *, minimize: bool, reduction: str = 'mean') -> Callable[..., Array]:
    r"""The SPO+ loss of a linear optimisation problem, differentiable in the predicted costs.

    For a minimisation problem ``w*(c) = argmin_w ⟨c, w⟩`` the SPO+ loss of
    the prediction ``θ̂`` for the true costs ``c`` (optimal decision ``w*``,
    objective ``z* = ⟨c, w*⟩``) is

    .. math:: \ell(\hat\theta, c) = -\min_w \langle 2\hat\theta - c, w\rangle
              + 2\langle\hat\theta, w^*\rangle - z^*,

    a convex upper bound of the regret ``⟨c, w*(θ̂)⟩ − z*``, with subgradient
    ``2(w* − w*(2θ̂ − c))``. For maximisation every sign flips: the loss is
    ``max_w ⟨2θ̂ − c, w⟩ − 2⟨θ̂, w*⟩ + z*`` and the subgradient
    ``2(w*(2θ̂ − c) − w*)`` (PyEPO's ``SPOPlus`` conventions). One solver call
    per loss evaluation, none in the backward pass.

    Parameters
    ----------
    solver : callable
        ``solver(costs) -> decisions`` (see :mod:`diffopt.dfl`).
    minimize : bool
        Whether ``solver`` minimises ``⟨costs, w⟩`` (required: the sign of the loss depends on it).
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        Over the batch.

    Returns
    -------
    callable
        ``loss(theta_pred, c_true, w_true, z_true=None)``: ``theta_pred``,
        ``c_true``, ``w_true`` ``[B, ...]`` of one shape, ``z_true`` ``[B]``
        or ``[B, 1]`` (default ``⟨c_true, w_true⟩``). The gradient flows to
        ``theta_pred`` only (the others are data).

    Raises
    ------
    TypeError, ValueError
        If ``solver`` is not callable, ``minimize`` not a bool or ``reduction`` unknown; when
        called, for arrays of another shape than ``theta_pred`` (each named in the message).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import argmax_one_hot, spo_plus_loss
    >>> cheapest = lambda c: argmax_one_hot(-c)  # a minimising solver: one-hot of the cheapest item
    >>> loss = spo_plus_loss(cheapest, minimize=True)
    >>> c = np.array([[1.0, 2.0, 3.0]])
    >>> w = cheapest(c)
    >>> float(loss(c, c, w))  # a perfect prediction costs nothing
    0.0
    >>> float(loss(np.array([[3.0, 1.0, 2.0]]), c, w))  # >= the regret, 1
    5.0
    """
    _common.check_solver(solver)
    _common.check_sense(minimize)
    reduction = _common.check_reduction(reduction)

    def loss(theta_pred, c_true, w_true, z_true=None):
        backend, xp = resolve(theta_pred, c_true, w_true, z_true,
                              argnames=("theta_pred", "c_true", "w_true", "z_true"))
        _common.check_costs("theta_pred", theta_pred, rank=2)
        _common.check_like("c_true", c_true, "theta_pred", theta_pred)
        _common.check_like("w_true", w_true, "theta_pred", theta_pred)
        if z_true is not None:
            _common.check_objective("z_true", z_true, "theta_pred", theta_pred)
        op = _SPOPlus(solver, minimize, backend, xp, xp.get_dtype_name(theta_pred), _common.shape_of(theta_pred))
        arrays = (theta_pred, c_true, w_true) + (() if z_true is None else (z_true,))
        op.n_data = len(arrays) - 1
        losses = differentiable(backend, op.fwd, op.bwd)(*arrays)
        if reduction == "none":
            return losses
        return getattr(xp, reduction)(losses)

    loss.__doc__ = f"SPO+ loss of {getattr(solver, '__name__', 'solver')} (minimize={minimize})."
    return loss
