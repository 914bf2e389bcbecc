"""Resolve once: a public call of the solver-wrapping estimators inspects its arrays' framework a
bounded number of times, whatever the number of samples, the batch or the number of chunks.

A framework look-up is a call of :func:`autoray.infer_backend` (diffopt's own inference,
``diffopt.backends.backend_name``, goes through it). Each op is called once to warm it, then the
look-ups of one more call (forward and backward) are counted, at two sizes. The solver is written
on a namespace bound in advance (:func:`diffopt._ops.namespace`), so that only diffopt's look-ups
are counted.
"""

import numpy as np
import pytest

import diffopt
from diffopt import FenchelYoungLoss, blackbox, negative_identity, perturbed, perturbed_max, regret, spo_plus_loss
from diffopt._ops import first_max_mask, namespace
from diffopt.imle import aimle, imle, ste

from references import LIMIT, LookupCounter  # issue 30: at most 5 framework look-ups per call
# (num_samples, batch, chunk_size): one chunk, then many samples in 8 chunks on a bigger batch
SIZES = [(4, 2, None), (64, 9, 8)]


def _solver(backend):
    xp = namespace("autograd" if backend.name == "numpy" else backend.name)  # bound once, here

    def argmax_one_hot(x):
        return first_max_mask(x, xp=xp)

    def cheapest(c):
        return first_max_mask(-c, xp=xp)

    return argmax_one_hot, cheapest, xp


def _ops(backend, n, chunk):
    """``name -> loss(theta)`` (a scalar), for ``n`` samples in chunks of ``chunk``."""
    argmax, cheapest, xp = _solver(backend)
    total = xp.sum
    kw = dict(num_samples=n, sigma=0.5, chunk_size=chunk)
    pert, fmax, fy = perturbed(argmax, **kw), perturbed_max(argmax, **kw), FenchelYoungLoss(argmax, **kw)
    gumbel = perturbed(argmax, noise="gumbel", **kw)
    est = dict(nb_samples=n)
    i, a, s = imle(argmax, **est), aimle(argmax, **est), ste(argmax, **est)
    spo = spo_plus_loss(cheapest, minimize=True)
    bb, nid = blackbox(cheapest, minimize=True), negative_identity(cheapest, minimize=True)

    def label(theta):
        return backend.asarray(np.eye(theta.shape[1])[np.zeros(theta.shape[0], dtype=int)])

    return {
        "perturbed": lambda t, y: total(pert(t, rng=0) * y),
        "perturbed (Gumbel noise)": lambda t, y: total(gumbel(t, rng=0) * y),
        "perturbed_max": lambda t, y: total(fmax(t, rng=0)),
        "FenchelYoungLoss": lambda t, y: fy(t, y, rng=0),
        "imle": lambda t, y: total(i(t, rng=0)),
        "aimle": lambda t, y: total(a(t, rng=0)),
        "ste": lambda t, y: total(s(t, rng=0)),
        "spo_plus_loss": lambda t, y: spo(t, y, y),
        "blackbox": lambda t, y: total(bb(t) * y),
        "negative_identity": lambda t, y: total(nid(t) * y),
        "regret": lambda t, y: total(regret(cheapest, t, y, minimize=True)),
    }, label


OPS = ["perturbed", "perturbed (Gumbel noise)", "perturbed_max", "FenchelYoungLoss", "imle", "aimle", "ste", "spo_plus_loss", "blackbox",
       "negative_identity", "regret"]


@pytest.mark.parametrize("op", OPS)
def test_one_call_makes_a_bounded_number_of_framework_look_ups(backend, op):
    if backend.name in ("cupy",):
        pytest.skip("counted on the CPU frameworks")
    counter = LookupCounter()
    counts = []
    for n, batch, chunk in SIZES:
        ops, label = _ops(backend, n, chunk)
        theta_np = np.random.default_rng(0).normal(size=(batch, 5))
        theta = backend.asarray(theta_np)
        y = label(theta)
        f = ops[op]
        if op == "regret" or not backend.has_grad:
            call = lambda: f(theta, y)  # noqa: E731  forward only (regret has no gradient)
        else:
            call = lambda: backend.grad(lambda t: f(t, y), theta)  # noqa: E731  forward and backward
        counts.append(counter.count(call))
        assert counts[-1] <= LIMIT, (op, n, batch, chunk, dict(counter.calls))
    # the same count at both sizes: nothing is looked up per sample, instance or chunk
    assert counts[0] == counts[1], (op, counts)


def test_the_counter_counts(backend):
    """The counter sees look-ups: ``do`` without a bound namespace infers on every call."""
    from diffopt._ops import do

    counter = LookupCounter()
    x = backend.asarray(np.ones(3))
    assert counter.count(lambda: [do("exp", x) for _ in range(7)]) == 7
