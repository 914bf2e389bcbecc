"""The I-MLE noise distributions (drop-in for ``torch-imle``'s ``imle.noise``): Gumbel, sum-of-Gamma.

This module mirrors ``imle.noise`` (its path and class names are the
original's: only the import line changes). The noise *protocol* and the
perturbed optimizers' noises (:class:`~diffopt.noise.Noise`,
:class:`~diffopt.noise.Normal`, :class:`~diffopt.noise.Gumbel`, the adapters
of the original packages' noise objects) are :mod:`diffopt.noise`; the
classes here are :class:`~diffopt.noise.Noise` objects too. Each distribution draws in the framework, dtype
and device of a reference array ``like`` from an explicit ``rng`` (see
:mod:`diffopt.random`), so one object serves NumPy, autograd, torch, JAX and
TensorFlow. They are :class:`diffopt.Noise` objects: the Gumbel one also has a
``score`` and can be given to :func:`diffopt.perturbed`.
"""

from __future__ import annotations

from typing import Any
import math

import numpy as np

import autoray as ar

from diffopt._arrays import as_shape
from diffopt._ops import do
from diffopt._typing import Array, RngLike, Shape
from diffopt._checks import check_int, check_positive, check_real
from diffopt.noise import Noise
from diffopt.random import make_rng, sample_dtype

__all__ = ["BaseNoiseDistribution", "GumbelNoiseDistribution", "SumOfGammaNoiseDistribution"]


class BaseNoiseDistribution(Noise):
    """Base class of the I-MLE noise distributions.

    Subclasses implement :meth:`sample`. ``sample(shape)`` alone (the
    ``torch-imle`` signature) draws NumPy float64 values; the estimators
    always pass ``like`` and ``rng``.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.imle import BaseNoiseDistribution
    >>> class Zeros(BaseNoiseDistribution):
    ...     def sample(self, shape, like=None, rng=None):
    ...         return np.zeros(tuple(shape))
    >>> Zeros().sample((2, 3)).shape
    (2, 3)
    """

    def sample(self, shape: Shape, like: Array = None, rng: RngLike = None) -> Array:
        """Draw noise of ``shape`` in the framework, dtype and device of ``like``.

        Parameters
        ----------
        shape : sequence of int
            Shape of the draw (a ``torch.Size`` is accepted).
        like : array, optional
            Reference array; default: a NumPy float64 array.
        rng : None, int, generator/key or :class:`diffopt.random.Rng`
            Source of randomness (see :mod:`diffopt.random`).

        Returns
        -------
        array
            Noise of ``shape``.
        """
        raise NotImplementedError

    def score(self, z: Array) -> Array:
        """Gradient of the negative log-density at ``z``."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form score")

    @staticmethod
    def _rng(shape, like, rng):
        if like is None:
            like = np.zeros((), dtype=np.float64)
        return as_shape(shape), make_rng(rng, like)

    @staticmethod
    def _dtypes(stream):
        """``(dtype, compute)``: the draw's dtype and the one to compute it in (float32 for half)."""
        dtype = stream._target(None)
        return dtype, sample_dtype(dtype)

    @staticmethod
    def _cast(x, dtype):
        return x if ar.get_dtype_name(x) == dtype else ar.astype(x, dtype)


class GumbelNoiseDistribution(BaseNoiseDistribution):
    """Gumbel noise with ``location`` μ and ``scale`` s.

    Sampled as ``μ - s·log(-log U)``. Negative log-density
    ``ν(z) = (z-μ)/s + exp(-(z-μ)/s)``, score ``(1 - exp(-(z-μ)/s))/s``.

    Parameters
    ----------
    location : float, default 0.0
    scale : float, default 1.0
        Must be > 0.
    device : optional
        Accepted for drop-in compatibility; draws follow ``like``'s device.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.imle import GumbelNoiseDistribution
    >>> noise = GumbelNoiseDistribution(location=0.0, scale=2.0)
    >>> z = noise.sample((2, 3), like=np.zeros(1, dtype="float32"), rng=0)
    >>> z.shape, z.dtype
    ((2, 3), dtype('float32'))
    >>> float(noise.score(np.array(0.0)))  # (1 - exp(0)) / s
    0.0
    """

    name = "gumbel"

    def __init__(self, location: float = 0.0, scale: float = 1.0, device: Any = None) -> None:
        del device
        self.location = check_real("location", location)
        self.scale = float(check_positive("scale", scale))

    def __repr__(self):
        return f"GumbelNoiseDistribution(location={self.location}, scale={self.scale})"

    def sample(self, shape: Shape, like: Array = None, rng: RngLike = None) -> Array:
        shape, stream = self._rng(shape, like, rng)
        dtype, compute = self._dtypes(stream)
        u = stream.uniform(shape, dtype=compute)
        return self._cast(self.location - self.scale * do("log", -do("log", u)), dtype)

    def score(self, z: Array) -> Array:
        return (1.0 - do("exp", -(z - self.location) / self.scale)) / self.scale


class SumOfGammaNoiseDistribution(BaseNoiseDistribution):
    """Sum-of-Gamma noise of Niepert et al. (2021).

    ``SoG(k, s) = (Σ_{i=1..s} Gamma(shape 1/k, scale k/i) - ln s) / k``. The
    sum of ``k`` independent draws tends to a standard Gumbel as ``s`` grows,
    which makes it the natural perturbation for top-``k``-like solvers.
    Per element: mean ``(H_s - ln s)/k``, variance ``Σ_{i≤s} i⁻² / k``.

    Parameters
    ----------
    k : float
        Must be > 0 (usually the ``k`` of a top-``k`` problem).
    nb_iterations : int, default 10
        ``s``, the number of Gamma terms (>= 1).
    device : optional
        As in :class:`GumbelNoiseDistribution`.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.imle import SumOfGammaNoiseDistribution
    >>> noise = SumOfGammaNoiseDistribution(k=2)
    >>> z = noise.sample((4, 5), like=np.zeros(1), rng=0)
    >>> z.shape, bool(np.array_equal(z, noise.sample((4, 5), like=np.zeros(1), rng=0)))
    ((4, 5), True)
    """

    name = "sum_of_gamma"
    #: No closed-form density: not usable as ``noise=`` of :func:`diffopt.perturbed`.
    has_score = False

    def __init__(self, k: int, nb_iterations: int = 10, device: Any = None) -> None:
        del device
        self.k = float(check_positive("k", k))
        self.nb_iterations = check_int("nb_iterations", nb_iterations, minimum=1)

    def __repr__(self):
        return f"SumOfGammaNoiseDistribution(k={self.k}, nb_iterations={self.nb_iterations})"

    def sample(self, shape: Shape, like: Array = None, rng: RngLike = None) -> Array:
        shape, stream = self._rng(shape, like, rng)
        s = self.nb_iterations
        dtype, compute = self._dtypes(stream)
        draws = stream.gamma((s,) + shape, 1.0 / self.k, dtype=compute)
        total = draws[0] * self.k
        for i in range(1, s):
            total = total + draws[i] * (self.k / (i + 1))
        return self._cast((total - math.log(s)) / self.k, dtype)
