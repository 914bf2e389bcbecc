"""Noise distributions for perturbed optimizers: sampling and score.

A noise object has ``sample(shape, like, rng=None)``, drawing in ``like``'s
framework, dtype and device, and ``score(z)``, the gradient of the negative
log-density ``ν`` at ``z`` used by the score-function estimator
``∇y_σ(θ) = E[f(θ + σZ) ∇ν(Z)ᵀ] / σ``. Subclass :class:`Noise` to add one.
"""

import autoray as ar

from diffopt.random import make_rng, sample_dtype

__all__ = ["Noise", "Normal", "Gumbel", "get_noise"]


class Noise:
    """Base class of noise distributions.

    Subclasses implement :meth:`sample` and :meth:`score`.
    """

    name = None

    def sample(self, shape, like, rng=None):
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

    def score(self, z):
        """Gradient of the negative log-density at ``z`` (same shape as ``z``)."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash(type(self))


class Normal(Noise):
    """Standard normal noise: ``ν(z) = |z|²/2``, score ``z``."""

    name = "normal"

    def sample(self, shape, like, rng=None):
        return make_rng(rng, like).normal(shape)

    def score(self, z):
        return z


class Gumbel(Noise):
    """Standard Gumbel noise: ``ν(z) = z + exp(-z)``, score ``1 - exp(-z)``.

    Sampled as ``-log(-log U)`` from uniforms in the open interval (0, 1).
    """

    name = "gumbel"

    def sample(self, shape, like, rng=None):
        dtype = ar.get_dtype_name(like)
        u = make_rng(rng, like).uniform(shape, dtype=sample_dtype(dtype))
        z = -ar.do("log", -ar.do("log", u))
        return z if sample_dtype(dtype) == dtype else ar.astype(z, dtype)

    def score(self, z):
        return 1.0 - ar.do("exp", -z)


_NAMED = {"normal": Normal, "gumbel": Gumbel}


def get_noise(noise, argname="noise"):
    """A :class:`Noise` from a name (``'normal'``, ``'gumbel'``) or a noise object.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything that is neither a name nor an object with ``sample`` and ``score``.
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
    if callable(getattr(noise, "sample", None)) and callable(getattr(noise, "score", None)):
        return noise
    raise TypeError(
        f"{argname} must be a name ({sorted(_NAMED)}) or an object with sample() and score(), "
        f"got {type(noise).__name__}"
    )
