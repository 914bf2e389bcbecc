"""Second derivatives of the I-MLE estimators: they are not defined and raise.
"""

import autoray as ar
import pytest

from diffopt._ops import first_max_mask
from references import THETA, hessian


# ------------------------------------------------------------ ops that keep raising


def test_imle_second_derivatives_raise(grad_backend):
    b = grad_backend
    from diffopt.imle import imle

    op = imle(lambda x: first_max_mask(x), nb_samples=2)
    with b.float64():
        t = b.asarray(THETA[None], "float64")
        with pytest.raises((NotImplementedError, RuntimeError), match="second-order"):
            hessian(b, lambda u: ar.do("sum", op(u, rng=0) * u), t)
