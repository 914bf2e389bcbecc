"""Synthetic Warcraft-like terrain: maps of terrain types, their costs and RGB renderings.

A map is an ``H × W`` grid of terrain types drawn from a smooth random field,
so that types form regions; every type has a known cost and a colour. The
rendered image paints each cell as a ``patch × patch`` RGB tile (the type's
colour plus pixel noise). The task of ``examples/warcraft_like.py`` is to read
costs off the tiles so that the shortest path on the predicted costs is the
true one.
"""

import numpy as np

from diffopt.solvers import grid_shortest_path

__all__ = ["TERRAIN_NAMES", "TERRAIN_COSTS", "TERRAIN_COLOURS", "make_types", "render", "tile_features",
           "true_paths", "Dataset"]

TERRAIN_NAMES = ("grass", "sand", "forest", "water", "mountain")
#: Cost of entering a cell of each terrain type.
TERRAIN_COSTS = np.array([0.8, 1.2, 3.0, 7.0, 9.0])
#: RGB colour in [0, 1] of each terrain type.
TERRAIN_COLOURS = np.array([
    (0.45, 0.75, 0.30), (0.90, 0.80, 0.50), (0.10, 0.40, 0.15), (0.20, 0.35, 0.85), (0.55, 0.50, 0.50),
])


def make_types(num_maps, size, rng):
    """Terrain types ``[num_maps, size, size]`` from a smoothed random field.

    Parameters
    ----------
    num_maps, size : int
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray of int
        Values in ``range(len(TERRAIN_NAMES))``.
    """
    field = rng.normal(size=(num_maps, size + 2, size + 2))
    smooth = sum(np.roll(np.roll(field, dr, 1), dc, 2) for dr in (-1, 0, 1) for dc in (-1, 0, 1))[:, 1:-1, 1:-1]
    edges = np.quantile(smooth, [0.3, 0.5, 0.7, 0.85])
    return np.digitize(smooth, edges)


def render(types, patch, rng, noise=0.08):
    """RGB images ``[num_maps, size*patch, size*patch, 3]`` of the maps.

    Parameters
    ----------
    types : numpy.ndarray of int, shape [num_maps, size, size]
    patch : int
        Pixels per cell side.
    rng : numpy.random.Generator
    noise : float, default 0.08
        Standard deviation of the pixel noise.

    Returns
    -------
    numpy.ndarray of float32
    """
    colours = TERRAIN_COLOURS[types]
    image = np.repeat(np.repeat(colours, patch, axis=1), patch, axis=2)
    image = image + noise * rng.normal(size=image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def tile_features(images, patch):
    """Per-cell features: the flattened tiles, ``[num_maps, size, size, patch*patch*3]``.

    Parameters
    ----------
    images : numpy.ndarray, shape [num_maps, size*patch, size*patch, 3]
    patch : int

    Returns
    -------
    numpy.ndarray of float32
    """
    m, hp, wp, c = images.shape
    h, w = hp // patch, wp // patch
    tiles = images.reshape(m, h, patch, w, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return tiles.reshape(m, h, w, patch * patch * c).astype(np.float32)


def true_paths(costs):
    """Shortest-path indicators ``[num_maps, size, size]`` of the cost maps (8 neighbours).

    Parameters
    ----------
    costs : numpy.ndarray, shape [num_maps, size, size]

    Returns
    -------
    numpy.ndarray of float32
    """
    return np.stack([grid_shortest_path(c) for c in costs]).astype(np.float32)


class Dataset:
    """Maps, images, tile features, true costs and true paths, from one seed.

    Parameters
    ----------
    num_maps : int
    size : int, default 8
        Cells per side.
    patch : int, default 4
        Pixels per cell side.
    seed : int, default 0

    Attributes
    ----------
    types, images, features, costs, paths : numpy.ndarray
    """

    def __init__(self, num_maps, size=8, patch=4, seed=0):
        rng = np.random.default_rng(seed)
        self.types = make_types(num_maps, size, rng)
        self.images = render(self.types, patch, rng)
        self.features = tile_features(self.images, patch)
        self.costs = TERRAIN_COSTS[self.types].astype(np.float32)
        self.paths = true_paths(self.costs)

    def __len__(self):
        return len(self.types)
