"""Eager CPU torch kernels of the perturbed engine, looked up by name from the torch shim's ``KERNELS``.

The engine holds samples as ``[n, B, ...]`` (sample-major, so that chunks are
leading-axis slices) stored instance-major (``[B, n, ...]`` in memory: the
solver's rows, one instance's samples after another). Two of its ops are slow
in eager CPU torch, and each has a kernel here (:func:`diffopt._ops.kernel`):

* ``add_scaled``: ``a + scale * b`` for a transposed ``b`` (the perturbed rows
  ``θ[:, None] + σ Zᵀ``, from the ``[n, B, size]`` noise draw), written into
  a contiguous ``[B, n, size]`` tensor with one ``add``/``addcmul`` (``out=``).
  The generic op lays its result out like ``b`` (transposed) and multiplies
  first, so that the solver's ``[B·n, size]`` rows cost a product and a
  strided copy of every sample more: at ``B = 32``, ``n = 10⁴``, ``size = 100``
  float64, 1 thread, a step went from 1,309 ms to 1,152 ms (plain vectorised
  torch: 1,181–1,237 ms), ``benchmarks`` suite ``perturbations``.
* ``sum_samples``: ``sum(x, axis=0)`` for contiguous ``x`` (one instance,
  ``B = 1``, where both layouts agree) as a vector-matrix product ``1ᵀ X``
  with ``X = x`` viewed as ``[n, size]`` (one BLAS pass; measured 17–23 ms
  against 35–52 ms for ``torch.sum(x, 0)`` at ``n·size = 3.2·10⁷``, float32,
  1 thread). For ``B > 1`` the instance-major ``x`` is a transposed view, on
  which ``torch.sum`` is already one pass per instance (25 ms either way).

Each returns ``None`` where it does not apply, and the caller runs the generic
op: off the CPU, under ``torch.compile`` (whose compiler fuses the generic op
itself), for tensors wrapped by a ``torch.func`` transform, for dtypes other
than float32/float64, and for sizes where the generic op is as good.
"""

import torch

__all__ = ["sum_samples", "add_scaled", "BLOCK"]

#: Fewest numbers in all for :func:`sum_samples` (fewer: ``torch.sum`` is as fast).
BLOCK = 2**18

#: Fewest numbers per sample for :func:`sum_samples` (narrower: ``torch.sum`` is as fast).
MIN_WIDTH = 256

_FLOATS = (torch.float32, torch.float64)
_is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)


def _applies(*tensors, contiguous=True):
    """Whether the kernels may run: eager, unwrapped float32/float64 CPU tensors (contiguous ones)."""
    if _is_wrapped is None or torch.compiler.is_compiling():
        return False
    return all(
        t.device.type == "cpu" and t.dtype in _FLOATS and not _is_wrapped(t) and (t.is_contiguous() or not contiguous)
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


def add_scaled(a, b, scale):
    """``a + scale * b`` (broadcast), as a new contiguous tensor; ``None`` where it does not apply.

    ``scale`` is a Python number or a 0-d tensor. It applies to eager CPU tensors
    that no autograd graph records (the engine's forward and replays).
    """
    if not isinstance(scale, (int, float)) and not (isinstance(scale, torch.Tensor) and scale.ndim == 0):
        return None
    tensors = (a, b) if isinstance(scale, (int, float)) else (a, b, scale)
    if not _applies(*tensors, contiguous=False) or any(t.dtype != a.dtype for t in tensors):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    out = b.new_empty(torch.broadcast_shapes(a.shape, b.shape))
    if len(tensors) == 2:
        return torch.add(a, b, alpha=scale, out=out)
    return torch.addcmul(a, b, scale, out=out)
