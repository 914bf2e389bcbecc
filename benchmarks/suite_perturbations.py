"""Perturbations suite: perturbed argmax (one-hot), B = 32, d = 100, forward+backward.

The loss is ``sum(y_sigma(theta) * g)`` for a fixed random ``g``; a step is
one forward and one backward pass.

JAX side (Gumbel noise, baseline f(theta), everything under ``jax.jit``,
compiled ahead):

* diffopt ``perturbed(one_hot_argmax, noise='gumbel', control_variate='value')``;
* diffopt ``make_perturbed_fun`` (the optax drop-in, defaults);
* ``optax.perturbations.make_perturbed_fun`` (defaults: Gumbel, baseline;
  it ``vmap``s ``fun`` over the samples).

Every contender of a side uses the same solver, one-hot of the argmax
written in that framework (``jax.nn.one_hot(argmax)``,
``torch.nn.functional.one_hot(argmax)``); extra diffopt rows use the library's
``diffopt.argmax_one_hot`` instead, to show its own cost.

torch side (Normal noise, leave-one-out baseline, like ``pyepo``'s
``perturbedOpt``):

* diffopt ``perturbed(one_hot_argmax, noise='normal', control_variate='mean')``;
* a plain vectorised torch implementation of pyepo's estimator (pyepo's API
  only takes a per-instance ``optModel``, except for its MPAX LP models, so
  the same vectorised argmax cannot be plugged into pyepo itself);
* ``pyepo.func.perturbedOpt`` with a per-instance argmax ``optModel``
  (for reference; N <= 1000 only).

Memory case: N = 1e6 samples, d = 1000, B = 1, diffopt only (with its default
chunking and ``diffopt.argmax_one_hot``); the peers keep all N x d samples and would need > 4 GB per array.
"""

import numpy as np

from benchmarks._common import Counter, aot, jax_modules, need, need_attr, rand
from benchmarks._harness import Case, Comparison, Contender

B, D, SIGMA = 32, 100, 0.5
FULL_NS = (10, 100, 1000, 10000)
QUICK_NS = (10, 100)
MEMORY_N, MEMORY_D = 1_000_000, 1000
QUICK_MEMORY_N = 100_000

D_JAX = "diffopt perturbed (jax, jit)"
D_JAX_FUN = "diffopt make_perturbed_fun (jax, jit)"
P_OPTAX = "optax make_perturbed_fun (jit, vmap)"
D_TORCH = "diffopt perturbed (torch)"
P_TORCH = "pyepo estimator, plain vectorised torch"
P_PYEPO = "pyepo perturbedOpt (per-instance optModel)"
D_JAX_LIB = "diffopt perturbed (jax, jit), diffopt.argmax_one_hot"
D_TORCH_LIB = "diffopt perturbed (torch), diffopt.argmax_one_hot"


def _data(b, d):
    return rand((b, d), seed=d), rand((b, d), seed=d + 7)


# ------------------------------------------------------------------ JAX side


def _jax_one_hot_argmax(jax, jnp):
    """The solver every JAX contender uses: one-hot of the argmax over the last axis."""
    return lambda x: jax.nn.one_hot(jnp.argmax(x, axis=-1), x.shape[-1], dtype=x.dtype)


def make_diffopt_jax(n, b=B, d=D, chunk_size=None, library_solver=False):
    def make():
        perturbed = need_attr("diffopt.perturbations", "perturbed", "diffopt.perturbations")
        jax, jnp = jax_modules()
        solver = need_attr("diffopt", "argmax_one_hot") if library_solver else _jax_one_hot_argmax(jax, jnp)
        theta, g = (jnp.asarray(a) for a in _data(b, d))
        f = perturbed(solver, num_samples=n, sigma=SIGMA, noise="gumbel", control_variate="value",
                      chunk_size=chunk_size)

        def loss(th, key):
            return jnp.sum(f(th, rng=key) * g)

        key = jax.random.PRNGKey(0)
        fn = aot(jax.jit(jax.value_and_grad(loss)), theta, key)
        return lambda: jax.block_until_ready(fn(theta, key))

    return make


def make_diffopt_jax_fun(n):
    def make():
        mpf = need_attr("diffopt.perturbations", "make_perturbed_fun", "diffopt.perturbations")
        jax, jnp = jax_modules()
        theta, g = (jnp.asarray(a) for a in _data(B, D))
        fn_p = mpf(_jax_one_hot_argmax(jax, jnp), n, SIGMA)

        def loss(th, key):
            return jnp.sum(fn_p(key, th) * g)

        key = jax.random.PRNGKey(0)
        fn = aot(jax.jit(jax.value_and_grad(loss)), theta, key)
        return lambda: jax.block_until_ready(fn(theta, key))

    return make


def make_optax(n):
    def make():
        pert = need("optax.perturbations", "optax")
        jax, jnp = jax_modules()
        theta, g = (jnp.asarray(a) for a in _data(B, D))
        fn_p = pert.make_perturbed_fun(_jax_one_hot_argmax(jax, jnp), num_samples=n, sigma=SIGMA)

        def loss(th, key):
            return jnp.sum(fn_p(key, th) * g)

        key = jax.random.PRNGKey(0)
        fn = aot(jax.jit(jax.value_and_grad(loss)), theta, key)
        return lambda: jax.block_until_ready(fn(theta, key))

    return make


# ---------------------------------------------------------------- torch side


def _torch_inputs(b=B, d=D):
    torch = need("torch")
    theta, g = _data(b, d)
    return torch, torch.from_numpy(theta).requires_grad_(True), torch.from_numpy(g)


def _torch_step(theta, g, f):
    def step():
        theta.grad = None
        loss = (f(theta) * g).sum()
        loss.backward()
        return theta.grad

    return step


def _torch_one_hot_argmax(torch):
    """The solver every torch contender uses: one-hot of the argmax over the last axis."""
    return lambda x: torch.nn.functional.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)


def make_diffopt_torch(n, b=B, d=D, chunk_size=None, library_solver=False):
    def make():
        perturbed = need_attr("diffopt.perturbations", "perturbed", "diffopt.perturbations")
        torch, theta, g = _torch_inputs(b, d)
        solver = need_attr("diffopt", "argmax_one_hot") if library_solver else _torch_one_hot_argmax(torch)
        f = perturbed(solver, num_samples=n, sigma=SIGMA, noise="normal", control_variate="mean",
                      chunk_size=chunk_size)
        gen = torch.Generator().manual_seed(0)
        return _torch_step(theta, g, lambda th: f(th, rng=gen))

    return make


def _plain_torch_estimator(torch):
    """pyepo's perturbed-optimizer estimator, written directly in vectorised torch.

    Forward: mean over N Normal perturbations of one-hot argmax; backward:
    score-function estimate with the leave-one-out baseline, divided by N*sigma.
    """

    class PerturbedArgmax(torch.autograd.Function):
        @staticmethod
        def forward(ctx, theta, n, sigma, gen):
            noise = torch.randn((theta.shape[0], n, theta.shape[1]), generator=gen, dtype=theta.dtype)
            z = theta.detach().unsqueeze(1) + sigma * noise
            sols = _torch_one_hot_argmax(torch)(z)
            ctx.save_for_backward(sols, noise)
            ctx.sigma = sigma
            return sols.mean(1)

        @staticmethod
        def backward(ctx, grad_out):
            sols, noise = ctx.saved_tensors
            n = sols.shape[1]
            reward = torch.einsum("bnd,bd->bn", sols, grad_out)
            if n > 1:
                reward = (reward - reward.mean(1, keepdim=True)) * (n / (n - 1))
            grad = torch.einsum("bnd,bn->bd", noise, reward) / (n * ctx.sigma)
            return grad, None, None, None

    return PerturbedArgmax


def make_plain_torch(n):
    def make():
        torch, theta, g = _torch_inputs()
        fn = _plain_torch_estimator(torch)
        gen = torch.Generator().manual_seed(0)
        return _torch_step(theta, g, lambda th: fn.apply(th, n, SIGMA, gen))

    return make


def _pyepo_argmax_model(counter, d):
    need("torch")
    opt = need("pyepo.model.opt", "pyepo")
    epo = need("pyepo.EPO", "pyepo")

    class ArgmaxModel(opt.optModel):
        """One-hot argmax of the cost vector, as a pyepo optModel (maximisation)."""

        def __init__(self, d):
            self.d = d
            super().__init__()
            self.modelSense = epo.MAXIMIZE

        def _getModel(self):
            return None, list(range(self.d))

        def setObj(self, c):
            self.c = np.asarray(c)

        def solve(self):
            counter.hit(1)
            sol = np.zeros(self.d)
            i = int(np.argmax(self.c))
            sol[i] = 1.0
            return sol, float(self.c[i])

    return ArgmaxModel(d)


def make_pyepo(n, contender):
    def make():
        func = need("pyepo.func", "pyepo")
        torch, theta, g = _torch_inputs()
        counter = Counter()
        module = func.perturbedOpt(_pyepo_argmax_model(counter, D), n_samples=n, sigma=SIGMA, processes=1,
                                   seed=0, variance_reduction=True)
        step = _torch_step(theta, g, module)
        contender.info.update(counter.measure(step))
        return step

    return make


def cases(quick=False):
    out = []
    ns = QUICK_NS if quick else FULL_NS
    for n in ns:
        mem = True
        pyepo_row = Contender(P_PYEPO, "peer", None, "torch", memory=mem,
                              skip=None if n <= 1000 else "skipped: per-instance loop, N > 1000 too slow for the budget")
        pyepo_row.make = make_pyepo(n, pyepo_row)
        contenders = [
            Contender(D_JAX, "diffopt", make_diffopt_jax(n), "jax", memory=mem),
            Contender(D_JAX_FUN, "diffopt", make_diffopt_jax_fun(n), "jax", memory=mem),
            Contender(P_OPTAX, "peer", make_optax(n), "jax", memory=mem),
            Contender(D_TORCH, "diffopt", make_diffopt_torch(n), "torch", memory=mem),
            Contender(P_TORCH, "peer", make_plain_torch(n), "torch", memory=mem),
            pyepo_row,
            Contender(D_JAX_LIB, "diffopt", make_diffopt_jax(n, library_solver=True), "jax", memory=False),
            Contender(D_TORCH_LIB, "diffopt", make_diffopt_torch(n, library_solver=True), "torch", memory=False),
        ]
        headline = n in (1000, 10000)
        comparisons = [
            Comparison(D_JAX, P_OPTAX, 1.1 if headline else None,
                       f"diffopt-jax <= 1.1x optax at N = {n}" if headline else None),
            Comparison(D_JAX_FUN, P_OPTAX, 1.1 if headline else None,
                       f"drop-in make_perturbed_fun <= 1.1x optax at N = {n}" if headline else None),
            Comparison(D_TORCH, P_TORCH, 1.1 if headline else None,
                       f"diffopt-torch <= 1.1x the same estimator in plain torch at N = {n}" if headline else None),
            Comparison(D_TORCH, P_PYEPO),
        ]
        out.append(Case("perturbations", f"argmax N={n}", {"B": B, "d": D, "N": n, "sigma": SIGMA},
                        contenders, comparisons, tiny=(n == 10), scaling=("N", n)))
    big_n = QUICK_MEMORY_N if quick else MEMORY_N
    peer_skip = (f"skipped: keeps all N x d = {big_n:.0e} x {MEMORY_D} samples for the backward pass, "
                 f"{big_n * MEMORY_D * 4 / 2**30:.1f} GB per float32 array (see the N=10000 row for its growth)")
    out.append(Case(
        "perturbations", f"argmax memory N={big_n:.0e} d={MEMORY_D}", {"B": 1, "d": MEMORY_D, "N": big_n},
        [Contender(D_TORCH, "diffopt", make_diffopt_torch(big_n, 1, MEMORY_D, library_solver=True), "torch"),
         Contender(D_JAX, "diffopt", make_diffopt_jax(big_n, 1, MEMORY_D, library_solver=True), "jax"),
         Contender(P_OPTAX, "peer", None, "jax", skip=peer_skip),
         Contender(P_TORCH, "peer", None, "torch", skip=peer_skip)],
        memory_targets={D_TORCH: 500, D_JAX: 500}, time_it=False))
    return out
