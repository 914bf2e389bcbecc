"""JAX compile cost of the sorting ops: first eager call, new temperatures, compile counts.

``python -m benchmarks.jax_compile [--n 64 65536] [--generic]``

Each measurement runs in a fresh process (1 thread, float32, one row), after
``import jax, diffopt`` and one trivial JAX op (backend start-up is not the
op's cost): the first eager call of each op at each ``n`` (trace + compile +
run), a repeated call, a call with a new temperature, and the number of XLA
compilations over a sweep of 20 temperatures (eager, Python numbers) and under
``jax.jit`` with a traced temperature. ``--jit`` adds, each in a fresh process,
the first call of ``jax.jit(op)`` split into trace + lower, XLA compile
(``.lower(...).compile()``, the least load-sensitive number) and the first run,
and the size of the lowered program (StableHLO text lines: constant in ``n``
when the network is a loop, growing with the number of layers when unrolled).
Every row records the 1-minute load average at its start (the machine may be shared). ``--generic`` adds, side by side, the
same ops with diffopt's JAX kernels removed from the shim's op table: the
generic reshape network run op by op, as before issue 17 (slow: minutes at
large ``n`` on a busy machine).
"""

import argparse
import json
import os
import subprocess
import sys
import time

OPS = ("soft_rank", "soft_topk", "soft_sort")


def _jit_child(op, n):
    """First call of ``jax.jit(op)`` in a fresh process: trace + lower, compile, run."""
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import numpy as np
    import jax
    import jax.numpy as jnp

    import diffopt.sorting as ds

    fn = {"soft_rank": lambda x, t: ds.soft_rank(x, temperature=t),
          "soft_topk": lambda x, t: ds.soft_topk(x, max(1, n // 10), temperature=t),
          "soft_sort": lambda x, t: ds.soft_sort(x, temperature=t)}[op]
    x = jnp.asarray(np.random.default_rng(0).standard_normal(n), dtype=jnp.float32)
    t = jnp.float32(0.5)
    jnp.zeros(3).block_until_ready()  # backend start-up
    load = os.getloadavg()[0]
    start = time.perf_counter()
    lowered = jax.jit(fn).lower(x, t)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    compiled(x, t).block_until_ready()
    done = time.perf_counter()
    print(json.dumps({"op": op, "n": n, "path": "jit", "load1": load, "lower_s": lowered_at - start,
                      "compile_s": compiled_at - lowered_at, "run_s": done - compiled_at,
                      "first_s": done - start, "hlo_lines": len(lowered.as_text().splitlines())}))


def _child(op, n, generic, first_only=False):
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import numpy as np
    import jax
    import jax.numpy as jnp

    import diffopt.sorting as ds
    from diffopt.backends import jax as shim

    if generic:
        shim.KERNELS.pop("sorting_transport", None)
        shim.KERNELS.pop("jit", None)
    compiles = [0]

    def listener(event, *args, **kwargs):
        compiles[0] += event == "/jax/core/compile/backend_compile_duration"

    jax.monitoring.register_event_duration_secs_listener(listener)
    fn = {"soft_rank": lambda x, t: ds.soft_rank(x, temperature=t),
          "soft_topk": lambda x, t: ds.soft_topk(x, max(1, n // 10), temperature=t),
          "soft_sort": lambda x, t: ds.soft_sort(x, temperature=t)}[op]
    x = jnp.asarray(np.random.default_rng(0).standard_normal(n), dtype=jnp.float32)
    jnp.zeros(3).block_until_ready()  # backend start-up

    load = os.getloadavg()[0]

    def timed(t):
        start = time.perf_counter()
        fn(x, t).block_until_ready()
        return time.perf_counter() - start

    out = {"op": op, "n": n, "path": "generic" if generic else "default", "load1": load, "first_s": timed(0.5)}
    out["first_compiles"] = compiles[0]
    if first_only:
        print(json.dumps(out))
        return
    out["repeat_s"] = timed(0.5)
    out["new_temperature_s"] = timed(0.51)
    compiles[0] = 0
    for t in np.geomspace(0.05, 2.0, 20):
        fn(x, float(t)).block_until_ready()
    out["sweep_compiles_eager"] = compiles[0]
    step = jax.jit(jax.grad(lambda t: jnp.sum(fn(x, t) * jnp.arange(n, dtype=x.dtype))))
    compiles[0] = 0
    for t in np.geomspace(0.05, 2.0, 20):
        step(jnp.float32(t)).block_until_ready()
    out["sweep_compiles_jit_grad"] = compiles[0]
    print(json.dumps(out))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[64, 65536])
    p.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    p.add_argument("--generic", action="store_true", help="also time the generic op-by-op path (as before)")
    p.add_argument("--jit", action="store_true", help="also time the first call under jax.jit (lower, compile)")
    p.add_argument("--first-only", action="store_true", help="only the first eager call (no repeats, no sweeps)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child and args.child[2] == "jit":
        return _jit_child(args.child[0], int(args.child[1]))
    if args.child:
        return _child(args.child[0], int(args.child[1]), args.child[2] == "generic", args.child[3:] == ["first"])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows = []
    for n in args.n:
        for op in args.ops:
            paths = ("default",) + (("generic",) if args.generic else ()) + (("jit",) if args.jit else ())
            for path in paths:
                first = ["first"] if args.first_only and path != "jit" else []
                res = subprocess.run([sys.executable, "-m", "benchmarks.jax_compile", "--child", op, str(n), path] + first,
                                     capture_output=True, text=True, env=env, check=True)
                row = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append(row)
                if path == "jit":
                    print(f"{op:10s} n={n:6d} jit      first {row['first_s']:7.2f} s (lower {row['lower_s']:.2f} s,"
                          f" compile {row['compile_s']:.2f} s, run {row['run_s']:.3f} s; {row['hlo_lines']} HLO lines)"
                          f"  load {row['load1']:.1f}", flush=True)
                    continue
                if first:
                    print(f"{op:10s} n={n:6d} {path:8s} first {row['first_s']:7.2f} s ({row['first_compiles']} compiles)"
                          f"  load {row['load1']:.1f}", flush=True)
                    continue
                print(f"{op:10s} n={n:6d} {path:8s} first {row['first_s']:7.2f} s ({row['first_compiles']} compiles)"
                      f"  repeat {row['repeat_s']:.4f} s  new T {row['new_temperature_s']:.4f} s"
                      f"  compiles over 20 T: eager {row['sweep_compiles_eager']}, jit+grad {row['sweep_compiles_jit_grad']}"
                      f"  load {row['load1']:.1f}",
                      flush=True)
    return rows


if __name__ == "__main__":
    main()
