"""Chunked Monte-Carlo engine shared by the perturbed estimators (autoray only).

Samples are drawn, perturbed and solved ``chunk`` at a time; chunk ``c`` draws
its noise from ``rng.fold(c)``, so any chunk can be replayed in the backward
pass from the rng key alone. Reductions over samples are carried across chunks
by :func:`run_chunks`, which never holds more than one chunk of samples.

:class:`CallInputs` is what one public call passes through its shim's
``custom_vjp`` (``theta``, a label, the rng key, the solver's extra arrays, a
learnable sigma) and reads back as a :class:`Problem`; ``rng=`` becomes a
stream once per call, and the chunks and the backward replay it from its key.
"""

import copy
import functools
import math

from diffopt import _arrays, _call
from diffopt._arrays import shape_of
from diffopt._call import cast
from diffopt._checks import check_choice, check_floating, check_int, check_min_rank, check_scale
from diffopt._dtypes import compute_dtype
from diffopt._ops import add_scaled, fori_loop
from diffopt.noise import bind, get_noise
from diffopt.random import make_rng

__all__ = ["Settings", "Problem", "CallInputs", "run_chunks", "num_chunks", "CHUNK_BUDGET", "KEEP_BUDGET"]

#: Numbers (samples × batch × input size) held by one chunk by default.
CHUNK_BUDGET = 2**22

#: Bytes of one array of all the samples (samples × batch × input size) up to which
#: :func:`~diffopt.perturbations.perturbed` draws them in one chunk and keeps them for the
#: backward pass (no replay); above it the samples are chunked and replayed, and the memory
#: stays bounded (a handful of chunks of :data:`CHUNK_BUDGET` numbers, whatever ``N``).
KEEP_BUDGET = 2**27

class Settings:
    """Validated, static options of a perturbed estimator (raise before any work)."""

    def __init__(self, num_samples, sigma, noise, batched, chunk_size=None):
        self.num_samples = check_int("num_samples", num_samples, minimum=1)
        self.sigma = _check_sigma(sigma)
        self.noise = get_noise(noise)
        self.batched = bool(batched)
        if chunk_size is not None:
            chunk_size = check_int("chunk_size", chunk_size, minimum=1)
        self.chunk_size = chunk_size

    @property
    def learnable_sigma(self):
        """Whether ``sigma`` is an array (a learnable scale, with a gradient) rather than a number."""
        return hasattr(self.sigma, "shape")

    def with_sigma(self, sigma):
        """A copy whose ``sigma`` is the array ``sigma`` (the one the shim passes, maybe traced)."""
        new = copy.copy(self)
        new.sigma = sigma
        return new

    def chunk_for(self, batch, size, keep_bytes):
        """Samples per chunk for ``batch`` instances of ``size`` numbers each.

        ``keep_bytes``: the bytes that one array of all the samples takes; when it
        is positive and at most :data:`KEEP_BUDGET`, all samples form one chunk
        (an explicit ``chunk_size`` always wins).
        """
        if self.chunk_size is not None:
            return min(self.chunk_size, self.num_samples)
        if 0 < keep_bytes <= KEEP_BUDGET:
            return self.num_samples
        return max(1, min(self.num_samples, CHUNK_BUDGET // max(1, batch * size)))


def _check_sigma(sigma):
    """A number > 0 (kept as a float), or a floating scalar array > 0 (learnable: gets a gradient)."""
    return check_scale("sigma", sigma)


def sigma_scalar(settings, like, xp):
    """``settings.sigma`` as a Python float or, if learnable, as an array in ``like``'s dtype."""
    sigma = settings.sigma
    if not settings.learnable_sigma:
        return sigma
    return cast(sigma, xp.get_dtype_name(like), xp)


def prepare_theta(theta, batched, name="theta", sigma=None, others=()):
    """Validate ``theta`` and give it a leading batch axis; returns ``(theta_b, shim, xp)``.

    A learnable ``sigma`` (an array) and the ``(name, array)`` pairs ``others``
    (a label) must be of ``theta``'s framework; the shim and the bound namespace
    ``xp`` (:func:`diffopt._call.resolve`) are the ones of all of them (NumPy
    ``theta`` with an autograd ``sigma`` is autograd).
    """
    check_floating(name, theta)
    pairs = [(name, theta)] + list(others) + ([("sigma", sigma)] if hasattr(sigma, "shape") else [])
    shim, xp = _call.resolve(*(a for _, a in pairs), argnames=[n for n, _ in pairs])
    if batched:
        check_min_rank(name, theta, 2, " with batched=True ([B, ...]); pass batched=False for one instance")
    _call.check_instance_shape(name, shape_of(theta), 1 if batched else 0)
    return (theta, shim, xp) if batched else (theta[None], shim, xp)


class SolverWrapper(_call.ByReference):
    """``wrapper(theta, *args, rng=None, **kwargs)`` = ``apply(config, fn, theta, args, kwargs, rng)``.

    What :func:`~diffopt.perturbations.perturbed` and
    :func:`~diffopt.perturbations.perturbed_max` return: a plain object (not a
    closure), so that it pickles when ``fn`` does, and by reference when it is the module
    attribute of its name (a decorated module-level function: :class:`diffopt._call.ByReference`).
    """

    def __init__(self, apply, config, fn):
        functools.update_wrapper(self, fn)  # first: it copies fn's __dict__ (a HostSolver's .fn)
        self.apply, self.config, self.fn = apply, config, fn

    def __call__(self, theta, *args, rng=None, **kwargs):
        return self.apply(self.config, self.fn, theta, args, kwargs, rng)


def solver_decorator(func, apply, config):
    """``SolverWrapper(apply, config, func)``; without ``func``, the decorator making it."""

    def decorator(fn):
        if not callable(fn):
            raise TypeError(f"func must be callable, got {type(fn).__name__}")
        return SolverWrapper(apply, config, fn)

    return decorator if func is None else decorator(func)


class CallInputs:
    """The arrays one perturbed call passes through the shim's ``custom_vjp``, and back.

    ``rng=`` becomes an :class:`~diffopt.random.Rng` once, here (``shim`` and
    the bound namespace ``xp`` are the framework of ``lead``, resolved once by
    :func:`prepare_theta`). ``inputs`` is
    ``[*lead, key?, *extras, sigma?]``: the leading arrays
    (``theta``, a label), the rng key when it is an array (a JAX key, a TF seed
    tensor: it may be traced), the arrays of ``func``'s extra ``args``/``kwargs``
    (:func:`diffopt._call.travels`; they get no gradient) and a learnable ``sigma``.
    :meth:`problem` reads a :class:`Problem` back from the arrays the shim
    passes to the forward or backward, replaying ``rng`` from the key passed
    (no second :func:`~diffopt.random.make_rng`).
    """

    def __init__(self, settings, func, lead, rng, args, kwargs, shim, xp, transform=None):
        self.settings, self.func, self.transform, self.shim, self.xp = settings, func, transform, shim, xp
        self.rng = make_rng(rng, lead[0], shim)
        self.key = self.rng.key
        self.key_is_array = hasattr(self.key, "shape")
        extras, self.rebuild = _call.split_extras(args, kwargs, shim)
        self.n_lead = len(lead)
        self.learnable = settings.learnable_sigma
        self.inputs = list(lead) + ([self.key] if self.key_is_array else []) + extras
        if self.learnable:
            self.inputs.append(settings.sigma)

    def problem(self, arrays, keep=False):
        """A :class:`Problem` from ``arrays`` (laid out as :attr:`inputs`); ``keep``: see :class:`Problem`."""
        start = self.n_lead + (1 if self.key_is_array else 0)
        key = arrays[self.n_lead] if self.key_is_array else self.key
        end = len(arrays) - (1 if self.learnable else 0)
        args, kwargs = self.rebuild(list(arrays[start:end]))
        settings = self.settings.with_sigma(arrays[-1]) if self.learnable else self.settings
        return Problem(settings, self.func, arrays[0], self.rng, key, args, kwargs, self.transform, keep,
                       self.shim, self.xp)

    def nones(self, used):
        """``None`` cotangents for the inputs after the first ``used``."""
        return (None,) * (len(self.inputs) - used)


class Problem:
    """One call of a perturbed estimator: ``theta`` (batched), its rng, and the solver.

    Built inside the forward/backward from the arrays that the shim passes, so
    that nothing traced is captured. ``theta`` has shape ``[B, *in_shape]``;
    the noise stream is ``rng`` replayed from ``key`` (the key the shim passed,
    maybe traced) on the compute-dtype ``theta``. ``xp`` is the call's bound
    namespace: every array function of the chunks is looked up on it.
    """

    def __init__(self, settings, func, theta, rng, key, args, kwargs, transform, keep, shim, xp):
        self.settings = settings
        self.func = func
        self.args, self.kwargs = args, kwargs
        self.shim, self.xp = shim, xp
        self.bound_noise = bind(settings.noise, xp)  # the noise's array functions, resolved once
        self.dtype = xp.get_dtype_name(theta)
        self.cdtype = compute_dtype(self.dtype)
        shape = shape_of(theta)
        self.batch = shape[0]  # None: unknown while tracing (a Keras batch)
        self.in_shape = tuple(shape[1:])  # known: checked by prepare_theta
        self.in_size = math.prod(self.in_shape)
        self.theta_c = xp.reshape(cast(theta, self.cdtype, xp), (-1, self.in_size))
        self.batch_size = _arrays.size(theta, 0, shim)  # an int, or a traced size
        self.rng = rng.replay(key, self.theta_c)
        self.transform = transform
        self.out_shape = None
        # an unknown batch: chunks are sized per instance (each holds <= CHUNK_BUDGET numbers per instance)
        batch = 1 if self.batch is None else self.batch
        keep = keep and self.batch is not None
        keep_bytes = settings.num_samples * batch * self.in_size * _itemsize(self.cdtype) if keep else 0
        self.chunk = settings.chunk_for(batch, self.in_size, keep_bytes)

    @property
    def out_size(self):
        return math.prod(self.out_shape)

    def noise(self, index, n):
        """Noise ``[n, B, in_size]`` of chunk ``index`` (replayable), in the compute dtype."""
        child = self.rng.fold(index)
        z = self.bound_noise.sample((n, self.batch_size, self.in_size), self.theta_c, child)
        return cast(z, self.cdtype, self.xp)

    def perturb(self, z):
        """``theta + sigma z`` (or the transform's version) for ``z`` ``[n, B, in_size]``, as ``[B, n, in_size]``.

        Instance-major (see :meth:`sample`), computed from ``z`` transposed.
        """
        xp = self.xp
        z_t = xp.transpose(z, (1, 0, 2))
        if self.transform is not None:
            return self.transform(self.theta_c[:, None], z_t, self.settings.sigma, xp)
        return add_scaled(self.theta_c[:, None], z_t, sigma_scalar(self.settings, self.theta_c, xp), xp=xp)

    def solve(self, x):
        """``func`` on the flat perturbed batch ``x`` ``[rows, in_size]``; returns ``[rows, out_size]``."""
        xp = self.xp
        x_in = xp.reshape(x, (-1,) + self.in_shape)
        if self.dtype != self.cdtype:
            x_in = xp.astype(x_in, self.dtype)
        first = self.out_shape is None  # later chunks come from the same solver: framework checked once
        out = _call.call_solver("func", self.func, x_in, self.args, self.kwargs, self.shim, xp, self.cdtype,
                                framework=first)
        if first:
            self.out_shape = shape_of(out)[1:]
        elif shape_of(out)[1:] != self.out_shape:
            raise ValueError(f"func {_call.solver_name(self.func)} returned shape {shape_of(out)}, "
                             f"expected [{shape_of(x)[0]}, *{self.out_shape}]")
        return xp.reshape(out, (-1, self.out_size))

    def solve_unperturbed(self):
        """``func(theta)`` as ``[B, out_size]`` (the 'value' baseline)."""
        return self.solve(self.theta_c)

    def sample(self, index, n):
        """Chunk ``index`` of ``n`` samples: ``(z, x, f)`` as ``[n, B, in]``, ``[n, B, in]``, ``[n, B, out]``.

        The noise keeps its ``[n, B, in]`` draw (the noise objects' contract); ``func``
        gets the perturbed rows instance-major, instance ``b``'s ``n`` samples as rows
        ``b·n … b·n + n − 1`` (:meth:`perturb` writes them in that order: no copy).
        Merging ``B`` as the major axis keeps a batch sharded on its leading axis (JAX
        ``NamedSharding``) sharded through the solver call; merged under ``n``
        (sample-major) it cannot be expressed as a sharding of the rows, and XLA
        all-gathers the batch. ``x`` and ``f`` come back as sample-major views.
        """
        xp = self.xp
        z = self.noise(index, n)
        x = self.perturb(z)
        f = self.solve(xp.reshape(x, (-1, self.in_size)))
        return z, xp.transpose(x, (1, 0, 2)), sample_major(f, n, xp)


def sample_major(f, n, xp):
    """Solver output ``[B·n, size]`` (instance-major rows) back as ``[n, B, size]``."""
    return xp.transpose(xp.reshape(f, (-1, n, shape_of(f)[1])), (1, 0, 2))


def _itemsize(dtype_name):
    """Bytes per number of a dtype name (``'float32'`` → 4); 8 for an unknown name."""
    digits = "".join(c for c in dtype_name if c.isdigit())
    return int(digits) // 8 if digits else 8


def run_chunks(problem, step):
    """Fold ``step(carry, index, (z, x, f))`` over all chunks of samples.

    The first call receives ``carry=None`` and creates the carry (a tuple of
    arrays of fixed shapes); the middle chunks run under
    :func:`diffopt._ops.fori_loop` (one traced body under ``jax.jit`` and
    ``tf.function``: the program's size does not grow with ``num_samples``),
    the remainder last.
    """
    n, chunk = problem.settings.num_samples, problem.chunk
    full, rest = divmod(n, chunk)
    carry = step(None, problem.sample(0, min(n, chunk)))
    if full > 1:
        def body(index, carry):
            return tuple(step(carry, problem.sample(index, chunk)))

        carry = fori_loop(1, full, body, tuple(carry), like=problem.theta_c, shim=problem.shim)
    if rest and full >= 1:
        carry = step(carry, problem.sample(full, rest))
    return carry


def num_chunks(problem):
    """How many chunks :func:`run_chunks` processes."""
    return math.ceil(problem.settings.num_samples / problem.chunk)


def check_choice_or_none(name, value, choices):
    """``value`` is ``None`` or one of ``choices``."""
    return value if value is None else check_choice(name, value, choices)
