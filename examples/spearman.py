"""Soft Spearman correlation as a training loss (the torchsort README's example, every framework).

The Spearman correlation of two rows is the Pearson correlation of their ranks;
with soft ranks by projection onto the permutahedron
(:func:`diffopt.sorting.projection_rank`) it is differentiable:

    spearman(pred, target) = < c(soft_rank(pred)), c(soft_rank(target)) >,   c(r) = (r − mean r) / |r − mean r|

A linear scorer is trained on groups of ``n`` items whose target is a monotone but
nonlinear function of a hidden linear score (so only the order can be learned), by
gradient descent on ``1 − spearman``. The strength is relative to each row's range
(``relative=True``): the scorer's scale changes as it trains, the relaxation does not.
The exact Spearman correlation on held-out groups is printed per epoch.

    python examples/spearman.py --backend tensorflow
"""

import numpy as np

import autoray as ar

import _common
from diffopt import sorting
from diffopt.solvers import ranking


def spearmanr(pred, target, strength):
    """Mean over rows of the soft Spearman correlation (any framework)."""

    def centred(v):
        r = sorting.projection_rank(v, regularization_strength=strength, relative=True)
        r = r - ar.do("mean", r, axis=-1, keepdims=True)
        return r / ar.do("sqrt", ar.do("sum", r * r, axis=-1, keepdims=True))

    return ar.do("mean", ar.do("sum", centred(pred) * centred(target), axis=-1))


def exact_spearman(pred, target):
    """Mean over rows of the exact Spearman correlation (NumPy, no ties)."""
    n = pred.shape[-1]
    d = ranking(pred) - ranking(target)
    return float(np.mean(1 - 6 * np.sum(d**2, axis=-1) / (n * (n**2 - 1))))


def make_groups(num, n, dim, rng, w_true):
    x = rng.normal(size=(num, n, dim)).astype(np.float32)
    target = np.exp(x @ w_true) + 0.05 * rng.normal(size=(num, n))  # monotone in the hidden score
    return x, target.astype(np.float32)


def train(backend, args):
    rng = np.random.default_rng(args.seed)
    w_true = rng.normal(size=args.dim) / np.sqrt(args.dim)
    x_tr, y_tr = make_groups(args.groups, args.n, args.dim, rng, w_true)
    x_te, y_te = make_groups(args.groups // 4, args.n, args.dim, rng, w_true)
    w = (0.1 * rng.normal(size=args.dim)).astype(np.float32)
    history = [(0, np.nan, exact_spearman(x_te @ w, y_te))]
    for epoch in range(1, args.epochs + 1):
        losses = []
        for start in range(0, args.groups, args.batch_size):
            sl = slice(start, start + args.batch_size)
            xb, yb = _common.to_backend(x_tr[sl], backend), _common.to_backend(y_tr[sl], backend)
            loss = lambda v: 1.0 - spearmanr(ar.do("tensordot", xb, v, axes=1), yb, args.strength)
            value, (g,) = _common.value_and_grad(loss, [w], backend)
            w = w - args.lr * g
            losses.append(value)
        history.append((epoch, float(np.mean(losses)), exact_spearman(x_te @ w, y_te)))
        print(f"  epoch {epoch:2d}  loss {history[-1][1]:.4f}  test Spearman {history[-1][2]:.3f}")
    return np.array(history)


def plot(history, backend, path):
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(history[:, 0], history[:, 2], marker="o", label="test Spearman (exact)")
    ax.plot(history[1:, 0], 1 - history[1:, 1], marker="s", label="train soft Spearman")
    ax.set_xlabel("epoch")
    ax.set_ylim(-1.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"training on a soft Spearman loss ({backend})")
    fig.tight_layout()
    return _common.save(fig, path)


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, default=256)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--dim", type=int, default=6)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--strength", type=float, default=0.05, help="relative to each row's range")
    p.add_argument("--lr", type=float, default=2.0)
    args = p.parse_args(argv)
    backend, timer = _common.backend_of(args), _common.Timer()
    print(f"backend {backend}: {args.groups} groups of {args.n} items")
    history = train(backend, args)
    print(f"final: test Spearman {history[-1][2]:.3f} (start {history[0][2]:.3f})")
    path = plot(history, backend, _common.figure_path(args, "spearman"))
    print(f"figure: {path}  ({timer})")


if __name__ == "__main__":
    main()
