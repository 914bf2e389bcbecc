"""tf.distribute.MirroredStrategy over 2 logical CPU devices with a Keras model whose
layer calls NumPy host solvers through diffopt (perturbed argmax, I-MLE top-2), for
tests/test_distributed.py: ``python _dist_tf_mirrored.py`` prints ``RESULT {json}``."""

import json
import threading

import numpy as np
import tensorflow as tf

(cpu,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402  (after the device configuration)

import diffopt  # noqa: E402
from diffopt.imle import imle  # noqa: E402

DIM, BATCH = 5, 16
CALLS = []  # (solver, instances) per host call
LOCK = threading.Lock()


def _record(name, a):
    with LOCK:
        CALLS.append((name, int(a.shape[0])))


@diffopt.host_solver
def host_argmax(a):
    _record("argmax", a)
    return np.eye(a.shape[-1], dtype=a.dtype)[np.argmax(a, axis=-1)]


@diffopt.host_solver
def host_top2(a):
    _record("top2", a)
    out = np.zeros_like(a)
    np.put_along_axis(out, np.argsort(-a, axis=-1)[..., :2], 1.0, axis=-1)
    return out


class Decisions(keras.layers.Layer):
    """Dense scores, then the smoothed argmax and the I-MLE top-2 mask side by side."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(DIM)
        self.argmax = diffopt.perturbed(host_argmax, num_samples=16, sigma=0.5)
        self.top2 = imle(host_top2)

    def call(self, x):
        theta = self.dense(x)
        return tf.concat([self.argmax(theta), self.top2(theta)], axis=-1)


def main():
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4 * BATCH, DIM)).astype(np.float32)
    scores = x @ rng.normal(size=(DIM, DIM)).astype(np.float32)
    top2 = np.zeros_like(scores)
    np.put_along_axis(top2, np.argsort(-scores, axis=-1)[:, :2], 1.0, axis=-1)
    y = np.concatenate([np.eye(DIM, dtype=np.float32)[np.argmax(scores, -1)], top2], axis=-1)
    with strategy.scope():
        model = keras.Sequential([keras.Input((DIM,)), Decisions()])
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    history = model.fit(x, y, batch_size=BATCH, epochs=8, verbose=0, shuffle=False)
    calls = {}
    for name, n in CALLS:
        calls.setdefault(name, set()).add(n)
    print("RESULT " + json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "variable_devices": sorted({v.device for v in getattr(model.layers[0].dense.kernel.value, "values", ())}),
        "loss": history.history["loss"],
        "solver_batch_sizes": {k: sorted(v) for k, v in calls.items()},
        "solver_calls": {k: sum(1 for c in CALLS if c[0] == k) for k in calls},
    }))


if __name__ == "__main__":
    main()
