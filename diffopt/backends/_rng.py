"""Random streams shared by the shims: :class:`Rng` and its seeded subclasses.

The public face is :mod:`diffopt.random` (which also holds ``make_rng``);
this module sits below the shims and imports no framework and no other part
of diffopt but its dtype rules and type aliases.

Explicit, reproducible randomness for every backend.

Every stochastic call in diffopt takes ``rng=``: ``None`` (the framework's
global generator), an ``int`` seed, the framework's own generator or key
(``numpy.random.Generator``, ``torch.Generator``, ``tf.random.Generator``, a
JAX key), or an :class:`Rng` made by :func:`make_rng`. Each backend turns it
into an :class:`Rng`, a stream that draws in the dtype and on the device of a
reference array and can be replayed from its :attr:`Rng.key`.
"""

from __future__ import annotations

from typing import Any
import numpy as np

import autoray

from diffopt._typing import Array, RngLike, Shape
from diffopt._dtypes import compute_dtype

__all__ = ["Rng", "SeededRng", "GeneratorRng", "sample_dtype", "child_seed", "seed_from_numpy",
           "accepted_rng_types", "rng_type_error", "describe"]

_SEED_BOUND = 2**63 - 1


def sample_dtype(dtype: str) -> str:
    """The dtype to draw in before casting to ``dtype``.

    Half-precision draws are made in float32 and rounded once, so that
    transforms such as ``-log(-log(u))`` do not hit 0 or 1.

    Parameters
    ----------
    dtype : str
        The dtype wanted, e.g. ``"float16"``.

    Returns
    -------
    str
        ``"float32"`` for half precision, else ``dtype``.

    Examples
    --------
    >>> from diffopt.backends._rng import sample_dtype
    >>> sample_dtype("float16"), sample_dtype("float64")
    ('float32', 'float64')
    """
    return compute_dtype(dtype)


class Rng:
    """A replayable random stream bound to a reference array.

    Subclasses (one per backend) implement ``_normal``, ``_uniform``,
    ``_gamma`` and :meth:`fold`; this class handles dtypes and clipping.

    Parameters
    ----------
    key
        Everything needed to replay the stream: ``make_rng(rng.key, like)``
        draws the same numbers again. A JAX key or a TensorFlow seed tensor
        (arrays, which may be traced), or a Python ``int`` elsewhere.
    like : array
        Reference array: default dtype and device of the draws.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import make_rng
    >>> rng = make_rng(0, np.zeros(1, dtype="float32"))
    >>> u = rng.uniform((1000,))
    >>> u.dtype, bool(np.all((u > 0) & (u < 1)))
    (dtype('float32'), True)
    >>> bool(np.array_equal(make_rng(rng.key, rng.like).uniform((1000,)), u))  # replayed
    True
    """

    def __init__(self, key: Any, like: Array) -> None:
        self.key = key
        self.like = like
        self.dtype = autoray.get_dtype_name(like)

    def _target(self, dtype):
        dtype = dtype or self.dtype
        if not dtype.startswith(("float", "bfloat")):
            dtype = "float32"
        return dtype

    def _cast(self, x, dtype):
        return x if autoray.get_dtype_name(x) == dtype else autoray.astype(x, dtype)

    def normal(self, shape: Shape, dtype: str | None = None) -> Array:
        """Standard normal draws of ``shape``."""
        dtype = self._target(dtype)
        return self._cast(self._normal(tuple(shape), sample_dtype(dtype)), dtype)

    def uniform(self, shape: Shape, dtype: str | None = None) -> Array:
        """Uniform draws in the open interval (0, 1), safe for ``log``."""
        dtype = self._target(dtype)
        sdtype = sample_dtype(dtype)
        u = self._uniform(tuple(shape), sdtype)
        info = np.finfo(sdtype)
        return self._cast(self._clip(u, float(info.tiny), float(1.0 - info.epsneg)), dtype)

    def gamma(self, shape: Shape, alpha: float, dtype: str | None = None) -> Array:
        """Gamma draws of ``shape`` with shape parameter ``alpha`` and scale 1."""
        if not alpha > 0:
            raise ValueError(f"gamma shape parameter must be > 0, got alpha={alpha!r}")
        dtype = self._target(dtype)
        return self._cast(self._gamma(tuple(shape), float(alpha), sample_dtype(dtype)), dtype)

    def fold(self, index: int) -> Rng:
        """An independent child stream, a deterministic function of ``key`` and ``index``."""
        raise NotImplementedError

    def replay(self, key: Any, like: Array) -> Rng:
        """This stream again from its ``key`` (maybe the traced copy a shim passes), drawing
        like ``like``: no new :func:`~diffopt.random.make_rng` (nothing is re-detected or re-seeded).

        Examples
        --------
        >>> import numpy as np
        >>> from diffopt import make_rng
        >>> rng = make_rng(5, np.zeros(1))
        >>> again = rng.replay(rng.key, np.zeros(2))
        >>> bool(np.array_equal(again.normal((3,)), rng.normal((3,))))
        True
        """
        return type(self)(key, like)

    def _clip(self, u, lo, hi):
        """``u`` clipped to ``[lo, hi]`` (a shim may override: torch.compile needs ``torch.clamp``)."""
        return autoray.do("clip", u, lo, hi)

    def _normal(self, shape, dtype):
        raise NotImplementedError

    def _uniform(self, shape, dtype):
        raise NotImplementedError

    def _gamma(self, shape, alpha, dtype):
        raise NotImplementedError


def child_seed(seed, index):
    """A 63-bit seed derived from ``(seed, index)`` (NumPy's SeedSequence)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & _SEED_BOUND


def seed_from_numpy(generator):
    """Draw a 63-bit seed from a NumPy ``Generator``/``RandomState``/module."""
    if isinstance(generator, np.random.Generator):
        return int(generator.integers(_SEED_BOUND))
    return int(generator.randint(_SEED_BOUND))


#: What every shim's ``make_rng`` takes for ``rng=`` (:func:`diffopt.random.make_rng` also an :class:`Rng`).
COMMON_RNG_TYPES = ("None", "an int seed in [0, 2**63)", "a numpy.random.Generator or RandomState")
#: What each of diffopt's shims takes besides :data:`COMMON_RNG_TYPES`: the messages list exactly these.
OWN_RNG_TYPES = {
    "torch": ("a torch.Generator",),
    "jax": ("a key from jax.random.key (or jax.random.PRNGKey)",),
    "tensorflow": ("a tf.random.Generator", "an integer seed tensor of shape [2]"),
    "cupy": ("a cupy.random.Generator",),
}
#: The framework a generator or key of another one belongs to, by its type's top-level module.
_FRAMEWORK_OF_MODULE = {"torch": "torch", "jax": "jax", "jaxlib": "jax", "tensorflow": "tensorflow",
                        "keras": "tensorflow", "cupy": "cupy"}


def accepted_rng_types(framework):
    """Everything ``rng=`` may be for arrays of ``framework``, as the error messages list it.

    Examples
    --------
    >>> from diffopt.backends._rng import accepted_rng_types
    >>> accepted_rng_types("torch")[-2:]
    ('a torch.Generator', 'an Rng from diffopt.make_rng')
    """
    return (*COMMON_RNG_TYPES, *OWN_RNG_TYPES.get(framework, ()), "an Rng from diffopt.make_rng")


def describe(obj):
    """``obj``'s type for a message, with its value (a scalar) or its dtype and shape (an array).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.backends._rng import describe
    >>> describe(1.5), describe(np.zeros((2,), "int32"))
    ('float 1.5', 'numpy.ndarray of dtype int32 and shape (2,)')
    """
    cls = type(obj)
    label = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    if isinstance(obj, (bool, float, complex, str, bytes)):
        return f"{label} {obj!r}"
    dtype, shape = getattr(obj, "dtype", None), getattr(obj, "shape", None)
    if dtype is not None and shape is not None:
        return f"{label} of dtype {getattr(dtype, 'name', dtype)} and shape {tuple(shape)}"
    return label


def _hint(framework, obj):
    """Why ``obj`` is not a seed, where a common mistake explains it."""
    other = _FRAMEWORK_OF_MODULE.get(type(obj).__module__.split(".")[0])
    if isinstance(obj, bool):
        return ": a bool is not a seed"
    if isinstance(obj, float):
        return ": a seed is an int, not a float"
    if other is not None and other != framework:
        return f": a {other} generator or key seeds only {other} arrays"
    if "int" in str(getattr(obj, "dtype", "")):
        return ": an integer array is not a seed, pass a Python int"
    return ""


def rng_type_error(framework, rng):
    """The ``TypeError`` for an ``rng`` that arrays of ``framework`` do not take.

    It lists every accepted type (:func:`accepted_rng_types`) and says what was received.

    Examples
    --------
    >>> from diffopt.backends._rng import rng_type_error
    >>> print(rng_type_error("torch", 1.5))  # doctest: +ELLIPSIS
    rng for torch arrays must be None, an int seed ..., a torch.Generator or an Rng ...; got float 1.5: a seed is ...
    """
    accepted = accepted_rng_types(framework)
    return TypeError(f"rng for {framework} arrays must be {', '.join(accepted[:-1])} or {accepted[-1]}; "
                     f"got {describe(rng)}{_hint(framework, rng)}")


class SeededRng(Rng):
    """An :class:`Rng` whose key is a Python ``int`` seed (NumPy, CuPy, torch).

    Subclasses provide ``_generator()``, built once from :attr:`key`.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt import make_rng
    >>> rng = make_rng(3, np.zeros(1))
    >>> rng.key, bool(np.array_equal(rng.fold(1).normal((4,)), rng.fold(1).normal((4,))))
    (3, True)
    >>> bool(np.array_equal(rng.fold(1).normal((4,)), rng.fold(2).normal((4,))))
    False
    """

    def __init__(self, key: Any, like: Array) -> None:
        super().__init__(int(key), like)
        self._gen = None

    @property
    def generator(self):
        """The framework generator, created on first use."""
        if self._gen is None:
            self._gen = self._generator()
        return self._gen

    def fold(self, index: int) -> Rng:
        return type(self)(child_seed(self.key, index), self.like)

    def _generator(self):
        raise NotImplementedError


class GeneratorRng(SeededRng):
    """Stream backed by ``xp.random.default_rng(key)``: NumPy, and CuPy on the current device.

    Subclasses set ``xp`` (the array module).
    """

    xp = np

    def _generator(self):
        return self.xp.random.default_rng(self.key)

    def _normal(self, shape, dtype):
        return self.generator.standard_normal(shape, dtype=dtype)

    def _uniform(self, shape, dtype):
        return self.generator.random(shape, dtype=dtype)

    def _gamma(self, shape, alpha, dtype):
        return self.generator.standard_gamma(alpha, size=shape, dtype=dtype)
