"""The figure of docs/guide/relaxations.md: network vs projection, error vs strength and time vs n.

Left: the mean absolute rank error ``mean |soft_rank(x) - rank(x)|`` of standard normal rows
(n = 64) against the temperature (network) or the regularization strength (projection), both
in the units of ``x``. Right: forward + backward time of ``soft_rank`` (network, 'logsumexp')
and ``projection_rank`` (L2) on torch CPU float32, 64 rows, against n (min of a few repeats,
interleaved; the absolute times depend on the machine, the slopes do not).

    python benchmarks/relaxations_figure.py            # writes docs/guide/figures/relaxations.png
    python benchmarks/relaxations_figure.py --quick --out /tmp/x.png
"""

import argparse
import os
import time

import numpy as np

from diffopt import sorting

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "guide", "figures",
                   "relaxations.png")


def rank_errors(strengths, n=64, rows=32, seed=0):
    """``{label: errors}``: mean |soft - exact| rank error per strength."""
    x = np.random.default_rng(seed).standard_normal((rows, n))
    exact = np.argsort(np.argsort(x, -1), -1).astype(float)
    methods = {"network logsumexp": lambda t: sorting.soft_rank(x, temperature=t),
               "network cauchy": lambda t: sorting.soft_rank(x, temperature=t, relaxation="cauchy"),
               "projection L2": lambda t: sorting.projection_rank(x, regularization_strength=t),
               "projection KL": lambda t: sorting.projection_rank(x, regularization_strength=t, regularization="kl")}
    return {k: np.array([np.mean(np.abs(f(t) - exact)) for t in strengths]) for k, f in methods.items()}


def timings(ns, rows=64, repeats=3):
    """``{label: seconds}`` of forward + backward on torch CPU float32 (interleaved, min of repeats)."""
    import torch

    torch.set_num_threads(1)
    fns = {"network soft_rank": lambda v: sorting.soft_rank(v, temperature=0.1),
           "projection_rank": lambda v: sorting.projection_rank(v, regularization_strength=0.1)}
    out = {k: [] for k in fns}
    for n in ns:
        x = torch.randn(rows, n)
        best = {k: np.inf for k in fns}
        for _ in range(repeats):
            for k, f in fns.items():
                v = x.clone().requires_grad_(True)
                t0 = time.perf_counter()
                f(v).sum().backward()
                best[k] = min(best[k], time.perf_counter() - t0)
        for k in fns:
            out[k].append(best[k])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=OUT)
    p.add_argument("--quick", action="store_true", help="few points (a smoke test)")
    args = p.parse_args(argv)
    strengths = np.logspace(-3, 1, 5 if args.quick else 25)
    ns = [16, 64] if args.quick else [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    errors, times = rank_errors(strengths), timings(ns, repeats=1 if args.quick else 3)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for label, e in errors.items():
        a.loglog(strengths, np.maximum(e, 1e-12), marker=".", label=label)
    a.set_xlabel("temperature / strength (units of x)")
    a.set_ylabel("mean |soft rank - rank|  (n = 64, x ~ N(0, 1))")
    a.legend()
    a.grid(alpha=0.3, which="both")
    for label, t in times.items():
        b.loglog(ns, 1e3 * np.array(t), marker="o", label=label)
    b.set_xlabel("n")
    b.set_ylabel("fwd + bwd, ms (torch CPU, 64 rows)")
    b.legend()
    b.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    for label, e in errors.items():
        print(f"{label:20s} error at strength {strengths[0]:.0e}: {e[0]:.2e}, at {strengths[-1]:.0e}: {e[-1]:.2f}")
    for label, t in times.items():
        print(f"{label:20s} ms at n = {ns[0]}: {1e3 * t[0]:.2f}, at n = {ns[-1]}: {1e3 * t[-1]:.2f}")
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
