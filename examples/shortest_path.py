"""Perturbed shortest path on a 9-node graph, and gradient ascent on four edge costs.

A DAG solver (dynamic programming, batched over the perturbed cost vectors)
is made differentiable with ``diffopt.perturbed``. The scalar of interest is
the weight of the edge 6→8 in the perturbed solution; its gradient with
respect to the four top-right edge costs (6→8, 6→5, 5→4, 4→8) drives 30
steps of gradient ascent that make the direct edge 6→8 the shortest route.

    python examples/shortest_path.py --backend jax
"""

import numpy as np

import _common
from diffopt._demo import graph
from diffopt._demo.checks import shortest_path_ascent
from diffopt._demo.figures import draw_graph


def plot(out, backend, path):
    """Graph before and after the ascent (edge width = perturbed weight) and the ascent curve."""
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    before = np.concatenate([graph.FIXED_COSTS, graph.INITIAL_CORNER_COSTS])
    after = np.concatenate([graph.FIXED_COSTS, out["corner"]])
    draw_graph(axes[0], out["paths_before"], before, f"before: weight(6→8) = {out['paths_before'][graph.EDGE_6_8]:.3f}")
    draw_graph(axes[1], out["paths_after"], after, f"after: weight(6→8) = {out['final_weight']:.3f}")
    axes[2].plot(out["history"], marker=".")
    axes[2].set_ylim(0, 1.02)
    axes[2].set_xlabel("gradient-ascent step")
    axes[2].set_ylabel("perturbed weight of edge 6→8")
    axes[2].grid(alpha=0.3)
    fig.suptitle(f"perturbed shortest path 0→8 ({backend})")
    fig.tight_layout()
    return _common.save(fig, path)


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=20_000)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args(argv)
    backend, timer = _common.backend_of(args), _common.Timer()
    out = shortest_path_ascent(backend, args.num_samples, args.steps, args.seed, _common.progress)
    np.set_printoptions(precision=3, suppress=True)
    print(f"backend {backend}: {args.num_samples} samples, σ=0.05")
    print("edges:", " ".join(f"{i}→{j}" for i, j in graph.EDGES))
    print("perturbed path before:", out["paths_before"])
    print("gradient of weight(6→8) w.r.t. costs of 6→8, 6→5, 5→4, 4→8:", out["first_grad"])
    print("costs after ascent:", out["corner"])
    print(f"weight(6→8): {out['history'][0]:.3f} -> {out['final_weight']:.3f} after {args.steps} steps")
    path = plot(out, backend, _common.figure_path(args, "shortest_path"))
    print(f"figure: {path}  ({timer})")


if __name__ == "__main__":
    main()
