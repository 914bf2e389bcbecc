"""A batch sharded over 4 host devices through diffopt under ``jax.jit`` and
``jax.shard_map``, for tests/test_distributed.py: ``python _dist_jax_sharding.py``
(it sets ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before importing JAX)
prints ``RESULT {json}``.

For each case: the largest difference from the unsharded run, whether the output keeps
the input's ``PartitionSpec('b')``, whether the compiled HLO holds an all-gather, and the
instance counts the host solver saw per call.
"""

import json
import os
import threading

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import diffopt  # noqa: E402
from diffopt.imle import SumOfGammaNoiseDistribution, imle  # noqa: E402
from diffopt.sorting import soft_sort  # noqa: E402

BATCH, DIM, SAMPLES = 8, 6, 4
SEEN = []
LOCK = threading.Lock()


@diffopt.host_solver
def host_top2(a):
    with LOCK:
        SEEN.append(int(a.shape[0]))
    out = np.zeros_like(a)
    np.put_along_axis(out, np.argsort(-a, axis=-1)[..., :2], 1.0, axis=-1)
    return out


argmax = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=SAMPLES, sigma=0.5)
top2_noisy = imle(host_top2, noise_distribution=SumOfGammaNoiseDistribution(k=2, nb_iterations=10))
top2_plain = imle(host_top2)  # no noise: shards solve exactly what the whole batch solves
perturbed_top2 = diffopt.perturbed(host_top2, num_samples=SAMPLES, sigma=0.5)
WEIGHTS = jnp.arange(DIM, dtype=jnp.float32)


def value_and_grad(layer):
    def loss(theta, key):
        return jnp.sum(layer(theta, key) * WEIGHTS)
    return lambda theta, key: (layer(theta, key), jax.grad(loss)(theta, key))


argmax_recompute = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=2 * SAMPLES + 1, sigma=0.5,
                                     chunk_size=3, residual="recompute")
fy_loss = diffopt.FenchelYoungLoss(diffopt.argmax_one_hot, num_samples=SAMPLES, sigma=0.5, reduction="none")
LABELS = jnp.eye(DIM, dtype=jnp.float32)[jnp.arange(BATCH) % DIM]

LAYERS = {
    "soft_sort": lambda t, k: soft_sort(t, temperature=0.3),
    "perturbed_argmax": lambda t, k: argmax(t, rng=k),
    # chunks under a fori_loop, replayed in the backward pass
    "perturbed_chunked": lambda t, k: argmax_recompute(t, rng=k),
    # a [B] loss: broadcast to [B, DIM] so that value_and_grad's weighted sum applies
    "fenchel_young": lambda t, k: fy_loss(t, LABELS, rng=k)[:, None] * jnp.ones(DIM),
    "imle_host_solver": lambda t, k: top2_noisy(t, rng=k),
}


def spec_kept(array, sharding):
    return bool(array.sharding.is_equivalent_to(sharding, array.ndim))


def jit_case(name, x, xs, key, sharding):
    fn = jax.jit(value_and_grad(LAYERS[name]))
    ref = fn(x, key)
    compiled = fn.lower(xs, key).compile()  # one compilation, also read for its HLO
    SEEN.clear()
    out = jax.block_until_ready(compiled(xs, key))
    return report(ref, out, compiled, sharding)


def report(ref, out, compiled, sharding):
    """What the test checks: equal numbers, shardings kept, no all-gather, rows per solver call."""
    return {
        "max_diff": max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(ref, out)),
        "value_sharding_kept": spec_kept(out[0], sharding),
        "grad_sharding_kept": spec_kept(out[1], sharding),
        "all_gather": "all-gather" in compiled.as_text(),
        "solver_rows": sorted(set(SEEN)),
    }


def shard_map_case(name, layer, x, xs, key, mesh, sharding):
    """Each device runs ``layer`` on its shard; the reference is the unsharded layer applied
    to each shard in turn (the same key on every shard)."""
    per_shard = jax.jit(jax.shard_map(value_and_grad(layer), mesh=mesh, in_specs=(P("b"), P()),
                                      out_specs=(P("b"), P("b"))))
    compiled = per_shard.lower(xs, key).compile()
    SEEN.clear()
    out = jax.block_until_ready(compiled(xs, key))
    seen = list(SEEN)
    step = BATCH // 4
    one = jax.jit(value_and_grad(layer))
    ref = [jnp.concatenate(parts) for parts in zip(*(one(x[i:i + step], key) for i in range(0, BATCH, step)))]
    SEEN[:] = seen  # the reference's own solver calls are not the sharded run's
    return report(ref, out, compiled, sharding)


def main():
    mesh = Mesh(np.array(jax.devices()), ("b",))
    sharding = NamedSharding(mesh, P("b"))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(BATCH, DIM)), jnp.float32)
    xs = jax.device_put(x, sharding)
    key = jax.random.key(0)
    result = {"devices": len(jax.devices()), "input_sharded": len(xs.addressable_shards) == 4}
    for name in LAYERS:
        result["jit/" + name] = jit_case(name, x, xs, key, sharding)
    sharded_layers = {
        "soft_sort": LAYERS["soft_sort"],
        "imle_host_solver": lambda t, k: top2_plain(t),
        "perturbed_host_solver": lambda t, k: perturbed_top2(t, rng=k),
    }
    for name, layer in sharded_layers.items():
        result["shard_map/" + name] = shard_map_case(name, layer, x, xs, key, mesh, sharding)
    # sharding in types (an Explicit mesh axis, jax.make_mesh's default): soft_sort must not
    # slice the sharded batch axis, and perturbed must not merge it under the sample axis
    explicit = jax.make_mesh((4,), ("b",), axis_types=(jax.sharding.AxisType.Explicit,))
    explicit_sharding = NamedSharding(explicit, P("b"))
    for name in ("soft_sort", "perturbed_argmax"):
        result["explicit/" + name] = jit_case(name, x, jax.device_put(x, explicit_sharding), key,
                                              explicit_sharding)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
