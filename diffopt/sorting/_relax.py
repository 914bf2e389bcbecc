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

from diffopt._ops import namespace

# Every function below takes the namespace ``xp`` of its arrays' framework
# (:func:`diffopt._ops.namespace`), resolved once per call by the caller.

__all__ = ["RELAXATIONS", "check_relaxation", "relax_terms", "logsumexp_slope", "spread_derivative"]


def _sigmoid(v, xp):
    """Logistic function, stable for large ``|v|`` (as :func:`diffopt._ops.sigmoid`)."""
    e = xp.exp(-xp.abs(v))
    return xp.where(v >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _logsumexp(v, xp):
    e = xp.exp(-v)
    leak = e / (1.0 + e)
    return -xp.log1p(e), leak, leak


def _logistic(v, xp):
    leak = _sigmoid(-v, xp)
    return v * leak, leak - v * leak * (1.0 - leak), leak


def _cauchy(v, xp):
    leak = xp.arctan2(xp.ones_like(v), v) / math.pi
    return v * leak, leak - v / (math.pi * (1.0 + v * v)), leak


def _reciprocal(v, xp):
    leak = 0.5 / (1.0 + v)
    return v * leak, 2.0 * leak * leak, leak


def _optimal(v, xp):
    c = xp.minimum(v, 0.25 + 0.0 * v)
    leak = xp.where(v <= 0.25, 0.5 - v, 1.0 / (16.0 * xp.maximum(v, 0.25 + 0.0 * v)))
    return 0.0625 - (c - 0.25) ** 2, 0.5 - 2.0 * c, leak


RELAXATIONS = {
    "logsumexp": _logsumexp,
    "logistic": _logistic,
    "cauchy": _cauchy,
    "reciprocal": _reciprocal,
    "optimal": _optimal,
}


def _is_one(temperature):
    """Whether ``temperature`` is the Python number 1 (an array temperature, maybe traced, never is)."""
    return isinstance(temperature, (int, float)) and temperature == 1.0


def check_relaxation(relaxation):
    """Raise ``ValueError`` unless ``relaxation`` is a known name or ``None``."""
    if relaxation is not None and relaxation not in RELAXATIONS:
        raise ValueError(
            f"relaxation must be one of {sorted(RELAXATIONS)} or None (exact sort), "
            f"got relaxation={relaxation!r}"
        )
    return relaxation


def relax_terms(a, b, lo, hi, relaxation, temperature, want=None, xp=None):
    """Spread and oriented weight of every comparator ``(a, b)``.

    Parameters
    ----------
    a, b : array
        The two inputs of each comparator (same shape).
    lo, hi : array
        Their exact ``minimum`` and ``maximum``.
    relaxation : str
        A key of :data:`RELAXATIONS` (not ``None``).
    temperature : float
        ``T`` > 0, in the units of the data.
    want : {None, 'slope', 'leak', 'slope_dt'}
        Which weight to return, oriented to ``a``: ``'slope'`` is ``d lo / d a``,
        ``'leak'`` the weight of ``a`` in ``lo`` under the mixing reading;
        ``'slope_dt'`` the pair ``(slope, d spread / d T)``, the second the
        temperature derivative of the spread at fixed inputs, ``v slope(v) - shift(v)``
        (for the gradient with respect to a learnable temperature).
    xp : diffopt._ops.Namespace, optional
        The namespace of the arrays' framework (found from ``a`` if not given).

    Returns
    -------
    spread : array
        ``-T * shift(v)`` in data units: the relaxed pair is
        ``(lo - spread, hi + spread)`` (``T * log1p(exp(-v))`` for ``'logsumexp'``).
    w : array, tuple of array or None
        The requested weight (``None`` when ``want`` is None).

    Notes
    -----
    Gaps that are not finite (``+-inf`` against anything, two equal infinities,
    NaN) give ``shift = 0`` and an exact 0/1 weight (0 where ``a > b``, else 1).
    The gap is taken as ``lo - hi <= 0`` (no ``abs``) and its NaNs are replaced
    before any nonlinear op, so no inf or NaN enters any framework's autodiff
    (this is the path that autodiff goes through: ranks, top-k, permutations).
    :func:`logsumexp_slope` is the shorter form, for finite inputs only, used by
    :func:`diffopt.sorting.soft_sort`'s forward pass.
    """
    xp = namespace(a) if xp is None else xp
    gap = lo - hi  # <= 0
    # NaN gap (two equal infinities, or a NaN input): infinite, i.e. exact.
    gap = xp.where(gap == gap, gap, float("-inf"))
    # Infinite gaps become 0 before touching the temperature, so that no inf * 0
    # reaches a gradient with respect to an array temperature.
    exact = gap == float("-inf")
    gap = xp.where(~exact, gap, xp.zeros_like(gap))
    if relaxation == "logsumexp":
        # e = exp(-v) in [0, 1]: nothing overflows, an infinite gap gives 0.
        e = xp.exp(gap if _is_one(temperature) else gap * (1.0 / temperature))
        e = xp.where(~exact, e, xp.zeros_like(e))
        spread = xp.log1p(e)  # shift = -log1p(e)
        if not _is_one(temperature):
            spread = spread * temperature
        # slope = leak = e / (1 + e) for the larger input
        w = xp.where(a > b, e, 1.0) / (1.0 + e) if want else None
        return spread, ((w, spread_derivative(w, xp)) if want == "slope_dt" else w)
    v = gap * (-1.0 / temperature)
    finite = (v < float("inf")) & ~exact  # False for infinite gaps (and overflow of gap / T)
    zero = xp.zeros_like(v)
    shift, slope, leak = (xp.where(finite, t, zero) for t in RELAXATIONS[relaxation](xp.where(finite, v, zero), xp))
    w = {"slope": slope, "slope_dt": slope, "leak": leak, None: None}[want]
    if w is not None:
        w = xp.where(a > b, w, 1.0 - w)
    if want == "slope_dt":  # d(-T shift(d / T)) / dT = v slope(v) - shift(v); exact pairs: 0
        w = (w, xp.where(finite, xp.where(finite, v, zero) * slope - shift, zero))
    return shift * (-temperature), w


def spread_derivative(w, xp=None):
    """``d spread / d T`` of a ``'logsumexp'`` comparator, from its oriented weight ``w``.

    With ``s = min(w, 1 - w) = e / (1 + e)`` (``e = exp(-v)``), the derivative of
    ``spread = T log(1 + e)`` at fixed inputs is ``log(1 + e) + v s``, the binary
    entropy ``-s log s - (1 - s) log(1 - s)`` (in nats): no residual beyond the
    slopes is needed. Exact pairs (``s = 0``) give 0, with a finite derivative.
    """
    xp = namespace(w) if xp is None else xp
    s = xp.minimum(w, 1.0 - w)
    live = s > 0
    safe = xp.where(live, s, 0.5 + 0.0 * s)
    return xp.where(live, -safe * xp.log(safe) - (1.0 - safe) * xp.log1p(-safe), 0.0 * s)


def logsumexp_slope(a, b, temperature, xp=None):
    """``'logsumexp'`` compare-and-swap of *finite* inputs, with ``w = d lo / d a``.

    The hot loop of :func:`diffopt.sorting.soft_sort`'s forward pass, in fewer
    elementwise passes than :func:`relax_terms` (no NaN handling: the inputs are
    finite). It goes through ``e = exp(-|a - b| / T)`` in ``[0, 1]``, which never
    overflows, so the framework's autodiff of these weights, which second-order
    derivatives of ``soft_sort`` take (JAX differentiates a ``custom_vjp``'s
    forward pass for them), meets no ``inf * 0``:
    ``w = (1 if a <= b else e) / (1 + e)`` (that is ``sigmoid((b - a) / T)``) and
    ``shift = -log(1 + e)``.

    Parameters
    ----------
    a, b : array
        Finite comparator inputs (``a - b`` may overflow to ``+-inf``: that pair is
        then compared exactly).
    temperature : float
        ``T`` > 0, in the units of the data.
    xp : diffopt._ops.Namespace, optional
        The namespace of the arrays' framework (found from ``a`` if not given).

    Returns
    -------
    lo, hi, w : array
    """
    xp = namespace(a) if xp is None else xp
    u = a - b
    neg_gap = -xp.abs(u)
    e = xp.exp(neg_gap if _is_one(temperature) else neg_gap * (1.0 / temperature))
    one_e = 1.0 + e
    w = xp.where(u > 0, e, 1.0) / one_e
    # log(1 + e), not log1p(e): a cheaper kernel. It drops e below the dtype's
    # epsilon, where the pair's gap exceeds ~16 T (float32), so the lost
    # T * e is below the rounding error of max(|a|, |b|) >= 8 T.
    spread = xp.log(one_e)
    if not _is_one(temperature):
        spread = spread * temperature
    return xp.minimum(a, b) - spread, xp.maximum(a, b) + spread, w
