"""The bitonic sorting network: its schedule, and the fixed matrices/indices of the drop-in API.

A network for ``n = 2**k`` values has ``k`` stages; stage ``s`` (0-based) has
``s + 1`` layers whose compare-and-swap partners are ``m = 2**(s - j)`` apart
(``j = 0 .. s``). In stage ``s`` the comparators of every other block of
``2**(s + 1)`` values run in the descending direction; the last stage is all
ascending, so the network sorts ascending.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "check_power_of_two",
    "schedule",
    "layer_pairs",
    "bitonic_matrices",
    "bitonic_indices",
    "bitonic_woven_matrices",
    "bitonic_network",
    "pretty_bitonic_network",
]


def check_power_of_two(n, name="n"):
    """Return ``log2(n)``; raise ``ValueError`` unless ``n`` is a power of two >= 1.

    Parameters
    ----------
    n : int
        The length to check.
    name : str
        Name used in the error message.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 or n & (n - 1):
        raise ValueError(
            f"{name} must be a power of two (1, 2, 4, 8, ...) for the bitonic drop-in API, "
            f"got {name}={n!r}; pad the input, or use diffopt.sorting.soft_sort, which pads for you"
        )
    return int(n).bit_length() - 1


@functools.lru_cache(maxsize=64)
def schedule(n, reverse=False):
    """``(stage, m)`` for every layer of the network on ``n = 2**k`` values, in order.

    The one schedule of the package: the drop-in matrices and indices, the
    reshape-based network of :mod:`diffopt.sorting._soft` and the torch kernels
    all run it.

    Parameters
    ----------
    n : int
        A power of two.
    reverse : bool
        Give ``m`` for the bit-reversed storage layout of
        :mod:`diffopt.sorting._soft` (logical distance ``m`` is stored ``n / 2m`` apart).

    Returns
    -------
    tuple of (int, int)
        ``stage`` (0-based; it fixes the direction pattern) and ``m``, the
        distance between the two inputs of every comparator of the layer.
    """
    sizes = tuple((stage, 1 << (stage - j)) for stage in range(check_power_of_two(n)) for j in range(stage + 1))
    return tuple((stage, n // (2 * m)) for stage, m in sizes) if reverse else sizes


def layer_pairs(n, stage, m):
    """The comparators of one layer, in the order of the drop-in API.

    Parameters
    ----------
    n, stage, m : int
        Network size and a layer from :func:`schedule`.

    Returns
    -------
    a, b : ndarray of int
        The first and second input of each of the ``n // 2`` comparators (``b = a + m``).
    descending : ndarray of bool
        Whether the comparator puts the maximum at ``a``.
    """
    idx = np.arange(n)
    a = idx[(idx & m) == 0]
    return a, a + m, ((a >> (stage + 1)) & 1).astype(bool)


def _layers(n):
    """Per layer: ``a, b`` (comparator inputs) and ``lo, hi`` (where min and max go)."""
    for stage, m in schedule(n):
        a, b, desc = layer_pairs(n, stage, m)
        yield a, b, np.where(desc, b, a), np.where(desc, a, b)


def bitonic_matrices(n: int) -> list[np.ndarray]:
    """Selection matrices of the bitonic network on ``n`` values.

    Parameters
    ----------
    n : int
        Length of the vectors to sort; must be a power of two.

    Returns
    -------
    list of tuple of ndarray
        One ``(l, r, map_l, map_r)`` per layer: ``l``, ``r`` (``n/2 x n``) pick the two
        inputs of each comparator, ``map_l``, ``map_r`` (``n x n/2``) put the minimum and
        the maximum back, so a layer is ``map_l @ min(l @ x, r @ x) + map_r @ max(...)``.

    Raises
    ------
    ValueError
        If ``n`` is not a power of two.

    Examples
    --------
    >>> from diffopt.sorting import bitonic_matrices
    >>> layers = bitonic_matrices(4)
    >>> len(layers), [m.shape for m in layers[0]]
    (3, [(2, 4), (2, 4), (4, 2), (4, 2)])
    """
    check_power_of_two(n)
    half = np.arange(n // 2)
    out = []
    for a, b, lo, hi in _layers(n):
        l, r = np.zeros((n // 2, n)), np.zeros((n // 2, n))
        map_l, map_r = np.zeros((n, n // 2)), np.zeros((n, n // 2))
        l[half, a], r[half, b] = 1.0, 1.0
        map_l[lo, half], map_r[hi, half] = 1.0, 1.0
        out.append((l, r, map_l, map_r))
    return out


def bitonic_indices(n: int) -> list[np.ndarray]:
    """Index form of the bitonic network on ``n`` values.

    Parameters
    ----------
    n : int
        As in :func:`bitonic_matrices` (``ValueError`` if it is not a power of two).

    Returns
    -------
    list of tuple of ndarray
        One ``(weave, unweave)`` pair of ``int32`` index vectors per layer: ``x[weave]``
        holds all first inputs then all second inputs; ``concatenate([mins, maxs])[unweave]``
        puts the results back.

    Examples
    --------
    >>> from diffopt.sorting import bitonic_indices
    >>> layers = bitonic_indices(4)
    >>> len(layers), sorted(layers[0][0].tolist())
    (3, [0, 1, 2, 3])
    """
    check_power_of_two(n)
    h = n // 2
    out = []
    for a, b, lo, hi in _layers(n):
        unweave = np.zeros(n, dtype="i4")
        unweave[lo], unweave[hi] = np.arange(h), np.arange(h, n)
        out.append((np.concatenate([a, b]).astype("i4"), unweave))
    return out


def bitonic_woven_matrices(n: int) -> list[np.ndarray]:
    """Fused ``n x n`` permutation matrices of the bitonic network.

    Parameters
    ----------
    n : int
        Number of values, a power of two, as in :func:`bitonic_matrices`.

    Returns
    -------
    list of ndarray
        ``L + 1`` matrices for ``L`` layers: the first weaves the input, each later one
        un-weaves the previous layer and weaves the next (the last only un-weaves).

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.sorting import bitonic_woven_matrices
    >>> mats = bitonic_woven_matrices(4)
    >>> len(mats), all(bool(np.all(m.sum(axis=0) == 1)) for m in mats)  # 3 layers, permutations
    (4, True)
    """
    eye = np.eye(n)
    mats, last = [], eye
    for weave, unweave in bitonic_indices(n):
        mats.append(eye[weave] @ last)
        last = eye[unweave]
    mats.append(last)
    return mats


def bitonic_network(n: int) -> list:
    """Print the comparators of the network, one layer per line.

    Each comparator prints as ``a>b`` (ascending: the minimum goes to ``a``) or ``a<b``
    (descending); a dashed line closes every stage.

    Parameters
    ----------
    n : int
        A power of two.

    Examples
    --------
    >>> from diffopt.sorting import bitonic_network
    >>> bitonic_network(2)  # doctest: +NORMALIZE_WHITESPACE
     0>1
    --------
    """
    for stage, m in schedule(n):
        a, b, desc = layer_pairs(n, stage, m)
        print("".join(f"{i:>2}{'<' if d else '>'}{j:<d}\t" for i, j, d in zip(a, b, desc)))
        if m == 1:
            print("-" * (n * 4))


def _pretty_cell(k, a, b, desc):
    """Three characters drawing wire ``k`` for comparator ``(a, b)``."""
    if k == a:
        return " ╰─" if desc else " ╭─"
    if k == b:
        return "─╮ " if desc else "─╯ "
    return "───" if a < k < b else " │ "


def pretty_bitonic_network(n: int) -> None:
    """Draw the network with box characters, one comparator per line.

    Parameters
    ----------
    n : int
        Number of wires, a power of two (at most 16 keeps a line within 50 characters).

    Examples
    --------
    >>> from diffopt.sorting import pretty_bitonic_network
    >>> pretty_bitonic_network(2)  # doctest: +NORMALIZE_WHITESPACE
     0  1
     ╭──╯
    """
    print("".join(f" {i:<2d}" for i in range(n)))
    for stage, m in schedule(n):
        for a, b, d in zip(*layer_pairs(n, stage, m)):
            print("".join(_pretty_cell(k, a, b, d) for k in range(n)))
