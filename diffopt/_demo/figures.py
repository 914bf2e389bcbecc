"""Matplotlib figures of the demo and the examples (Agg backend, small PNGs)."""

import os

import numpy as np

from diffopt._demo import graph

__all__ = ["pyplot", "save", "draw_graph", "draw_path_map", "demo_figure"]

DPI = 80


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path, dpi=DPI):
    """Write ``fig`` as a PNG at ``path`` (folders created), close it, return the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return path


def draw_graph(ax, edge_weights, costs=None, title=""):
    """The 9-node graph with edge widths proportional to ``edge_weights``.

    Parameters
    ----------
    ax : matplotlib Axes
    edge_weights : numpy.ndarray, shape [14]
        Perturbed path weights in :data:`graph.EDGES` order.
    costs : numpy.ndarray, shape [14], optional
        Edge costs to print on the edges.
    title : str
    """
    pos = graph.POSITIONS
    for e, (i, j) in enumerate(graph.EDGES):
        (x0, y0), (x1, y1) = pos[i], pos[j]
        w = float(edge_weights[e])
        colour = "tab:red" if e == graph.EDGE_6_8 else "black"
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="-|>", lw=0.4 + 5 * w, color=colour, alpha=0.25 + 0.75 * w,
                                    shrinkA=9, shrinkB=9))
        if costs is not None:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, f"{costs[e]:.2f}", fontsize=6, color="tab:blue",
                    ha="center", va="center", bbox=dict(fc="white", ec="none", pad=0.5, alpha=0.8))
    ax.scatter(pos[:, 0], pos[:, 1], s=220, c="white", edgecolors="black", zorder=3)
    for k, (x, y) in enumerate(pos):
        ax.text(x, y, str(k), ha="center", va="center", fontsize=8, zorder=4)
    ax.set_xlim(-0.4, 3.4)
    ax.set_ylim(-0.4, 3.4)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9)


def draw_path_map(ax, background, path, title="", cmap="Greys", path_colour="tab:red", other=None):
    """A cost map (or image) with a path drawn over it.

    Parameters
    ----------
    ax : matplotlib Axes
    background : numpy.ndarray, shape [H, W] or [H', W', 3]
    path : numpy.ndarray, shape [H, W]
        0/1 (or marginal) path indicator.
    title : str
    cmap : str
    path_colour : str
    other : numpy.ndarray, optional
        A second path, drawn as hollow markers.
    """
    h, w = path.shape
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    ax.imshow(background, cmap=cmap, extent=extent, interpolation="nearest")
    rows, cols = np.nonzero(path > 0.5)
    ax.scatter(cols, rows, s=18, c=path_colour, marker="s")
    if other is not None:
        rows, cols = np.nonzero(other > 0.5)
        ax.scatter(cols, rows, s=40, facecolors="none", edgecolors="yellow", marker="o")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def _argmax_panel(ax, data):
    k = np.arange(data["softmax"].shape[-1])
    ax.bar(k - 0.2, data["perturbed"][0], width=0.4, label="perturbed argmax")
    ax.bar(k + 0.2, data["softmax"][0], width=0.4, label="softmax(θ/σ)")
    ax.set_title("Gumbel-perturbed argmax", fontsize=9)
    ax.legend(fontsize=7)


def _or_panel(ax, data):
    size = int(round(np.sqrt(len(data["theta"]))))
    img = data["value"].reshape(size, size)
    ax.imshow(img, origin="lower", extent=(-1, 1, -1, 1), cmap="coolwarm", vmin=-1, vmax=1)
    ax.contour(np.linspace(-1, 1, size), np.linspace(-1, 1, size), data["closed_form"].reshape(size, size),
               levels=[-0.5, 0.0, 0.5], colors="black", linewidths=0.8)
    if "grad" in data:
        t, g = data["theta"], data["grad"]
        ax.quiver(t[:, 0], t[:, 1], g[:, 0], g[:, 1], scale=40, width=0.004)
    ax.set_title("perturbed OR (contours: closed form)", fontsize=9)


def _ascent_panel(ax, data):
    ax.plot(data["history"], marker=".")
    ax.axhline(0.95, ls=":", c="grey")
    ax.set_xlabel("gradient-ascent step", fontsize=8)
    ax.set_ylabel("weight of edge 6→8", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_title("perturbed shortest path", fontsize=9)


def _imle_panel(ax, data):
    ax.plot(data["losses"])
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("Hamming loss", fontsize=8)
    ax.set_title("I-MLE: learning a target path", fontsize=9)


def _sorting_panel(ax, data):
    k = np.arange(len(data["x"]))
    ax.plot(k, np.sort(data["x"]), "k_", ms=14, label="np.sort")
    ax.plot(k, data["soft"], "o", label="diff_sort")
    ax.plot(k, data["smooth"], "x", label="smooth=0.05")
    ax.set_title("bitonic soft sort", fontsize=9)
    ax.legend(fontsize=7)


def _dfl_panel(ax, data):
    ax.plot(data["regret"], marker=".")
    ax.set_xlabel("Adam step", fontsize=8)
    ax.set_ylabel("normalised test regret", fontsize=8)
    ax.set_ylim(0, None)
    ax.set_title("SPO+: learning to route", fontsize=9)


def demo_figure(backend, results, path):
    """One PNG with a panel per demo check that produced data.

    Parameters
    ----------
    backend : str
    results : dict
        Check name → :class:`diffopt._demo.checks.Result`.
    path : str

    Returns
    -------
    str
        The path written.
    """
    plt = pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    panels = [("argmax", _argmax_panel), ("or", _or_panel), ("shortest_path", _ascent_panel),
              ("shortest_path", lambda ax, d: draw_graph(ax, d["paths_after"], title="6→8 lifted (after ascent)")),
              ("imle", _imle_panel), ("sorting", _sorting_panel), ("dfl", _dfl_panel)]
    axes = axes.ravel()
    axes[-1].axis("off")
    for ax, (name, draw) in zip(axes, panels):
        data = results.get(name).data if name in results else {}
        if data:
            draw(ax, data)
        else:
            ax.axis("off")
    fig.suptitle(f"diffopt demo — {backend}")
    fig.tight_layout()
    return save(fig, path)
