"""The perturbed OR over [-1, 1]²: its value and gradient, against the closed form.

``hard_or(θ)`` is 1 if some θ_i > 0 and −1 otherwise: piecewise constant, its
gradient is zero almost everywhere. With Gumbel noise the perturbed OR is
smooth, and equals 2(1 − exp(−Σ e^{θ_i/σ})) − 1, so the Monte-Carlo values and
the score-function gradients can be checked point by point.

    python examples/perturbed_or.py --backend torch
"""

import numpy as np

import autoray as ar

import _common
from diffopt._demo.checks import hard_or, or_grid, perturbed_or, perturbed_or_closed_form


def compute(backend, size, num_samples, sigma, seed):
    """Perturbed OR values and gradients on the grid, in ``backend``."""
    theta = or_grid(size)
    pert = perturbed_or(num_samples, sigma)
    value, (g,) = _common.value_and_grad(lambda t: ar.do("sum", pert(t, rng=seed)), [theta], backend)
    values = _common.to_numpy(pert(_common.to_backend(theta, backend), rng=seed))
    return theta, values, g


def plot(theta, values, g, sigma, backend, path):
    """Three panels: hard OR, perturbed OR with its gradient field, error to the closed form."""
    plt = _common.pyplot()
    size = int(round(np.sqrt(len(theta))))
    want, _ = perturbed_or_closed_form(theta, sigma)
    hard = _common.to_numpy(hard_or(theta))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    extent = (-1, 1, -1, 1)
    kw = dict(origin="lower", extent=extent, cmap="coolwarm", vmin=-1, vmax=1)
    axes[0].imshow(hard.reshape(size, size), **kw)
    axes[0].set_title("hard OR (gradient 0 a.e.)")
    im = axes[1].imshow(values.reshape(size, size), **kw)
    step = max(1, size // 12)
    sub = (np.arange(size)[:, None] * size + np.arange(size)[None, :])[::step, ::step].ravel()
    axes[1].quiver(theta[sub, 0], theta[sub, 1], g[sub, 0], g[sub, 1], color="black", width=0.004)
    axes[1].set_title(f"perturbed OR, σ={sigma}, and its gradient")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    err = axes[2].imshow(np.abs(values - want).reshape(size, size), origin="lower", extent=extent, cmap="viridis")
    axes[2].set_title("|perturbed − closed form|")
    fig.colorbar(err, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_xlabel("θ₁")
        ax.set_ylabel("θ₂")
    fig.suptitle(f"perturbed OR ({backend})")
    fig.tight_layout()
    return _common.save(fig, path)


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=41, help="grid points per axis")
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--sigma", type=float, default=0.5)
    args = p.parse_args(argv)
    backend, timer = _common.backend_of(args), _common.Timer()
    theta, values, g = compute(backend, args.size, args.num_samples, args.sigma, args.seed)
    want, want_g = perturbed_or_closed_form(theta, args.sigma)
    print(f"backend {backend}: {len(theta)} points, {args.num_samples} samples, σ={args.sigma}")
    print(f"max |value - closed form| = {np.max(np.abs(values - want)):.4f}")
    print(f"max |grad - closed form|  = {np.max(np.abs(g - want_g)):.4f}")
    path = plot(theta, values, g, args.sigma, backend, _common.figure_path(args, "perturbed_or"))
    print(f"figure: {path}  ({timer})")


if __name__ == "__main__":
    main()
