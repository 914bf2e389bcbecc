"""The host isotonic solve of the projection family as torch ops, so ``torch.compile`` keeps one graph.

:func:`diffopt.sorting._projection.isotonic` runs pool-adjacent-violators on the host (NumPy or
the numba kernel). Eagerly that is ``host_call``; under ``torch.compile`` a host call is a graph
break, so ``fullgraph=True`` failed. Here the forward and the closed-form backward are the ops
``diffopt::isotonic_forward`` / ``diffopt::isotonic_backward`` (packed ``(B, n, 2)`` and
``(B, n, 4)`` rows in, ``(B, n, 2)`` out: the layouts of ``_host_forward`` / ``_host_backward``),
with fakes giving their shapes; the gradient formula stays the shim's ``custom_vjp`` around them,
which dynamo traces. Registered as ``sorting_host_isotonic`` in the torch shim's ``KERNELS``.
"""

import torch

from diffopt.backends.numpy import _numba_pav

__all__ = ["host_isotonic"]


def _on_host(name, packed, kl):
    from diffopt.sorting import _pav  # a leaf module (NumPy only): no import of the family above

    stage, fast = ((_pav.packed_forward, _numba_pav.numpy_pav) if name == "_host_forward"
                   else (_pav.packed_backward, _numba_pav.numpy_pav_vjp))
    out = stage(packed.detach().cpu().numpy(), kl, fast)
    return torch.as_tensor(out).to(device=packed.device, dtype=packed.dtype)


@torch.library.custom_op("diffopt::isotonic_forward", mutates_args=())
def _forward(packed: torch.Tensor, kl: bool) -> torch.Tensor:
    return _on_host("_host_forward", packed, kl)


@torch.library.custom_op("diffopt::isotonic_backward", mutates_args=())
def _backward(packed: torch.Tensor, kl: bool) -> torch.Tensor:
    return _on_host("_host_backward", packed, kl)


@_forward.register_fake
def _(packed, kl):
    return packed.new_empty(tuple(packed.shape[:-1]) + (2,))


@_backward.register_fake
def _(packed, kl):
    return packed.new_empty(tuple(packed.shape[:-1]) + (2,))


def host_isotonic(stage, packed, kl):
    """``stage`` (``'forward'`` or ``'backward'``) of the host isotonic solve on ``packed`` as one op
    while ``torch.compile`` traces; eagerly the same host call without the op's dispatch."""
    if not torch.compiler.is_compiling():
        return _on_host(f"_host_{stage}", packed, kl)
    return (_forward if stage == "forward" else _backward)(packed, bool(kl))
