"""diffopt is a good citizen: autoray behaves the same before and after diffopt is used.

diffopt's own translations live in a private op table (:func:`diffopt._ops.do`);
nothing is registered with autoray. Each check runs in a fresh subprocess, so
the state before ``import diffopt`` is really untouched.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from diffopt._ops import do

# Standard autoray calls whose behaviour diffopt once changed (``where`` with a NumPy
# condition, torch's ``clip``/``prod`` keywords) or whose translation diffopt replaces
# in its own table. Each is recorded as its result or its error, before and after.
_PROBE = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    NAME = sys.argv[1]
    if NAME == "torch":
        import torch
        def arr(a): return torch.as_tensor(np.asarray(a, dtype=np.float64))
        DT = torch.float64
    elif NAME == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        def arr(a): return jnp.asarray(np.asarray(a, dtype=np.float64))
        DT = jnp.float64
    elif NAME == "tensorflow":
        import tensorflow as tf
        def arr(a): return tf.constant(np.asarray(a, dtype=np.float64))
        DT = tf.float64
    elif NAME == "autograd":
        import autograd.numpy as anp
        def arr(a): return anp.array(np.asarray(a, dtype=np.float64))
        DT = np.float64
    else:
        def arr(a): return np.asarray(a, dtype=np.float64)
        DT = np.float64
    import autoray as ar

    A = [[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]]
    COND = np.array([[True, False, True], [False, True, False]])
    IDX = np.array([[2, 0, 1], [1, 1, 0]])
    CALLS = {
        "where_numpy_cond": lambda: ar.do("where", COND, arr(A), arr(A) * 0),
        "where_cond_first": lambda: ar.do("where", arr(A) > 0, arr(A), arr(A) * 0),
        "clip_kw": lambda: ar.do("clip", arr(A), min=0.0, max=1.0),
        "clip_pos": lambda: ar.do("clip", arr(A), 0.0, 1.0),
        "prod_axis_dtype": lambda: ar.do("prod", arr(A), axis=0, dtype=DT),
        "prod": lambda: ar.do("prod", arr(A)),
        "sum": lambda: ar.do("sum", arr(A)),
        "sum_axis_keepdims": lambda: ar.do("sum", arr(A), axis=1, keepdims=True),
        "max_axis": lambda: ar.do("max", arr(A), axis=0),
        "min": lambda: ar.do("min", arr(A)),
        "mean_axis": lambda: ar.do("mean", arr(A), axis=-1),
        "stack": lambda: ar.do("stack", [arr(A), arr(A)], axis=1),
        "concatenate": lambda: ar.do("concatenate", [arr(A), arr(A)], axis=0),
        "expand_dims": lambda: ar.do("expand_dims", arr(A), 1),
        "take_along_axis": lambda: ar.do("take_along_axis", arr(A), ar.do("asarray", IDX, like=arr(A)), axis=1),
    }

    def outcome(fn):
        try:
            out = fn()
            return ["ok", type(out).__name__, np.asarray(ar.to_numpy(out), dtype=np.float64).tolist()]
        except Exception as err:
            return ["error", type(err).__name__, str(err)[:300]]

    def snapshot():
        calls = {k: outcome(f) for k, f in CALLS.items()}
        funcs = {f"{b}.{n}": id(v) for (b, n), v in ar.autoray._FUNCS.items() if n in CALLS or n in (
            "where", "clip", "prod", "sum", "max", "min", "mean", "stack", "concatenate", "expand_dims",
            "take_along_axis")}
        disp = {k: id(v) for k, v in ar.autoray._DISPATCHERS.items()}
        return {"calls": calls, "funcs": funcs, "dispatchers": disp, "default": id(ar.autoray.default_dispatcher)}

    before = snapshot()
    import diffopt
    after_import = snapshot()
    from diffopt import sorting
    x = arr([[0.3, -1.2, 2.0, 0.7, 1.1], [1.0, 0.0, -0.5, 2.5, -2.0]])
    y = arr([[0.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0]])
    one = lambda v: diffopt.argmax_one_hot(v)
    used = [
        lambda: sorting.soft_sort(x, temperature=0.5),
        lambda: sorting.soft_rank(x, temperature=0.5),
        lambda: sorting.soft_topk(x, 2, temperature=0.5),
        lambda: sorting.soft_permutation(x, temperature=0.5),
        lambda: sorting.diff_sort(sorting.bitonic_matrices(4), x[0, :4]),
        lambda: sorting.diff_argsort(sorting.bitonic_matrices(4), x[0, :4]),
        lambda: diffopt.perturbed(one, num_samples=4, sigma=0.5)(x, rng=0),
        lambda: diffopt.perturbed_max(one, num_samples=4, sigma=0.5)(x, rng=0),
        lambda: diffopt.FenchelYoungLoss(one, num_samples=4, sigma=0.5)(x, y, rng=0),
        lambda: diffopt.make_perturbed_fun(lambda v: ar.do("sum", v * v), num_samples=4)(0, x),
        lambda: diffopt.imle.imle(one, nb_samples=2)(x, rng=0),
        lambda: diffopt.imle.aimle(one, nb_samples=2)(x, rng=0),
        lambda: diffopt.imle.ste(one)(x, rng=0),
        lambda: diffopt.top_k_mask(x, 2),
        lambda: diffopt.ranking(x),
        lambda: diffopt.shortest_path(arr([[1.0, 2.0], [3.0, 1.0]])),
    ]
    failed = []
    for i, f in enumerate(used):
        try:
            f()
        except Exception as err:  # reported, so that a broken op cannot hide in this test
            failed.append(f"op {i}: {type(err).__name__}: {err}")
    after_use = snapshot()
    print(json.dumps({"before": before, "after_import": after_import, "after_use": after_use, "failed": failed}))
    """
)


def _run(script, *args, timeout=600):
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_autoray_behaves_the_same_before_and_after_diffopt(backend):
    if backend.name == "cupy":
        pytest.skip("the probe builds its arrays on the host")
    got = _run(_PROBE, backend.name)
    assert got["failed"] == []
    before = got["before"]
    assert sum(v[0] == "ok" for v in before["calls"].values()) >= 10  # the probe does exercise autoray
    for stage in ("after_import", "after_use"):
        now = got[stage]
        assert now["calls"] == before["calls"], stage
        # autoray's function cache: what it held is still the same object ...
        changed = {k for k, v in before["funcs"].items() if now["funcs"].get(k) != v}
        assert not changed, (stage, changed)
        # ... and no dispatcher was registered or replaced (autoray adds its default one
        # for every name it is asked about; that is its own doing, not diffopt's).
        for name, ident in now["dispatchers"].items():
            assert ident == before["dispatchers"].get(name, before["default"]), (stage, name)


_COMPILE = textwrap.dedent(
    """
    import sys
    import torch

    import diffopt
    from diffopt import backends

    def fresh():
        # diffopt as before its first call: no shim loaded (torch stays imported, being slow to)
        backends._SHIMS.clear()
        shims = {"diffopt.backends.torch._sorting", *backends.SHIMS.values()}
        for name in [m for m in sys.modules if m in shims]:
            del sys.modules[name]
        torch._dynamo.reset()
        return diffopt

    x0 = torch.tensor([[0.3, -1.2, 2.0, 0.7, 1.1], [1.0, 0.0, -0.5, 2.5, -2.0]], dtype=torch.float64)
    w = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
    OPS = {
        "soft_sort": lambda d: lambda v: d.sorting.soft_sort(v, temperature=0.5),
        "soft_rank": lambda d: lambda v: d.sorting.soft_rank(v, temperature=0.5),
        "soft_topk": lambda d: lambda v: d.sorting.soft_topk(v, 2, temperature=0.5),
        "perturbed": lambda d: lambda v: d.perturbed(d.argmax_one_hot, num_samples=8, sigma=0.5)(v, rng=0),
        "FenchelYoungLoss": lambda d: lambda v: d.FenchelYoungLoss(d.argmax_one_hot, num_samples=8, sigma=0.5)(
            v, torch.eye(5, dtype=v.dtype)[:2], rng=0),
        "imle": lambda d: lambda v: d.imle.imle(d.argmax_one_hot, nb_samples=2)(v, rng=0),
    }
    import time
    for name, make in OPS.items():
        t0 = time.perf_counter()
        op = make(fresh())
        x = x0.clone().requires_grad_(True)
        # the first call's path (shims loaded under dynamo) is in the tracing: inductor, the default
        # backend, for one op (its C++ build takes ~40 s per op on two cores), aot_eager for the rest
        y = torch.compile(op, backend="inductor" if name == "soft_sort" else "aot_eager")(x)
        ((y * w[: y.shape[-1]]).sum() if y.ndim else y.sum()).backward()
        eager = make(fresh())(x0)
        torch.testing.assert_close(y.detach(), eager, msg=name)
        assert x.grad is not None and bool(torch.isfinite(x.grad).all()), name
        print("ok", name, round(time.perf_counter() - t0, 1), flush=True)
    """
)


def test_torch_compile_of_each_public_op_as_the_first_diffopt_call():
    pytest.importorskip("torch")
    import os

    wanted = os.environ.get("DIFFOPT_TEST_BACKENDS", "torch")
    if "torch" not in wanted.split(","):
        pytest.skip("torch not among DIFFOPT_TEST_BACKENDS")
    proc = subprocess.run([sys.executable, "-c", _COMPILE], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("ok ") == 6


def test_do_prefers_diffopt_table_and_falls_back_to_autoray(backend):
    x = backend.asarray([[1.0, -2.0], [3.0, 0.5]])
    np.testing.assert_allclose(backend.to_numpy(do("sum", x, axis=0)), [4.0, -1.5])
    np.testing.assert_allclose(backend.to_numpy(do("clip", x, 0.0, 1.0)), [[1.0, 0.0], [1.0, 0.5]])
    np.testing.assert_allclose(backend.to_numpy(do("stack", [x, x], axis=0))[1], [[1.0, -2.0], [3.0, 0.5]])
    out = do("where", x > 0.6, x, 0.0 * x)
    assert type(out) is type(x * 1.0)
    np.testing.assert_allclose(backend.to_numpy(out), [[1.0, 0.0], [3.0, 0.0]])
