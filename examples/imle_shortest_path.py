"""Learn a cost map so that Dijkstra reproduces a target path, with I-MLE.

A synthetic ``H × W`` map of true costs (cheap valleys between expensive
ridges) defines a gold shortest path from the top-left to the bottom-right
corner. Starting from uniform weights, we learn a cost map whose shortest
path matches the gold one, by gradient descent on the Hamming loss between
the produced and the gold path; the gradient through Dijkstra is given by
:func:`diffopt.imle.imle` with sum-of-Gamma noise. The same script runs on
NumPy+autograd, torch, JAX and TensorFlow (``--backend``) and saves a figure
of the paths and learned weights over training, plus the loss curve.

Usage::

    python examples/imle_shortest_path.py --backend torch
    python examples/imle_shortest_path.py --backend jax --size 8 --steps 20 --out /tmp/figs
"""

import argparse
import json
import os

import autoray as ar
import numpy as np
from tqdm import tqdm

import diffopt
from diffopt.imle import SumOfGammaNoiseDistribution, TargetDistribution, imle

BACKENDS = ("autograd", "torch", "jax", "tensorflow")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, default="autograd")
    parser.add_argument("--size", type=int, default=16, help="grid height and width")
    parser.add_argument("--steps", type=int, default=120, help="gradient steps")
    parser.add_argument("--samples", type=int, default=10, help="I-MLE samples per step")
    parser.add_argument("--temperature", type=float, default=1.0, help="input and target noise temperature")
    parser.add_argument("--beta", type=float, default=10.0, help="target step λ")
    parser.add_argument("--lr", type=float, default=0.02, help="learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snapshots", type=int, default=5, help="training snapshots in the figure")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures"))
    return parser.parse_args(argv)


def true_costs(size, seed):
    """Smooth random ridges and valleys in [0.1, 5]."""
    gen = np.random.default_rng(seed)
    field = gen.normal(size=(size, size))
    kernel = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)
    for axis in (0, 1):
        field = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, field)
    field = (field - field.min()) / (field.max() - field.min() + 1e-12)
    return 0.1 + 4.9 * field**2


class Framework:
    """The few framework-specific lines an example needs: arrays in, gradients out."""

    def __init__(self, name):
        self.name = name
        if name == "torch":
            import torch

            self.torch = torch
        elif name == "jax":
            import jax

            self.jax = jax
        elif name == "tensorflow":
            import tensorflow as tf

            self.tf = tf

    def asarray(self, a):
        if self.name == "torch":
            return self.torch.as_tensor(a)
        if self.name == "jax":
            return self.jax.numpy.asarray(a, dtype="float32")
        if self.name == "tensorflow":
            return self.tf.constant(a)
        return np.asarray(a)

    def value_and_grad(self, f, x):
        """``(f(x), ∇f(x))`` as NumPy, ``f`` returning ``(loss, aux)``."""
        if self.name == "torch":
            x = self.torch.as_tensor(x).requires_grad_(True)
            loss, aux = f(x)
            loss.backward()
            return float(loss), x.grad.numpy(), aux.detach().numpy()
        if self.name == "jax":
            (loss, aux), g = self.jax.value_and_grad(f, has_aux=True)(self.asarray(x))
            return float(loss), np.asarray(g), np.asarray(aux)
        if self.name == "tensorflow":
            x = self.tf.constant(x)
            with self.tf.GradientTape() as tape:
                tape.watch(x)
                loss, aux = f(x)
            return float(loss), tape.gradient(loss, x).numpy(), aux.numpy()
        import autograd

        out = {}

        def scalar(v):
            loss, out["aux"] = f(v)
            return loss

        loss, g = autograd.value_and_grad(scalar)(x)
        return float(loss), np.asarray(g), np.asarray(autograd.tracer.getval(out["aux"]))


def make_step(args, framework, gold):
    """One training step: ``weights -> (hamming loss, gradient, first sampled path)``."""
    solver = imle(
        diffopt.shortest_path,
        target_distribution=TargetDistribution(alpha=1.0, beta=args.beta),
        noise_distribution=SumOfGammaNoiseDistribution(k=args.size, nb_iterations=100),
        nb_samples=args.samples,
        input_noise_temperature=args.temperature,
        target_noise_temperature=args.temperature,
        minimize=True,
    )
    gold_arr = framework.asarray(gold[None].astype(np.float32))

    def step(weights, seed):
        def loss(w):
            paths = solver(w, rng=seed)
            hamming = paths * (1.0 - gold_arr) + (1.0 - paths) * gold_arr
            return ar.do("sum", hamming) / args.samples, paths[0]

        return framework.value_and_grad(loss, weights[None].astype(np.float32))

    return step


def train(args):
    """Run the training loop; returns the losses and the snapshots for the figure."""
    costs = true_costs(args.size, args.seed)
    gold = diffopt.grid_shortest_path(costs)
    framework = Framework(args.backend)
    step = make_step(args, framework, gold)
    weights = np.full(costs.shape, float(costs.mean()))
    keep = set(np.linspace(0, args.steps - 1, max(args.snapshots, 2)).round().astype(int))
    losses, snapshots = [], []
    for i in tqdm(range(args.steps), desc=f"I-MLE shortest path ({args.backend})"):
        loss, grad, path = step(weights, args.seed * 100_003 + i)
        losses.append(loss)
        if i in keep:
            snapshots.append((i, path.reshape(costs.shape), weights.copy()))
        weights = np.maximum(weights - args.lr * grad[0], 0.01)
    return costs, gold, losses, snapshots


def save_figure(args, costs, gold, losses, snapshots):
    """Gold path, then (sampled path, learned weights) per snapshot, and the loss curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(snapshots) + 1
    fig, axes = plt.subplots(2, cols, figsize=(2.6 * cols, 7.0))
    fig.subplots_adjust(bottom=0.25)
    axes[0, 0].imshow(costs, cmap="gray_r")
    axes[0, 0].set_title("true costs")
    axes[1, 0].imshow(gold, cmap="Greens")
    axes[1, 0].set_title("gold path")
    for col, (i, path, weights) in enumerate(snapshots, start=1):
        axes[0, col].imshow(path, cmap="Greens")
        axes[0, col].set_title(f"path, step {i}")
        axes[1, col].imshow(weights, cmap="gray_r")
        axes[1, col].set_title(f"weights, step {i}")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    inset = fig.add_axes([0.1, 0.05, 0.8, 0.13])
    inset.plot(losses)
    inset.set_ylabel("Hamming loss")
    inset.set_xlabel("step")
    fig.suptitle(f"I-MLE through Dijkstra ({args.backend}, T={args.temperature})")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"imle_shortest_path_{args.backend}.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv=None):
    args = parse_args(argv)
    costs, gold, losses, snapshots = train(args)
    png = save_figure(args, costs, gold, losses, snapshots)
    window = max(1, len(losses) // 10)
    summary = {
        "backend": args.backend,
        "initial_loss": float(np.mean(losses[:window])),
        "final_loss": float(np.mean(losses[-window:])),
        "figure": png,
    }
    with open(os.path.join(args.out, f"imle_shortest_path_{args.backend}.json"), "w") as fh:
        json.dump({**summary, "losses": losses}, fh)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
