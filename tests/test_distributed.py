"""diffopt where training runs on several devices or processes (issue 19).

* solver calls on a ``dask.distributed.LocalCluster`` of worker processes (numpy env);
* torch ``DistributedDataParallel`` with gloo, two processes (torch env);
* JAX ``NamedSharding`` over 4 host devices, ``jit`` and ``shard_map`` (jax env);
* ``tf.distribute.MirroredStrategy`` over 2 logical CPUs with ``model.fit`` (tensorflow env).

Each multi-process case runs as a subprocess with a wall-clock limit (a hang fails the
test instead of blocking CI); they are marked ``distributed`` (``-m "not distributed"``
leaves them out).
"""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import diffopt
from conftest import SELECTED

pytestmark = pytest.mark.distributed

HERE = os.path.dirname(os.path.abspath(__file__))
LIMIT_S = 180  # a hang fails the test after this; each case takes 10-30 s on 2 free cores


def _only(name):
    return pytest.mark.skipif(name not in SELECTED, reason=f"runs in the {name} env only")


def _within_limit(fn, *args):
    """``fn(*args)`` in a thread, failing the test after LIMIT_S seconds."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result(timeout=LIMIT_S)


def run_script(name, *args, env=None):
    """Run ``tests/<name>`` in a fresh interpreter (own process group, killed after
    LIMIT_S); it prints one JSON line starting with ``RESULT``, returned as a dict."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(diffopt.__file__)))
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, HERE]), OMP_NUM_THREADS="1",
                    TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, name), *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{name} did not finish in {LIMIT_S} s (hang?); output:\n{out[-4000:]}")
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{out[-4000:]}"
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, f"{name} printed no RESULT line:\n{out[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


# ------------------------------------------------------------------ dask cluster (numpy env)

def _tagged_batch(n=16, d=5, seed=0):
    rows = np.random.default_rng(seed).normal(size=(n, d))
    return np.concatenate([rows, np.arange(n, dtype=float)[:, None]], axis=1)


@pytest.fixture(scope="module")
def dask_client():
    if "numpy" not in SELECTED:
        pytest.skip("runs in the numpy env only")
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("dask.distributed")
    # one retry after a worker dies, so a deterministic killer fails fast (dask's default: 3)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster:
            with distributed.Client(cluster) as client:
                client.upload_file(os.path.join(HERE, "_dist_solvers.py"))
                yield client


def test_dask_cluster_blocks_go_to_worker_processes_in_order(dask_client):
    import _dist_solvers

    solver = diffopt.host_solver(_dist_solvers.tagged_argmax, vectorized=False,
                                 executor=dask_client.get_executor())
    batch = _tagged_batch()
    out = _within_limit(solver, batch)
    np.testing.assert_array_equal(out[:, :-2], np.eye(5)[np.argmax(batch[:, :-1], axis=1)])
    np.testing.assert_array_equal(out[:, -2], np.arange(16))  # every instance, in order
    pids = set(out[:, -1].astype(int).tolist())
    workers = set(dask_client.run(os.getpid).values())
    assert pids <= workers and len(pids) == 2, (pids, workers)  # both worker processes, not this one
    assert os.getpid() not in pids


def test_dask_worker_killed_once_is_retried_with_every_instance_in_order(dask_client, tmp_path):
    import _dist_solvers

    marker = str(tmp_path / "killed")
    solver = diffopt.host_solver(_dist_solvers.kill_worker_on_tag, vectorized=False,
                                 executor=dask_client.get_executor())
    batch = _tagged_batch(seed=1)
    out = _within_limit(solver, batch, 9.0, marker)
    assert os.path.exists(marker)  # the worker running instance 9 was killed once
    np.testing.assert_array_equal(out[:, -2], np.arange(16))
    np.testing.assert_array_equal(out[:, :-2], np.eye(5)[np.argmax(batch[:, :-1], axis=1)])


def test_dask_worker_killed_every_time_is_a_clear_error(dask_client):
    import _dist_solvers

    solver = diffopt.host_solver(_dist_solvers.kill_worker_on_tag, vectorized=False,
                                 executor=dask_client.get_executor())
    batch = _tagged_batch(seed=2)
    # 16 instances in 4 blocks (2 per worker): instance 9 is in the third block, 8..11
    with pytest.raises(RuntimeError, match=r"kill_worker_on_tag: the executor returned no result "
                                           r"for instances 8\.\.11 \(KilledWorker"):
        _within_limit(solver, batch, 9.0, "")
    dask_client.wait_for_workers(2, timeout=LIMIT_S)
    good = diffopt.host_solver(_dist_solvers.tagged_argmax, vectorized=False,
                               executor=dask_client.get_executor())
    np.testing.assert_array_equal(_within_limit(good, batch)[:, -2], np.arange(16))  # cluster usable



# ------------------------------------------------------------------ torch DDP (torch env)

@_only("torch")
def test_torch_ddp_two_processes_match_the_single_process_gradients():
    pytest.importorskip("torch.distributed")
    result = run_script("_dist_torch_ddp.py")
    assert set(result) == {"rank_only", "grad0", "grad1", "grad2", "params"}
    for key, r in result.items():
        assert r["norm"] > 0.1, (key, r)  # a real gradient / parameters, not zeros
        assert r["ranks_diff"] == 0.0, (key, r)  # DDP keeps the replicas identical
        assert r["max_abs_diff"] <= 1e-6 * max(1.0, r["norm"]), (key, r)  # float32 all-reduce order


# ------------------------------------------------------------------ tf.distribute (tensorflow env)

@_only("tensorflow")
def test_tf_mirrored_strategy_fit_runs_host_solvers_in_each_replica():
    result = run_script("_dist_tf_mirrored.py")
    assert result["replicas"] == 2
    assert len(result["variable_devices"]) == 2  # mirrored on CPU:0 and CPU:1
    # each replica solves its half of the batch of 16: 8 instances (I-MLE), 16 samples x 8 (perturbed)
    assert result["solver_batch_sizes"] == {"argmax": [128], "top2": [8]}
    steps = 8 * 4  # epochs x batches
    assert result["solver_calls"]["argmax"] >= 2 * steps  # both replicas, every step
    assert result["solver_calls"]["top2"] >= 2 * 2 * steps  # forward and backward solves
    losses = result["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses


# ------------------------------------------------------------------ JAX sharding (jax env)

@_only("jax")
def test_jax_batch_sharded_over_four_devices_gives_the_unsharded_numbers():
    result = run_script("_dist_jax_sharding.py")
    assert result.pop("devices") == 4 and result.pop("input_sharded")
    pure = ("jit/soft_sort", "jit/perturbed_argmax", "jit/perturbed_chunked", "jit/fenchel_young",
            "explicit/soft_sort", "explicit/perturbed_argmax")
    assert set(result) == {*pure, "jit/imle_host_solver",
                           "shard_map/soft_sort", "shard_map/imle_host_solver", "shard_map/perturbed_host_solver"}
    for name, r in result.items():
        assert r["max_diff"] <= 1e-6, (name, r)  # values and gradients
    # pure-JAX layers under jit (automatic and explicit mesh axes): they work instance by instance
    # (perturbed hands its solver the samples instance-major), so the output keeps P('b') and the
    # compiled program has no all-gather of the batch
    for name in pure:
        r = result[name]
        assert r["value_sharding_kept"] and r["grad_sharding_kept"] and not r["all_gather"], (name, r)
    # under automatic sharding JAX runs a callback once, on the whole batch (its documented rule)
    assert result["jit/imle_host_solver"]["solver_rows"] == [8]
    # under shard_map every device solves its own 2 rows (x 4 samples): no gather, sharding kept
    assert result["shard_map/imle_host_solver"]["solver_rows"] == [2]
    assert result["shard_map/perturbed_host_solver"]["solver_rows"] == [4 * 2]
    for name in ("shard_map/soft_sort", "shard_map/imle_host_solver", "shard_map/perturbed_host_solver"):
        r = result[name]
        assert r["value_sharding_kept"] and r["grad_sharding_kept"] and not r["all_gather"], (name, r)


def test_dask_benchmark_script_runs_on_the_cluster(dask_client):
    sys.path.insert(0, os.path.dirname(HERE))  # the checkout's benchmarks/ (not installed)
    try:
        from benchmarks.dask_cluster import measure
    except ImportError:
        pytest.skip("benchmarks/ is not next to tests/")
    finally:
        sys.path.pop(0)
    (row,) = _within_limit(measure, 2, [6], 1, 12, dask_client)  # it checks the paths equal sequential
    assert row["instances"] == 6 and row["sequential_s"] > 0 and row["dask_s"] > 0
    assert row["speedup"] == pytest.approx(row["sequential_s"] / row["dask_s"])
