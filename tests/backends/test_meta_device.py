"""Device safety without a GPU: the hot paths run on torch's ``meta`` device.

A meta tensor has a shape, a dtype and a device but no data, so any hidden
host round trip (``.item()``, ``.numpy()``, a Python ``if`` on a value) or any
constant made on the host and mixed into the computation (e.g. a CPU
``arange``) fails here as it would on a CUDA device, where it would cost a
synchronisation or raise a device mismatch. Forward and backward passes run;
outputs and gradients must stay on ``meta``.

What cannot run on ``meta``, by design, and is not tested here:

- diffopt's random streams: ``torch.Generator`` cannot be created on the meta
  device, so ``rng=`` seeds and generators do not work there; the tests draw
  with a noise object that samples from torch's default generator on the
  input's device (:class:`MetaNormal`, :class:`MetaGumbel`).
- the eager state update of :class:`~diffopt.imle.AdaptiveTargetDistribution`
  (β is a Python float, updated from one number read on the host); the
  functional ``target_state=`` path runs.
- host solvers (:func:`diffopt.host_solver`) and the ``differentiable_sorting``
  drop-in (its matrices and indices are NumPy constants, as in the original).
"""

import pytest

import diffopt
from diffopt import imle as dimle
from diffopt.sorting import soft_permutation, soft_rank, soft_sort, soft_topk

from conftest import SELECTED

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif("torch" not in SELECTED, reason="torch is not among DIFFOPT_TEST_BACKENDS")


class MetaNormal(diffopt.Normal):
    def sample(self, shape, like, rng=None):
        return torch.randn(tuple(shape), device=like.device, dtype=like.dtype)


class MetaGumbel(diffopt.Gumbel):
    def sample(self, shape, like, rng=None):
        return torch.empty(tuple(shape), device=like.device, dtype=like.dtype).exponential_().log().neg()


def _top2(x):
    return diffopt.top_k_mask(x, 2)


CASES = {
    "soft_sort": lambda v: soft_sort(v, temperature=0.5),
    "soft_sort_pow2_descending": lambda v: soft_sort(v[:, :4], temperature=0.5, descending=True),
    "soft_sort_cauchy": lambda v: soft_sort(v, temperature=0.5, relaxation="cauchy"),
    "soft_rank": lambda v: soft_rank(v, temperature=0.5),
    "soft_topk": lambda v: soft_topk(v, 2, relaxation="optimal"),
    "soft_permutation": lambda v: soft_permutation(v),
    "perturbed": lambda v: diffopt.perturbed(diffopt.argmax_one_hot, num_samples=8, sigma=0.5,
                                             noise=MetaNormal())(v),
    "perturbed_chunks_mean": lambda v: diffopt.perturbed(diffopt.argmax_one_hot, num_samples=8, sigma=0.5,
                                                         noise=MetaGumbel(), chunk_size=3,
                                                         control_variate="mean")(v),
    "perturbed_recompute": lambda v: diffopt.perturbed(_top2, num_samples=8, sigma=0.5, noise=MetaNormal(),
                                                       chunk_size=3, residual="recompute")(v),
    "perturbed_multiplicative": lambda v: diffopt.perturbed(_top2, num_samples=8, sigma=0.5, noise=MetaNormal(),
                                                            chunk_size=3, multiplicative=True)(v),
    "perturbed_ranking_value": lambda v: diffopt.perturbed(diffopt.ranking, num_samples=8, sigma=0.5,
                                                           noise=MetaNormal(), control_variate="value")(v),
    "fenchel_young": lambda v: diffopt.FenchelYoungLoss(diffopt.argmax_one_hot, num_samples=8,
                                                        noise=MetaNormal())(v, torch.zeros_like(v)),
    "perturbed_max": lambda v: diffopt.perturbed_max(diffopt.argmax_one_hot, num_samples=8, noise=MetaNormal())(v),
    "imle": lambda v: dimle.imle(_top2, noise_distribution=MetaGumbel(), nb_samples=2)(v),
    "aimle_state": lambda v: dimle.aimle(_top2, noise_distribution=MetaGumbel(), nb_samples=2, symmetric_perturbation=True)(
        v, target_state=dimle.AdaptiveTargetDistribution().init_state(v)),
    # learnable smoothing on the device: the scale's value is not read on the host
    "soft_rank_array_temperature": lambda v: soft_rank(v, temperature=torch.ones((), device="meta")),
    "perturbed_array_sigma": lambda v: diffopt.perturbed(diffopt.argmax_one_hot, num_samples=8,
                                                         sigma=torch.ones((), device="meta"), noise=MetaNormal())(v),
    "ste": lambda v: dimle.ste(_top2, noise_distribution=MetaGumbel(), nb_samples=2)(v),
}


@pytest.mark.parametrize("case", list(CASES))
def test_runs_on_meta_device(case):
    x = torch.empty(4, 6, device="meta", requires_grad=True)
    y = CASES[case](x)
    assert y.device.type == "meta"
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g.device.type == "meta" and g.shape == x.shape and g.dtype == x.dtype
