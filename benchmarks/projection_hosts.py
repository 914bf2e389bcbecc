"""JAX / TF: diffopt's ``fast_soft_sort`` drop-in against a host-PAV stand-in of the original (#27).

fast-soft-sort is not installed (nor installable here); its ``jax_ops`` / ``tf_ops`` run NumPy
(numba PAV) on the host through ``pure_callback`` / ``numpy_function``. The stand-in does the
same: forward = diffopt's NumPy ``fast_soft_sort.numpy_ops`` (batched, numba PAV) in a host
callback, backward = its HIPS-autograd VJP in a host callback. B = 256, float32,
forward + backward (``grad`` of ``sum(f(x) * w)``) under ``jax.jit`` / ``tf.function``; min of
interleaved repeats; prints ratios and the largest gradient difference.

Usage: ``python -m benchmarks.projection_hosts jax|tensorflow N [N ...]``
"""
import time, sys, numpy as np
import torch  # before TF
from diffopt.sorting.fast_soft_sort import numpy_ops, jax_ops, tf_ops
import autograd
from diffopt.sorting.fast_soft_sort import numpy_ops as nops
def host_fwd(x, cls):
    return np.asarray(getattr(nops, cls)(np.asarray(x, np.float64)), dtype=x.dtype)
def host_bwd(x, g, cls):
    vjp, _ = autograd.make_vjp(getattr(nops, cls))(np.asarray(x, np.float64))
    return np.asarray(vjp(np.asarray(g, np.float64)), dtype=x.dtype)
def tm(f, r):
    b = 1e9
    for _ in range(r):
        t0 = time.perf_counter(); f(); b = min(b, time.perf_counter() - t0)
    return b
def main(argv):
    which = argv[1]
    if which not in ("jax", "tf", "tensorflow") or len(argv) < 3:
        raise SystemExit("usage: python -m benchmarks.projection_hosts jax|tensorflow N [N ...]")
    for n in tuple(int(a) for a in argv[2:]):
        rng = np.random.default_rng(n); x = rng.standard_normal((256, n)).astype(np.float32); w = rng.standard_normal((256, n)).astype(np.float32)
        for name, cls in (("soft_rank", "soft_rank"), ("soft_sort", "soft_sort")):
            if which == "jax":
                import jax, jax.numpy as jnp
                @jax.custom_vjp
                def ref(v):
                    return jax.pure_callback(lambda a: host_fwd(a, cls), jax.ShapeDtypeStruct(v.shape, v.dtype), v)
                ref.defvjp(lambda v: (ref(v), v), lambda v, g: (jax.pure_callback(lambda a, b: host_bwd(a, b, cls), jax.ShapeDtypeStruct(v.shape, v.dtype), v, g),))
                ours = getattr(jax_ops, name)
                jx, jw = jnp.asarray(x), jnp.asarray(w)
                fa = jax.jit(jax.grad(lambda v: jnp.sum(ref(v) * jw))); fb = jax.jit(jax.grad(lambda v: jnp.sum(ours(v) * jw)))
                ga, gb = fa(jx), fb(jx)
                err = float(jnp.max(jnp.abs(ga - gb)))
                A = lambda: fa(jx).block_until_ready(); Bf = lambda: fb(jx).block_until_ready()
            elif which in ("tf", "tensorflow"):
                import tensorflow as tf
                ours = getattr(tf_ops, name)
                @tf.custom_gradient
                def ref(v):
                    y = tf.numpy_function(lambda a: host_fwd(a, cls), [v], tf.float32)
                    def grad(g):
                        return tf.numpy_function(lambda a, b: host_bwd(a, b, cls), [v, g], tf.float32)
                    return y, grad
                tx, tw = tf.constant(x), tf.constant(w)
                def mk(f):
                    @tf.function
                    def step(v):
                        with tf.GradientTape() as t:
                            t.watch(v); l = tf.reduce_sum(f(v) * tw)
                        return t.gradient(l, v)
                    return step
                fa, fb = mk(ref), mk(ours)
                err = float(tf.reduce_max(tf.abs(fa(tx) - fb(tx))))
                A = lambda: fa(tx).numpy(); Bf = lambda: fb(tx).numpy()
            ra, rb = [], []
            for _ in range(4 if n == 512 else 2):
                ra.append(tm(A, 2)); rb.append(tm(Bf, 2))
            print(which, n, name, "stand-in %.1f ms  diffopt %.1f ms  ratio %.3f  max|dgrad| %.1e" % (min(ra)*1e3, min(rb)*1e3, min(rb)/min(ra), err), flush=True)


if __name__ == "__main__":
    main(sys.argv)
