"""Target distributions of I-MLE: θ' = αθ − λ·dy (drop-in for ``imle.target``).

A target distribution says how far the target parameters θ' move from θ
along the downstream gradient ``dy``, and how the resulting finite
difference ``z − z'`` is scaled. :class:`TargetDistribution` uses a fixed
step ``λ = β``; :class:`AdaptiveTargetDistribution` (AIMLE, Minervini et al.,
AAAI 2023) uses ``λ = β‖θ‖/‖dy‖`` and adapts β after every backward pass.
All arithmetic is written with autoray, for every framework.
"""

from __future__ import annotations

import math

import numpy as np


from diffopt._arrays import shape_of
from diffopt._call import cast
from diffopt._ops import namespace
from diffopt._typing import Array
from diffopt._checks import check_positive, check_real
from diffopt._dtypes import compute_dtype
from diffopt.backends import get_backend

__all__ = ["BaseTargetDistribution", "TargetDistribution", "AdaptiveTargetDistribution"]


def _norm(x, xp):
    """Frobenius norm of ``x``; half-precision inputs are summed in float32."""
    x = cast(x, compute_dtype(xp.get_dtype_name(x)), xp)
    return xp.sqrt(xp.sum(x * x))


class BaseTargetDistribution:
    """Interface used by :func:`diffopt.imle.imle` and :func:`diffopt.imle.aimle`.

    Subclasses implement :meth:`step` and may override :meth:`scale`.
    ``alpha`` is the weight of θ in the target.

    Examples
    --------
    A fixed step λ = 0.5, maximisation (``θ' = θ − λ·dy``):

    >>> import numpy as np
    >>> from diffopt.imle import BaseTargetDistribution
    >>> class HalfStep(BaseTargetDistribution):
    ...     def step(self, theta, dy, beta=None):
    ...         return 0.5
    >>> HalfStep().params(np.array([1.0, 2.0]), np.array([2.0, 0.0]))
    array([0., 2.])
    """

    alpha = 1.0
    #: Whether the object carries state updated by the backward pass.
    adaptive = False

    def step(self, theta: Array, dy: Array, beta: float = None) -> Array:
        """The step λ of ``θ' = αθ − λ·dy`` (a float or a 0-d array).

        Parameters
        ----------
        theta, dy : array
            Same shape: the (repeated) parameters and the output cotangent.
        beta : float or 0-d array, optional
            Overrides the object's β (used with an explicit state).
        """
        raise NotImplementedError

    def scale(self, gradient: Array, lam: Array | None) -> Array:
        """Rescale the finite difference ``z − z'`` (default: unchanged)."""
        del lam
        return gradient

    def params(
        self,
        theta: Array,
        dy: Array,
        _is_minimization: bool = False,
        *,
        lam: Array | None = None,
    ) -> Array:
        """Target parameters ``αθ − λ·dy`` (``αθ + λ·dy`` when minimising).

        ``dy=None`` gives ``αθ``. ``lam`` defaults to :meth:`step`.
        """
        return self._params(theta, dy, self.alpha, lam, _is_minimization)

    def _params(self, theta, dy, alpha, lam, minimize):
        if dy is None:
            return alpha * theta
        if lam is None:
            lam = self.step(theta, dy)
        sign = 1.0 if minimize else -1.0
        return alpha * theta + sign * lam * dy


class TargetDistribution(BaseTargetDistribution):
    """Fixed target ``θ' = αθ − β·dy``.

    Parameters
    ----------
    alpha : float, default 1.0
        Weight of θ.
    beta : float, default 1.0
        Step along the downstream gradient (>= 0).
    do_gradient_scaling : bool, default False
        Divide the gradient ``z − z'`` by ``max(β, eps)``.
    eps : float, default 1e-7
        Floor of the divisor.

    Examples
    --------
    >>> import numpy as np
    >>> TargetDistribution(alpha=1.0, beta=1.0).params(np.array([1.0]), np.array([1.0]))
    array([0.])
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        do_gradient_scaling: bool = False,
        eps: float = 1e-07,
    ) -> None:
        self.alpha = check_real("alpha", alpha)
        self.beta = check_real("beta", beta, minimum=0.0)
        self.do_gradient_scaling = bool(do_gradient_scaling)
        self.eps = float(check_positive("eps", eps))

    def __repr__(self):
        return (f"TargetDistribution(alpha={self.alpha}, beta={self.beta}, "
                f"do_gradient_scaling={self.do_gradient_scaling})")

    def params(
        self,
        theta: Array,
        dy: Array,
        alpha: float = None,
        beta: float = None,
        _is_minimization: bool = False,
        *,
        lam: Array | None = None,
    ) -> Array:
        """Target parameters ``αθ − β·dy`` (``αθ + β·dy`` when minimising).

        The positional order is ``torch-adaptive-imle``'s: ``alpha`` and
        ``beta`` override the object's; ``dy=None`` gives ``αθ``.
        """
        alpha = self.alpha if alpha is None else alpha
        lam = (self.beta if beta is None else beta) if lam is None else lam
        return self._params(theta, dy, alpha, lam, _is_minimization)

    def step(self, theta: Array, dy: Array, beta: float = None) -> Array:
        return self.beta if beta is None else beta

    def scale(self, gradient: Array, lam: Array | None) -> Array:
        if not self.do_gradient_scaling:
            return gradient
        return gradient / max(self.beta, self.eps)


class AdaptiveTargetDistribution(BaseTargetDistribution):
    r"""Adaptive target of AIMLE: ``λ = β‖θ‖/‖dy‖``, β tuned online.

    The target is ``θ' = αθ − λ·dy`` and the gradient ``z − z'`` is divided by
    λ (when λ > 0). Norms are Frobenius norms over the whole ``[B·S, ...]``
    stack that the solver sees: θ repeated ``S`` times against the ``S``
    per-sample cotangents, so λ does not change with the number of samples
    when every sample receives the same cotangent. (``torch-imle`` divides by
    ``‖θ‖`` of the unrepeated θ, making its gradient √S too large.)

    β is updated after every backward pass, from the gradient ``g`` of shape
    ``[B, S, ...]`` (after averaging over marginal samples):

    .. math::

        r &= \mathrm{nnz}(g) / (B·S) \quad\text{(non-zero entries per sample)}\\
        n &\leftarrow d\,n + (1-d)\,r \quad\text{(}d = \texttt{grad\_norm\_decay\_rate}\text{)}\\
        u &\leftarrow \mu\,u + (+\eta \text{ if } n < \texttt{target\_norm} \text{ else } -\eta)\\
        β &\leftarrow \max(β + u, 0)

    with η = ``beta_update_step`` and μ = ``beta_update_momentum``: β grows
    while the gradients are sparser than ``target_norm`` non-zeros per sample
    and shrinks otherwise. Example: top-2 of θ = [3, 2, 1, 0] with
    dy = [0, 1, −1, 0] and β = 1 gives λ = √14/√2 = √7, r = 2, n = 1.1 ≥ 1, so
    β becomes 0.9999.

    **State.** Eagerly (NumPy+autograd, torch, TensorFlow eager, JAX outside
    ``jit``) the state lives on this object (:attr:`beta`, :attr:`grad_norm`,
    :attr:`previous_beta_update`) and is updated by each backward pass. A
    traced backward (``jax.jit``, ``tf.function``) cannot write Python state:
    there, pass the state explicitly, ``wrapper(theta, rng=key,
    target_state=state)`` with ``state = target.init_state(like)``; the
    gradient of the loss with respect to ``target_state`` *is* the updated
    state (see :func:`diffopt.imle.imle`). Without an explicit state a traced
    backward uses β as it was when traced and warns that it is not updated.

    Parameters
    ----------
    initial_alpha : float, default 1.0
    initial_beta : float, default 1.0
    initial_grad_norm : float, default 1.0
        Initial value of the running statistic ``n``.
    beta_update_step : float, default 1e-4
    beta_update_momentum : float, default 0.0
    grad_norm_decay_rate : float, default 0.9
        In [0, 1].
    target_norm : float, default 1.0
        Target number of non-zero gradient entries per sample.

    The positional order is ``torch-adaptive-imle``'s (``initial_grad_norm``
    third), so ``AdaptiveTargetDistribution(1.0, 1.0, 0.5)`` means the same
    there and here.

    Examples
    --------
    The example above: λ = √7 and, after a gradient with 2 non-zeros per sample, β = 0.9999.

    >>> import numpy as np
    >>> from diffopt.imle import AdaptiveTargetDistribution
    >>> target = AdaptiveTargetDistribution()
    >>> theta, dy = np.array([3.0, 2.0, 1.0, 0.0]), np.array([0.0, 1.0, -1.0, 0.0])
    >>> float(np.round(target.step(theta, dy), 3))
    2.646
    >>> state = target.next_state(target.init_state(dtype="float64"), np.array(2.0))
    >>> [round(float(v), 4) for v in state]  # beta, grad_norm, previous_beta_update
    [0.9999, 1.1, -0.0001]
    """

    adaptive = True

    def __init__(
        self,
        initial_alpha: float = 1.0,
        initial_beta: float = 1.0,
        initial_grad_norm: float = 1.0,
        beta_update_step: float = 0.0001,
        beta_update_momentum: float = 0.0,
        grad_norm_decay_rate: float = 0.9,
        target_norm: float = 1.0,
    ) -> None:
        self.alpha = check_real("initial_alpha", initial_alpha)
        self.beta = check_real("initial_beta", initial_beta, minimum=0.0)
        self.beta_update_step = check_real("beta_update_step", beta_update_step, minimum=0.0)
        self.beta_update_momentum = check_real("beta_update_momentum", beta_update_momentum, minimum=0.0)
        self.grad_norm_decay_rate = check_real("grad_norm_decay_rate", grad_norm_decay_rate, minimum=0.0)
        if self.grad_norm_decay_rate > 1.0:
            raise ValueError(f"grad_norm_decay_rate must be in [0, 1], got {grad_norm_decay_rate!r}")
        self.target_norm = check_real("target_norm", target_norm, minimum=0.0)
        self.grad_norm = check_real("initial_grad_norm", initial_grad_norm, minimum=0.0)
        self.previous_beta_update = 0.0

    def __repr__(self):
        return (f"AdaptiveTargetDistribution(alpha={self.alpha}, beta={self.beta}, "
                f"grad_norm={self.grad_norm})")

    # -- state -----------------------------------------------------------------
    @property
    def state(self) -> Array:
        """``(beta, grad_norm, previous_beta_update)`` as Python floats."""
        return (self.beta, self.grad_norm, self.previous_beta_update)

    def init_state(self, like: Array = None, dtype: str | None = "float32") -> Array:
        """The current state as a ``[3]`` array for the functional API.

        Parameters
        ----------
        like : array, optional
            Framework (and device) of the result; default NumPy.
        dtype : str, default "float32"
            Keep at least float32: β moves in steps of ``beta_update_step``.
        """
        values = np.asarray(self.state, dtype=dtype)
        if like is None:
            return values
        return get_backend(like).from_numpy(values, like)

    def load_state(self, state: Array) -> None:
        """Set :attr:`beta`, :attr:`grad_norm`, :attr:`previous_beta_update` from a ``[3]`` array."""
        values = state if isinstance(state, np.ndarray) else get_backend(state).to_numpy(state)
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.shape != (3,):
            raise ValueError(f"state must have 3 entries (beta, grad_norm, previous_beta_update), got {values.shape}")
        self.beta, self.grad_norm, self.previous_beta_update = (float(v) for v in values)

    @staticmethod
    def nonzero_ratio(gradient: Array) -> Array:
        """Non-zero entries per sample of ``gradient`` ``[B, S, ...]`` (0-d array)."""
        xp = namespace(gradient)
        nonzero = xp.astype(gradient != 0, compute_dtype(xp.get_dtype_name(gradient)))
        per_sample = xp.sum(xp.reshape(nonzero, (-1, math.prod(shape_of(gradient)[2:]))), axis=-1)
        return xp.mean(per_sample)  # over the B·S samples (B may be unknown while tracing)

    def next_state(self, state: Array, ratio: Array) -> Array:
        """The state after a backward pass whose gradient had ``ratio`` non-zeros per sample.

        ``state`` is a ``[3]`` array (any framework, also traced) and ``ratio``
        a scalar of the same framework (see :meth:`nonzero_ratio`); the rule
        is in the class docstring.
        """
        beta, grad_norm, previous = state[0], state[1], state[2]
        xp = namespace("numpy" if isinstance(state, np.ndarray) else state)  # the stored state: NumPy
        dtype = xp.get_dtype_name(state)
        decay = self.grad_norm_decay_rate
        grad_norm = decay * grad_norm + (1.0 - decay) * xp.astype(ratio, dtype)
        up = xp.astype(grad_norm < self.target_norm, dtype)
        update = self.beta_update_momentum * previous + (2.0 * up - 1.0) * self.beta_update_step
        beta = xp.maximum(beta + update, 0.0 * beta)
        return xp.stack([beta, grad_norm, update])

    def commit(self, new_state: Array) -> None:
        """Store a concrete ``[3]`` state computed by :meth:`next_state`."""
        self.load_state(new_state)

    # -- target ----------------------------------------------------------------
    def step(self, theta: Array, dy: Array, beta: float = None) -> Array:
        beta = self.beta if beta is None else beta
        xp = namespace(theta)
        norm_dy = _norm(dy, xp)
        safe = xp.where(norm_dy > 0, norm_dy, 1.0 + 0.0 * norm_dy)
        lam = beta * _norm(theta, xp) / safe
        lam = xp.where(norm_dy > 0, lam, 0.0 * lam)
        name = xp.get_dtype_name(theta)
        return xp.astype(lam, name) if compute_dtype(name) != name else lam

    def scale(self, gradient: Array, lam: Array | None) -> Array:
        safe = namespace(lam).where(lam > 0, lam, 1.0 + 0.0 * lam)
        return gradient / safe
