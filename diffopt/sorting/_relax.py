"""Relaxed compare-and-swap.

For inputs ``a, b`` with gap ``v = |a - b| / T`` (``T`` the temperature, in data
units) every relaxation here is

    lo = min(a, b) + T * shift(v)        hi = max(a, b) - T * shift(v)

so ``lo + hi = a + b`` and the pair keeps its order. Two more functions of ``v``
describe it:

``slope(v)``
    ``shift'(v)``; the Jacobian of ``(lo, hi)`` with respect to
    ``(smaller, larger)`` input is ``[[1 - slope, slope], [slope, 1 - slope]]``.
``leak(v)``
    The weight with which the larger input enters ``lo`` when the comparator is
    read as a mixing ``lo = (1 - leak) * smaller + leak * larger`` (a doubly
    stochastic 2x2 matrix: relaxed permutation matrices, ranks and top-k are
    products of these).

Names
-----
``'logsumexp'``
    ``hi = T * log(exp(a/T) + exp(b/T))`` (the ``differentiable_sorting`` network):
    ``shift = -log1p(exp(-v))``, ``leak = slope = sigmoid(-v)``.
``'logistic'``, ``'cauchy'``, ``'reciprocal'``, ``'optimal'``
    Mixing with a sigmoid ``f``: ``lo = f(v) * smaller + (1 - f(v)) * larger``
    (Petersen et al., *Differentiable Sorting Networks*, ICML 2021 and *Monotonic
    Differentiable Sorting Networks*, ICLR 2022): ``leak = 1 - f(v)``,
    ``shift = v * leak``. Cauchy, reciprocal and optimal are monotonic.
``None``
    The exact compare-and-swap.

Gaps that are not finite (a comparator with ``+-inf``, e.g. the padding of
:func:`diffopt.sorting.soft_sort`) are compared exactly.
"""

import math

import autoray as ar

from diffopt._ops import sigmoid

__all__ = ["RELAXATIONS", "check_relaxation", "relax_terms"]


def _logsumexp(v):
    e = ar.do("exp", -v)
    leak = e / (1.0 + e)
    return -ar.do("log1p", e), leak, leak


def _logistic(v):
    leak = sigmoid(-v)
    return v * leak, leak - v * leak * (1.0 - leak), leak


def _cauchy(v):
    leak = ar.do("arctan2", ar.do("ones_like", v), v) / math.pi
    return v * leak, leak - v / (math.pi * (1.0 + v * v)), leak


def _reciprocal(v):
    leak = 0.5 / (1.0 + v)
    return v * leak, 2.0 * leak * leak, leak


def _optimal(v):
    c = ar.do("minimum", v, 0.25 + 0.0 * v)
    leak = ar.do("where", v <= 0.25, 0.5 - v, 1.0 / (16.0 * ar.do("maximum", v, 0.25 + 0.0 * v)))
    return 0.0625 - (c - 0.25) ** 2, 0.5 - 2.0 * c, leak


RELAXATIONS = {
    "logsumexp": _logsumexp,
    "logistic": _logistic,
    "cauchy": _cauchy,
    "reciprocal": _reciprocal,
    "optimal": _optimal,
}


def check_relaxation(relaxation):
    """Raise ``ValueError`` unless ``relaxation`` is a known name or ``None``."""
    if relaxation is not None and relaxation not in RELAXATIONS:
        raise ValueError(
            f"relaxation must be one of {sorted(RELAXATIONS)} or None (exact sort), "
            f"got relaxation={relaxation!r}"
        )
    return relaxation


def relax_terms(a, b, relaxation, temperature):
    """Shift, slope and leak of every comparator ``(a, b)``.

    Parameters
    ----------
    a, b : array
        The two inputs of each comparator (same shape).
    relaxation : str
        A key of :data:`RELAXATIONS` (not ``None``).
    temperature : float
        ``T`` > 0, in the units of the data.

    Returns
    -------
    shift, slope, leak : array
        See the module docstring; all zero where the gap is not finite.
    """
    diff = a - b
    zero = ar.do("zeros_like", diff)
    # Non-finite gaps (padding, +-inf, NaN, overflow) never reach abs/shift, so no
    # inf or NaN enters autodiff: they are replaced by 0 and masked out.
    v = ar.do("abs", ar.do("where", ar.do("isfinite", diff), diff, zero)) * (1.0 / temperature)
    finite = ar.do("isfinite", diff) & ar.do("isfinite", v)
    terms = RELAXATIONS[relaxation](ar.do("where", finite, v, zero))
    return tuple(ar.do("where", finite, t, zero) for t in terms)
