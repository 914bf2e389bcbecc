"""Edge cases of the I-MLE estimators on every backend: empty batches, keyword arguments,
one-dimensional θ, importing the aimle module.
"""

import math

import autoray as ar
import numpy as np

import diffopt
from diffopt import imle as imle_mod
from references import DY_4, X, top2


def test_importing_the_aimle_module_keeps_aimle_callable():
    import diffopt.imle.aimle  # noqa: F401  (binds diffopt.imle.aimle to the module)

    op = imle_mod.aimle(top2, input_noise_temperature=0.0)
    np.testing.assert_array_equal(op(X, rng=0), top2(X))


def test_aimle_state_is_untouched_by_an_empty_batch(grad_backend):
    target = imle_mod.AdaptiveTargetDistribution(beta_update_step=0.1)
    op = imle_mod.aimle(top2, target_distribution=target)
    before = target.state
    g = grad_backend.grad(lambda x: ar.do("sum", op(x, rng=0)), grad_backend.asarray(np.zeros((0, 4)), "float32"))
    assert tuple(g.shape) == (0, 4)
    assert target.state == before
    # and a real batch afterwards still updates it (to finite values)
    grad_backend.grad(lambda x: ar.do("sum", op(x, rng=0) * grad_backend.asarray(DY_4, "float32")),
                      grad_backend.asarray(X, "float32"))
    assert target.state != before and all(math.isfinite(v) for v in target.state)


# ------------------------------------------------------------------ API traps

def _top_m(x, m=2):
    return diffopt.top_k_mask(x, m)


def test_imle_forwards_keyword_arguments_to_the_solver(grad_backend):
    x = grad_backend.asarray(X, "float32")
    out = imle_mod.imle(_top_m)(x, m=1, rng=0)
    np.testing.assert_array_equal(grad_backend.to_numpy(out), diffopt.top_k_mask(X, 1))
    g = grad_backend.grad(lambda v: ar.do("sum", imle_mod.imle(_top_m)(v, m=1, rng=0) * grad_backend.asarray(DY_4, "float32")), x)
    assert np.isfinite(grad_backend.to_numpy(g)).all()


def test_imle_reads_a_1d_theta_as_a_batch_of_scalars(backend):
    seen = []

    def solver(v):
        seen.append(tuple(v.shape))
        return v * 0.0 + 1.0

    out = imle_mod.imle(solver, nb_samples=2)(backend.asarray([1.0, 2.0, 3.0], "float32"), rng=0)
    assert seen == [(6,)] and tuple(out.shape) == (6,)
    np.testing.assert_array_equal(backend.to_numpy(out), np.ones(6))  # the solver's output, sample by sample
