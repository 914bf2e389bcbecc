"""diffopt: differentiable discrete solvers and sorting for every array framework.

One core written against autoray; thin per-framework shims in
:mod:`diffopt.backends`. Importing diffopt imports no framework.
"""

from diffopt import backends
from diffopt.host import HostSolver, host_solver
from diffopt.noise import Gumbel, Noise, Normal
from diffopt.random import Rng, make_rng
from diffopt.solvers import (
    argmax_one_hot,
    dag_shortest_path,
    grid_edges,
    grid_shortest_path,
    knapsack_solver,
    ranking,
    shortest_path,
    top_k_mask,
)

__version__ = "0.1.0"

__all__ = [
    "backends",
    "host_solver",
    "HostSolver",
    "Noise",
    "Normal",
    "Gumbel",
    "Rng",
    "make_rng",
    "argmax_one_hot",
    "top_k_mask",
    "ranking",
    "shortest_path",
    "grid_shortest_path",
    "grid_edges",
    "dag_shortest_path",
    "knapsack_solver",
]

from diffopt.perturbations import FenchelYoungLoss, make_perturbed_fun, perturbed, perturbed_max  # noqa: E402

__all__ += ["perturbed", "perturbed_max", "FenchelYoungLoss", "make_perturbed_fun"]

# diffopt.imle is a module that can be called: diffopt.imle(...) is diffopt.imle.imle(...)
from diffopt import dfl, imle, sorting  # noqa: E402  (modules: diffopt.imle.aimle, diffopt.sorting.diff_sort, ...)
from diffopt.dfl import blackbox, negative_identity, normalized_regret, regret, spo_plus_loss  # noqa: E402

__all__ += ["imle", "sorting", "dfl", "spo_plus_loss", "blackbox", "negative_identity", "regret",
            "normalized_regret"]

from diffopt.sorting import soft_argsort, soft_permutation, soft_rank, soft_sort, soft_topk  # noqa: E402

__all__ += ["soft_sort", "soft_rank", "soft_topk", "soft_permutation", "soft_argsort"]

backends._load_imported()  # the shims of frameworks imported already, checked against every family's kernels
