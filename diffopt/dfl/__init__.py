"""Decision-focused learning: gradients of "predict, then optimize" pipelines.

A model predicts the cost vector ``θ̂`` of a linear optimisation problem
(``min_w ⟨c, w⟩`` or ``max``); a solver turns it into a decision ``w(θ̂)``.
This family trains the model through the solver, on every framework:

- :func:`spo_plus_loss`: the SPO+ loss (Elmachtoub & Grigas, 2022), a convex
  surrogate of the regret with subgradient ``2(w* − w(2θ̂ − c))``;
- :func:`blackbox`: differentiation of blackbox solvers (Vlastelica et al.,
  2020): the solver with the interpolation gradient;
- :func:`negative_identity`: the solver with the gradient ``−(incoming
  gradient)`` (Sahoo et al., 2023);
- :func:`regret`, :func:`normalized_regret`: the metrics.

The perturbed optimizer, the Fenchel-Young loss and I-MLE
(:func:`diffopt.perturbed`, :class:`diffopt.FenchelYoungLoss`,
:func:`diffopt.imle.imle`) are the other members of PyEPO's line-up.

A solver is ``solver(costs) -> decisions``: ``costs`` ``[B, ...]`` in, one
decision per instance out, shaped like ``costs``; a function of framework
arrays (e.g. :func:`diffopt.dag_shortest_path`) or a NumPy solver marked with
:func:`diffopt.host_solver` (e.g. :func:`diffopt.knapsack_solver`). Bind its
other parameters with :func:`functools.partial`. ``minimize`` (required)
says whether it minimises or maximises ``⟨costs, w⟩``.
"""

from diffopt.dfl._blackbox import blackbox, negative_identity
from diffopt.dfl._metrics import normalized_regret, regret
from diffopt.dfl._spo import spo_plus_loss

__all__ = ["spo_plus_loss", "blackbox", "negative_identity", "regret", "normalized_regret"]
