"""Eager CPU torch kernels for the perturbed engine's reductions over samples.

The engine holds samples as ``[n, B, ...]`` (sample-major, so that chunks are
leading-axis slices). Two of its reductions are slow in that layout with
torch's generic CPU ops, and each has a kernel here, looked up by name from the
torch shim's op table (:func:`diffopt._ops.kernel`):

* ``sum_samples``: ``sum(x, axis=0)`` as a vector-matrix product ``1ᵀ X`` with
  ``X = x`` viewed as ``[n, B·size]`` (one BLAS pass; measured 17–23 ms against
  35–52 ms for ``torch.sum(x, 0)`` at ``n = 10⁴``, ``B·size = 3200``, float32,
  1 thread);
* ``inner_samples``: ``w[n, b] = Σ_o f[n, b, o] g[b, o]``. ``einsum`` runs it as
  a batched matrix product over ``b`` whose rows are ``B·out`` apart in memory
  (240–350 ms at the size above, measured alone; 400–600 ms inside a training
  step on the loaded machine); a product and a sum over the last axis on blocks
  of about :data:`BLOCK` numbers that stay in cache, written into one reused
  buffer, take 36–49 ms alone (50–90 ms inside the step).

Each returns ``None`` where it does not apply, and the caller runs the generic
op: off the CPU, under ``torch.compile`` (whose compiler fuses the generic op
itself), for tensors wrapped by a ``torch.func`` transform, for dtypes other
than float32/float64, and for sizes where the generic op is as good.
"""

import torch

__all__ = ["sum_samples", "inner_samples", "BLOCK"]

#: Numbers per block of :func:`inner_samples` (1 MiB of float32: fits the L2 cache).
BLOCK = 2**18

#: Fewest rows (samples) per block (wide rows: blocks of more than :data:`BLOCK` numbers,
#: so that the Python loop stays short).
MIN_ROWS = 8

#: Fewest numbers per sample for :func:`sum_samples` (narrower: ``torch.sum`` is as fast).
MIN_WIDTH = 256

_FLOATS = (torch.float32, torch.float64)
_is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)


def _applies(*tensors):
    """Whether the kernels may run: eager, unwrapped, contiguous float32/float64 CPU tensors."""
    if _is_wrapped is None or torch.compiler.is_compiling():
        return False
    return all(
        t.device.type == "cpu" and t.dtype in _FLOATS and not _is_wrapped(t) and t.is_contiguous()
        for t in tensors
    )


def sum_samples(x):
    """``x.sum(0)`` for ``x`` ``[n, ...]`` as ``1ᵀ X``; ``None`` where it does not pay.

    It pays for at least :data:`BLOCK` numbers in all and :data:`MIN_WIDTH` per sample.
    """
    if x.ndim < 2 or x.shape[0] < 2 or x.numel() < BLOCK or not _applies(x):
        return None
    n = x.shape[0]
    if x.numel() // n < MIN_WIDTH:
        return None
    return (x.new_ones(n) @ x.reshape(n, -1)).reshape(x.shape[1:])


def inner_samples(f, g):
    """``einsum('nbo,bo->nb', f, g)``, blockwise over ``n``; ``None`` where it does not pay.

    ``f`` is ``[n, B, out]``, ``g`` is ``[B, out]`` of the same dtype. It pays
    when ``B > 1`` (with one instance the rows are contiguous and ``einsum`` is a
    plain matrix-vector product) and there are at least two blocks (of
    :data:`BLOCK` numbers, or :data:`MIN_ROWS` samples if that is more).
    """
    if f.ndim != 3 or tuple(g.shape) != tuple(f.shape[1:]) or f.shape[1] < 2 or f.dtype != g.dtype:
        return None
    if not _applies(f, g):
        return None
    n, width = f.shape[0], f.shape[1] * f.shape[2]
    rows = max(MIN_ROWS, BLOCK // max(1, width))
    if n <= rows:
        return None
    if torch.is_grad_enabled() and (f.requires_grad or g.requires_grad):  # recorded: no out=
        return torch.cat([torch.sum(f[i:i + rows] * g, -1) for i in range(0, n, rows)])
    out = f.new_empty(f.shape[:2])
    buf = f.new_empty((rows,) + tuple(f.shape[1:]))  # one block's products, reused
    for i in range(0, n, rows):
        block = f[i:i + rows]
        prod = buf[:block.shape[0]]
        torch.mul(block, g, out=prod)
        torch.sum(prod, -1, out=out[i:i + rows])
    return out
