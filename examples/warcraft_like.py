"""Learn terrain costs from pixels, end to end through Dijkstra: Fenchel-Young loss vs I-MLE.

Synthetic Warcraft-like maps: a grid of terrain types (grass, sand, forest,
water, mountain), each with a hidden cost, rendered as noisy RGB tiles. A
small per-tile MLP maps each tile to a cost; Dijkstra (a host solver) on the
predicted costs gives a path, and only the true *paths* supervise training:

- Fenchel-Young loss of the perturbed shortest path (``diffopt.FenchelYoungLoss``,
  gradient y − y_σ(θ));
- I-MLE (``diffopt.imle.imle`` with sum-of-Gamma noise) and the Hamming loss
  between sampled and true paths.

The same model code (autoray) runs on every framework; gradients come from the
framework's own autodiff. Reported per epoch: test path accuracy (the
predicted path has the optimal true cost) and the mean relative regret (extra
true cost of the predicted path).

    python examples/warcraft_like.py --backend tensorflow
"""

import numpy as np

import autoray as ar

import _common
import diffopt
from diffopt._demo import terrain
from diffopt._demo.optim import Adam
from diffopt.imle import SumOfGammaNoiseDistribution, TargetDistribution, imle
from diffopt.solvers import grid_shortest_path

HIDDEN = 16


def init_params(num_features, rng):
    """MLP parameters ``[W1, b1, w2, b2]`` as NumPy float32 arrays."""
    w1 = rng.normal(scale=1.0 / np.sqrt(num_features), size=(num_features, HIDDEN))
    w2 = rng.normal(scale=1.0 / np.sqrt(HIDDEN), size=(HIDDEN,))
    return [a.astype(np.float32) for a in (w1, np.zeros(HIDDEN), w2, np.zeros(()) + 1.0)]


def predict_costs(params, features):
    """Per-tile costs ``[B, H, W]`` = softplus(MLP(tile)) + 0.05, any framework.

    Parameters
    ----------
    params : list of arrays
        ``[W1, b1, w2, b2]``.
    features : array, shape [B, H, W, F]
    """
    w1, b1, w2, b2 = params
    hidden = ar.do("tanh", ar.do("matmul", features, w1) + b1)
    score = ar.do("tensordot", hidden, w2, axes=1) + b2
    return ar.do("log1p", ar.do("exp", score)) + 0.05


def fy_loss_fn(num_samples, sigma):
    """``loss(params, features, paths, step)``: Fenchel-Young loss of the perturbed Dijkstra, summed over maps."""
    fy = diffopt.FenchelYoungLoss(diffopt.shortest_path, num_samples=num_samples, sigma=sigma,
                                  maximize=False, reduction="sum")

    def loss(params, features, paths, step):
        return fy(predict_costs(params, features), paths, rng=step)

    return loss


def imle_loss_fn(num_samples, size, beta):
    """``loss(params, features, paths, step)``: Hamming loss of I-MLE sampled paths, summed over maps and samples.

    The sum makes the cotangent of each sampled path ``1 − 2·path``, so the
    I-MLE target ``θ + β·dy`` moves each cost by ``β`` (in cost units).
    """
    solver = imle(diffopt.shortest_path, target_distribution=TargetDistribution(alpha=1.0, beta=beta),
                  noise_distribution=SumOfGammaNoiseDistribution(k=size, nb_iterations=10),
                  nb_samples=num_samples, minimize=True)

    def loss(params, features, paths, step):
        z = solver(predict_costs(params, features), rng=step)
        batch = int(paths.shape[0])
        z = ar.do("reshape", z, (batch, num_samples, size, size))
        target = paths[:, None]
        return ar.do("sum", z * (1.0 - target) + (1.0 - z) * target)

    return loss


def evaluate(params, data):
    """Path accuracy and mean relative regret of the model on ``data`` (NumPy).

    A predicted path counts as correct when its true cost is the optimal cost
    (terrain costs are discrete, so several paths are often optimal).
    """
    costs = np.asarray(predict_costs(params, data.features))
    pred = np.stack([grid_shortest_path(c) for c in costs])
    true_cost = np.sum(data.paths * data.costs, axis=(1, 2))
    regret = (np.sum(pred * data.costs, axis=(1, 2)) - true_cost) / true_cost
    return float(np.mean(regret < 1e-6)), float(np.mean(regret)), costs


def train(name, loss, per_map, backend, train_set, test_set, args):
    """Train one model; return the per-epoch history and the final predicted test costs.

    ``per_map`` divides the summed batch loss for printing (maps, or maps × samples).
    """
    rng = np.random.default_rng(args.seed)
    params = init_params(train_set.features.shape[-1], rng)
    opt, history, step = Adam(params, lr=args.lr), [], 0
    for epoch in _common.progress(range(1, args.epochs + 1), desc=name):
        order, losses = rng.permutation(len(train_set)), []
        for start in range(0, len(order), args.batch_size):
            idx = order[start:start + args.batch_size]
            feats, paths = train_set.features[idx], train_set.paths[idx]
            paths_b = _common.to_backend(paths, backend)
            value, grads = _common.value_and_grad(
                lambda *p: loss(list(p[:4]), p[4], paths_b, args.seed * 100_000 + step),
                params + [feats], backend)
            params, step = opt.step(params, grads[:4]), step + 1
            losses.append(value / (len(idx) * per_map))
        acc, regret, costs = evaluate(params, test_set)
        history.append((epoch, float(np.mean(losses)), acc, regret))
        print(f"  {name:<12} epoch {epoch:2d}  loss {np.mean(losses):7.3f}  "
              f"test path accuracy {acc:5.1%}  regret {regret:6.2%}")
    return history, costs


def plot(test_set, results, backend, path):
    """Learning curves and, for one test map, the image, true costs/path and each method's costs/path."""
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, 3 + len(results), figsize=(4 * (3 + len(results)), 4))
    for name, (history, _) in results.items():
        h = np.array(history)
        axes[0].plot(h[:, 0], h[:, 2], marker="o", label=name)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("test path accuracy")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    k = 0
    from diffopt._demo.figures import draw_path_map

    axes[1].imshow(test_set.images[k])
    axes[1].set_title("terrain (test map)")
    axes[1].axis("off")
    draw_path_map(axes[2], test_set.costs[k], test_set.paths[k], "true costs and path")
    for ax, (name, (_, costs)) in zip(axes[3:], results.items()):
        draw_path_map(ax, costs[k], grid_shortest_path(costs[k]), f"{name}: predicted", other=test_set.paths[k])
    fig.suptitle(f"Warcraft-like shortest paths from pixels ({backend}); circles: true path")
    fig.tight_layout()
    return _common.save(fig, path)


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=160, help="training maps")
    p.add_argument("--test", type=int, default=40, help="test maps")
    p.add_argument("--size", type=int, default=12, help="cells per side")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-samples", type=int, default=8, help="perturbation / I-MLE samples per map")
    p.add_argument("--sigma", type=float, default=0.5, help="Fenchel-Young noise scale")
    p.add_argument("--beta", type=float, default=2.0, help="I-MLE target step, in cost units")
    p.add_argument("--lr", type=float, default=0.03)
    args = p.parse_args(argv)
    backend, timer = _common.backend_of(args), _common.Timer()
    train_set = terrain.Dataset(args.train, args.size, seed=args.seed)
    test_set = terrain.Dataset(args.test, args.size, seed=args.seed + 1)
    print(f"backend {backend}: {args.train} train / {args.test} test maps of {args.size}x{args.size}")
    base, base_regret, _ = evaluate(init_params(train_set.features.shape[-1], np.random.default_rng(args.seed)),
                                    test_set)
    print(f"  untrained model: test path accuracy {base:.1%}, regret {base_regret:.2%}")
    results = {
        "Fenchel-Young": train("Fenchel-Young", fy_loss_fn(args.num_samples, args.sigma), 1, backend,
                               train_set, test_set, args),
        "I-MLE": train("I-MLE", imle_loss_fn(args.num_samples, args.size, args.beta), args.num_samples, backend,
                       train_set, test_set, args),
    }
    for name, (history, _) in results.items():
        print(f"final {name}: test path accuracy {history[-1][2]:.1%}, regret {history[-1][3]:.2%}")
    path = plot(test_set, results, backend, _common.figure_path(args, "warcraft_like"))
    print(f"figure: {path}  ({timer})")


if __name__ == "__main__":
    main()
