"""Sorting suite: forward+backward of a soft sort, B = 256 rows, float32.

Contenders (the loss is ``sum(sorted * w)`` for a fixed random ``w``):

* diffopt ``soft_sort`` in torch (eager; with the numba kernel when numba is
  installed, and with ``DIFFOPT_NUMBA=0``, the generic loops) and in JAX
  (``jit``, compiled ahead);
* ``differentiable_sorting``: ``diff_sort`` with the bitonic matrices and
  ``diff_sort_indexed`` (torch tensors; the peer sorts along the first axis,
  so it gets the ``[n, B]`` transpose);
* ``diffsort`` bitonic ``DiffSortNet`` (it also builds the ``B x n x n``
  relaxed permutation matrix at every layer);
* ``torchsort.soft_sort`` (isotonic-regression projection, C++ extension), and diffopt's
  drop-in for it (``diffopt.sorting.torchsort``: the same projection, PAV on the host with
  the numba kernel when numba is installed).

Sizes whose peer would need more than 8 GB are skipped and the row says so.
"""

import math
import os

from benchmarks._common import aot, jax_modules, need, need_attr, rand, too_big
from benchmarks._harness import Case, Comparison, Contender

B = 256
TEMPERATURE = 1.0
FULL_NS = (8, 64, 512, 4096)
QUICK_NS = (8, 64)

D_TORCH = "diffopt soft_sort (torch)"
D_TORCH_GENERIC = "diffopt soft_sort (torch, DIFFOPT_NUMBA=0)"
D_JAX = "diffopt soft_sort (jax, jit)"
D_PROJECTION = "diffopt torchsort.soft_sort drop-in (torch, projection)"
P_MATRIX = "differentiable_sorting diff_sort (matrix)"
P_INDEXED = "differentiable_sorting diff_sort_indexed"
P_DIFFSORT = "diffsort DiffSortNet bitonic"
P_TORCHSORT = "torchsort soft_sort"


def _layers(n):
    k = int(math.log2(n))
    return k * (k + 1) // 2


def _matrix_bytes(n):
    # 4 dense (n/2 x n) float32 matrices per layer, plus activations
    return _layers(n) * 4 * (n // 2) * n * 4 + 8 * _layers(n) * n * B * 4


def _diffsort_bytes(n):
    # per layer the graph keeps about 7 B x n x n float32 tensors (X, aX, bX, w_min, w_max, products)
    return _layers(n) * 7 * B * n * n * 4


def _data(n):
    return rand((B, n), seed=n), rand((B, n), seed=n + 1)


def _torch_inputs(n, transpose=False):
    torch = need("torch")
    x, w = _data(n)
    if transpose:
        x, w = x.T.copy(), w.T.copy()
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w)
    return torch, xt, wt


def _torch_step(torch, x, w, fn):
    def step():
        x.grad = None
        loss = (fn(x) * w).sum()
        loss.backward()
        return x.grad

    return step


def make_diffopt_torch(n, accelerator=True):
    """diffopt's torch soft_sort; with ``accelerator=False`` the generic loops (numba kernel off)."""

    def make():
        soft_sort = need_attr("diffopt.sorting", "soft_sort", "diffopt.sorting")
        torch, x, w = _torch_inputs(n)

        def sort(v):
            if accelerator:
                return soft_sort(v, temperature=TEMPERATURE)
            before = os.environ.get("DIFFOPT_NUMBA")
            os.environ["DIFFOPT_NUMBA"] = "0"
            try:
                return soft_sort(v, temperature=TEMPERATURE)
            finally:
                if before is None:
                    del os.environ["DIFFOPT_NUMBA"]
                else:
                    os.environ["DIFFOPT_NUMBA"] = before

        # set-up, as JAX's ahead-of-time compilation: the numba kernel compiles (or loads from
        # numba's disk cache) for this dtype on a first call, outside the timed and measured steps
        warm = torch.zeros((2, 3), dtype=x.dtype, requires_grad=True)
        sort(warm).sum().backward()
        return _torch_step(torch, x, w, sort)

    return make


def make_diffopt_jax(n):
    def make():
        soft_sort = need_attr("diffopt.sorting", "soft_sort", "diffopt.sorting")
        jax, jnp = jax_modules()
        x, w = (jnp.asarray(a) for a in _data(n))

        def loss(v):
            return jnp.sum(soft_sort(v, temperature=TEMPERATURE) * w)

        fn = aot(jax.jit(jax.value_and_grad(loss)), x)

        def step():
            return jax.block_until_ready(fn(x))

        return step

    return make


def make_projection_torch(n):
    """diffopt's projection soft sort through its torchsort drop-in (same call as the peer)."""

    def make():
        torchsort = need_attr("diffopt.sorting.torchsort", "soft_sort", "diffopt.sorting.torchsort")
        torch, x, w = _torch_inputs(n)
        warm = torch.zeros((2, 3), dtype=x.dtype, requires_grad=True)  # compiles the numba kernel, untimed
        torchsort(warm, regularization_strength=TEMPERATURE).sum().backward()
        return _torch_step(torch, x, w, lambda v: torchsort(v, regularization_strength=TEMPERATURE))

    return make


def make_matrix(n):
    def make():
        ds_torch = need("differentiable_sorting.torch", "differentiable_sorting")
        ds = need("differentiable_sorting")
        torch, x, w = _torch_inputs(n, transpose=True)
        matrices = ds_torch.bitonic_matrices(n)
        return _torch_step(torch, x, w, lambda v: ds.diff_sort(matrices, v, softmax=ds_torch.softmax))

    return make


def make_indexed(n):
    def make():
        ds_torch = need("differentiable_sorting.torch", "differentiable_sorting")
        ds = need("differentiable_sorting")
        torch, x, w = _torch_inputs(n, transpose=True)
        indices = [(torch.as_tensor(a, dtype=torch.long), torch.as_tensor(b, dtype=torch.long))
                   for a, b in ds.bitonic_indices(n)]
        return _torch_step(torch, x, w, lambda v: ds.diff_sort_indexed(indices, v, softmax=ds_torch.softmax))

    return make


def make_diffsort(n):
    def make():
        diffsort = need("diffsort")
        torch, x, w = _torch_inputs(n)
        net = diffsort.DiffSortNet("bitonic", n, steepness=1.0 / TEMPERATURE)
        return _torch_step(torch, x, w, lambda v: net(v)[0])

    return make


def make_torchsort(n):
    def make():
        torchsort = need("torchsort")
        torch, x, w = _torch_inputs(n)
        return _torch_step(torch, x, w, lambda v: torchsort.soft_sort(v, regularization_strength=TEMPERATURE))

    return make


def cases(quick=False):
    out = []
    ns = QUICK_NS if quick else FULL_NS
    for n in ns:
        contenders = [
            Contender(D_TORCH, "diffopt", make_diffopt_torch(n), "torch"),
            Contender(D_TORCH_GENERIC, "diffopt", make_diffopt_torch(n, accelerator=False), "torch"),
            Contender(D_JAX, "diffopt", make_diffopt_jax(n), "jax"),
            Contender(D_PROJECTION, "diffopt", make_projection_torch(n), "torch"),
            Contender(P_MATRIX, "peer", make_matrix(n), "torch", skip=too_big(_matrix_bytes(n))),
            Contender(P_INDEXED, "peer", make_indexed(n), "torch"),
            Contender(P_DIFFSORT, "peer", make_diffsort(n), "torch", skip=too_big(_diffsort_bytes(n))),
            Contender(P_TORCHSORT, "peer", make_torchsort(n), "torch"),
        ]
        comparisons = []
        for peer in (P_MATRIX, P_INDEXED, P_DIFFSORT, P_TORCHSORT):
            target = text = None
            if peer == P_MATRIX and n == 512:
                target, text = 1 / 20, ">= 20x faster than the matrix diff_sort at n = 512"
            elif peer == P_INDEXED and n >= 512:
                target, text = 1 / 2, ">= 2x faster than diff_sort_indexed at n >= 512"
            elif peer == P_TORCHSORT and n == 512:
                target, text = 1.0, "no slower than torchsort at n = 512"
            elif peer == P_TORCHSORT and n == 4096:
                target, text = 1.5, "within 1.5x of torchsort at n = 4096"
            comparisons.append(Comparison(D_TORCH, peer, target, text))
            comparisons.append(Comparison(D_TORCH_GENERIC, peer))
            comparisons.append(Comparison(D_JAX, peer))
        comparisons.append(Comparison(D_PROJECTION, P_TORCHSORT))
        comparisons.append(Comparison(D_PROJECTION, P_INDEXED))
        memory_targets = {D_TORCH: 400, D_JAX: 400} if n == 4096 else {}
        out.append(Case("sorting", f"soft sort n={n}", {"B": B, "n": n, "dtype": "float32"}, contenders,
                        comparisons, memory_targets=memory_targets, tiny=(n == 8), scaling=("n", n)))
    return out
