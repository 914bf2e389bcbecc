"""``diffsort`` drop-in: ``from diffsort import DiffSortNet`` -> ``from diffopt.sorting.diffsort import DiffSortNet``.

Differentiable sorting networks (Petersen et al., ICML 2021 and ICLR 2022) with
diffsort's constructor and outputs: the relaxed sorted values ``(B, n)`` and the
relaxed permutation matrices ``(B, n, n)``, with ``sorted = x @ P`` (``P[b, i, j]``
is the weight of input ``i`` in sorted position ``j``), on every framework
(NumPy, HIPS autograd, torch, JAX under ``jit``/``vmap``/``grad``, TensorFlow
under ``tf.function``), differentiated by the framework's own autodiff.

Each comparator of a layer mixes its inputs ``a, b`` with
``alpha = f(steepness * (b - a))`` (``f`` the ``distribution``)::

    min = alpha * a + (1 - alpha) * b        max = (1 - alpha) * a + alpha * b

and the columns of ``P`` mix the same way. diffsort does this with dense
selection matrices, ``O(n^3)`` per layer for ``P``; here a layer gathers and
scatters columns by index, ``O(n^2)`` per layer for ``P`` and ``O(n)`` for the
values. The networks are diffsort's: ``'bitonic'`` (``n`` not a power of two:
the top wires of the next power are discarded, as diffsort does) and
``'odd_even'`` (odd-even transposition, ``n`` layers).

The relaxations ``distribution`` (``d = b - a``, ``s = steepness``):

``'logistic'``      ``sigmoid(s d)``
``'logistic_phi'``  ``sigmoid(s d / (|d| + 1e-10) ** art_lambda)`` (ART, adaptive steepness)
``'gaussian'``      ``Phi(s d)``, the standard normal CDF
``'reciprocal'``    ``(v / (2 + |v|) + 1) / 2``, ``v = s d``
``'cauchy'``        ``arctan(v) / pi + 1/2`` (the default)
``'optimal'``       the optimal monotonic sigmoid of Petersen et al. (ICLR 2022)

The numbers equal diffsort's (float64, values and gradients, to rounding).
``DiffSortNet`` is a plain Python object, not a ``torch.nn.Module``: it holds
no parameters or tensors, so ``.to(device)``, ``.cuda()``, ``.cpu()``,
``.train()`` and ``.eval()`` return it unchanged and ``device`` is ignored
(the outputs live where the input does); it can be stored on a module as
diffsort's is. Unlike diffsort, any leading batch shape is accepted (the last
axis is sorted), and bad arguments raise ``ValueError`` instead of asserting.

>>> import numpy as np
>>> from diffopt.sorting.diffsort import DiffSortNet
>>> net = DiffSortNet("odd_even", 3, steepness=100.0, distribution="logistic")
>>> values, perm = net(np.array([[2.0, 0.0, 1.0]]))
>>> np.round(values, 2), perm.shape
(array([[0., 1., 2.]]), (1, 3, 3))
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from diffopt._checks import check_floating
from diffopt._ops import namespace

__all__ = ["DiffSortNet", "sort", "bitonic_network", "odd_even_network", "DISTRIBUTIONS"]

def _sigmoid(v, xp):
    """``1 / (1 + exp(-v))`` as ``(1 + tanh(v / 2)) / 2``: no overflow, and smooth at 0 (no ``abs``)."""
    if xp.name == "torch":  # diffsort's own op: the same rounding as the original
        return v.sigmoid()
    return 0.5 + 0.5 * xp.tanh(0.5 * v)


def _alpha_logistic(d, s, lam, xp):
    return _sigmoid(d * s, xp)


def _alpha_logistic_phi(d, s, lam, xp):
    return _sigmoid(d * s / (xp.abs(d) + 1e-10) ** lam, xp)


def _alpha_gaussian(d, s, lam, xp):
    return 0.5 + 0.5 * xp.erf(d * s / math.sqrt(2.0))


def _alpha_reciprocal(d, s, lam, xp):
    v = s * d
    return 0.5 * (v / (2.0 + xp.abs(v)) + 1.0)


def _alpha_cauchy(d, s, lam, xp):
    return xp.arctan(s * d) / math.pi + 0.5


def _alpha_optimal(d, s, lam, xp):
    v = s * d
    c = xp.where(v > 0.25, 0.25 + 0.0 * v, xp.where(v < -0.25, -0.25 + 0.0 * v, v))
    sign = xp.where(v > 0.25, 1.0 + 0.0 * v, xp.where(v < -0.25, -1.0 + 0.0 * v, 0.0 * v))
    return c + 0.5 + sign * (0.25 - 1.0 / 16.0 / (xp.abs(v) + 1e-10))


#: ``alpha(d, steepness, art_lambda, xp)``: the weight of ``a`` in the minimum, per distribution.
DISTRIBUTIONS = {
    "logistic": _alpha_logistic,
    "logistic_phi": _alpha_logistic_phi,
    "gaussian": _alpha_gaussian,
    "reciprocal": _alpha_reciprocal,
    "cauchy": _alpha_cauchy,
    "optimal": _alpha_optimal,
}


# ------------------------------------------------------------------ networks
# A layer is (a, b, lo, hi, keep): comparator inputs a, b; where their minimum and
# maximum go (lo, hi); and the wires no comparator touches (keep), which pass through.


def _layer(n, pairs):
    """``(a, b, lo, hi, keep)`` index arrays of one layer from ``(a, b, lo, hi)`` tuples."""
    cols = np.array(pairs, dtype=np.int64).reshape(-1, 4).T
    keep = np.setdiff1d(np.arange(n), np.concatenate([cols[2], cols[3]]))
    return (*cols, keep)


@functools.lru_cache(maxsize=64)
def bitonic_network(n):
    """diffsort's bitonic network on ``n`` wires, as index layers.

    For ``n`` below the next power of two ``N``, the network runs on ``N`` wires of
    which the first ``N - n`` are dropped, with every comparator that touches a
    dropped wire (diffsort's convention).

    Parameters
    ----------
    n : int
        Number of wires, ``n >= 1``.

    Returns
    -------
    tuple of tuple of ndarray
        Per layer ``(a, b, lo, hi, keep)``: comparator inputs, where the minimum and
        the maximum go, and the wires passed through unchanged.
    """
    blocks = max(0, math.ceil(math.log2(n))) if n > 1 else 0
    big = 1 << blocks
    off = big - n
    layers = []
    for block in range(blocks):
        for layer in range(block + 1):
            m = 1 << (block - layer)
            pairs = []
            for a in (i for i in range(big) if not i & m):
                b = a + m
                if a >= off:  # b > a is live too
                    lo, hi = (b, a) if (a >> (block + 1)) & 1 else (a, b)
                    pairs.append((a - off, b - off, lo - off, hi - off))
            layers.append(_layer(n, pairs))
    return tuple(layers)


@functools.lru_cache(maxsize=64)
def odd_even_network(n):
    """diffsort's odd-even transposition network on ``n`` wires: ``n`` layers.

    Layer ``t`` compares the neighbours ``(i, i + 1)`` for ``i = t mod 2, t mod 2 + 2, ...``.

    ``n >= 1`` wires; the layers as :func:`bitonic_network` returns them.
    """
    return tuple(_layer(n, [(i, i + 1, i, i + 1) for i in range(t % 2, n - 1, 2)]) for t in range(n))


_NETWORKS = {"bitonic": bitonic_network, "odd_even": odd_even_network}


# ------------------------------------------------------------------- running


def _take(v, idx, xp):
    """``v[..., idx]`` (autograd's ``take`` has no gradient along an inner axis of a 3-D array)."""
    return v[..., idx] if xp.name == "autograd" else xp.take(v, idx, axis=-1)


def _apply(v, layer, alpha, xp):
    """One layer on the last axis of ``v`` (``alpha`` broadcast against the gathered inputs)."""
    a, b, lo, hi, keep = layer
    va, vb = _take(v, a, xp), _take(v, b, xp)
    mins = alpha * va + (1.0 - alpha) * vb
    maxs = (1.0 - alpha) * va + alpha * vb
    order = np.argsort(np.concatenate([lo, hi, keep]), kind="stable")
    return _take(xp.concatenate([mins, maxs, _take(v, keep, xp)], axis=-1), order, xp)


def sort(sorting_network, vectors, steepness=10.0, art_lambda=0.25, distribution="cauchy"):
    """Relaxed sort of ``vectors`` along the last axis by a network (diffsort's ``sort``).

    Parameters
    ----------
    sorting_network : {'bitonic', 'odd_even'} or tuple
        A network name, or the layers of :func:`bitonic_network` /
        :func:`odd_even_network` (diffsort's dense matrices are not read).
    vectors : array
        Floating array ``(..., n)`` of any framework.
    steepness, art_lambda, distribution
        As in :class:`DiffSortNet`.

    Returns
    -------
    sorted : array ``(..., n)``
    permutation : array ``(..., n, n)``
        ``sorted = vectors @ permutation`` (each row a relaxed sort).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting.diffsort import sort
    >>> x, p = sort("bitonic", np.array([[3.0, 1.0, 2.0]]), steepness=1e3, distribution="gaussian")
    >>> np.round(x, 3), np.allclose(p.sum(axis=1), 1.0)
    (array([[1., 2., 3.]]), True)
    """
    if not hasattr(vectors, "shape"):
        vectors = np.asarray(vectors, dtype=float)
    check_floating("vectors", vectors)
    _check_distribution(distribution)
    n = vectors.shape[-1]
    layers = _NETWORKS[_check_type(sorting_network)](n) if isinstance(sorting_network, str) else sorting_network
    xp = namespace(vectors)
    f = DISTRIBUTIONS[distribution]
    x = vectors
    perm = _identity(x, xp)
    for layer in layers:
        a, b = _take(x, layer[0], xp), _take(x, layer[1], xp)
        alpha = f(b - a, steepness, art_lambda, xp)
        x = _apply(x, layer, alpha, xp)
        perm = _apply(perm, layer, alpha[..., None, :], xp)
    return x, perm


def _identity(x, xp):
    """The ``(..., n, n)`` identity in ``x``'s framework, dtype and device (a constant)."""
    n = x.shape[-1]
    if xp.name in ("numpy", "autograd"):  # a NumPy constant (autograd's take of a 2-D index has no gradient)
        return np.broadcast_to(np.eye(n, dtype=x.dtype), tuple(x.shape) + (n,))
    row = xp.concatenate([xp.ones_like(x[..., :1]), xp.zeros_like(x)], axis=-1)
    return xp.take(row, np.where(np.eye(n, dtype=bool), 0, 1), axis=-1)


def _check_type(kind):
    if kind not in _NETWORKS:
        raise ValueError(f"sorting_network_type must be one of {sorted(_NETWORKS)}, got {kind!r}")
    return kind


def _check_distribution(distribution):
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {sorted(DISTRIBUTIONS)}, got distribution={distribution!r}")
    return distribution


def _check_size(size):
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"size must be an integer >= 1, got size={size!r}")
    return int(size)


class DiffSortNet:
    """diffsort's ``DiffSortNet``: a relaxed sorting network of a fixed size.

    Parameters
    ----------
    sorting_network_type : {'bitonic', 'odd_even'}
        The network.
    size : int
        Length of the sorted axis.
    device : str
        Accepted for compatibility and ignored (the outputs live where the input does).
    steepness : float
        Inverse temperature: the sigmoid's argument is ``steepness * (b - a)``.
    art_lambda : float
        The exponent of ``'logistic_phi'`` (ART).
    interpolation_type : str, optional
        Deprecated alias of ``distribution`` (as in diffsort; if both are given,
        ``distribution`` must be ``'cauchy'``, ``None`` or equal to it).
    distribution : str
        One of :data:`DISTRIBUTIONS` (default ``'cauchy'``).

    Examples
    --------
    >>> import numpy as np
    >>> net = DiffSortNet("bitonic", 4, steepness=1e3, distribution="logistic_phi")
    >>> values, perm = net(np.array([[0.3, -1.0, 2.0, 0.5]]))
    >>> np.round(values, 3)
    array([[-1. ,  0.3,  0.5,  2. ]])
    >>> np.round(perm[0].sum(axis=0), 6)   # every column of P sums to 1
    array([1., 1., 1., 1.])
    """

    def __init__(self, sorting_network_type, size, device="cpu", steepness=10.0, art_lambda=0.25,
                 interpolation_type=None, distribution="cauchy"):
        _check_type(sorting_network_type)
        size = _check_size(size)
        if interpolation_type is not None:
            if distribution not in (None, "cauchy", interpolation_type):
                raise ValueError(
                    f"distribution={distribution!r} and interpolation_type={interpolation_type!r} disagree; "
                    "interpolation_type is a deprecated alias of distribution: give one")
            distribution = interpolation_type
        _check_distribution(distribution)
        for name, value in (("steepness", steepness), ("art_lambda", art_lambda)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a real number, got {name}={value!r}")
        self.sorting_network_type = sorting_network_type
        self.size = size
        self.sorting_network = _NETWORKS[sorting_network_type](size)
        self.steepness = float(steepness)
        self.art_lambda = float(art_lambda)
        self.distribution = distribution

    def forward(self, vectors):
        """Sorted values ``(..., size)`` and permutation matrices ``(..., size, size)`` of ``vectors``."""
        if not hasattr(vectors, "shape"):
            vectors = np.asarray(vectors, dtype=float)
        if len(vectors.shape) < 1 or vectors.shape[-1] != self.size:
            raise ValueError(f"vectors must have size={self.size} entries along the last axis, "
                             f"got shape {tuple(vectors.shape)}")
        return sort(self.sorting_network, vectors, self.steepness, self.art_lambda, self.distribution)

    __call__ = forward

    def _same(self, *args, **kwargs):
        return self

    to = cuda = cpu = train = eval = _same

    def __repr__(self):
        return (f"DiffSortNet({self.sorting_network_type!r}, {self.size}, steepness={self.steepness}, "
                f"art_lambda={self.art_lambda}, distribution={self.distribution!r})")
