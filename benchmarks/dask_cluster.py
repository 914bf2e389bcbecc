"""Solver calls on a dask cluster: speed-up over sequential (issue 19).

``python -m benchmarks.dask_cluster [--workers 2] [--instances 256 1024] [--reps 5] [--grid 12 48]``
times ``host_solver(grid_shortest_path, vectorized=False)`` on batches of random square
cost maps (``--grid`` sides, default 12; Dijkstra, 8 neighbours), once sequentially in this process and once with
``executor=client.get_executor()`` on a ``dask.distributed.LocalCluster`` of worker
processes (one thread each), alternately, after a warm-up; it prints the medians and
writes them to ``benchmarks/results/dask_cluster.json``. Times depend on the machine's
load: the JSON records the load average before and after.
"""

import argparse
import json
import os
import statistics
import time

import numpy as np

import diffopt
from diffopt.solvers import grid_shortest_path


def _time(fn, arg):
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def measure(workers, sizes, reps, grid=12, client=None):
    """Rows of median times for each batch size; on ``client`` if given, else on a new
    ``LocalCluster`` of ``workers`` processes (closed after)."""
    if client is None:
        from dask.distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as new_client:
            return measure(workers, sizes, reps, grid, new_client)
    sequential = diffopt.host_solver(grid_shortest_path, vectorized=False)
    on_cluster = diffopt.host_solver(grid_shortest_path, vectorized=False, executor=client.get_executor())
    rows = []
    for n in sizes:
        costs = np.random.default_rng(n).uniform(0.1, 1.0, size=(n, grid, grid))
        np.testing.assert_array_equal(on_cluster(costs), sequential(costs))  # warm-up and check
        seq, dask = [], []
        for _ in range(reps):
            seq.append(_time(sequential, costs))
            dask.append(_time(on_cluster, costs))
        rows.append({"instances": n, "grid": grid, "workers": workers,
                     "sequential_s": statistics.median(seq), "dask_s": statistics.median(dask),
                     "speedup": statistics.median(seq) / statistics.median(dask),
                     "sequential_all_s": seq, "dask_all_s": dask})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--instances", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--grid", type=int, nargs="+", default=[12], help="grid sizes (one row per grid and batch size)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "dask_cluster.json"))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows = [row for grid in args.grid for row in measure(args.workers, args.instances, args.reps, grid)]
    record = {"cpu_count": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
              "rows": rows}
    for r in rows:
        print(f"{r['instances']:5d} x {r['grid']}x{r['grid']} shortest paths: sequential {r['sequential_s'] * 1e3:7.1f} ms,"
              f" dask {r['workers']} workers {r['dask_s'] * 1e3:7.1f} ms, speed-up {r['speedup']:.2f}x")
    print(f"load average before {load_before}, after {record['load_after']} on {os.cpu_count()} CPUs")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
