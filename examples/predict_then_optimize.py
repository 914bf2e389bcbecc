"""Predict, then optimize: learn shortest-path edge costs from features, trained through the solver.

PyEPO's synthetic shortest path (Tang & Khalil): a 5×5 grid of nodes, 40
edges, moves right/down from the top-left to the bottom-right corner; 5
features ``x ~ N(0, I)`` give the edge costs through a random 0/1 matrix
``B`` and a polynomial of degree ``deg``,
``c = ((x·Bᵀ/√5 + 3)^deg + 1) / 3.5^deg``, times uniform noise
``U(1 − ε, 1 + ε)``. A linear model predicts the costs; the vectorised DAG
solver :func:`diffopt.dag_shortest_path` (autoray) gives the decisions, and
the model is trained through it with

- SPO+ (``diffopt.spo_plus_loss``, supervised by the true costs),
- differentiable blackbox (``diffopt.blackbox``) and negative identity
  (``diffopt.negative_identity``), both minimising the true cost of the decision,
- the perturbed Fenchel-Young loss (``diffopt.FenchelYoungLoss``, supervised
  by the true paths).

Reported per epoch: the normalised regret on the test set,
``Σ (⟨c, w(ĉ)⟩ − z*) / Σ |z*|``; the figure plots it for each method.

    python examples/predict_then_optimize.py --backend jax
"""

import numpy as np

import autoray as ar

import _common
import diffopt
from diffopt._demo.optim import Adam

FEATURES = 5
GRID = (5, 5)


def make_data(n, deg, noise, rng, bmat):
    """Features ``[n, 5]`` and edge costs ``[n, 40]`` (PyEPO's shortest-path recipe)."""
    x = rng.normal(size=(n, FEATURES))
    c = ((x @ bmat.T / np.sqrt(FEATURES) + 3.0) ** deg + 1.0) / 3.5**deg
    c = c * rng.uniform(1.0 - noise, 1.0 + noise, size=c.shape)
    return x.astype(np.float32), c.astype(np.float32)


def losses(args):
    """``{name: loss(pred, c, w, step)}``, each a scalar of the framework."""
    solve = diffopt.dag_shortest_path
    spo = diffopt.spo_plus_loss(solve, minimize=True)
    dbb = diffopt.blackbox(solve, lambd=args.lambd, minimize=True)
    nid = diffopt.negative_identity(solve, minimize=True)
    pfyl = diffopt.FenchelYoungLoss(solve, num_samples=args.num_samples, sigma=args.sigma, maximize=False,
                                    reduction="mean")

    def decision_cost(layer):
        return lambda pred, c, w, step: ar.do("mean", ar.do("sum", layer(pred) * c, axis=-1))

    return {
        "SPO+": lambda pred, c, w, step: spo(pred, c, w),
        "DBB": decision_cost(dbb),
        "NID": decision_cost(nid),
        "PFYL": lambda pred, c, w, step: pfyl(pred, w, rng=step),
    }


def test_regret(params, x, c):
    """Normalised regret of the linear model on ``(x, c)`` (NumPy)."""
    pred = x @ params[0] + params[1]
    return float(diffopt.normalized_regret(diffopt.dag_shortest_path, pred, c, minimize=True))


def train(name, loss, backend, data, args):
    """Train one linear model; return the test regret before training and after each epoch."""
    (x_tr, c_tr, w_tr), (x_te, c_te) = data
    rng = np.random.default_rng(args.seed)
    params = [np.zeros((FEATURES, c_tr.shape[1]), np.float32), np.zeros(c_tr.shape[1], np.float32)]
    opt, step, curve = Adam(params, args.lr), 0, [test_regret(params, x_te, c_te)]
    timer = _common.Timer()
    for epoch in _common.progress(range(1, args.epochs + 1), desc=name):
        order = rng.permutation(len(x_tr))
        for start in range(0, len(order), args.batch_size):
            idx = order[start:start + args.batch_size]
            c_b, w_b = (_common.to_backend(a[idx], backend) for a in (c_tr, w_tr))
            key = args.seed * 100_000 + step
            _, grads = _common.value_and_grad(
                lambda weights, bias, x: loss(ar.do("matmul", x, weights) + bias, c_b, w_b, key),
                params + [x_tr[idx]], backend)
            params, step = opt.step(params, grads[:2]), step + 1
        curve.append(test_regret(params, x_te, c_te))
        print(f"  {name:<5} epoch {epoch:2d}  test normalised regret {curve[-1]:7.2%}")
    print(f"final {name}: normalised regret {curve[-1]:.4f} (from {curve[0]:.4f}; {timer})")
    return curve


def plot(curves, args, backend):
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(range(len(curve)), curve, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("normalised regret (test)")
    ax.set_title(f"5×5 shortest path, degree {args.deg}, {backend}")
    ax.set_ylim(bottom=0)
    ax.legend()
    return _common.save(fig, _common.figure_path(args, "predict_then_optimize"))


def main():
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--deg", type=int, default=4)
    p.add_argument("--noise", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--lambd", type=float, default=10.0, help="DBB interpolation strength")
    p.add_argument("--num-samples", type=int, default=10, help="PFYL samples")
    p.add_argument("--sigma", type=float, default=1.0, help="PFYL noise scale")
    args = p.parse_args()
    backend = _common.backend_of(args)
    rng = np.random.default_rng(args.seed)
    bmat = rng.binomial(1, 0.5, size=(len(diffopt.grid_edges(GRID)), FEATURES))
    x_tr, c_tr = make_data(args.train, args.deg, args.noise, rng, bmat)
    x_te, c_te = make_data(args.test, args.deg, args.noise, rng, bmat)
    w_tr = np.asarray(diffopt.dag_shortest_path(c_tr))
    print(f"backend {backend}: {args.train} training / {args.test} test instances, degree {args.deg}")
    curves = {name: train(name, loss, backend, ((x_tr, c_tr, w_tr), (x_te, c_te)), args)
              for name, loss in losses(args).items()}
    print(f"wrote {plot(curves, args, backend)}")


if __name__ == "__main__":
    main()
