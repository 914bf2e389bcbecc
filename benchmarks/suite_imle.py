"""I-MLE suite: one training step (forward, loss, backward, nothing excluded), B = 64, S = 10.

Both sides compute the same thing: Sum-of-Gamma perturb-and-MAP samples
(kappa = k for top-k, 5 for paths, 10 Gamma terms), their mean over the S
samples, the loss ``sum(mean * g)``, and the I-MLE gradient with target step
lambda = beta = 10 (alpha = 1). Solver calls and solved instances per step are
counted by wrapping the solver.

* top-k (k = 10 of n = 100): diffopt ``imle`` with a vectorised solver
  (the library's ``diffopt.top_k_mask``, and ``torch.topk`` + scatter) vs
  ``pyepo.func.implicitMLE`` with a per-instance top-k ``optModel`` (its loop
  over B*S instances), plus a plain vectorised torch I-MLE (``torch.topk``)
  for reference; with Sum-of-Gamma noise and with Gumbel noise.
* grid shortest path (Dijkstra on an H x W grid, 8 neighbours): the same
  per-instance NumPy/SciPy solver (``diffopt.grid_shortest_path``) in both:
  diffopt ``host_solver(vectorized=False)`` sequential (the default: no
  executor) and on a 2-worker thread, process or dask executor (each compared
  with sequential too: when does parallel pay off?), vs pyepo (``processes=1``, its default loop,
  and ``processes=2``, a pathos process pool).
"""

import concurrent.futures
import math

import numpy as np

from benchmarks._common import Counter, need, need_attr, rand
from benchmarks._harness import Case, Comparison, Contender

B, S, BETA, TOPK_N, TOPK_K = 64, 10, 10.0, 100, 10
FULL_GRID, QUICK_GRID = 12, 8
SOG_ITERS = 10

D_TOPK = "diffopt imle (torch, vectorised top_k_mask)"
D_TOPK_T = "diffopt imle (torch, torch.topk solver)"
P_TOPK = "pyepo implicitMLE (per-instance loop)"
R_TOPK = "plain vectorised torch I-MLE"
D_SP_SEQ = "diffopt imle (torch, host solver, sequential)"
D_SP_2 = "diffopt imle (torch, host solver, 2-thread executor)"
D_SP_2P = "diffopt imle (torch, host solver, 2-process executor)"
D_SP_DASK = "diffopt imle (torch, host solver, dask 2-process cluster)"
P_SP_1 = "pyepo implicitMLE (processes=1)"
P_SP_2 = "pyepo implicitMLE (processes=2)"


def _inputs(shape):
    torch = need("torch")
    theta, g = rand(shape, seed=sum(shape)), rand(shape, seed=sum(shape) + 3)
    return torch, torch.from_numpy(theta).requires_grad_(True), torch.from_numpy(g)


def _diffopt_step(torch, theta, g, solver, kappa):
    imle_mod = need("diffopt.imle", "diffopt.imle")
    noise = (imle_mod.GumbelNoiseDistribution() if kappa == "gumbel"
             else imle_mod.SumOfGammaNoiseDistribution(k=kappa, nb_iterations=SOG_ITERS))
    wrapped = imle_mod.imle(
        solver,
        target_distribution=imle_mod.TargetDistribution(alpha=1.0, beta=BETA),
        noise_distribution=noise,
        nb_samples=S,
    )
    gen = torch.Generator().manual_seed(0)

    def step():
        theta.grad = None
        z = wrapped(theta, rng=gen)
        mean = z.reshape((theta.shape[0], S) + tuple(theta.shape[1:])).mean(1)
        (mean * g).sum().backward()
        return theta.grad

    return step


def _pyepo_step(theta, g, module, shape):
    def step():
        theta.grad = None
        mean = module(theta.reshape(theta.shape[0], -1)).reshape(shape)
        (mean * g).sum().backward()
        return theta.grad

    return step


def _pyepo_model(solve_one, d, maximize, counter):
    opt = need("pyepo.model.opt", "pyepo")
    epo = need("pyepo.EPO", "pyepo")

    class Model(opt.optModel):
        """A pyepo optModel around one per-instance NumPy solver."""

        def __init__(self, d, maximize):
            self.d = d
            super().__init__()
            self.modelSense = epo.MAXIMIZE if maximize else epo.MINIMIZE

        def _getModel(self):
            return None, list(range(self.d))

        def setObj(self, c):
            self.c = np.asarray(c, dtype=np.float64)

        def solve(self):
            counter.hit(1)
            sol = solve_one(self.c)
            return sol, float(np.dot(sol, self.c))

    return Model(d, maximize)


class _GumbelForPyepo:
    """Standard Gumbel noise in the shape of pyepo's noise objects (``sample(size=...)``)."""

    def __init__(self, seed=135):
        self.rng = np.random.default_rng(seed)

    def sample(self, size):
        return self.rng.gumbel(size=size)


def _pyepo_module(model, kappa, processes):
    func = need("pyepo.func", "pyepo")
    utils = need("pyepo.func.utils", "pyepo")
    dist = (_GumbelForPyepo() if kappa == "gumbel"
            else utils.sumGammaDistribution(kappa=kappa, n_iterations=SOG_ITERS))
    return func.implicitMLE(model, n_samples=S, sigma=1.0, lambd=BETA, distribution=dist, processes=processes)


# ---------------------------------------------------------------------- top-k


def _topk_one(c):
    sol = np.zeros(c.shape[0])
    sol[np.argpartition(-c, TOPK_K - 1)[:TOPK_K]] = 1.0
    return sol


def _torch_topk(torch, x):
    """Top-k indicator with ``torch.topk`` + scatter (the plain reference's solver)."""
    out = torch.zeros_like(x)
    return out.scatter_(-1, x.topk(TOPK_K, dim=-1).indices, 1.0)


def make_topk_diffopt(contender, noise, library_solver=True):
    def make():
        top_k_mask = need_attr("diffopt", "top_k_mask")
        torch, theta, g = _inputs((B, TOPK_N))
        counter = Counter()

        def solver(x):
            counter.hit(x.shape[0])
            return top_k_mask(x, TOPK_K) if library_solver else _torch_topk(torch, x)

        step = _diffopt_step(torch, theta, g, solver, TOPK_K if noise == "sog" else "gumbel")
        contender.info.update(counter.measure(step))
        return step

    return make


def make_topk_pyepo(contender, noise):
    def make():
        torch, theta, g = _inputs((B, TOPK_N))
        counter = Counter()
        module = _pyepo_module(_pyepo_model(_topk_one, TOPK_N, True, counter),
                               TOPK_K if noise == "sog" else "gumbel", 1)
        step = _pyepo_step(theta, g, module, (B, TOPK_N))
        contender.info.update(counter.measure(step))
        return step

    return make


def _sog(torch, shape, kappa, gen):
    """Sum-of-Gamma noise drawn with torch's own sampler (on the tensor's device, as a torch user
    would for a GPU), from the generator ``gen``."""
    conc = torch.full((SOG_ITERS,) + tuple(shape), 1.0 / kappa)
    draws = torch._standard_gamma(conc, generator=gen)
    scale = (kappa / torch.arange(1, SOG_ITERS + 1, dtype=torch.float32)).reshape((SOG_ITERS,) + (1,) * len(shape))
    total = (draws * scale).sum(0)
    return (total - math.log(SOG_ITERS)) / kappa


def make_topk_plain(noise):
    def make():
        torch, theta, g = _inputs((B, TOPK_N))
        gen = np.random.default_rng(0)
        tgen = torch.Generator().manual_seed(0)

        def solve(x):
            return _torch_topk(torch, x)

        class IMLE(torch.autograd.Function):
            @staticmethod
            def forward(ctx, th):
                shape = (th.shape[0], S, th.shape[1])
                if noise == "sog":
                    eps = _sog(torch, shape, TOPK_K, tgen)
                else:
                    eps = torch.from_numpy(gen.gumbel(size=shape).astype(np.float32))
                ctx.eps, ctx.th = eps, th.detach()
                z = solve(th.detach().unsqueeze(1) + eps)
                ctx.z = z
                return z.mean(1)

            @staticmethod
            def backward(ctx, dy):
                target = ctx.th - BETA * dy  # alpha = 1, maximisation
                z2 = solve(target.unsqueeze(1) + ctx.eps)
                return (ctx.z - z2).mean(1)

        def step():
            theta.grad = None
            (IMLE.apply(theta) * g).sum().backward()
            return theta.grad

        return step

    return make


# --------------------------------------------------------------- shortest path


def _grid_solver(h, counter):
    gsp = need_attr("diffopt", "grid_shortest_path")

    def solve_one(costs):
        counter.hit(1)
        return gsp(np.asarray(costs).reshape(h, h))

    return solve_one


def make_sp_diffopt(h, contender, workers, processes=False):
    def make():
        host_solver = need_attr("diffopt", "host_solver")
        torch, theta, g = _inputs((B, h, h))
        counter = Counter()
        if processes:  # the solver itself must be picklable: the library function, no counter
            executor = _dask_executor(workers) if processes == "dask" else concurrent.futures.ProcessPoolExecutor(workers)
            solver = host_solver(need_attr("diffopt", "grid_shortest_path"), vectorized=False, executor=executor)
            with torch.no_grad():
                theta.add_(3.0)
            step = _diffopt_step(torch, theta, g, solver, 5)
            step()  # start the workers
            contender.info.update(solver_calls_per_step="n/a (in workers)", instances_solved_per_step=2 * B * S)
            return step
        executor = concurrent.futures.ThreadPoolExecutor(workers) if workers else None
        solver = host_solver(_grid_solver(h, counter), vectorized=False, executor=executor)
        # positive costs, as Dijkstra needs: the solver sees theta + noise with theta ~ N(0,1) + 3
        with torch.no_grad():
            theta.add_(3.0)
        step = _diffopt_step(torch, theta, g, solver, 5)
        contender.info.update(counter.measure(step))
        return step

    return make


def _dask_executor(workers):
    """A ``concurrent.futures`` executor over a local dask cluster of ``workers`` single-thread processes."""
    distributed = need("dask.distributed", "dask[distributed]")
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    return distributed.Client(cluster).get_executor()


def make_sp_pyepo(h, contender, processes):
    def make():
        torch, theta, g = _inputs((B, h, h))
        counter = Counter()  # counted once per instance, in the optModel's solve()
        one = _grid_solver(h, Counter())
        module = _pyepo_module(_pyepo_model(lambda c: one(c).ravel(), h * h, False, counter), 5, processes)
        with torch.no_grad():
            theta.add_(3.0)
        step = _pyepo_step(theta, g, module, (B, h, h))
        info = counter.measure(step)
        if processes > 1:  # calls happen in the worker processes, which the counter cannot see
            info = {"solver_calls_per_step": "n/a (in workers)", "instances_solved_per_step": 2 * B * S}
        contender.info.update(info)
        return step

    return make


def cases(quick=False):
    h = QUICK_GRID if quick else FULL_GRID
    topk_cases = []
    for noise, title in (("sog", "Sum-of-Gamma noise"), ("gumbel", "Gumbel noise")):
        topk = [Contender(D_TOPK, "diffopt", None, "torch"),
                Contender(D_TOPK_T, "diffopt", None, "torch"),
                Contender(P_TOPK, "peer", None, "torch"),
                Contender(R_TOPK, "peer", make_topk_plain(noise), "torch")]
        topk[0].make = make_topk_diffopt(topk[0], noise)
        topk[1].make = make_topk_diffopt(topk[1], noise, library_solver=False)
        topk[2].make = make_topk_pyepo(topk[2], noise)
        target = ">= 20x faster than pyepo's per-instance loop (vectorised solver)"
        topk_cases.append(Case(
            "imle", f"top-k k={TOPK_K} n={TOPK_N}, {title}", {"B": B, "S": S, "n": TOPK_N, "k": TOPK_K, "noise": noise},
            topk,
            [Comparison(D_TOPK, P_TOPK, 1 / 20, target),
             Comparison(D_TOPK_T, P_TOPK, 1 / 20, target),
             Comparison(D_TOPK_T, R_TOPK),
             Comparison(R_TOPK, P_TOPK)],
            tiny=(noise == "sog")))
    sp = [Contender(D_SP_SEQ, "diffopt", None, "torch"),
          Contender(D_SP_2, "diffopt", None, "torch"),
          Contender(D_SP_2P, "diffopt", None, "torch", memory=False),
          Contender(D_SP_DASK, "diffopt", None, "torch", memory=False),
          Contender(P_SP_1, "peer", None, "torch"),
          Contender(P_SP_2, "peer", None, "torch", memory=False)]
    sp[0].make = make_sp_diffopt(h, sp[0], 0)
    sp[1].make = make_sp_diffopt(h, sp[1], 2)
    sp[2].make = make_sp_diffopt(h, sp[2], 2, processes=True)
    sp[3].make = make_sp_diffopt(h, sp[3], 2, processes="dask")
    sp[4].make = make_sp_pyepo(h, sp[4], 1)
    sp[5].make = make_sp_pyepo(h, sp[5], 2)
    return topk_cases + [
        Case("imle", f"shortest path {h}x{h}", {"B": B, "S": S, "grid": f"{h}x{h}"}, sp,
             [Comparison(D_SP_2, P_SP_1, 1.0, "same per-instance solver on a 2-worker executor: no slower than pyepo"),
              Comparison(D_SP_2P, P_SP_1, 1.0, "same per-instance solver on a 2-worker executor: no slower than pyepo"),
              Comparison(D_SP_SEQ, P_SP_1),
              Comparison(D_SP_2P, P_SP_2),
              Comparison(D_SP_2, D_SP_SEQ),
              Comparison(D_SP_2P, D_SP_SEQ),
              Comparison(D_SP_DASK, D_SP_SEQ)]),
    ]
