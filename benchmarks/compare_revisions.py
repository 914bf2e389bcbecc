"""Side-by-side timing of two revisions of diffopt: ``python -m benchmarks.compare_revisions``.

``--old REV`` is checked out into a temporary detached git worktree (removed
afterwards); ``--new`` is ``HEAD`` (the working tree itself) or another
revision, checked out the same way. The same public calls are then timed on
both, each revision in its own subprocess whose ``PYTHONPATH`` (and first
``sys.path`` entry) is its tree, alternating old, new, old, new ... for
``--rounds`` rounds. Inside a child every call is timed with
:func:`benchmarks._harness.time_case` (warm-up, then rotated repetitions); the
figure kept is the minimum over all repetitions of all rounds, and the table
reports ``new / old``. The timing code (this file and the harness) always
comes from the tree the command is run in, so both revisions are measured by
the same code.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FRAMEWORKS = ("torch", "jax", "numpy")
B, D, N = 16, 50, 200        # perturbations: batch, dimension, samples
SORT_B, SORT_N = 16, 64      # soft_sort / soft_rank
GRID, SP_B = 8, 16           # shortest path: grid side, instances per call


def _parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare_revisions",
                                description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="the older revision (any git revision name)")
    p.add_argument("--new", default="HEAD", help="the newer revision; HEAD means the working tree as it is")
    p.add_argument("--rounds", type=int, default=3, help="old/new subprocess pairs, alternated (min kept)")
    p.add_argument("--budget", type=float, default=1.0, help="seconds of repetitions per call per child")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                   help="comma-separated subset of " + ",".join(FRAMEWORKS))
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv=None):
    """Parse and check the command line (a clear error for a bad value, before any work)."""
    p = _parser()
    args = p.parse_args(argv)
    frameworks = tuple(f for f in args.frameworks.split(",") if f)
    bad = [f for f in frameworks if f not in FRAMEWORKS]
    if bad or not frameworks:
        p.error(f"--frameworks: unknown {bad or 'empty list'}; choose from {', '.join(FRAMEWORKS)}")
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.budget <= 0:
        p.error(f"--budget must be > 0, got {args.budget}")
    args.frameworks = frameworks
    return args


# ----------------------------------------------------------------- the calls


def _torch_calls():
    import concurrent.futures

    import numpy as np
    import torch

    import diffopt
    from diffopt import imle as imle_mod

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    theta = torch.tensor(rng.standard_normal((B, D)), dtype=torch.float32, requires_grad=True)
    y = torch.nn.functional.one_hot(torch.tensor(rng.integers(0, D, B)), D).float()
    sx = torch.tensor(rng.standard_normal((SORT_B, SORT_N)), dtype=torch.float32, requires_grad=True)
    gen = torch.Generator().manual_seed(0)

    def onehot(x):
        return torch.nn.functional.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)

    def ranks(x):
        return x.argsort(-1).argsort(-1).to(x.dtype)

    def backward(f, x):
        def step():
            x.grad = None
            f(x).sum().backward()
        return step

    pert = diffopt.perturbed(onehot, num_samples=N, sigma=0.5)
    prank = diffopt.perturbed(ranks, num_samples=N, sigma=0.5)
    fy = diffopt.FenchelYoungLoss(onehot, num_samples=N, sigma=0.5)
    topk = imle_mod.imle(lambda x: diffopt.top_k_mask(x, 5), nb_samples=10)
    atopk = imle_mod.aimle(lambda x: diffopt.top_k_mask(x, 5), nb_samples=10)
    spo = diffopt.spo_plus_loss(diffopt.argmax_one_hot, minimize=False)
    c = torch.tensor(rng.standard_normal((B, D)), dtype=torch.float32)
    w = diffopt.argmax_one_hot(c)
    pool = concurrent.futures.ThreadPoolExecutor(2)
    host = diffopt.host_solver(diffopt.grid_shortest_path, vectorized=False, executor=pool)
    sp = imle_mod.imle(host, nb_samples=4)
    sp_theta = torch.tensor(rng.standard_normal((SP_B, GRID, GRID)) + 3.0, dtype=torch.float32,
                            requires_grad=True)
    return {
        "perturbed argmax": backward(lambda x: pert(x, rng=gen), theta),
        "perturbed ranking": backward(lambda x: prank(x, rng=gen), theta),
        "FenchelYoungLoss": backward(lambda x: fy(x, y, rng=gen), theta),
        "imle top-k": backward(lambda x: topk(x, rng=gen), theta),
        "aimle top-k": backward(lambda x: atopk(x, rng=gen), theta),
        "soft_sort": backward(lambda x: diffopt.sorting.soft_sort(x) * x, sx),
        "soft_rank": backward(lambda x: diffopt.sorting.soft_rank(x) * x, sx),
        "spo_plus_loss": backward(lambda x: spo(x, c, w), theta),
        "imle shortest path, host, 2 threads": backward(lambda x: sp(x, rng=gen) * x.repeat_interleave(4, 0), sp_theta),
    }


def _jax_calls():
    import jax
    import jax.numpy as jnp
    import numpy as np

    import diffopt
    from diffopt import imle as imle_mod

    jax.config.update("jax_enable_x64", False)
    rng = np.random.default_rng(0)
    theta = jnp.asarray(rng.standard_normal((B, D)), jnp.float32)
    y = jax.nn.one_hot(jnp.asarray(rng.integers(0, D, B)), D)
    sx = jnp.asarray(rng.standard_normal((SORT_B, SORT_N)), jnp.float32)
    key = jax.random.PRNGKey(0)

    def onehot(x):
        return jax.nn.one_hot(x.argmax(-1), x.shape[-1], dtype=x.dtype)

    def ranks(x):
        return x.argsort(-1).argsort(-1).astype(x.dtype)

    def grad(f, x):
        g = jax.jit(jax.grad(lambda v: f(v).sum()))
        g(x).block_until_ready()  # compilation is set-up
        return lambda: g(x).block_until_ready()

    pert = diffopt.perturbed(onehot, num_samples=N, sigma=0.5)
    prank = diffopt.perturbed(ranks, num_samples=N, sigma=0.5)
    fy = diffopt.FenchelYoungLoss(onehot, num_samples=N, sigma=0.5)
    topk = imle_mod.imle(lambda x: diffopt.top_k_mask(x, 5), nb_samples=10)
    atopk = imle_mod.aimle(lambda x: diffopt.top_k_mask(x, 5), nb_samples=10)
    spo = diffopt.spo_plus_loss(diffopt.argmax_one_hot, minimize=False)
    c = jnp.asarray(rng.standard_normal((B, D)), jnp.float32)
    w = diffopt.argmax_one_hot(c)
    return {
        "perturbed argmax": grad(lambda x: pert(x, rng=key), theta),
        "perturbed ranking": grad(lambda x: prank(x, rng=key), theta),
        "FenchelYoungLoss": grad(lambda x: fy(x, y, rng=key), theta),
        "imle top-k": grad(lambda x: topk(x, rng=key), theta),
        "aimle top-k": grad(lambda x: atopk(x, rng=key), theta),
        "soft_sort": grad(lambda x: diffopt.sorting.soft_sort(x) * x, sx),
        "soft_rank": grad(lambda x: diffopt.sorting.soft_rank(x) * x, sx),
        "spo_plus_loss": grad(lambda x: spo(x, c, w), theta),
    }


def _numpy_calls():
    """NumPy has no autodiff: the forward passes."""
    import concurrent.futures

    import numpy as np

    import diffopt

    rng = np.random.default_rng(0)
    theta = rng.standard_normal((B, D)).astype(np.float32)
    y = np.eye(D, dtype=np.float32)[rng.integers(0, D, B)]
    sx = rng.standard_normal((SORT_B, SORT_N)).astype(np.float32)

    def onehot(x):
        return np.eye(x.shape[-1], dtype=x.dtype)[x.argmax(-1)]

    def ranks(x):
        return x.argsort(-1).argsort(-1).astype(x.dtype)

    pert = diffopt.perturbed(onehot, num_samples=N, sigma=0.5)
    prank = diffopt.perturbed(ranks, num_samples=N, sigma=0.5)
    fy = diffopt.FenchelYoungLoss(onehot, num_samples=N, sigma=0.5)
    spo = diffopt.spo_plus_loss(diffopt.argmax_one_hot, minimize=False)
    c = rng.standard_normal((B, D)).astype(np.float32)
    w = diffopt.argmax_one_hot(c)
    pool = concurrent.futures.ThreadPoolExecutor(2)
    host = diffopt.host_solver(diffopt.grid_shortest_path, vectorized=False, executor=pool)
    sp_theta = (rng.standard_normal((SP_B * 4, GRID, GRID)) + 3.0).astype(np.float32)
    return {
        "perturbed argmax (forward)": lambda: pert(theta, rng=0),
        "perturbed ranking (forward)": lambda: prank(theta, rng=0),
        "FenchelYoungLoss (forward)": lambda: fy(theta, y, rng=0),
        "soft_sort (forward)": lambda: diffopt.sorting.soft_sort(sx),
        "soft_rank (forward)": lambda: diffopt.sorting.soft_rank(sx),
        "spo_plus_loss (forward)": lambda: spo(theta, c, w),
        "host shortest path, 2 threads (forward)": lambda: host(sp_theta),
    }


MAKERS = {"torch": _torch_calls, "jax": _jax_calls, "numpy": _numpy_calls}


def child(tree, frameworks, budget):
    """Time every call of ``frameworks`` with the diffopt of ``tree``; JSON ``{label: [seconds]}``."""
    sys.path.insert(0, tree)
    import diffopt

    from benchmarks._harness import Case, Contender, time_case

    where = os.path.dirname(os.path.dirname(os.path.abspath(diffopt.__file__)))
    if os.path.realpath(where) != os.path.realpath(tree):
        raise RuntimeError(f"diffopt imported from {where}, not from {tree}")
    out = {}
    for fw in frameworks:
        try:
            calls = MAKERS[fw]()
        except ImportError as exc:
            print(f"{fw}: skipped ({exc})", file=sys.stderr)
            continue
        contenders = [Contender(f"{name} ({fw})", "diffopt", (lambda s=step: s), fw) for name, step in calls.items()]
        rows = time_case(Case("compare", fw, {}, contenders), warmup=2, min_reps=3, max_reps=50,
                         budget_s=budget * len(contenders), log=lambda *a: None)
        for label, row in rows.items():
            out[label] = row.get("raw_s") or row.get("reason") or "failed"
    return out


# ----------------------------------------------------------------- the parent


def _checkout(rev, tmp):
    path = os.path.join(tmp, rev.replace("/", "_"))
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", path, rev], check=True,
                   stdout=subprocess.DEVNULL)
    return path


def _run_child(tree, args):
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    env.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    cmd = [sys.executable, "-m", "benchmarks.compare_revisions", "--old", "unused", "--child", tree,
           "--frameworks", ",".join(args.frameworks), "--budget", str(args.budget)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"child for {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(old, new, old_name, new_name):
    """Markdown rows ``call | old ms | new ms | new/old`` from the min over every repetition."""
    lines = [f"| call | {old_name} (ms) | {new_name} (ms) | new/old |", "|---|---:|---:|---:|"]
    for label in old.keys() | new.keys():
        a, b = old.get(label), new.get(label)
        if isinstance(a, list) and isinstance(b, list) and a and b:
            ta, tb = min(a), min(b)
            lines.append(f"| {label} | {ta * 1e3:.2f} | {tb * 1e3:.2f} | **{tb / ta:.2f}** |")
        else:
            lines.append(f"| {label} | {a if not isinstance(a, list) else 'ok'} | "
                         f"{b if not isinstance(b, list) else 'ok'} | n/a |")
    head, rows = lines[:2], sorted(lines[2:], key=lambda s: (s.split(" |")[0].rsplit("(", 1)[-1], s))
    return "\n".join(head + rows)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.frameworks, args.budget)))
        return 0
    tmp = tempfile.mkdtemp(prefix="diffopt-compare-")
    trees = []
    try:
        old_tree = _checkout(args.old, tmp)
        trees.append(old_tree)
        if args.new == "HEAD":
            new_tree = ROOT
        else:
            new_tree = _checkout(args.new, tmp)
            trees.append(new_tree)
        merged = {"old": {}, "new": {}}
        for r in range(args.rounds):
            order = (("old", old_tree), ("new", new_tree)) if r % 2 == 0 else (("new", new_tree), ("old", old_tree))
            for side, tree in order:
                print(f"round {r + 1}/{args.rounds}: {side}", file=sys.stderr, flush=True)
                for label, times in _run_child(tree, args).items():
                    prev = merged[side].get(label)
                    merged[side][label] = (prev or []) + times if isinstance(times, list) else times
        text = table(merged["old"], merged["new"], args.old, args.new)
        print(text)
        if args.out:
            with open(args.out, "w") as fh:
                fh.write(text + "\n")
        return 0
    finally:
        for tree in trees:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
