"""``perturbed``: the perturbed optimizer y_σ(θ) = E[f(θ + σZ)] and its score-function Jacobian."""

from __future__ import annotations

from typing import Any, Callable

import math

from diffopt._typing import Array, NoiseLike, Solver
from diffopt.host import HostSolver
from diffopt.perturbations._engine import (
    CHUNK_BUDGET,
    CallInputs,
    Settings,
    check_choice_or_none,
    num_chunks,
    prepare_theta,
    run_chunks,
    sigma_scalar,
    solver_decorator,
)
from diffopt._arrays import reshape_target, shape_of
from diffopt._checks import check_choice
from diffopt._call import cast, differentiable
from diffopt._ops import inner_samples, nan_rows, sum_samples, where_fill
from diffopt.backends import SecondOrder
from diffopt.noise import score_derivative

__all__ = ["perturbed"]

CONTROL_VARIATES = ("mean", "value")
RESIDUALS = ("auto", "samples", "jacobian", "recompute")


class _Options:
    """Static options of :func:`perturbed`, validated at construction."""

    def __init__(self, settings, multiplicative, control_variate, residual):
        self.settings = settings
        self.multiplicative = bool(multiplicative)
        self.control_variate = check_choice_or_none("control_variate", control_variate, CONTROL_VARIATES)
        self.residual = check_choice("residual", residual, RESIDUALS)
        if settings.learnable_sigma and self.multiplicative:
            raise ValueError("a learnable sigma (an array) needs additive noise; got multiplicative=True")
        if settings.learnable_sigma and self.residual not in ("auto", "recompute"):
            raise ValueError(
                "a learnable sigma (an array) replays the noise in the backward: residual must be "
                f"'auto' or 'recompute', got residual={self.residual!r}"
            )
        if self.control_variate == "mean" and settings.num_samples < 2:
            raise ValueError(
                "control_variate='mean' (leave-one-out) needs num_samples >= 2, "
                f"got num_samples={settings.num_samples}"
            )


def over_theta(x, theta, xp):
    """``x / θ`` of multiplicative noise, with 0 where ``θ = 0``, computed on the device.

    θ ⊙ exp(σZ − σ²/2) cannot move a zero entry, so the log-space (score) estimate has
    nothing to say about it: its gradient, tangent and Hessian rows are defined as 0
    (finite, no host check of θ, hence no synchronisation on a GPU).
    """
    zero = theta == 0
    return where_fill(zero, 0.0, x / xp.where(zero, xp.ones_like(theta), theta), xp=xp)


def _multiplicative(theta, z, sigma, xp):
    """θ ⊙ exp(σZ − σ²/2): positive costs stay positive, E[exp(σZ − σ²/2)] = 1 for Normal Z."""
    return theta * xp.exp(sigma * z - 0.5 * sigma**2)


def _choose_residual(opts, problem):
    """What the forward keeps for the backward: the cheapest residual that is bounded."""
    chunks = num_chunks(problem)
    if opts.residual == "samples" and chunks > 1:
        raise ValueError(
            "residual='samples' keeps every sample and needs num_samples <= chunk_size; "
            f"here num_samples={opts.settings.num_samples} runs in {chunks} chunks"
        )
    if opts.residual != "auto":
        return opts.residual
    if opts.settings.learnable_sigma:
        return "recompute"
    if chunks == 1:
        return "samples"
    n_in, n_out = problem.in_size, problem.out_size
    small = (problem.batch or 1) * n_in * n_out <= CHUNK_BUDGET  # unknown batch: per instance
    cheap = n_in * n_out <= 16 * (n_in + n_out) or isinstance(problem.func, HostSolver)
    return "jacobian" if small and cheap else "recompute"


def _score_step(problem, g, shift):
    """Backward chunk step: accumulate Σ(⟨g, f_i⟩ − shift) s_i ``[B, in]``.

    ``shift`` ``[B]`` is ⟨g, b⟩ for the control variate ``b`` (or ``None``): it is
    subtracted from each sample's weight, so that Σ s_i needs no pass of its own.
    With a learnable sigma also Σ(⟨g, f_i⟩ − shift) r_i ``[B]``, r = ⟨s, z⟩ − d the
    score of the scale (∂/∂σ of the log-density of θ + σZ, times σ).
    """
    score = problem.bound_noise.score
    learnable = problem.settings.learnable_sigma
    xp = problem.xp

    def step(carry, sample):
        z, _, f = sample
        s = score(z)
        w = _weights(f, g, shift, xp)
        pieces = (xp.einsum("nb,nbi->bi", w, s),)
        if learnable:
            r = xp.sum(s * z, axis=-1) - float(problem.in_size)
            pieces += (xp.sum(w * r, axis=0),)
        return pieces if carry is None else tuple(c + p for c, p in zip(carry, pieces))

    return step


def _forward_step(opts, problem):
    """Forward chunk step: Σ f_i, plus the Jacobian pieces or the samples, per residual mode."""
    score = problem.bound_noise.score
    xp = problem.xp

    def step(carry, sample):
        z, _, f = sample
        total = sum_samples(f, xp=xp)
        if carry is None:
            problem.mode = _choose_residual(opts, problem)
            if problem.mode == "samples":
                return total, score(z), f
            if problem.mode == "recompute":
                return (total,)
            s = score(z)
            return total, xp.einsum("nbo,nbi->boi", f, s), sum_samples(s, xp=xp)
        if problem.mode == "recompute":
            return (carry[0] + total,)
        s = score(z)
        jac = xp.einsum("nbo,nbi->boi", f, s)
        return carry[0] + total, carry[1] + jac, carry[2] + sum_samples(s, xp=xp)

    return step


def _gradient(opts, a, theta_c, xp, sigma=None):
    """Score-function gradient ``[B, in]`` from Σ(⟨g, f_i⟩ − ⟨g, b⟩) s_i (baseline already in).

    Also the gradient with respect to a learnable sigma, from the ``[B]`` piece
    Σ(⟨g, f_i⟩ − ⟨g, b⟩) r_i given instead of the ``[B, in]`` one.
    """
    settings = opts.settings
    n = settings.num_samples
    scale = 1.0 / ((n - 1 if opts.control_variate == "mean" else n) * (settings.sigma if sigma is None else sigma))
    grad = a * scale
    if opts.multiplicative:
        grad = over_theta(grad, theta_c, xp)
    return grad


class _Call(CallInputs):
    """One call of a perturbed function: builds the shim's (fwd, bwd) pair."""

    def __init__(self, opts, func, theta_b, rng, args, kwargs, shim, xp):
        transform = _multiplicative if opts.multiplicative else None
        super().__init__(opts.settings, func, [theta_b], rng, args, kwargs, shim, xp, transform)
        self.opts = opts
        self.theta_shape = shape_of(theta_b)  # the batch may be None (unknown while tracing)
        self.in_size = math.prod(self.theta_shape[1:])
        self.theta_dtype = xp.get_dtype_name(theta_b)
        self.layout = None

    def problem(self, arrays):
        """A :class:`Problem` from the arrays the shim passes, keeping one chunk's samples when
        the residual may be the samples."""
        keep = self.opts.residual in ("auto", "samples") and not self.learnable
        return super().problem(arrays, keep=keep)

    def fwd(self, *arrays):
        opts, problem, xp = self.opts, self.problem(arrays), self.xp
        carry = run_chunks(problem, _forward_step(opts, problem))
        ybar = carry[0] / float(opts.settings.num_samples)
        out = xp.reshape(ybar, (-1,) + problem.out_shape)
        out = nan_rows(problem.theta_c, cast(out, problem.dtype, xp), xp=xp)
        base = None
        if opts.control_variate == "mean":
            base = ybar
        elif opts.control_variate == "value":
            base = problem.solve_unperturbed()
        kept = tuple(carry[1:]) if problem.mode != "recompute" else tuple(arrays)
        extra = ((base,) if base is not None else ()) + ((problem.theta_c,) if opts.multiplicative else ())
        self.layout = (problem.mode, len(kept), base is not None, problem.out_shape)
        return out, kept + extra

    def bwd(self, res, g):
        opts, xp = self.opts, self.xp
        mode, n_kept, has_base, out_shape = self.layout
        kept, rest = res[:n_kept], list(res[n_kept:])
        base = rest.pop(0) if has_base else None
        theta_c = rest.pop(0) if opts.multiplicative else None
        problem = None
        if mode == "recompute":
            problem = self.problem(kept)
            problem.out_shape = out_shape
        dtype = problem.cdtype if problem is not None else xp.get_dtype_name(kept[0])
        g = xp.reshape(g, (-1, math.prod(out_shape)))
        g = cast(g, dtype, xp)
        shift = None if base is None else xp.sum(g * base, axis=-1)
        if mode == "samples":
            s, f = kept
            a = xp.einsum("nb,nbi->bi", _weights(f, g, shift, xp), s)
        elif mode == "jacobian":
            jac, s_total = kept
            a = xp.einsum("bo,boi->bi", g, jac)
            if shift is not None:
                a = a - shift[:, None] * s_total
        else:
            pieces = run_chunks(problem, _score_step(problem, g, shift))
            a = pieces[0]
            theta_c = problem.theta_c if opts.multiplicative else theta_c
        sigma = sigma_scalar(problem.settings, problem.theta_c, xp) if self.learnable else None
        grad = _gradient(opts, a, theta_c, xp, sigma)
        grad = cast(xp.reshape(grad, reshape_target(self.theta_shape)), self.theta_dtype, xp)
        if not self.learnable:
            return (grad,) + self.nones(1)
        d_sigma = xp.sum(_gradient(opts, pieces[1], None, xp, sigma))
        d_sigma = cast(d_sigma, xp.get_dtype_name(kept[-1]), xp)
        return (grad,) + self.nones(2) + (d_sigma,)

    # --- second derivatives (see diffopt.backends.SecondOrder) ---------------------------

    def _saved(self, res):
        """``(kept, base, theta_c)`` from the residuals, as :meth:`bwd` reads them."""
        _, n_kept, has_base, _ = self.layout
        rest = list(res[n_kept:])
        base = rest.pop(0) if has_base else None
        theta_c = rest.pop(0) if self.opts.multiplicative else None
        return res[:n_kept], base, theta_c

    def _replay(self, arrays):
        problem = self.problem(arrays)
        problem.out_shape = self.layout[3]
        return problem

    def _scale(self, power):
        n, sigma = self.opts.settings.num_samples, self.opts.settings.sigma
        return 1.0 / ((n - 1 if self.opts.control_variate == "mean" else n) * sigma**power)

    def jvp(self, arrays, res, ts):
        """J_σ(θ) t: Σ_i (f_i − b) ⟨∇ν(Z_i), t⟩ / (Nσ), from the kept residuals or a replay."""
        t, xp = ts[0], self.xp
        mode, _, _, out_shape = self.layout
        kept, base, theta_c = self._saved(res)
        problem = self._replay(arrays) if mode == "recompute" else None
        dtype = problem.cdtype if problem is not None else xp.get_dtype_name(kept[0])
        out_dtype = self.theta_dtype
        t = _flat(t, self.in_size, dtype, xp)
        if self.opts.multiplicative:
            t = over_theta(t, problem.theta_c if problem is not None else theta_c, xp)
        if mode == "samples":
            s, f = kept
            a = xp.einsum("nbo,nb->bo", f, xp.einsum("nbi,bi->nb", s, t))
            s_t = xp.sum(xp.einsum("nbi,bi->nb", s, t), axis=0)
        elif mode == "jacobian":
            jac, s_total = kept
            a = xp.einsum("boi,bi->bo", jac, t)
            s_t = xp.sum(s_total * t, axis=-1)
        else:
            a, s_t = run_chunks(problem, _tangent_step(problem, t))
        if base is not None:
            a = a - base * s_t[:, None]
        return cast(xp.reshape(a * self._scale(1), (-1,) + tuple(out_shape)), out_dtype, xp)

    def hvp(self, arrays, res, g, ts):
        """∇²⟨g, y_σ⟩(θ) t by Stein's identity on a replay of the same noise draws.

        Σ_i ⟨g, f_i − b⟩ (s_i s_iᵀ − diag s'_i) t / (Nσ²), with ``s = ∇ν(Z)``,
        ``s' = diag ∇²ν(Z)``, ``b`` the control variate (an unbiased estimate:
        E[s sᵀ − diag s'] = 0). Multiplicative noise is additive in log θ and
        gets the chain rule's extra diagonal term.
        """
        t, xp = ts[0], self.xp
        nones = (None,) * (len(arrays) - 1)
        _, base, _ = self._saved(res)
        problem = self._replay(arrays)
        dtype = problem.cdtype
        g = _flat(g, problem.out_size, dtype, xp)
        t = _flat(t, problem.in_size, dtype, xp)
        theta_c = problem.theta_c
        if self.opts.multiplicative:
            t = over_theta(t, theta_c, xp)
        h, a = run_chunks(problem, _hessian_step(problem, g, base, t))
        h = h * self._scale(2)
        if self.opts.multiplicative:
            h = over_theta(h - a * self._scale(1) * t, theta_c, xp)
        return (cast(xp.reshape(h, reshape_target(self.theta_shape)), self.theta_dtype, xp),) + nones


def _flat(x, width, dtype, xp):
    """``x`` as ``[B, width]`` in ``dtype``."""
    return cast(xp.reshape(x, (-1, width)), dtype, xp)


def _tangent_step(problem, t):
    """Replay step of :meth:`_Call.jvp`: Σ f_i ⟨s_i, t⟩ ``[B, out]`` and Σ ⟨s_i, t⟩ ``[B]``."""
    score = problem.bound_noise.score
    xp = problem.xp

    def step(carry, sample):
        z, _, f = sample
        s_t = xp.sum(score(z) * t, axis=-1)
        a = xp.einsum("nbo,nb->bo", f, s_t)
        total = xp.sum(s_t, axis=0)
        return (a, total) if carry is None else (carry[0] + a, carry[1] + total)

    return step


def _hessian_step(problem, g, base, t):
    """Replay step of :meth:`_Call.hvp`: Σ w_i (s_i ⟨s_i, t⟩ − s'_i ⊙ t) and Σ w_i s_i, ``[B, in]``."""
    noise, xp = problem.bound_noise, problem.xp
    shift = None if base is None else xp.sum(g * base, axis=-1)

    def step(carry, sample):
        z, _, f = sample
        w = inner_samples(f, g, xp=xp)
        if shift is not None:
            w = w - shift
        s = noise.score(z)
        s_t = xp.sum(s * t, axis=-1, keepdims=True)
        h = xp.sum(w[..., None] * (s * s_t - score_derivative(noise, z) * t), axis=0)
        a = xp.einsum("nb,nbi->bi", w, s)
        return (h, a) if carry is None else (carry[0] + h, carry[1] + a)

    return step


def _weights(f, g, shift, xp):
    """Per-sample weights ⟨g, f_i⟩ − shift ``[n, B]`` (``shift`` ``[B]`` or ``None``)."""
    w = inner_samples(f, g, xp=xp)
    return w if shift is None else w - shift


def perturbed(
    func: Solver | None = None,
    num_samples: int = 1000,
    sigma: float | Array = 0.05,
    noise: NoiseLike = "normal",
    batched: bool = True,
    device: Any = None,
    *,
    multiplicative: bool = False,
    control_variate: str | None = None,
    chunk_size: int | None = None,
    residual: str = "auto",
) -> Callable[..., Any]:
    """Turn a solver ``func`` into the differentiable perturbed optimizer y_σ(θ) = E[func(θ + σZ)].

    Usable as a decorator (``@perturbed(...)``, ``@perturbed``) or a call
    (``perturbed(func, ...)``), like the TensorFlow ``perturbations`` package
    and its PyTorch port. Works for NumPy (forward only), HIPS autograd,
    PyTorch, JAX (``jit``/``vmap``/``grad``) and TensorFlow (``tf.function``)
    arrays, and with :func:`diffopt.host_solver` solvers.

    Parameters
    ----------
    func : callable, optional
        ``func(x, *args, **kwargs)``: ``x`` holds the perturbed inputs stacked
        on the leading axis (``num_samples * B`` rows, instance-major: rows
        ``b·n … b·n + n − 1`` are instance ``b``'s ``n`` samples of a chunk, so a
        batch sharded on its leading axis stays sharded; ``num_samples`` rows
        when ``batched=False``); it returns an array of
        the same framework with the same leading axis (one-hot vectors,
        rankings, paths, scalars, any dtype).
    num_samples : int, default 1000
        Number of Monte-Carlo samples ``N``.
    sigma : float or scalar array, default 0.05
        Noise scale ``σ > 0``. A floating scalar array of ``theta``'s
        framework is learnable: it gets the gradient
        ``E[f(θ + σZ) (⟨∇ν(Z), Z⟩ − d)] / σ`` (the score of the scale, with
        the same control variate; additive noise only, the backward then
        replays the noise) and may be traced under ``jax.jit``.
    noise : {'normal', 'gumbel'} or Noise, default 'normal'
        Noise distribution: a name or any :class:`diffopt.Noise` object.
    batched : bool, default True
        Whether ``theta`` has a leading batch axis ``[B, ...]``.
    device : optional
        Accepted for drop-in compatibility; the input's device is used.
    multiplicative : bool, default False
        Perturb as ``θ ⊙ exp(σZ − σ²/2)`` (keeps positive costs positive);
        the gradient is then the additive one divided by ``θ``, and 0 at an
        entry ``θ_i = 0`` (which the noise cannot move).
    control_variate : {None, 'mean', 'value'}
        Baseline subtracted from ``func``'s outputs in the gradient (the
        forward value is unchanged): ``'mean'`` the leave-one-out mean of the
        other samples (unbiased, scale ``1/(N−1)``), ``'value'`` the
        unperturbed ``func(θ)`` (one extra call).
    chunk_size : int, optional
        Samples drawn and solved at a time. Default: all ``N`` at once, kept
        for the backward pass (no replay), while one array of all the samples
        (``N × B × size``) takes at most 128 MB (``KEEP_BUDGET``), as the
        peers keep them; above that, chunks of ~4 million numbers replayed in
        the backward pass, so the memory use no longer grows with ``N``.
    residual : {'auto', 'samples', 'jacobian', 'recompute'}
        What the forward keeps for the backward: the samples (only when they
        fit in one chunk), the accumulated Jacobian estimate ``[B, out, in]``
        (small problems or host solvers), or nothing but the rng key, the
        backward then replaying the noise chunk by chunk and solving again.

    Returns
    -------
    callable
        ``wrapper(theta, *args, rng=None, **kwargs)`` returning the mean of
        ``func`` over samples, shape ``[B, ...]`` (unbatched ``[...]``), in
        ``theta``'s framework, dtype and device. Its gradient with respect to
        ``theta`` is the score-function estimator of Berthet et al. (2020,
        Prop. 3.1), ``(1/(Nσ)) Σ_i ⟨g, f(θ + σZ_i)⟩ ∇ν(Z_i)``; ``args`` and
        ``kwargs`` are passed through and receive no gradient. ``rng``: see
        :mod:`diffopt.random` (a key is required under ``jax.jit``).
        Second derivatives (``jax.hessian``, torch ``create_graph=True``,
        nested TF tapes, ``autograd.hessian``) are Monte-Carlo estimates by
        Stein's identity ``E[f(θ+σZ)(∇ν∇νᵀ − ∇²ν)(Z)]/σ²`` on a replay of the
        same noise draws (the noise needs ``score_derivative``).

    Raises
    ------
    ValueError
        ``sigma <= 0``, ``num_samples < 1``, an unknown noise name,
        ``batched=True`` with a rank-0/1 ``theta``, a solver output without
        the leading sample axis.
    TypeError
        Non-floating ``theta``, a solver returning another framework's array.

    Examples
    --------
    >>> import numpy as np
    >>> import diffopt
    >>> pert_argmax = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=20000, sigma=1.0, noise="gumbel")
    >>> theta = np.array([[0.0, 1.0, 2.0]])
    >>> y = pert_argmax(theta, rng=0)                 # ≈ softmax(theta / sigma)
    >>> bool(np.allclose(y, np.exp(theta) / np.exp(theta).sum(), atol=0.02))
    True
    """
    del device
    settings = Settings(num_samples, sigma, noise, batched, chunk_size)
    opts = _Options(settings, multiplicative, control_variate, residual)

    return solver_decorator(func, _apply, opts)


def _apply(opts, fn, theta, args, kwargs, rng):
    theta_b, shim, xp = prepare_theta(theta, opts.settings.batched, sigma=opts.settings.sigma)
    call = _Call(opts, fn, theta_b, rng, args, kwargs, shim, xp)
    # second derivatives: Stein's estimate in θ; with a learnable sigma they raise (no σ terms)
    second = False if call.learnable else SecondOrder(call.jvp, call.hvp)
    out = differentiable(shim, call.fwd, call.bwd, second_order=second)(*call.inputs)
    return out if opts.settings.batched else out[0]
