"""Decision-focused learning on PyEPO's synthetic problems: diffopt beside PyEPO.

``python -m benchmarks --suite dfl [--quick | --tiny]`` trains the same linear
model (5 features → costs) with the same data, seeds, initial weights, batch
order, optimiser (Adam) and epochs, by

* diffopt: ``spo_plus_loss`` (SPO+), ``blackbox`` (DBB), ``perturbed`` (DPO),
  ``FenchelYoungLoss`` (PFYL), ``imle`` (I-MLE), on torch, jax (``jit``),
  tensorflow (``tf.function``) and numpy+autograd, with the vectorised
  solvers ``dag_shortest_path`` (autoray) and ``knapsack_solver(unit=0.01)``
  (a NumPy dynamic program, host solver); and on torch with PyEPO's own
  OR-tools models wrapped as a per-instance ``host_solver`` (``torch+ortools``);
* PyEPO: ``SPOPlus``, ``blackboxOpt``, ``perturbedOpt``,
  ``perturbedFenchelYoung``, ``implicitMLE`` with its OR-tools models
  (``processes=1``).

Data: ``pyepo.data.shortestpath.genData`` (5×5 grid, 40 edges) and
``pyepo.data.knapsack.genData`` (32 items, one weight dimension, capacity 20;
weights on PyEPO's 0.01 grid), polynomial degree ``deg``, noise half-width
0.5, 5 features; the first ``n_train`` instances train, the next ``n_test``
test. DBB, DPO and I-MLE minimise the regret of their decision
(``⟨c, ŵ⟩ − z*``, sign flipped for the knapsack); SPO+ and PFYL are losses
of their own. Hyper-parameters are PyEPO's defaults: λ = 10, 10 samples,
σ = 1, Sum-of-Gamma κ = 5 for I-MLE (diffopt's β = λ·S with gradient
scaling gives PyEPO's shift λ·g when the loss averages the S samples; the
gradient is then PyEPO's divided by S, a constant factor that Adam ignores).

Reported: the normalised regret ``Σ regret / Σ |z*|`` on the test instances
after the last epoch (mean and standard deviation over seeds) and the
training time per epoch (median over epochs after the first; the first
includes compilation, done once per method for the shortest path, whose
solver does not change with the seed). Written to ``--out``: ``dfl.json``, ``dfl_table.md``,
``dfl_regret.png`` (other suites' files are left alone).
"""

import json
import os
import statistics
import sys
import time

import numpy as np

METHODS = ("SPO+", "DBB", "DPO", "PFYL", "I-MLE")
FRAMEWORKS = ("torch", "jax", "tensorflow", "numpy", "torch+ortools")
GRID = (5, 5)
ITEMS, CAPACITY = 32, 20.0
FEATURES, NOISE = 5, 0.5
LAMBD, SAMPLES, SIGMA, KAPPA = 10.0, 10, 1.0, 5

CONFIGS = {
    "full": dict(degrees=(1, 2, 4, 6), seeds=5, n_train=1000, n_test=1000, epochs=10, batch=32, lr=0.01,
                 problems=("shortest_path", "knapsack"), frameworks=FRAMEWORKS, methods=METHODS),
    # quick: PyEPO's knapsack runs one SCIP solve per instance and sample (~30 ms each here), so the
    # knapsack runs only on the frameworks without a per-run compilation (plus jax)
    "quick": dict(degrees=(1, 6), seeds=2, n_train=96, n_test=1000, epochs=2, batch=32, lr=0.05,
                  problems=("shortest_path", "knapsack"), frameworks=FRAMEWORKS, methods=METHODS,
                  skip=(("knapsack", "torch+ortools"), ("knapsack", "tensorflow"))),
    "tiny": dict(degrees=(2,), seeds=1, n_train=32, n_test=32, epochs=1, batch=16, lr=0.05,
                 problems=("shortest_path", "knapsack"), frameworks=("numpy",), methods=METHODS),
}


# -- data and solvers ----------------------------------------------------------------------------
class Problem:
    """One data set: features, costs, optimal decisions and objectives (NumPy), solvers."""

    def __init__(self, name, deg, seed, n_train, n_test):
        import diffopt
        from pyepo import data

        n = n_train + n_test
        self.name = name
        if name == "shortest_path":
            x, c = data.shortestpath.genData(n, FEATURES, GRID, deg=deg, noise_width=NOISE, seed=seed)
            self.minimize = True
            self.solver = diffopt.dag_shortest_path
        else:
            weights, x, c = data.knapsack.genData(n, FEATURES, ITEMS, dim=1, deg=deg, noise_width=NOISE, seed=seed)
            self.minimize = False
            self.weights = weights
            self.solver = diffopt.knapsack_solver(weights, CAPACITY, unit=0.01)
        x, c = x.astype(np.float32), c.astype(np.float32)
        w = np.asarray(self.solver(c), dtype=np.float32)
        z = (w * c).sum(axis=1).astype(np.float32)
        self.train = (x[:n_train], c[:n_train], w[:n_train], z[:n_train])
        self.test = (x[n_train:], c[n_train:], z[n_train:])
        self.dim = c.shape[1]

    def ort_model(self):
        from pyepo.model import ort

        if self.name == "shortest_path":
            return ort.shortestPathModel(grid=GRID)
        return ort.knapsackModel(self.weights, [CAPACITY])

    def ort_host_solver(self):
        """PyEPO's OR-tools model as a per-instance diffopt host solver."""
        import diffopt

        model = self.ort_model()

        def solve_one(cost):
            model.setObj(cost)
            sol, _ = model.solve()
            return np.asarray(sol, dtype=np.float64)

        return diffopt.host_solver(solve_one, vectorized=False, output_shape=lambda s: s)

    def regret(self, pred):
        """Normalised regret of NumPy predictions on the test set."""
        import diffopt

        _, c, z = self.test
        return float(diffopt.normalized_regret(self.solver, pred.astype(np.float32), c, z, minimize=self.minimize))


# -- diffopt ------------------------------------------------------------------------------------
def diffopt_loss(method, solver, minimize, dim):
    """``loss(W, b, x, c, w, z, key)`` written once with autoray."""
    import autoray as ar

    import diffopt
    from diffopt.imle import SumOfGammaNoiseDistribution, TargetDistribution, imle

    sense = 1.0 if minimize else -1.0

    def decision_regret(w_hat, c, z):
        return ar.do("mean", sense * (ar.do("sum", w_hat * c, axis=-1) - z))

    if method == "SPO+":
        spo = diffopt.spo_plus_loss(solver, minimize=minimize)
        return lambda pred, c, w, z, key: spo(pred, c, w, z)
    if method == "DBB":
        bb = diffopt.blackbox(solver, LAMBD, minimize=minimize)
        return lambda pred, c, w, z, key: decision_regret(bb(pred), c, z)
    if method == "DPO":
        # PyEPO's perturbedOpt subtracts the mean reward, scaled n/(n-1) (variance_reduction=True):
        # diffopt's leave-one-out control variate is the same estimator
        pert = diffopt.perturbed(solver, num_samples=SAMPLES, sigma=SIGMA, noise="normal", control_variate="mean")
        return lambda pred, c, w, z, key: decision_regret(pert(pred, rng=key), c, z)
    if method == "PFYL":
        fy = diffopt.FenchelYoungLoss(solver, num_samples=SAMPLES, sigma=SIGMA, maximize=not minimize,
                                      reduction="mean")
        return lambda pred, c, w, z, key: fy(pred, w, rng=key)
    if method == "I-MLE":
        est = imle(solver, TargetDistribution(alpha=1.0, beta=LAMBD * SAMPLES, do_gradient_scaling=True),
                   SumOfGammaNoiseDistribution(k=KAPPA, nb_iterations=10), nb_samples=SAMPLES,
                   input_noise_temperature=SIGMA, target_noise_temperature=SIGMA, minimize=minimize)

        def loss(pred, c, w, z, key):
            z_s = ar.do("reshape", est(pred, rng=key), (-1, SAMPLES, dim))
            return decision_regret(ar.do("mean", z_s, axis=1), c, z)

        return loss
    raise ValueError(method)


def gradient_step(framework, loss):
    """``step(W, b, x, c, w, z, seed, count) -> (dW, db)`` in NumPy, by the framework's autodiff."""
    import autoray as ar

    def full(weights, bias, x, c, w, z, key):
        return loss(ar.do("matmul", x, weights) + bias, c, w, z, key)

    if framework == "jax":
        import jax

        compiled = jax.jit(jax.grad(full, argnums=(0, 1)))

        def step(weights, bias, batch, seed, count):
            key = jax.random.fold_in(jax.random.key(seed), count)
            return tuple(np.asarray(g) for g in compiled(weights, bias, *batch, key))

        return step
    if framework == "tensorflow":
        import tensorflow as tf

        @tf.function
        def compiled(weights, bias, x, c, w, z, key):
            with tf.GradientTape() as tape:
                tape.watch([weights, bias])
                value = full(weights, bias, x, c, w, z, key)
            return tape.gradient(value, [weights, bias])

        def step(weights, bias, batch, seed, count):
            key = tf.constant([seed, count], dtype=tf.int64)
            args = [tf.convert_to_tensor(a) for a in (weights, bias) + tuple(batch)]
            return tuple(g.numpy() for g in compiled(*args, key))

        return step
    if framework.startswith("torch"):
        import torch

        def step(weights, bias, batch, seed, count):
            wt = torch.from_numpy(weights).requires_grad_(True)
            bt = torch.from_numpy(bias).requires_grad_(True)
            value = full(wt, bt, *(torch.from_numpy(a) for a in batch), seed * 1_000_003 + count)
            return tuple(g.numpy() for g in torch.autograd.grad(value, (wt, bt)))

        return step
    import autograd

    grad = autograd.grad(full, argnum=(0, 1))

    def step(weights, bias, batch, seed, count):
        return tuple(np.asarray(g, dtype=np.float32) for g in grad(weights, bias, *batch, seed * 1_000_003 + count))

    return step


def initial_weights(seed, dim):
    """``torch.nn.Linear(5, dim)``'s initial weights for ``seed`` (the same for both sides)."""
    import torch

    torch.manual_seed(seed)
    layer = torch.nn.Linear(FEATURES, dim)
    return layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy()


def batches(seed, epoch, n, size):
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i:i + size] for i in range(0, n, size)]


_STEPS = {}


def train_diffopt(problem, method, framework, seed, cfg):
    from diffopt._demo.optim import Adam  # as torch.optim.Adam, on NumPy arrays

    solver = problem.ort_host_solver() if framework == "torch+ortools" else problem.solver
    # the shortest path's solver is the same for every seed and degree: compile its steps once
    key = (framework, method) if problem.name == "shortest_path" and framework != "torch+ortools" else None
    step = _STEPS.get(key) if key else None
    if step is None:
        step = gradient_step(framework, diffopt_loss(method, solver, problem.minimize, problem.dim))
        if key:
            _STEPS[key] = step
    weights, bias = initial_weights(seed, problem.dim)
    opt, count, times = Adam([weights, bias], cfg["lr"]), 0, []
    x, c, w, z = problem.train
    for epoch in range(cfg["epochs"]):
        start = time.perf_counter()
        for idx in batches(seed, epoch, len(x), cfg["batch"]):
            grads = step(weights, bias, (x[idx], c[idx], w[idx], z[idx]), seed, count)
            weights, bias = opt.step([weights, bias], grads)
            count += 1
        times.append(time.perf_counter() - start)
    return problem.regret(problem.test[0] @ weights + bias), times


# -- PyEPO --------------------------------------------------------------------------------------
def pyepo_module(method, model, seed):
    from pyepo import func
    from pyepo.func.utils import sumGammaDistribution

    if method == "SPO+":
        return func.SPOPlus(model, processes=1)
    if method == "DBB":
        return func.blackboxOpt(model, lambd=LAMBD, processes=1)
    if method == "DPO":
        return func.perturbedOpt(model, n_samples=SAMPLES, sigma=SIGMA, processes=1, seed=seed)
    if method == "PFYL":
        return func.perturbedFenchelYoung(model, n_samples=SAMPLES, sigma=SIGMA, processes=1, seed=seed)
    return func.implicitMLE(model, n_samples=SAMPLES, sigma=SIGMA, lambd=LAMBD,
                            distribution=sumGammaDistribution(kappa=KAPPA, seed=seed), processes=1)


def train_pyepo(problem, method, seed, cfg):
    import torch

    weights, bias = initial_weights(seed, problem.dim)
    layer = torch.nn.Linear(FEATURES, problem.dim)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weights.T))
        layer.bias.copy_(torch.from_numpy(bias))
    opt = torch.optim.Adam(layer.parameters(), lr=cfg["lr"])
    module = pyepo_module(method, problem.ort_model(), seed)
    sense = 1.0 if problem.minimize else -1.0
    x, c, w, z = (torch.from_numpy(a) for a in problem.train)
    times = []
    for epoch in range(cfg["epochs"]):
        start = time.perf_counter()
        for idx in batches(seed, epoch, len(x), cfg["batch"]):
            idx = torch.from_numpy(idx)
            cp = layer(x[idx])
            if method == "SPO+":
                loss = module(cp, c[idx], w[idx], z[idx][:, None])
            elif method == "PFYL":
                loss = module(cp, w[idx])
            else:
                loss = (sense * ((module(cp) * c[idx]).sum(-1) - z[idx])).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        pred = layer(torch.from_numpy(problem.test[0])).numpy()
    return problem.regret(pred), times


# -- the run ------------------------------------------------------------------------------------
def _available(framework):
    import importlib.util

    name = {"numpy": "autograd", "torch+ortools": "ortools"}.get(framework, framework)
    return importlib.util.find_spec(name) is not None


def _contenders(cfg, name):
    import importlib.util

    out = [("diffopt", fw) for fw in cfg["frameworks"] if _available(fw) and (name, fw) not in cfg.get("skip", ())]
    if importlib.util.find_spec("ortools") is not None:
        out.append(("pyepo", "torch"))
    return out


def _cell(rec):
    return tuple(rec[k] for k in ("problem", "deg", "seed", "method", "impl", "framework"))


_PROBLEMS = {}


def _problem(name, deg, seed, cfg):
    """The data set of (problem, degree, seed), built once per process (the last one is kept)."""
    key = (name, deg, seed, cfg["n_train"], cfg["n_test"])
    if key not in _PROBLEMS:
        _PROBLEMS.clear()
        _PROBLEMS[key] = Problem(name, deg, seed, cfg["n_train"], cfg["n_test"])
    return _PROBLEMS[key]


def run_cell(cell, cfg, log=print):
    """One training run: ``cell = (problem, degree, seed, method, impl, framework)``; its record."""
    name, deg, seed, method, impl, fw = cell
    rec = dict(problem=name, deg=deg, seed=seed, method=method, impl=impl, framework=fw)
    try:
        problem = _problem(name, deg, seed, cfg)
        if impl == "pyepo":
            regret, times = train_pyepo(problem, method, seed, cfg)
        else:
            regret, times = train_diffopt(problem, method, fw, seed, cfg)
        w0, b0 = initial_weights(seed, problem.dim)  # the untrained model: the same for every contender
        rec.update(status="ok", regret=regret, regret_untrained=problem.regret(problem.test[0] @ w0 + b0),
                   epoch_times_s=times)
        log(f"  {name:<13} deg {deg} seed {seed} {method:<5} {impl:>7} {fw:<13} "
            f"regret {regret:7.4f}  epoch {statistics.median(times):7.2f} s")
    except Exception as exc:  # a failing contender is a row with its error
        rec.update(status="error", reason=f"{type(exc).__name__}: {exc}"[:300])
        log(f"  {name} deg {deg} seed {seed} {method} {impl} {fw}: {rec['reason']}")
    return rec


def _cell_in_child(job):
    """Worker-process entry point: one training run, ``threads`` intra-op threads."""
    cell, cfg, threads = job
    import torch  # torch before TensorFlow in one process

    torch.set_num_threads(threads)
    return run_cell(cell, cfg, log=lambda s: print(s, flush=True))


def load_cells(path):
    """Finished runs recorded in a cells file (JSON lines), keyed by their cell."""
    cells = {}
    if path and os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    if rec.get("status") == "ok":
                        cells[_cell(rec)] = rec
    return cells


def run_all(cfg, log=print, jobs=1, cells_path=None, resume=False, threads=1):
    """Every (problem, degree, seed, method, contender); returns the records.

    Each finished run is appended to ``cells_path`` (JSON lines) as it ends; with ``resume`` the
    runs already there are kept and not repeated, so the full protocol can be completed in
    several sittings. ``jobs`` worker processes take one training run each, longest first.
    """
    import importlib.util

    if importlib.util.find_spec("pyepo") is None:
        raise SystemExit("the dfl suite needs pyepo (its data generators): pip install 'pyepo[ortools]'")
    kept = load_cells(cells_path) if resume else {}
    if cells_path and not resume and os.path.exists(cells_path):
        os.remove(cells_path)
    cells = [(name, deg, seed, method) + contender
             for name in cfg["problems"] for deg in cfg["degrees"] for seed in range(cfg["seeds"])
             for method in cfg["methods"] for contender in _contenders(cfg, name)]
    todo = [c for c in cells if c not in kept]
    if kept:
        log(f"  resuming: {len(cells) - len(todo)} of {len(cells)} run(s) kept from {cells_path}")

    def record(rec):
        if cells_path:
            with open(cells_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        return rec

    records = [kept[c] for c in cells if c in kept]
    if jobs <= 1:
        return records + [record(run_cell(c, cfg, log)) for c in todo]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # the longest runs (PyEPO's and the OR-tools twin's, the sampling methods) start first
    slow = sorted(todo, key=lambda c: (c[4] != "pyepo" and c[5] != "torch+ortools", -SOLVES_PER_INSTANCE[c[3]]))
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_cell_in_child, (c, cfg, threads)) for c in slow]
        done = {_cell(r): r for r in (record(f.result()) for f in as_completed(futures))}
    return records + [done[c] for c in todo]


# solver calls per training instance and epoch, the same for PyEPO and the OR-tools twin
SOLVES_PER_INSTANCE = {"SPO+": 1, "DBB": 2, "DPO": SAMPLES, "PFYL": SAMPLES, "I-MLE": 2 * SAMPLES}


def estimate(cfg, calls=200, log=print):
    """Measured time of one OR-tools solve per problem, and the solver time the mode needs.

    Returns a dict per problem: seconds per solve, solver calls and hours for PyEPO and for
    diffopt's OR-tools twin (the vectorised diffopt solvers take a small fraction of this).
    """
    out = {}
    for name in cfg["problems"]:
        problem = Problem(name, 1, 0, 8, 8)
        model = problem.ort_model()
        costs = np.random.default_rng(0).uniform(0.0, 2.0, size=(calls, problem.dim))
        start = time.perf_counter()
        for cost in costs:
            model.setObj(cost)
            model.solve()
        per_solve = (time.perf_counter() - start) / calls
        runs = len(cfg["degrees"]) * cfg["seeds"] * cfg["epochs"] * cfg["n_train"]
        solves = runs * sum(SOLVES_PER_INSTANCE[m] for m in cfg["methods"])
        twin = "torch+ortools" in cfg["frameworks"] and (name, "torch+ortools") not in cfg.get("skip", ())
        out[name] = dict(seconds_per_solve=per_solve, pyepo_solves=solves, pyepo_hours=solves * per_solve / 3600,
                         twin_hours=(solves * per_solve / 3600) if twin else 0.0)
        log(f"  {name:<13} {per_solve * 1e3:6.2f} ms per OR-tools solve; {solves:,} solves per contender: "
            f"PyEPO {out[name]['pyepo_hours']:.1f} h, diffopt torch+ortools {out[name]['twin_hours']:.1f} h (1 core)")
    return out


def summarise(records):
    """Mean/std regret over seeds and median epoch time, per (problem, deg, method, impl, framework)."""
    groups = {}
    for r in records:
        if r["status"] == "ok":
            groups.setdefault((r["problem"], r["deg"], r["method"], r["impl"], r["framework"]), []).append(r)
    out = []
    for (problem, deg, method, impl, fw), rs in sorted(groups.items()):
        regrets = [r["regret"] for r in rs]
        later = [t for r in rs for t in (r["epoch_times_s"][1:] or r["epoch_times_s"])]
        out.append(dict(problem=problem, deg=deg, method=method, impl=impl, framework=fw, seeds=len(rs),
                        regret_mean=float(np.mean(regrets)),
                        regret_std=float(np.std(regrets, ddof=1)) if len(rs) > 1 else None,
                        epoch_s=float(np.median(later)),
                        first_epoch_s=float(np.median([r["epoch_times_s"][0] for r in rs]))))
    return out


def _label(row):
    return "PyEPO" if row["impl"] == "pyepo" else f"diffopt {row['framework']}"


def markdown(data):
    meta, rows = data["meta"], data["summary"]
    cfg = meta["config"]
    lines = [f"Decision-focused learning, mode **{meta['mode']}**: {cfg['n_train']} training / {cfg['n_test']} test "
             f"instances, {cfg['epochs']} epoch(s), batch {cfg['batch']}, Adam lr {cfg['lr']}, {cfg['seeds']} seed(s), "
             f"{meta['threads']} thread(s); {meta['date']}, diffopt {meta.get('git')}, pyepo {meta.get('pyepo')}.",
             "", "Normalised test regret (mean ± std over seeds) and median training time per epoch.", ""]
    labels = sorted({_label(r) for r in rows}, key=lambda s: (s != "PyEPO", s))
    lines.append("| problem | deg | method | " + " | ".join(labels) + " |")
    lines.append("|---|---|---|" + "---|" * len(labels))
    cells = {}
    for r in rows:
        std = f" ± {r['regret_std']:.4f}" if r["regret_std"] is not None else ""
        cells[(r["problem"], r["deg"], r["method"], _label(r))] = f"{r['regret_mean']:.4f}{std}<br>{r['epoch_s']:.2f} s"
    for key in sorted({(r["problem"], r["deg"], r["method"]) for r in rows},
                      key=lambda k: (k[0], k[1], METHODS.index(k[2]))):
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | "
                     + " | ".join(cells.get(key + (lab,), "-") for lab in labels) + " |")
    errors = [r for r in data["records"] if r["status"] != "ok"]
    if errors:
        lines += ["", "Errors:"] + [f"- {r['problem']} deg {r['deg']} {r['method']} {r['impl']} {r['framework']}: "
                                    f"{r['reason']}" for r in errors]
    return "\n".join(lines) + "\n"


def plot(data, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["summary"]
    problems = sorted({r["problem"] for r in rows})
    fig, axes = plt.subplots(1, len(problems), figsize=(6 * len(problems), 4), squeeze=False)
    colours = dict(zip(METHODS, ("C0", "C1", "C2", "C3", "C4")))
    for ax, problem in zip(axes[0], problems):
        for method in METHODS:
            for impl, fw, style in (("diffopt", "torch", "-"), ("pyepo", "torch", "--")):
                sel = sorted((r for r in rows if r["problem"] == problem and r["method"] == method
                              and r["impl"] == impl and r["framework"] == fw), key=lambda r: r["deg"])
                if not sel:
                    continue
                ax.errorbar([r["deg"] for r in sel], [r["regret_mean"] for r in sel],
                            yerr=[r["regret_std"] or 0.0 for r in sel], linestyle=style, marker="o",
                            color=colours[method], capsize=3,
                            label=f"{method} ({'diffopt torch' if impl == 'diffopt' else 'PyEPO'})")
        ax.set_title(problem.replace("_", " "))
        ax.set_xlabel("polynomial degree")
        ax.set_ylabel("normalised test regret")
        ax.set_ylim(bottom=0)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args):
    """Entry point from ``python -m benchmarks --suite dfl``."""
    from benchmarks.run import machine_info

    mode = "tiny" if args.tiny else ("quick" if args.quick else "full")
    cfg = dict(CONFIGS[mode])
    print(f"diffopt benchmarks: suite=dfl mode={mode} threads={args.threads} jobs={args.jobs}", flush=True)
    started = time.time()
    if args.estimate:
        est = estimate(cfg)
        total = sum(v["pyepo_hours"] + v["twin_hours"] for v in est.values())
        print(f"solver time of the {mode} run: {total:.1f} core-hours (PyEPO and the OR-tools twin), "
              f"about {total / max(args.jobs, 1):.1f} h with --jobs {args.jobs}", flush=True)
        return 0
    os.makedirs(args.out, exist_ok=True)
    cells = os.path.join(args.out, f"dfl_cells_{mode}.jsonl")
    records = run_all(cfg, log=lambda s: print(s, flush=True), jobs=args.jobs, cells_path=cells,
                      resume=args.resume, threads=args.threads)
    meta = machine_info(args.threads)
    meta.update(mode=mode, config={k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), wall_s=round(time.time() - started, 1),
                command="python -m benchmarks " + " ".join(sys.argv[1:]), pyepo=meta["versions"].get("pyepo"))
    data = {"meta": meta, "records": records, "summary": summarise(records)}
    path = os.path.join(args.out, "dfl.json")
    with open(path, "w") as fh:
        json.dump(data, fh, indent=1)
    table = os.path.join(args.out, "dfl_table.md")
    with open(table, "w") as fh:
        fh.write(markdown(data))
    written = [path, table]
    if not args.no_plots:
        written.append(plot(data, os.path.join(args.out, "dfl_regret.png")))
    print("".join(f"wrote {w}\n" for w in written) + f"done in {time.time() - started:.1f} s", flush=True)
    return 0 if all(r["status"] == "ok" for r in records) else 1
