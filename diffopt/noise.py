"""The noise protocol of every estimator, and the perturbed optimizers' noises (Normal, Gumbel).

This module defines what a noise object is (:class:`Noise`), the two noises of
:func:`diffopt.perturbed` (:class:`Normal`, :class:`Gumbel`) and the adapters
that accept the original packages' noise objects. The I-MLE distributions
(sum-of-Gamma, torch-imle's Gumbel) live in :mod:`diffopt.imle.noise`, the
drop-in path of ``torch-imle``'s ``imle.noise``.

A noise object has ``sample(shape, like, rng=None)``, drawing in ``like``'s
framework, dtype and device, and ``score(z)``, the gradient of the negative
log-density ``ν`` at ``z`` used by the score-function estimator
``∇y_σ(θ) = E[f(θ + σZ) ∇ν(Z)ᵀ] / σ``. Second derivatives also need
``score_derivative(z)``, the diagonal of ``∇²ν`` (the coordinates are
independent), for ``∇²y_σ(θ) = E[f(θ + σZ) (∇ν∇νᵀ − ∇²ν)(Z)] / σ²``.
Subclass :class:`Noise` to add one.

Noise objects written for the original packages are accepted too, each in its
own calling convention, told apart by the signature of their ``sample``
method (see :func:`sample_convention`), never by guessing from values:

- ``optax.perturbations`` style: ``sample(key, sample_shape, dtype)`` and
  ``log_prob(x)`` (JAX keys); the score is ``-∇ log_prob``.
- ``torch-imle`` style: ``sample(shape)`` only, drawing from the sampler's
  own generator (an explicit ``rng=`` then warns that it is not used).

:class:`Normal` and :class:`Gumbel` themselves answer both ``sample(shape,
like, rng)`` and optax's ``sample(key, sample_shape=(), dtype=float)``.
"""

from __future__ import annotations

from typing import Any
import inspect
import warnings

import autoray as ar
import numpy as np

from diffopt._arrays import as_shape
from diffopt._ops import do, namespace
from diffopt._typing import Array, NoiseLike, RngLike, Shape
from diffopt.backends import backend_name, get_backend, same_framework
from diffopt.random import make_rng, sample_dtype

__all__ = ["Noise", "Normal", "Gumbel", "get_noise", "get_sampler", "sample_convention", "draw"]


def _split_sample_args(args, kwargs):
    """``('key', (key, shape, dtype))`` for optax's convention, else ``('shape', (shape, like, rng))``.

    optax's first argument is a JAX key (an array); diffopt's is a shape (a
    tuple, list or int), so the two never overlap.
    """
    first = args[0] if args else kwargs.get("key", kwargs.get("shape"))
    if "key" in kwargs or (args and hasattr(first, "shape") and hasattr(first, "dtype")):
        names = ("key", "sample_shape", "dtype")
        values = {"key": None, "sample_shape": (), "dtype": float}
    else:
        names = ("shape", "like", "rng")
        values = {"shape": None, "like": None, "rng": None}
    if len(args) > 3:
        raise TypeError(f"sample() takes at most 3 arguments ({', '.join(names)}), got {len(args)}")
    values.update(zip(names, args))
    for key, value in kwargs.items():
        if key not in names:
            raise TypeError(f"sample() got an unexpected keyword argument {key!r} (arguments: {', '.join(names)})")
        if key in names[:len(args)]:
            raise TypeError(f"sample() got multiple values for argument {key!r}")
        values[key] = value
    kind = "key" if names[0] == "key" else "shape"
    if kind == "shape" and (values["shape"] is None or values["like"] is None):
        raise TypeError("sample() needs shape and like: sample(shape, like, rng=None), "
                        "or optax's sample(key, sample_shape=(), dtype=float) with a JAX key")
    return kind, tuple(values[n] for n in names)




def _draw_with_key(kind, key, shape, dtype):
    """optax's ``sample(key, sample_shape, dtype)``: the key's framework draws (JAX)."""
    shim = get_backend(key, argnames=("key",))
    draw = getattr(shim, "draw_with_key", None)
    if draw is None:
        raise TypeError(
            f"sample(key, sample_shape, dtype) (optax's convention) needs a JAX key, got a {shim.NAME} "
            "array; for other frameworks call sample(shape, like, rng)"
        )
    return draw(kind, key, as_shape(shape), dtype)


class Noise:
    """Base class of noise distributions for :func:`diffopt.perturbed` and friends.

    Subclasses implement :meth:`sample` (draws in the framework, dtype and
    device of a reference array) and :meth:`score` (the gradient of the
    negative log-density ``ν``, used by the score-function estimator); an
    instance can then be passed as ``noise=`` wherever a noise name is
    accepted.

    Examples
    --------
    A Laplace noise, ``ν(z) = |z|``, score ``sign(z)``:

    >>> import numpy as np
    >>> import autoray as ar
    >>> import diffopt
    >>> class Laplace(diffopt.Noise):
    ...     name = "laplace"
    ...     def sample(self, shape, like, rng=None):
    ...         u = diffopt.make_rng(rng, like).uniform(shape) - 0.5
    ...         return -do("sign", u) * do("log1p", -2 * do("abs", u))
    ...     def score(self, z):
    ...         return do("sign", z)
    >>> pert = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=100, sigma=0.5, noise=Laplace())
    >>> pert(np.array([[0.0, 2.0, -1.0]]), rng=0).shape
    (1, 3)
    """

    name = None

    def sample(self, shape: Shape, like: Array, rng: RngLike = None) -> Array:
        """Draw noise of ``shape`` in the framework, dtype and device of ``like``.

        Parameters
        ----------
        shape : tuple of int
        like : array
            Reference array.
        rng : None, int, generator/key or :class:`diffopt.random.Rng`
            Source of randomness (see :mod:`diffopt.random`).
        """
        raise NotImplementedError

    def score(self, z: Array) -> Array:
        """Gradient of the negative log-density at ``z`` (same shape as ``z``)."""
        raise NotImplementedError

    def score_derivative(self, z: Array) -> Array:
        """Elementwise derivative of :meth:`score` at ``z`` (the diagonal of ``∇²ν``).

        Needed only for second derivatives (Hessians) of perturbed functions.
        """
        raise NotImplementedError(
            f"noise {self!r} defines no score_derivative(z) (the diagonal of the Hessian of its "
            "negative log-density), which second derivatives of perturbed functions need"
        )

    def log_prob(self, x: Array) -> Array:
        """Log-density at ``x`` up to an additive constant (as ``optax.perturbations``)."""
        raise NotImplementedError

    def bind(self, xp: Any) -> Any:
        """This noise for one call on the framework of the bound namespace ``xp``
        (:func:`diffopt._ops.namespace`): ``sample``/``score``/``score_derivative`` that
        look nothing up. The default is the noise itself; :class:`Gumbel` binds ``xp``.
        """
        del xp
        return self

    def __repr__(self):
        return f"{type(self).__name__}()"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash(type(self))


class Normal(Noise):
    """Standard normal noise: ``ν(z) = |z|²/2``, score ``z``, score derivative 1.

    ``sample(shape, like, rng=None)`` draws in ``like``'s framework;
    ``sample(key, sample_shape=(), dtype=float)`` with a JAX key is optax's
    call and draws ``jax.random.normal(key, sample_shape, dtype)`` (the same
    numbers as ``optax.perturbations.Normal``). ``log_prob(x) = -x²/2``.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import Normal
    >>> z = Normal().sample((2, 3), np.zeros(1, dtype=np.float32), rng=0)
    >>> z.shape, z.dtype
    ((2, 3), dtype('float32'))
    >>> Normal().score(np.array([-1.0, 0.5]))
    array([-1. ,  0.5])
    """

    name = "normal"

    def sample(self, *args: Any, **kwargs: Any) -> Array:
        kind, (a, b, c) = _split_sample_args(args, kwargs)
        if kind == "key":
            return _draw_with_key("normal", a, b, c)
        return make_rng(c, b).normal(as_shape(a))

    def score(self, z: Array) -> Array:
        return z

    def log_prob(self, x: Array) -> Array:
        return -0.5 * x**2

    def score_derivative(self, z: Array) -> Array:
        return do("ones_like", z)


class Gumbel(Noise):
    """Standard Gumbel noise: ``ν(z) = z + exp(-z)``, score ``1 - exp(-z)``, its derivative ``exp(-z)``.

    Sampled as ``-log(-log U)`` from uniforms in the open interval (0, 1).
    ``sample(key, sample_shape=(), dtype=float)`` with a JAX key is optax's
    call (``jax.random.gumbel``). ``log_prob(x) = -x - exp(-x)``.

    With Gumbel noise the perturbed argmax is exactly ``softmax(θ/σ)``.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import Gumbel
    >>> z = Gumbel().sample((4,), np.zeros(1), rng=0)
    >>> z.shape
    (4,)
    >>> Gumbel().score(np.array([0.0]))       # 1 - exp(-0)
    array([0.])
    """

    name = "gumbel"

    def sample(self, *args: Any, **kwargs: Any) -> Array:
        kind, (a, b, c) = _split_sample_args(args, kwargs)
        if kind == "key":
            return _draw_with_key("gumbel", a, b, c)
        return _BoundGumbel(namespace(b)).sample(a, b, c)

    def score(self, z: Array) -> Array:
        return 1.0 - do("exp", -z)

    def bind(self, xp: Any) -> Any:
        # a subclass may override sample/score: it keeps its own methods
        return _BoundGumbel(xp) if type(self) is Gumbel else self

    def log_prob(self, x: Array) -> Array:
        return -x - do("exp", -x)

    def score_derivative(self, z: Array) -> Array:
        return do("exp", -z)


_NAMED = {"normal": Normal, "gumbel": Gumbel}


def sample_convention(noise: Any) -> str | None:
    """Which calling convention ``noise.sample`` follows, from its signature.

    Parameters
    ----------
    noise : object
        Any object; its ``sample`` attribute is inspected, never called.

    Returns
    -------
    {'diffopt', 'key', 'shape', None}
        ``'diffopt'``: ``sample(shape, like, rng)`` (diffopt's own, also any
        ``sample(*args, **kwargs)``); ``'key'``: optax's ``sample(key,
        sample_shape, dtype)`` (first parameter named ``key``); ``'shape'``:
        ``torch-imle``'s ``sample(shape)`` (takes one argument only);
        ``None``: no callable ``sample`` or none of these.

    Examples
    --------
    >>> from diffopt.noise import Normal, sample_convention
    >>> class TorchImleStyle:
    ...     def sample(self, shape):
    ...         return None
    >>> sample_convention(Normal()), sample_convention(TorchImleStyle()), sample_convention(object())
    ('diffopt', 'shape', None)
    """
    sample = getattr(noise, "sample", None)
    if not callable(sample):
        return None
    try:
        sig = inspect.signature(sample)
    except (TypeError, ValueError):  # builtins without a signature: assume diffopt's
        return "diffopt"
    params = list(sig.parameters.values())
    if params and params[0].name in ("key", "rng_key", "prng_key"):
        return "key"
    for convention, args in (("diffopt", ((1,), None, None)), ("shape", ((1,),))):
        try:
            sig.bind(*args)
        except TypeError:
            continue
        return convention
    return None


class _KeyedNoise(Noise):
    """An optax-style noise (``sample(key, sample_shape, dtype)``, ``log_prob``) as a :class:`Noise`.

    Draws with a JAX key from ``rng`` (JAX arrays only: optax's samplers are
    ``jax.random`` functions); the score is ``-∇ log_prob`` by JAX autodiff.
    """

    def __init__(self, noise):
        self.noise = noise
        self.name = getattr(noise, "name", type(noise).__name__)

    def __repr__(self):
        return f"{type(self.noise).__name__}() (optax convention)"

    def sample(self, shape, like, rng=None):
        shim = get_backend(like)
        if not hasattr(shim, "draw_with_key"):
            raise TypeError(
                f"{type(self.noise).__name__}.sample(key, sample_shape, dtype) (optax's convention) draws "
                f"with a JAX key, but the input is a {shim.NAME} array; use diffopt.Normal() or "
                "diffopt.Gumbel(), which draw in every framework"
            )
        key = make_rng(rng, like).fold(0).key
        z = self.noise.sample(key, as_shape(shape), ar.get_dtype_name(like))
        return z if ar.get_dtype_name(z) == ar.get_dtype_name(like) else ar.astype(z, ar.get_dtype_name(like))

    def score(self, z):
        return get_backend(z).score_from_log_prob(self.noise.log_prob, z)

    def score_derivative(self, z: Array) -> Array:
        from diffopt.backends import get_backend

        return get_backend(z).score_derivative_from_log_prob(self.noise.log_prob, z)

    def log_prob(self, x: Array) -> Array:
        return self.noise.log_prob(x)


class _ShapeOnlySampler:
    """A ``torch-imle`` style sampler, ``sample(shape)``, called as ``sample(shape, like, rng)``.

    The draw comes from the sampler's own generator and is moved to ``like``'s
    framework (from NumPy), device and dtype. An explicit ``rng`` cannot reach
    it: that warns instead of being silently ignored.
    """

    #: :func:`draw` passes the caller's ``rng`` as given (to warn when one is set).
    raw_rng = True

    def __init__(self, noise, argname):
        self.noise = noise
        self.argname = argname

    def sample(self, shape, like, rng=None):
        if rng is not None:
            warnings.warn(
                f"{self.argname}.sample(shape) takes no rng (the torch-imle signature): rng={rng!r} "
                "does not control its draws, which come from its own generator; define "
                "sample(self, shape, like, rng=None) to make them reproducible",
                RuntimeWarning,
                stacklevel=4,
            )
        z = self.noise.sample(as_shape(shape))
        return _like(z, like, f"{self.argname}.sample(shape)")


def _like(z, like, what):
    """``z`` in ``like``'s framework (NumPy draws are converted), dtype and device."""
    shim = get_backend(like)
    if not same_framework(z, shim):
        if not isinstance(z, (np.ndarray, np.generic)):
            have = backend_name(z)
            raise TypeError(f"{what} returned a {have} array for {shim.NAME} input; return {shim.NAME} or NumPy arrays")
        z = shim.from_numpy(z, like)
    device = getattr(like, "device", None)
    if device is not None and getattr(z, "device", device) != device and callable(getattr(z, "to", None)):
        z = z.to(device)
    dtype = ar.get_dtype_name(like)
    return z if ar.get_dtype_name(z) == dtype else ar.astype(z, dtype)


def draw(sampler: Any, shape: Shape, like: Array, rng: RngLike = None) -> Array:
    """``sampler.sample(shape, like, rng)`` for a sampler from :func:`get_sampler`.

    ``rng`` (see :mod:`diffopt.random`) becomes an :class:`~diffopt.random.Rng`
    for ``like``, except for ``torch-imle`` style samplers, which receive it
    as given so that a set ``rng`` they cannot use warns.

    Parameters
    ----------
    sampler : object
        A result of :func:`get_sampler`.
    shape : tuple of int
        Shape of the draw.
    like : array
        Reference array: framework, dtype and device of the draw.
    rng : None, int, generator, key or Rng
        See :mod:`diffopt.random`.

    Returns
    -------
    array
        The draw, of ``shape``, in ``like``'s framework and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.noise import Gumbel, draw, get_sampler
    >>> z = draw(get_sampler(Gumbel()), (2, 3), np.zeros(3), rng=0)
    >>> z.shape, z.dtype
    ((2, 3), dtype('float64'))
    >>> bool(np.array_equal(z, draw(get_sampler(Gumbel()), (2, 3), np.zeros(3), rng=0)))
    True
    """
    if not getattr(sampler, "raw_rng", False):
        rng = make_rng(rng, like)
    return sampler.sample(shape, like, rng)


def get_sampler(noise: Any, argname: str = "noise_distribution") -> Any:
    """An object with ``sample(shape, like, rng)`` for a noise object of any convention.

    Parameters
    ----------
    noise : object
        With ``sample`` in one of the conventions of :func:`sample_convention`.
    argname : str
        Name of the argument, for error messages.

    Returns
    -------
    object
        ``noise`` itself (diffopt convention) or a wrapper with ``sample(shape, like, rng)``.

    Raises
    ------
    TypeError
        If ``noise.sample`` fits none of them (or an optax-style noise has no ``log_prob``).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.noise import Normal, get_sampler
    >>> noise = Normal()
    >>> get_sampler(noise) is noise  # diffopt's own convention: used as is
    True
    >>> class TorchImleStyle:
    ...     def sample(self, shape):
    ...         return np.ones(shape)
    >>> get_sampler(TorchImleStyle()).sample((2,), np.zeros(2, dtype="float32"))
    array([1., 1.], dtype=float32)
    """
    convention = sample_convention(noise)
    if convention == "diffopt":
        return noise
    if convention == "shape":
        return _ShapeOnlySampler(noise, argname)
    if convention == "key" and callable(getattr(noise, "log_prob", None)):
        return _KeyedNoise(noise)
    raise TypeError(
        f"{argname} must have sample(shape, like, rng=None) (diffopt), sample(shape) (torch-imle) or "
        f"sample(key, sample_shape, dtype) with log_prob(x) (optax), got {type(noise).__name__}"
    )


def get_noise(noise: NoiseLike, argname: str = "noise") -> Noise:
    """A :class:`Noise` from a name (``'normal'``, ``'gumbel'``) or a noise object.

    Parameters
    ----------
    noise : str, Noise subclass or object
        ``'normal'``, ``'gumbel'`` (any case), a :class:`Noise` class or instance,
        or an optax-style noise.
    argname : str
        Name of the argument, for error messages.

    Returns
    -------
    Noise
        The noise, instantiated or wrapped.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything that is neither a name, an object with ``sample(shape,
        like, rng)`` and ``score``, nor an optax-style noise (``sample(key,
        sample_shape, dtype)`` and ``log_prob``, wrapped: its score is
        ``-∇ log_prob``).

    Examples
    --------
    >>> from diffopt.noise import Gumbel, get_noise
    >>> isinstance(get_noise("gumbel"), Gumbel), isinstance(get_noise(Gumbel), Gumbel)
    (True, True)
    >>> get_noise("cauchy")
    Traceback (most recent call last):
        ...
    ValueError: unknown noise='cauchy'; use one of ['gumbel', 'normal'] or a diffopt.Noise object
    """
    if isinstance(noise, str):
        cls = _NAMED.get(noise.lower())
        if cls is None:
            raise ValueError(
                f"unknown {argname}={noise!r}; use one of {sorted(_NAMED)} or a diffopt.Noise object"
            )
        return cls()
    if isinstance(noise, type) and issubclass(noise, Noise):
        return noise()
    convention = sample_convention(noise)
    if convention == "key" and callable(getattr(noise, "log_prob", None)):
        return _KeyedNoise(noise)
    if convention == "diffopt" and callable(getattr(noise, "score", None)):
        if not getattr(noise, "has_score", True):
            raise TypeError(
                f"{argname}={noise!r} has no closed-form score (the gradient of its negative "
                "log-density), which the perturbed estimators need; use 'normal', 'gumbel' or a "
                "noise object with score()"
            )
        return noise
    raise TypeError(
        f"{argname} must be a name ({sorted(_NAMED)}), an object with sample(shape, like, rng) and "
        f"score(z), or an optax noise with sample(key, sample_shape, dtype) and log_prob(x); "
        f"got {type(noise).__name__}"
    )


class _BoundGumbel:
    """:class:`Gumbel` on the bound namespace ``xp`` of one call (see :meth:`Noise.bind`)."""

    def __init__(self, xp):
        self.xp = xp

    def sample(self, shape, like, rng=None):
        xp, dtype = self.xp, self.xp.get_dtype_name(like)
        u = make_rng(rng, like).uniform(as_shape(shape), dtype=sample_dtype(dtype))
        z = -xp.log(-xp.log(u))
        return z if sample_dtype(dtype) == dtype else xp.astype(z, dtype)

    def score(self, z):
        return 1.0 - self.xp.exp(-z)

    def score_derivative(self, z):
        return self.xp.exp(-z)


def bind(noise, xp):
    """``noise.bind(xp)`` (:meth:`Noise.bind`), or ``noise`` itself if it has no ``bind``."""
    method = getattr(noise, "bind", None)
    return noise if method is None else method(xp)


def score_derivative(noise, z):
    """``noise.score_derivative(z)``, or a clear ``NotImplementedError`` if the noise has none."""
    method = getattr(noise, "score_derivative", None)
    if method is None:
        return Noise.score_derivative(noise, z)
    return method(z)
