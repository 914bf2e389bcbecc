"""Relative RMS error of soft sorting vs input range and length, for every relaxation.

Random vectors uniform in [0, R] (R from 2^-5 to 2^10) of length n are soft
sorted with the bitonic network at temperature 1 (the units of the
``differentiable_sorting`` package), and compared with the exact sort: the
error is RMS(soft − sorted) / R. The plain ``log(exp(a) + exp(b))``
compare-and-swap overflows (inf/NaN) once R exceeds ~88 in float32; diffopt's
relaxations stay finite and become exact as R grows. Small ranges relax
towards the mean, whatever the arithmetic: that is what the temperature is for.

    python examples/sorting_error.py --backend numpy
"""

import numpy as np

import autoray as ar

import _common
from diffopt import sorting


def plain_softmax(a, b):
    """The textbook soft maximum, ``log(exp(a) + exp(b))``: overflows for large inputs."""
    return ar.do("log", ar.do("exp", a) + ar.do("exp", b))


def relative_rms(soft, exact, scale):
    """RMS error per setting divided by the input range (NaN if anything overflowed)."""
    soft = np.asarray(soft, dtype=np.float64)
    if not np.all(np.isfinite(soft)):
        return np.nan
    return float(np.sqrt(np.mean((soft - exact) ** 2)) / scale)


def errors(backend, ns, ranges, reps, dtype, seed):
    """``{method: array [len(ns), len(ranges)]}`` of relative RMS errors."""
    rng = np.random.default_rng(seed)
    methods = ["plain log-sum-exp"] + [f"diffopt {r}" for r in sorting.RELAXATIONS]
    out = {m: np.full((len(ns), len(ranges)), np.nan) for m in methods}
    for i, n in enumerate(_common.progress(ns, desc="n")):
        indices = sorting.bitonic_indices(n)
        for j, scale in enumerate(ranges):
            x = (rng.uniform(0.0, scale, size=(reps, n))).astype(dtype)
            exact = np.sort(x, axis=-1)
            xb = _common.to_backend(x, backend, dtype)
            with np.errstate(over="ignore", invalid="ignore"):
                plain = sorting.diff_sort_indexed(indices, _common.to_backend(x.T, backend, dtype), plain_softmax)
                out[methods[0]][i, j] = relative_rms(_common.to_numpy(plain).T, exact, scale)
            for name in sorting.RELAXATIONS:
                soft = sorting.soft_sort(xb, temperature=1.0, relaxation=name)
                out[f"diffopt {name}"][i, j] = relative_rms(_common.to_numpy(soft), exact, scale)
    return out


def plot(result, ns, ranges, backend, dtype, path):
    """One panel per length n: error vs range, one curve per method, 10% line dotted."""
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, len(ns), figsize=(4 * len(ns), 3.8), sharey=True, squeeze=False)
    for ax, i in zip(axes[0], range(len(ns))):
        for name, err in result.items():
            style = dict(lw=2.5, color="black", ls="--") if name.startswith("plain") else dict(lw=1.2)
            ax.plot(ranges, np.maximum(err[i], 1e-12), marker=".", label=name, **style)
            bad = ~np.isfinite(err[i])
            if bad.any():
                ax.plot(ranges[bad], np.full(bad.sum(), 2.0), "kx", ms=7)
        ax.axhline(0.1, ls=":", color="grey")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"n = {ns[i]}")
        ax.set_xlabel("input range R")
    axes[0][0].set_ylabel("relative RMS error (x: inf/NaN)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"soft sort error, temperature 1, {dtype} ({backend})")
    fig.tight_layout()
    return _common.save(fig, path)


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--max-log2-n", type=int, default=9, help="largest n = 2**this (smallest is 8)")
    p.add_argument("--reps", type=int, default=16, help="random vectors per setting")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = p.parse_args(argv)
    backend, timer = _common.backend_of(args), _common.Timer()
    ns = [2**k for k in range(3, args.max_log2_n + 1, 2)]
    ranges = 2.0 ** np.arange(-5, 11)
    result = errors(backend, ns, ranges, args.reps, args.dtype, args.seed)
    print(f"backend {backend}, {args.dtype}: relative RMS error at range R = 2^10 for n = {ns}")
    for name, err in result.items():
        finite = np.isfinite(err).mean()
        print(f"  {name:<20} {' '.join(f'{e:9.2e}' for e in err[:, -1])}   finite: {finite:.0%}")
    path = plot(result, ns, ranges, backend, args.dtype, _common.figure_path(args, "sorting_error"))
    print(f"figure: {path}  ({timer})")


if __name__ == "__main__":
    main()
