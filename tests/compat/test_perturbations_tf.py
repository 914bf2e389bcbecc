"""The TensorFlow ``perturbations`` package (google-research), on diffopt's drop-in modules.

The original's test cases (``perturbations_test.py``, ``fenchel_young_test.py``)
with ``from perturbations import ...`` changed to ``from diffopt.perturbations
import ...``; where the original checks a property with 10⁷ samples, the
estimate is compared with the closed form, within Z standard deviations.
"""

import numpy as np
import pytest
from compat_refs import Z, normal_argmax_grad_of_square_norm, normal_argmax_probs
from scipy.special import ndtr
from scipy.stats import norm

from diffopt.perturbations import fenchel_young as fy
from diffopt.perturbations import perturbations


def reduce_sign_any(input_tensor, axis=-1):
    """The original test's logical OR of the signs along ``axis``, as ±1."""
    import tensorflow as tf

    boolean_sign = tf.math.reduce_any(tf.cast((tf.sign(input_tensor) + 1) / 2.0, dtype=tf.bool), axis=axis)
    return tf.cast(boolean_sign, dtype=input_tensor.dtype) * 2.0 - 1.0


def or_probability(x, sigma):
    """P(OR of signs of x + σZ = +1) for standard normal Z, per row."""
    return 1.0 - np.prod(ndtr(-np.asarray(x) / sigma), axis=-1)


def or_gradient(x, sigma):
    """∇ of E[OR] = 2·P(+1) − 1 (closed form)."""
    x = np.asarray(x, dtype=np.float64)
    below = ndtr(-x / sigma)
    others = np.prod(below, axis=-1, keepdims=True) / below
    return 2.0 * norm.pdf(x / sigma) / sigma * others


def test_noise_names_and_sampler(tf_backend):
    import tensorflow as tf

    assert (perturbations._GUMBEL, perturbations._NORMAL) == ("gumbel", "normal")
    assert perturbations.SUPPORTED_NOISES == ("gumbel", "normal")
    for noise in (perturbations._GUMBEL, perturbations._NORMAL):
        samples, gradients = perturbations.sample_noise_with_gradients(noise, (3, 2, 4))
        assert isinstance(samples, tf.Tensor) and isinstance(gradients, tf.Tensor)
        assert tuple(samples.shape) == (3, 2, 4) and tuple(gradients.shape) == (3, 2, 4)
        z = samples.numpy().astype(np.float64)
        want = z if noise == "normal" else 1.0 - np.exp(-z)
        np.testing.assert_allclose(gradients.numpy(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not supported"):
        perturbations.sample_noise_with_gradients("unknown", (3, 2, 4))


@pytest.mark.parametrize("sigma", [1e-3, 1e-2, 1e-1])
def test_perturbed_reduce_sign_any(tf_backend, sigma):
    x = np.array([[-0.3, -1.2, 1.6], [-0.4, -2.4, -1.0]])
    n = 1000
    soft_reduce_any = perturbations.perturbed(reduce_sign_any, sigma=sigma)
    out = soft_reduce_any(tf_backend.asarray(x, "float32"), axis=-1, rng=0).numpy()
    p = or_probability(x, sigma)
    np.testing.assert_array_less(np.abs(out - (2 * p - 1)), Z * 2 * np.sqrt(p * (1 - p) / n) + 1e-6)
    np.testing.assert_allclose(out, [1.0, -1.0], atol=1e-2)  # the original's check


def test_perturbed_reduce_sign_any_gradients(tf_backend):
    sigma, n = 0.1, 20000
    x = np.array([[-0.6, -1.2, 0.5 * sigma], [-2 * sigma, -2.4, -1.0]])
    soft_reduce_any = perturbations.perturbed(reduce_sign_any, sigma=sigma, num_samples=n)
    grad = tf_backend.to_numpy(tf_backend.grad(lambda t: soft_reduce_any(t, rng=1), tf_backend.asarray(x, "float32")))
    # the original's properties ...
    assert grad[0, 2] > 0 and grad[1, 0] > 0
    assert np.all(grad <= grad[0, 2])
    # ... and the closed form (score-function terms are bounded by |z|/σ: std ≤ 1/σ)
    np.testing.assert_allclose(grad, or_gradient(x, sigma), atol=Z / (sigma * np.sqrt(n)))


def test_unbatched_rank_one_raise(tf_backend):
    import tensorflow as tf

    x = tf.constant([-0.6, -0.5, 0.5])
    argmax = lambda t: tf.one_hot(tf.argmax(t, 1), 3)  # noqa: E731
    soft_argmax = perturbations.perturbed(argmax, sigma=0.5, num_samples=10_000_000)
    with pytest.raises(ValueError, match="batched"):
        soft_argmax(x)  # raised before any of the 10⁷ samples is drawn


@pytest.mark.parametrize("batched", [False, True], ids=["without_minibatch", "with_minibatch"])
def test_perturbed_argmax_gradients(tf_backend, batched):
    import tensorflow as tf

    n = 200_000
    if batched:
        x, sigma = np.array([[-0.6, -0.7, 0.5], [0.9, -0.6, -0.5]]), 2.5
    else:
        x, sigma = np.array([-0.6, -0.5, 0.5]), 0.5
    argmax = lambda t: tf.one_hot(tf.argmax(t, -1), 3, dtype=t.dtype)  # noqa: E731
    soft_argmax = perturbations.perturbed(argmax, sigma=sigma, num_samples=n, batched=batched)
    norm_argmax = lambda t: tf.reduce_sum(tf.square(soft_argmax(t, rng=2)))  # noqa: E731
    value = tf_backend.to_numpy(norm_argmax(tf_backend.asarray(x, "float32")))
    grad = tf_backend.to_numpy(tf_backend.grad(norm_argmax, tf_backend.asarray(x, "float32")))
    probs = normal_argmax_probs(x, sigma)
    np.testing.assert_allclose(value, np.sum(probs**2), atol=Z * 2 * np.sqrt(x.ndim / n))
    # per-sample terms ⟨2ŷ, f⟩·z/σ are bounded by 2|z|/σ per row: std ≤ 2√B/σ
    want = normal_argmax_grad_of_square_norm(x, sigma).reshape(x.shape)
    np.testing.assert_allclose(grad, want, atol=Z * 2 * np.sqrt(x.ndim) / (sigma * np.sqrt(n)))


def ranks(inputs, axis=-1):
    """The original test's ranks (1-based) along ``axis``."""
    import tensorflow as tf

    return 1 + tf.cast(tf.argsort(tf.argsort(inputs, axis=axis), axis=axis), dtype=inputs.dtype)


def test_fenchel_young_gradients(tf_backend):
    import tensorflow as tf

    n = 10000
    loss_fn = fy.FenchelYoungLoss(ranks, num_samples=n, sigma=0.1, batched=False)
    theta = tf.constant([1, 20, 7.3, 7.35])
    y_true = tf.constant([1, 4, 3, 2], dtype=theta.dtype)
    y_hard_minimum = tf.constant([1, 4, 2, 3], dtype=theta.dtype)
    y_perturbed_minimum = tf.constant(loss_fn.perturbed(theta, rng=3))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(theta)
        value_true = loss_fn(y_true, theta, rng=3)  # Keras order: label first
        g_true = tape.gradient(value_true, theta)
        g_hard_minimum = tape.gradient(loss_fn(y_hard_minimum, theta, rng=3), theta)
        g_perturbed_minimum = tape.gradient(loss_fn(y_perturbed_minimum, theta, rng=3), theta)
    # the original's checks
    np.testing.assert_allclose(g_true[:2], [0.0, 0.0])
    assert tf.norm(g_perturbed_minimum) < tf.norm(g_hard_minimum) < tf.norm(g_true)
    for g in (g_true, g_hard_minimum, g_perturbed_minimum):
        np.testing.assert_allclose(tf.reduce_sum(g), 0.0, atol=1e-5)
    # closed form: only θ3, θ4 (0.05 apart) swap; p = P(7.3 + σZ3 > 7.35 + σZ4)
    p = ndtr(-0.05 / (0.1 * np.sqrt(2)))
    tol = Z * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(g_true.numpy(), [0, 0, p - 1, 1 - p], atol=tol)
    np.testing.assert_allclose(value_true.numpy(), 2 * (1 - p) ** 2, atol=4 * tol)


def test_fenchel_young_keras_convention_and_reductions(tf_backend):
    import tensorflow as tf

    n = 2000
    theta = np.array([[1.0, 20.0, 7.3, 7.35], [3.0, 1.0, 2.0, 2.5]], dtype=np.float32)
    y = np.array([[1, 4, 3, 2], [4, 1, 2, 3]], dtype=np.float32)
    losses = fy.FenchelYoungLoss(ranks, num_samples=n, sigma=0.1, reduction="none")(
        tf.constant(y), tf.constant(theta), rng=4).numpy()
    ybar = tf_backend.to_numpy(perturbations.perturbed(ranks, num_samples=n, sigma=0.1)(tf.constant(theta), rng=4))
    np.testing.assert_allclose(losses, ((ybar - y) ** 2).sum(-1), rtol=1e-5)
    total = fy.FenchelYoungLoss(ranks, num_samples=n, sigma=0.1)(tf.constant(y), tf.constant(theta), rng=4)
    np.testing.assert_allclose(total.numpy(), losses.sum(), rtol=1e-5)  # default reduction: SUM
    weighted = fy.FenchelYoungLoss(ranks, num_samples=n, sigma=0.1, reduction="sum_over_batch_size")(
        tf.constant(y), tf.constant(theta), sample_weight=tf.constant([1.0, 3.0]), rng=4)
    np.testing.assert_allclose(weighted.numpy(), (losses[0] + 3 * losses[1]) / 2, rtol=1e-5)
    # the label gets no gradient, even when it is computed from θ (the original's behaviour)
    t = tf.constant(theta)
    with tf.GradientTape() as tape:
        tape.watch(t)
        value = fy.FenchelYoungLoss(ranks, num_samples=n, sigma=0.1)(0.5 * t, t, rng=4)
    np.testing.assert_allclose(tape.gradient(value, t).numpy(), ybar - 0.5 * theta, rtol=1e-5, atol=1e-5)


def test_fenchel_young_in_keras_model_compile(tf_backend):
    keras = pytest.importorskip("keras")
    import tensorflow as tf

    def argmax(t):
        return tf.one_hot(tf.argmax(t, -1), 4, dtype=t.dtype)

    rs = np.random.RandomState(0)
    x = rs.randn(256, 3).astype("float32")
    labels = np.argmax(x @ rs.randn(3, 4), -1)
    y = np.eye(4, dtype="float32")[labels]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=fy.FenchelYoungLoss(argmax, num_samples=100, sigma=0.5))
    before = np.mean(np.argmax(model.predict(x, verbose=0), -1) == labels)
    history = model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    after = np.mean(np.argmax(model.predict(x, verbose=0), -1) == labels)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert before < 0.5 < 0.85 < after
