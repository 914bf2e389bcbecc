"""I-MLE, adaptive I-MLE and straight-through estimators (drop-in for ``imle.wrapper``).

The decorated solver receives θ ``[B, ...]`` repeated ``T`` times and
perturbed, as one ``[B·T, ...]`` batch (``T = nb_samples ·
nb_marginal_samples``), and its output ``[B·T, ...]`` is returned as is (the
``torch-imle`` convention). The gradient with respect to θ is the I-MLE
finite difference, computed by one more batched solver call. The core is
written once with autoray; gradients flow through the framework's own
autodiff (``loss.backward()``, ``jax.grad``, ``tf.GradientTape``, HIPS
autograd), also under ``jax.jit``/``tf.function`` with a host solver.
"""

from __future__ import annotations

from typing import Any, Callable
import dataclasses
import functools

from diffopt._typing import Solver
from diffopt.noise import Noise
from diffopt import _call
from diffopt._checks import check_nonnegative
from diffopt._ops import nan_rows
from diffopt.imle import _core
from diffopt.imle.target import AdaptiveTargetDistribution, BaseTargetDistribution, TargetDistribution

__all__ = ["imle", "aimle", "ste"]

_LEGACY = {"theta_noise_temperature": "input_noise_temperature", "_is_minimization": "minimize"}


def _legacy(kwargs, options):
    """Map ``torch-imle``'s other spellings onto ours; reject anything else."""
    for key, value in kwargs.items():
        if key not in _LEGACY:
            raise TypeError(f"unexpected keyword argument {key!r}")
        options[_LEGACY[key]] = value
    return options


class _Config:
    """Validated, immutable settings of one estimator."""

    def __init__(self, kind, target, noise, nb_samples, nb_marginal, t_input, t_target,
                 minimize=False, symmetric=False):
        self.kind = kind
        self.target = target if target is None else _core.check_target(target)
        self.noise = _core.check_noise(noise)
        self.samples, self.marginal = _core.check_samples(nb_samples, nb_marginal)
        self.t_input = check_nonnegative("input_noise_temperature", t_input)
        self.t_target = check_nonnegative("target_noise_temperature", t_target)
        self.minimize = bool(minimize)
        self.symmetric = bool(symmetric)

    @property
    def reuses_forward(self):
        """Whether the left point of the difference is the forward solution."""
        if self.kind == "imle":
            return True
        return (not self.symmetric and self.target.alpha == 1.0
                and self.t_target == self.t_input)


@dataclasses.dataclass(eq=False)
class _Estimator:
    """The (forward, backward) pair of one call: arrays in, arrays out, autoray only."""

    c: _Config
    function: Callable[..., Any]
    rebuild: Callable[..., Any]
    layout: Any
    backend: Any
    has_state: bool

    def _unpack(self, arrays):
        theta, eps = arrays[0], arrays[1]
        state = arrays[2] if self.has_state else None
        extra = arrays[3 if self.has_state else 2:]
        return theta, eps, state, self.rebuild(extra)[0]

    def _solve(self, inputs, args):
        return _core.solve_stacked(self.function, inputs, args, self.backend, self.layout.xp, self.layout.dtype)

    def fwd(self, *arrays):
        theta, eps, state, args = self._unpack(arrays)
        lay = self.layout
        x = lay.flat(lay.expand(theta) + self.c.t_input * eps)
        (z,) = self._solve([x], args)
        z = nan_rows(x, z, xp=lay.xp)  # an instance with a NaN gives NaN, whatever the solver made of it
        res = (theta, eps, lay.split(z)) + tuple(arrays[2:])
        return z, res

    def bwd(self, res, dy):
        theta, eps, state, args = self._unpack((res[0], res[1]) + tuple(res[3:]))
        z3, lay = res[2], self.layout
        dy3 = lay.split(dy)
        if self.c.kind == "ste":
            grad = lay.xp.mean(dy3, axis=1)
            return (grad, None) + (None,) * (len(res) - 3)
        grad, new_state = self._imle_gradient(theta, eps, z3, dy3, state, args)
        state_cot = (new_state,) if self.has_state else ()
        return (grad, None) + state_cot + (None,) * (len(res) - 3 - self.has_state)

    def _imle_gradient(self, theta, eps, z3, dy3, state, args):
        c, lay, target = self.c, self.layout, self.c.target
        theta3 = lay.repeat(theta)
        held = state is None and self._reads_held_state(dy3)
        if held:  # compiled: the target's own state, read (and written below) when the graph runs
            state = self.backend.held_state(target, dy3)
        beta = None if state is None else lay.xp.astype(state[0], lay.dtype)
        lam = target.step(theta3, dy3, beta)
        noise = c.t_target * eps
        right = lay.flat(target.params(theta3, dy3, _is_minimization=c.minimize, lam=lam) + noise)
        if c.reuses_forward:
            (z_right,) = self._solve([right], args)
            z_left3 = z3
        else:
            left = target.params(theta3, -dy3 if c.symmetric else None, _is_minimization=c.minimize, lam=lam)
            z_left, z_right = self._solve([lay.flat(left + noise), right], args)
            z_left3 = lay.split(z_left)
        diff = lay.marginalise(z_left3) - lay.marginalise(lay.split(z_right))
        if c.symmetric:
            diff = diff / 2.0
        new_state = self._adapt(state, diff, dy3)
        grad = lay.xp.mean(target.scale(diff, lam), axis=1)
        if held:
            grad, new_state = self.backend.commit_held_state(target, new_state, grad), None
        return (-grad if c.minimize else grad), new_state

    def _reads_held_state(self, dy3):
        """Whether the backward is traced by a compiler whose shim reads and writes an adaptive
        target's Python-held state in the graph (``held_state``; torch.compile)."""
        return (getattr(self.c.target, "adaptive", False) and hasattr(self.backend, "held_state")
                and self.backend.is_symbolic(dy3))

    def _adapt(self, state, diff, dy3):
        """New adaptive state: returned (explicit state) or stored on the target."""
        target = self.c.target
        if not getattr(target, "adaptive", False):
            return None
        if any(d == 0 for d in diff.shape[:2]):  # no instance: nothing to learn from, state unchanged
            return state
        ratio = target.nonzero_ratio(diff)
        if state is not None:
            return target.next_state(state, ratio)
        if self.backend.is_symbolic(dy3):
            _core.warn_frozen_state()
            return None
        import numpy as np

        ratio = np.float64(np.asarray(self.backend.to_numpy(ratio)))
        target.commit(target.next_state(np.asarray(target.state, dtype=np.float64), ratio))
        return None


def _make_wrapper(function, config):
    """``wrapper(theta, *args, rng=None, target_state=None, **kwargs)`` around ``function``."""
    _core.check_function(function)
    return _IMLEFunction(function, config)


class _IMLEFunction(_call.ByReference):
    """The estimator around ``function``: a plain object (not a closure), so it pickles.

    Extra positional and keyword arguments go to the solver unchanged (arrays of
    θ's framework travel through the custom VJP, without a gradient).
    """

    def __init__(self, function, config):
        functools.update_wrapper(self, function)  # first: it copies function's __dict__
        self.function, self.config = function, config

    def __call__(self, theta, *args, rng=None, target_state=None, **kwargs):
        config = self.config
        backend, xp = _core.check_theta(theta)
        has_state = _check_state(config, target_state)
        layout = _core.Layout(theta, config.samples, config.marginal, backend, xp)
        function = self.function
        if kwargs:  # keyword arguments ride along as positional ones after args
            function = _WithKeywords(function, len(args), tuple(kwargs))
            args = tuple(args) + tuple(kwargs.values())
        extras, rebuild = _call.split_extras(args, {}, backend)
        eps = _core.sample_noise(config.noise, theta, layout, rng)
        est = _Estimator(config, function, rebuild, layout, backend, has_state)
        op = _call.differentiable(backend, est.fwd, est.bwd)
        state = (target_state,) if has_state else ()
        return op(theta, eps, *state, *extras)


class _WithKeywords:
    """``function(x, *args[:nargs], **dict(zip(keys, args[nargs:])))``."""

    def __init__(self, function, nargs, keys):
        self.function, self.nargs, self.keys = function, nargs, keys
        self.__name__ = _call.solver_name(function)

    def __call__(self, x, *args):
        return self.function(x, *args[: self.nargs], **dict(zip(self.keys, args[self.nargs:])))


def _check_state(config, target_state):
    if target_state is None:
        return False
    if not getattr(config.target, "adaptive", False):
        raise ValueError(
            "target_state is only used with an AdaptiveTargetDistribution; "
            f"this estimator's target is {type(config.target).__name__}"
        )
    if tuple(target_state.shape) != (3,):
        raise ValueError(
            f"target_state must have shape (3,) (from target.init_state(like)), got {tuple(target_state.shape)}"
        )
    return True


def imle(
    function: Solver | None = None,
    target_distribution: BaseTargetDistribution | None = None,
    noise_distribution: Noise | None = None,
    nb_samples: int = 1,
    input_noise_temperature: float = 1.0,
    target_noise_temperature: float = 1.0,
    *,
    nb_marginal_samples: int = 1,
    minimize: bool = False,
    **legacy: Any,
) -> Callable[..., Any]:
    r"""Make a discrete solver differentiable with Implicit MLE (Niepert et al., 2021).

    Usable as a call, ``imle(solver, ...)``, or a decorator, ``@imle(...)``.

    Forward: θ ``[B, ...]`` is repeated to ``[B, T, ...]``
    (``T = nb_samples · nb_marginal_samples``), perturbed with
    ``input_noise_temperature · ε``, ε drawn from ``noise_distribution``, and
    the solver is called once on the ``[B·T, ...]`` stack; its output
    ``z`` (``[B·T, ...]``, in θ's dtype) is returned.

    Backward, for the cotangent ``dy`` ``[B·T, ...]``: the target
    ``θ' = αθ − λ·dy`` (``+λ·dy`` when ``minimize``) from
    ``target_distribution``, ``z' = solver(θ' + target_noise_temperature · ε)``
    with the **same** ε, in one batched call, and the gradient is the mean
    over samples of ``z − z'`` (after averaging the marginal samples;
    divided by β with ``do_gradient_scaling``, by λ for an adaptive target;
    negated when ``minimize``).

    Parameters
    ----------
    function : callable
        ``function(x, *args) -> z`` with ``z`` shaped like ``x``; any callable
        on framework arrays, or a :func:`diffopt.host_solver`.
    target_distribution : TargetDistribution or AdaptiveTargetDistribution, optional
        Default ``TargetDistribution(alpha=1.0, beta=1.0)``.
    noise_distribution : noise object, optional
        Anything with ``sample(shape, like, rng)``, e.g.
        :class:`~diffopt.imle.SumOfGammaNoiseDistribution`; ``None``: no noise.
    nb_samples : int, default 1
    input_noise_temperature, target_noise_temperature : float, default 1.0
        Non-negative multipliers of ε in the forward and target solves.
    nb_marginal_samples : int, default 1
        Extra samples averaged into each solution's marginal in the backward.
    minimize : bool, default False
        The solver minimises ``⟨θ, z⟩`` (e.g. a shortest path).
    **legacy
        ``theta_noise_temperature`` and ``_is_minimization``, the
        ``torch-imle``/``aimle`` spellings, are accepted.

    Returns
    -------
    callable
        ``wrapper(theta, *args, rng=None, target_state=None, **kwargs)``.
        ``args`` and ``kwargs`` go to the solver unchanged and get no gradient. ``rng`` seeds ε (a JAX
        key is required under ``jax.jit`` when there is noise).
        ``target_state`` (adaptive targets only) is the functional state of
        :class:`~diffopt.imle.AdaptiveTargetDistribution`: the gradient of
        the loss with respect to it is the updated state.

    Raises
    ------
    TypeError, ValueError
        For a bad argument (named in the message), before any solver call.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import top_k_mask
    >>> from diffopt.imle import imle, TargetDistribution, SumOfGammaNoiseDistribution
    >>> @imle(target_distribution=TargetDistribution(alpha=1.0, beta=10.0),
    ...       noise_distribution=SumOfGammaNoiseDistribution(k=2, nb_iterations=10), nb_samples=5)
    ... def top2(theta):
    ...     return top_k_mask(theta, 2)
    >>> top2(np.array([[0.5, 2.0, -1.0, 1.0]]), rng=0).shape   # [B * nb_samples, n]
    (5, 4)
    """
    return _decorate(imle, TargetDistribution, function, target_distribution, noise_distribution, nb_samples,
                     input_noise_temperature, target_noise_temperature, nb_marginal_samples, minimize, legacy)


def aimle(function: Solver | None = None, target_distribution: BaseTargetDistribution | None = None,
          noise_distribution: Noise | None = None, nb_samples: int = 1, input_noise_temperature: float = 1.0,
          target_noise_temperature: float = 1.0, *, nb_marginal_samples: int = 1, minimize: bool = False,
          symmetric_perturbation: bool = False, **legacy: Any) -> Callable[..., Any]:
    r"""Adaptive I-MLE (Minervini et al., AAAI 2023): I-MLE with a two-sided difference.

    Same call as :func:`imle`; the default target is a fresh
    :class:`~diffopt.imle.AdaptiveTargetDistribution`. The backward compares
    ``z_L = solver(θ_L + τε)`` with ``z_R = solver(θ_R + τε)``
    (``τ = target_noise_temperature``), ``θ_R = αθ − λ·dy`` and

    - ``symmetric_perturbation=False``: ``θ_L = αθ``; when ``α = 1`` and
      both temperatures are equal ``z_L`` is the forward solution and is
      reused;
    - ``symmetric_perturbation=True``: ``θ_L = αθ + λ·dy``, and the
      difference is halved (a central difference).

    The gradient is the mean over samples of ``z_L − z_R`` (scaled by the
    target). The backward makes exactly one solver call: on ``[B·T, ...]``
    when ``z_L`` is reused, else on the ``[2·B·T, ...]`` stack of both
    targets.

    Parameters
    ----------
    function, noise_distribution, nb_samples, input_noise_temperature, target_noise_temperature
        As in :func:`imle`.
    target_distribution : AdaptiveTargetDistribution or TargetDistribution, optional
        Default: a fresh ``AdaptiveTargetDistribution()``, whose ``β`` is
        updated after every backward pass (read it as ``.beta``). Under
        ``jax.jit``/``tf.function`` pass ``target_state=`` to the wrapper
        and read the new state as its gradient.
    nb_marginal_samples, minimize
        As in :func:`imle`.
    symmetric_perturbation : bool, default False
        Central difference ``θ_L = αθ + λ·dy`` (halved), see above.

    Returns
    -------
    callable
        ``wrapper(theta, *args, rng=None, target_state=None)``, returning the
        solver's output ``[B·T, ...]`` for ``theta`` ``[B, ...]``.

    Raises
    ------
    TypeError, ValueError
        As in :func:`imle`.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import top_k_mask
    >>> from diffopt.imle import aimle
    >>> top2 = aimle(lambda t: top_k_mask(t, 2), nb_samples=3)
    >>> z = top2(np.array([[0.5, 2.0, -1.0, 1.0]]), rng=0)
    >>> z.shape, z.sum(axis=-1)
    ((3, 4), array([2., 2., 2.]))
    """
    return _decorate(aimle, AdaptiveTargetDistribution, function, target_distribution, noise_distribution,
                     nb_samples, input_noise_temperature, target_noise_temperature, nb_marginal_samples, minimize,
                     legacy, symmetric_perturbation=symmetric_perturbation)


def _decorate(api, default_target, function, target_distribution, noise_distribution, nb_samples,
              input_noise_temperature, target_noise_temperature, nb_marginal_samples, minimize, legacy, **extra):
    """The body of :func:`imle` and :func:`aimle` (``api``): a decorator without ``function``,
    else the wrapper; ``extra`` holds ``aimle``'s ``symmetric_perturbation``."""
    options = _legacy(legacy, {"input_noise_temperature": input_noise_temperature,
                               "minimize": minimize})
    if function is None:
        return functools.partial(api, target_distribution=target_distribution,
                                 noise_distribution=noise_distribution, nb_samples=nb_samples,
                                 target_noise_temperature=target_noise_temperature,
                                 nb_marginal_samples=nb_marginal_samples, **extra, **options)
    target = default_target() if target_distribution is None else target_distribution
    config = _Config(api.__name__, target, noise_distribution, nb_samples, nb_marginal_samples,
                     options["input_noise_temperature"], target_noise_temperature,
                     minimize=options["minimize"], symmetric=extra.get("symmetric_perturbation", False))
    return _make_wrapper(function, config)


def ste(
    function: Solver | None = None,
    noise_distribution: Noise | None = None,
    noise_temperature: float = 1.0,
    nb_samples: int = 1,
) -> Callable[..., Any]:
    """Straight-through estimator around a (perturbed) discrete solver.

    Forward as in :func:`imle` (θ repeated to ``[B·S, ...]``, perturbed with
    ``noise_temperature · ε``, one solver call, output ``[B·S, ...]``);
    backward: the cotangent passes through unchanged, averaged over the
    ``S`` samples of each instance. No solver call in the backward.

    Parameters
    ----------
    function : callable, optional
        The solver, ``[B·S, ...]`` in and out (omit it to use ``ste`` as a
        decorator).
    noise_distribution : noise object, optional
        Default: no noise (the solver sees ``θ`` itself).
    noise_temperature : float, default 1.0
        Scale of the noise.
    nb_samples : int, default 1
        Samples ``S`` per instance.

    Returns
    -------
    callable
        ``wrapper(theta, *args, rng=None, **kwargs)``, returning ``[B·S, ...]``.

    Raises
    ------
    TypeError, ValueError
        For a bad argument (named in the message, e.g. a negative or
        non-finite ``noise_temperature``), before any solver call.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import argmax_one_hot
    >>> from diffopt.imle import ste
    >>> hard = ste(argmax_one_hot)
    >>> hard(np.array([[0.1, 0.7, 0.2]]))
    array([[0., 1., 0.]])
    """
    if function is None:
        return functools.partial(ste, noise_distribution=noise_distribution,
                                 noise_temperature=noise_temperature, nb_samples=nb_samples)
    noise_temperature = check_nonnegative("noise_temperature", noise_temperature)
    config = _Config("ste", None, noise_distribution, nb_samples, 1, noise_temperature, 0.0)
    return _make_wrapper(function, config)
