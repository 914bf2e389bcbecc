"""torch DistributedDataParallel (gloo, 2 processes) through diffopt layers, for
tests/test_distributed.py: ``python _dist_torch_ddp.py`` prints ``RESULT {json}``.

A linear layer feeds a perturbed argmax, an I-MLE top-2 layer with a NumPy host solver
and a soft-rank loss; each of the 2 ranks trains on its half of the global batch for a
few SGD steps. The reference is one process computing, at each step, the mean over the
two shards of the gradient of each shard's loss drawn with that rank's seed: the mean
DDP's all-reduce forms. Why not one run on the global batch: (1) a shard's noise is
drawn for the shard's shape from its own seed, so the union of the ranks' draws is not
one draw for the global batch; (2) I-MLE's backward is not linear in its cotangent
(target θ − λ·dy), so the gradient of the mean of the shard losses differs from the mean
of the shard gradients, which is what DDP computes. The deterministic soft-rank term,
where neither applies, is also compared with the global batch directly.
"""

import datetime
import faulthandler
import gc
import json
import os
import sys
import tempfile

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import diffopt
from diffopt.imle import SumOfGammaNoiseDistribution, imle
from diffopt.sorting import soft_rank

WORLD, BATCH, DIM, STEPS, LR = 2, 8, 6, 3, 0.1
HANG_DUMP_S = 150  # under the test's 180 s limit
# gloo binds to loopback by name: without it gloo resolves the hostname, which on a
# machine whose hostname is not in /etc/hosts is a DNS lookup that can block
if os.path.exists("/sys/class/net/lo"):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


@diffopt.host_solver
def host_top2(a):
    """Top-2 mask of each row (NumPy, on the host)."""
    out = np.zeros_like(a)
    np.put_along_axis(out, np.argsort(-a, axis=-1)[..., :2], 1.0, axis=-1)
    return out


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(DIM, DIM)
        self.argmax = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=8, sigma=0.5)
        self.top2 = imle(host_top2, noise_distribution=SumOfGammaNoiseDistribution(k=2, nb_iterations=10))

    def forward(self, x, seed):
        theta = self.linear(x)
        return self.argmax(theta, rng=seed), self.top2(theta, rng=seed + 1), soft_rank(theta, temperature=0.5)


def data():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(BATCH, DIM)), dtype=torch.float32)
    weights = torch.tensor(rng.normal(size=(DIM,)), dtype=torch.float32)
    target_ranks = torch.argsort(torch.argsort(x @ torch.ones(DIM, DIM), dim=-1), dim=-1).float()
    return x, weights, target_ranks


def rank_loss(ranks, target):
    return ((ranks - target) ** 2).mean()


def loss_fn(outputs, weights, target):
    y_argmax, z_top2, ranks = outputs
    return (y_argmax @ weights).mean() + (z_top2 @ weights).mean() + rank_loss(ranks, target)


def shard(tensor, rank):
    size = BATCH // WORLD
    return tensor[rank * size:(rank + 1) * size]


def seed_of(step, rank):
    return 1000 * step + 10 * rank


def new_model():
    torch.manual_seed(0)
    return Net()


def grads(model):
    return np.concatenate([p.grad.detach().numpy().ravel() for p in model.parameters()])


def params(model):
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])


def train(rank):
    """This rank's DDP run; returns the saved gradients and parameters. The DDP module
    lives only in here, so its reducer is freed while the process group is alive."""
    model = torch.nn.parallel.DistributedDataParallel(new_model())
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x, weights, target = data()
    xs, ts = shard(x, rank), shard(target, rank)
    # the deterministic soft-rank term alone, before training
    model.zero_grad()
    rank_loss(model(xs, seed_of(0, rank))[2], ts).backward()
    saved = {"rank_only": grads(model.module)}
    for step in range(STEPS):
        opt.zero_grad()
        loss_fn(model(xs, seed_of(step, rank)), weights, ts).backward()
        saved[f"grad{step}"] = grads(model.module)
        opt.step()
    saved["params"] = params(model.module)
    return saved


def worker(rank, store_file, out_dir):
    faulthandler.dump_traceback_later(HANG_DUMP_S, exit=True)  # a hang prints its stacks
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=30))
    np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **train(rank))
    # Teardown order matters on torch 2.13 (gloo). Freeing the DDP module after
    # destroy_process_group made its reducer drop the group's last reference, and the
    # group's destructor (holding the GIL) joined a gloo thread that was waiting for the
    # GIL to free a finished all-reduce: a deadlock in about 1 run of 3 here, with or
    # without diffopt's layers (seen with py-spy). So: the module is already freed (train
    # returned), both ranks pass a barrier, then the group is destroyed, and only on
    # success (destroying while the other rank is inside a collective can hang too).
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def reference():
    """One process, the same seeds and SGD: at each step, the mean over shards of each
    shard's own gradient (one backward per shard)."""
    torch.set_num_threads(1)
    model = new_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x, weights, target = data()
    model.zero_grad()
    rank_loss(model(x, 0)[2], target).backward()  # the global batch at once
    saved = {"rank_only": grads(model)}
    for step in range(STEPS):
        per_shard = []
        for r in range(WORLD):
            opt.zero_grad()
            loss_fn(model(shard(x, r), seed_of(step, r)), weights, shard(target, r)).backward()
            per_shard.append([p.grad.clone() for p in model.parameters()])
        for p, *gs in zip(model.parameters(), *per_shard):
            p.grad = sum(gs) / WORLD
        saved[f"grad{step}"] = grads(model)
        opt.step()
    saved["params"] = params(model)
    return saved


def main():
    faulthandler.dump_traceback_later(HANG_DUMP_S + 10, exit=True)
    ref = reference()
    with tempfile.TemporaryDirectory() as out_dir:
        # spawn, not fork: the parent has run torch (thread pools, locks) before this
        mp.start_processes(worker, args=(os.path.join(out_dir, "store"), out_dir), nprocs=WORLD,
                           join=True, start_method="spawn")
        ranks = [dict(np.load(os.path.join(out_dir, f"rank{r}.npz"))) for r in range(WORLD)]
    result = {
        key: {
            "max_abs_diff": max(float(np.max(np.abs(rk[key] - ref[key]))) for rk in ranks),
            "ranks_diff": float(np.max(np.abs(ranks[0][key] - ranks[1][key]))),
            "norm": float(np.linalg.norm(ref[key])),
        }
        for key in ref
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
