"""Pool adjacent violators on a CUDA GPU (numba.cuda): the projection family's device kernel.

The kernel of torch CUDA tensors and CuPy arrays: no C++ build, only numba's CUDA
target, compiled at the first call. It reads and writes the framework's own device
memory through the CUDA array interface (``numba.cuda.as_cuda_array``: no host copy)
and launches on the framework's current stream. One thread solves one row, as
:func:`diffopt.sorting._pav.pav_rows` does on the host (the same stack of blocks,
kept in device scratch rows), and :func:`forward` / :func:`backward` return the same
numbers as :func:`diffopt.sorting._pav.pav` / :func:`~diffopt.sorting._pav.pav_vjp`:

* forward: ``v`` (the isotonic solution) and ``first`` (1 where a block starts);
* backward: within each block, ``g_a = total / |B|`` and ``g_b = -g_a`` (L2), or
  ``g_a = softmax(a_B) total`` and ``g_b = -softmax(b_B) total`` (KL), where ``total``
  is the block's sum of the cotangent ``g``.

Shared by the torch and CuPy shims (a private module beside ``_common``, not a
framework folder: it serves every framework exposing ``__cuda_array_interface__``).
Imported only when a CUDA array reaches the projection; where numba's CUDA target
is missing, :func:`available` is false and the shims keep the host path.
"""

import functools
import importlib
import math

__all__ = ["available", "forward", "backward", "pav_arrays", "pav_vjp_arrays"]

_THREADS = 128  # threads per block: rows are independent, any size works
cuda = None  # numba.cuda once loaded: the kernels name it as a global (numba's simulator swaps those)


@functools.lru_cache(maxsize=1)
def _cuda():
    """``numba.cuda`` if it imports and sees a GPU (or runs its simulator), else ``None``."""
    try:
        cuda = importlib.import_module("numba.cuda")
        return cuda if cuda.is_available() else None
    except Exception:  # numba missing, or its CUDA target cannot load the driver
        return None


def available():
    """Whether the kernels can run here (numba with a usable CUDA target)."""
    return _cuda() is not None


def _forward_row(a, b, kl, v, first, start, num, den, r):
    """Row ``r`` of :func:`diffopt.sorting._pav.pav_rows`; the stack of values lives in ``v``."""
    n = a.shape[1]
    top = -1
    for i in range(n):
        top += 1
        start[r, top] = i
        num[r, top] = a[r, i] if kl else a[r, i] - b[r, i]
        den[r, top] = b[r, i] if kl else 1.0
        v[r, top] = num[r, top] - den[r, top] if kl else num[r, top]
        while top > 0 and v[r, top - 1] <= v[r, top]:
            if kl:  # logaddexp, both ways
                hi, lo = max(num[r, top - 1], num[r, top]), min(num[r, top - 1], num[r, top])
                num[r, top - 1] = hi + math.log1p(math.exp(lo - hi))
                hi, lo = max(den[r, top - 1], den[r, top]), min(den[r, top - 1], den[r, top])
                den[r, top - 1] = hi + math.log1p(math.exp(lo - hi))
                v[r, top - 1] = num[r, top - 1] - den[r, top - 1]
            else:
                num[r, top - 1] += num[r, top]
                den[r, top - 1] += den[r, top]
                v[r, top - 1] = num[r, top - 1] / den[r, top - 1]
            top -= 1
    end = n
    for k in range(top, -1, -1):  # last block first: block k's value sits at v[k] <= start[k]
        value = v[r, k]
        for i in range(start[r, k], end):
            v[r, i] = value
            first[r, i] = 1.0 if i == start[r, k] else 0.0
        end = start[r, k]


def _block_weights(x, r, lo, hi, out, sign, total):
    """``out[r, lo:hi] = sign * softmax(x[r, lo:hi]) * total`` (block maximum as the shift)."""
    peak = -math.inf
    for i in range(lo, hi):
        peak = max(peak, x[r, i])
    if not math.isfinite(peak):
        peak = 0.0
    s = 0.0
    for i in range(lo, hi):
        s += math.exp(x[r, i] - peak)
    for i in range(lo, hi):
        out[r, i] = sign * math.exp(x[r, i] - peak) / s * total


def _backward_row_with(weights):
    """The row function of the backward pass, calling ``weights`` (:func:`_block_weights`, compiled)."""

    def backward_row(g, a, b, first, kl, ga, gb, r):
        """Row ``r`` of :func:`diffopt.sorting._pav.pav_vjp`."""
        n = g.shape[1]
        lo = 0
        while lo < n:
            hi = lo + 1
            while hi < n and first[r, hi] == 0.0:
                hi += 1
            total = 0.0
            for i in range(lo, hi):
                total += g[r, i]
            if kl:
                weights(a, r, lo, hi, ga, 1.0, total)
                weights(b, r, lo, hi, gb, -1.0, total)
            else:
                for i in range(lo, hi):
                    ga[r, i] = total / (hi - lo)
                    gb[r, i] = -total / (hi - lo)
            lo = hi

    return backward_row


@functools.lru_cache(maxsize=1)
def _kernels():
    """The two ``cuda.jit`` kernels (compiled lazily, per argument types, at their first launch)."""
    global cuda
    cuda = _cuda()
    fwd_row = cuda.jit(device=True)(_forward_row)
    weights = cuda.jit(device=True)(_block_weights)
    bwd_row = cuda.jit(device=True)(_backward_row_with(weights))

    @cuda.jit
    def fwd(a, b, kl, v, first, start, num, den):
        r = cuda.grid(1)
        if r < a.shape[0]:
            fwd_row(a, b, kl, v, first, start, num, den, r)

    @cuda.jit
    def bwd(g, a, b, first, kl, ga, gb):
        r = cuda.grid(1)
        if r < g.shape[0]:
            bwd_row(g, a, b, first, kl, ga, gb, r)

    return fwd, bwd


def _launch(kernel, rows, stream, *args):
    """``kernel`` over ``rows`` rows, one thread each, on ``stream`` (``0``: the default stream)."""
    if rows:
        kernel[(rows + _THREADS - 1) // _THREADS, _THREADS, stream](*args)


def forward(a, b, kl, v, first, start, num, den, stream=0):
    """Fill ``v, first`` with :func:`diffopt.sorting._pav.pav` of the ``(B, n)`` rows ``a, b``.

    All arguments are numba device arrays (or anything ``numba.cuda`` accepts as one),
    float64, C-contiguous, ``(B, n)``; ``start`` (int64), ``num`` and ``den`` are scratch.
    """
    _launch(_kernels()[0], a.shape[0], stream, a, b, bool(kl), v, first, start, num, den)


def backward(g, a, b, first, kl, ga, gb, stream=0):
    """Fill ``ga, gb`` with :func:`diffopt.sorting._pav.pav_vjp` of the cotangent ``g`` (as :func:`forward`)."""
    _launch(_kernels()[1], g.shape[0], stream, g, a, b, first, bool(kl), ga, gb)


# ----------------------------------------------------------- framework arrays


def _run(step, inputs, kl, outputs, device, stream_ptr):
    """``step(*inputs, kl, *outputs)`` (:func:`forward` or :func:`backward`) on GPU ``device``.

    The framework arrays are viewed without a copy (``as_cuda_array``, no synchronisation:
    the launch goes to the framework's own stream ``stream_ptr``, ``0`` for the default one).
    """
    cuda = _cuda()
    with cuda.gpus[device]:
        stream = cuda.external_stream(stream_ptr) if stream_ptr else 0
        views = [cuda.as_cuda_array(x, sync=False) for x in (*inputs, *outputs)]
        step(*views[: len(inputs)], kl, *views[len(inputs):], stream=stream)
    return outputs


def pav_arrays(a, b, kl, empty, device, stream_ptr):
    """``(v, first)`` of :func:`forward` for framework CUDA arrays ``a, b`` (float64, C-contiguous).

    ``empty(dtype_name)`` gives a new array of ``a``'s framework, shape and device;
    ``device`` is the GPU's index and ``stream_ptr`` the framework's current stream.
    """
    out = [empty("float64"), empty("float64"), empty("int64"), empty("float64"), empty("float64")]
    return tuple(_run(forward, (a, b), kl, out, device, stream_ptr)[:2])


def pav_vjp_arrays(g, a, b, first, kl, empty, device, stream_ptr):
    """``(g_a, g_b)`` of :func:`backward` for framework CUDA arrays (as :func:`pav_arrays`)."""
    out = [empty("float64"), empty("float64")]
    return tuple(_run(backward, (g, a, b, first), kl, out, device, stream_ptr))
