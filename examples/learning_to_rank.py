"""Learning to rank with soft ranks and soft top-k (diffopt.sorting) in the loss.

Queries hold ``n`` items with feature vectors; the (hidden) relevance of an
item is a noisy linear function of its features. A linear scorer is trained
with a differentiable ranking loss:

    loss = mean((soft_rank(scores) − rank(relevance))²) / n²  −  mean(soft_topk(scores, k) · topk(relevance)) / k

and evaluated per epoch by the Spearman correlation of its exact ranks and
its precision@k on held-out queries. Gradients come from the framework's own
autodiff through the soft sorting network.

    python examples/learning_to_rank.py --backend jax
"""

import numpy as np

import autoray as ar

import _common
from diffopt import sorting
from diffopt.solvers import ranking, top_k_mask


def make_queries(num, n, dim, rng, w_true):
    """Features ``[num, n, dim]`` and relevances ``[num, n]``."""
    x = rng.normal(size=(num, n, dim)).astype(np.float32)
    rel = x @ w_true + 0.3 * rng.normal(size=(num, n))
    return x, rel.astype(np.float32)


def loss_fn(n, k, temperature):
    """``loss(w, x, true_ranks, true_topk)`` with soft ranks and a soft top-k mask."""

    def loss(w, x, true_ranks, true_topk):
        scores = ar.do("tensordot", x, w, axes=1)
        ranks = sorting.soft_rank(scores, temperature=temperature)
        topk = sorting.soft_topk(scores, k, temperature=temperature)
        rank_term = ar.do("mean", (ranks - true_ranks) ** 2) / n**2
        return rank_term - ar.do("mean", ar.do("sum", topk * true_topk, axis=-1)) / k

    return loss


def metrics(w, x, rel, k):
    """Mean Spearman correlation and precision@k of the scorer ``w`` (NumPy)."""
    scores = x @ w
    r_pred, r_true = ranking(scores), ranking(rel)
    n = scores.shape[-1]
    spearman = 1 - 6 * np.sum((r_pred - r_true) ** 2, axis=-1) / (n * (n**2 - 1))
    precision = np.sum(top_k_mask(scores, k) * top_k_mask(rel, k), axis=-1) / k
    return float(np.mean(spearman)), float(np.mean(precision))


def train(backend, args):
    """Train by plain gradient descent; return per-epoch metrics and data for the figure."""
    rng = np.random.default_rng(args.seed)
    w_true = rng.normal(size=args.dim)
    x_tr, rel_tr = make_queries(args.queries, args.n, args.dim, rng, w_true)
    x_te, rel_te = make_queries(args.queries // 4, args.n, args.dim, rng, w_true)
    loss = loss_fn(args.n, args.k, args.temperature)
    w = (0.1 * rng.normal(size=args.dim)).astype(np.float32)
    history = [(0, np.nan) + metrics(w, x_te, rel_te, args.k)]
    for epoch in _common.progress(range(1, args.epochs + 1), desc="epochs"):
        losses = []
        for start in range(0, args.queries, args.batch_size):
            sl = slice(start, start + args.batch_size)
            ranks = _common.to_backend(ranking(rel_tr[sl]), backend)
            topk = _common.to_backend(top_k_mask(rel_tr[sl], args.k), backend)
            value, (g,) = _common.value_and_grad(lambda v: loss(v, _common.to_backend(x_tr[sl], backend), ranks, topk),
                                                 [w], backend)
            w = w - args.lr * g
            losses.append(value)
        history.append((epoch, float(np.mean(losses))) + metrics(w, x_te, rel_te, args.k))
        print(f"  epoch {epoch:2d}  loss {history[-1][1]:7.4f}  test Spearman {history[-1][2]:.3f}  "
              f"precision@{args.k} {history[-1][3]:.3f}")
    return np.array(history), w, (x_te[0], rel_te[0])


def plot(history, w, example, args, backend, path):
    """Learning curves, and soft vs exact ranks of one test query."""
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(history[:, 0], history[:, 2], marker="o", label="Spearman")
    axes[0].plot(history[:, 0], history[:, 3], marker="s", label=f"precision@{args.k}")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    x, rel = example
    scores = x @ w
    soft = _common.to_numpy(sorting.soft_rank(scores.astype(np.float32), temperature=args.temperature))
    axes[1].scatter(ranking(rel), soft, label="soft_rank(scores)")
    axes[1].scatter(ranking(rel), ranking(scores), marker="x", label="rank(scores)")
    axes[1].plot([0, args.n - 1], [0, args.n - 1], "k:")
    axes[1].set_xlabel("true rank")
    axes[1].set_ylabel("predicted rank")
    axes[1].legend()
    fig.suptitle(f"learning to rank with soft ranks / soft top-k ({backend})")
    fig.tight_layout()
    return _common.save(fig, path)


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--n", type=int, default=20, help="items per query (any length: padded internally)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=0.3)
    args = p.parse_args(argv)
    backend, timer = _common.backend_of(args), _common.Timer()
    print(f"backend {backend}: {args.queries} queries of {args.n} items, top-{args.k}")
    history, w, example = train(backend, args)
    print(f"final: test Spearman {history[-1][2]:.3f} (start {history[0][2]:.3f}), "
          f"precision@{args.k} {history[-1][3]:.3f}")
    path = plot(history, w, example, args, backend, _common.figure_path(args, "learning_to_rank"))
    print(f"figure: {path}  ({timer})")


if __name__ == "__main__":
    main()
