"""Edge cases of the soft sorting operators on every backend: NaN rows, empty inputs, the
largest finite values, bad arguments, keras models.
"""

import autoray as ar
import numpy as np
import pytest

from diffopt.sorting import soft_permutation, soft_rank, soft_sort, soft_topk
from references import INF, NAN, check_soft_sort_of_the_largest_finite_values


@pytest.mark.parametrize("sigma", [0.0, -1.0, INF, NAN])
def test_diff_argsort_sigma_must_be_positive(backend, sigma):
    from diffopt.sorting import bitonic_matrices, diff_argsort

    x = backend.asarray([0.5, -1.0, 2.0, 0.0], "float32")
    with pytest.raises(ValueError, match=r"\bsigma\b"):
        diff_argsort(bitonic_matrices(4), x, sigma=sigma)


def test_soft_rank_of_a_nan_row_is_nan_not_out_of_range(backend):
    ranks = backend.to_numpy(soft_rank(backend.asarray([NAN, 1.0, 0.0, 2.0, 3.0], "float32")))
    assert np.isnan(ranks).all(), ranks


# ------------------------------------------------------------ empty and degenerate inputs

@pytest.mark.parametrize("shape", [(0, 4), (2, 0), (3, 0, 2)])
def test_sorting_ops_on_empty_inputs_keep_their_shape(backend, shape):
    x = backend.asarray(np.zeros(shape), "float32")
    n = shape[-1]
    assert tuple(soft_sort(x).shape) == shape
    assert tuple(soft_rank(x).shape) == shape
    assert tuple(soft_permutation(x).shape) == shape[:-1] + (n, n)
    assert ar.get_dtype_name(soft_rank(x)) == "float32"
    if n:
        assert tuple(soft_topk(x, 1).shape) == shape
    else:
        with pytest.raises(ValueError, match=r"\bk\b"):
            soft_topk(x, 1)


def test_soft_sort_gradient_on_an_empty_batch(grad_backend):
    g = grad_backend.grad(lambda x: ar.do("sum", soft_sort(x)), grad_backend.asarray(np.zeros((0, 4)), "float32"))
    assert tuple(g.shape) == (0, 4)


@pytest.mark.parametrize("relaxation", ["logsumexp", "logistic", None])
@pytest.mark.parametrize("n", [3, 4])
def test_soft_sort_of_the_largest_finite_values_is_finite(backend, relaxation, n):
    check_soft_sort_of_the_largest_finite_values(backend, relaxation, n)


def test_keras_model_with_soft_sort_trains_with_fit():
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")

    class SortedDense(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(4)

        def call(self, x):
            return soft_sort(self.dense(x), temperature=0.1)

    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(32, 4)).astype(np.float32)
    targets = np.sort(inputs * 2.0 + 1.0, axis=-1).astype(np.float32)
    model = SortedDense()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    history = model.fit(inputs, targets, batch_size=8, epochs=4, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert losses[-1] < losses[0], losses
