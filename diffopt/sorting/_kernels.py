"""The kernels :mod:`diffopt.sorting` may ask a shim for, declared (a :class:`typing.Protocol`).

A shim provides any of them under these names in its ``KERNELS`` table
(:mod:`diffopt.backends._contract` checks each entry's name and parameters
against this declaration); :func:`kernel` is the one way the family asks, and a
name not declared here is an error, so a typo cannot silently fall back to the
generic path. Every kernel but ``jit`` and ``promote_float`` returns ``None``
where it does not apply (e.g. eager torch's kernels under ``torch.compile``):
the generic code of :mod:`diffopt.sorting._soft` then runs.

:class:`SortingKernels` is registered with the contract
(:func:`~diffopt.backends._contract.declare_kernels`) when this module is imported.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from diffopt.backends import kernels
from diffopt.backends._contract import declare_kernels

__all__ = ["SortingKernels", "NAMES", "kernel"]


@declare_kernels
class SortingKernels(Protocol):
    """Kernels of the sorting family (all optional for a shim)."""

    def sorting_lse_network(self, x, temperature, layers, reverse, finite):
        """``(out, weights)`` of :func:`diffopt.sorting._soft.lse_network` (eager torch, in place)."""

    def sorting_pull(self, t, weights, layers):
        """``M.T @ t`` as :func:`diffopt.sorting._soft.pull` (eager torch, where nothing is recorded)."""

    def sorting_fused(self, rows, temperature, relaxation):
        """A ``(fwd, bwd)`` pair running ``soft_sort``'s whole network in one compiled loop (numba)."""

    def sorting_transport(self, x, t, cswap, layers, transpose):
        """``M.T @ t`` or ``M @ t`` of :func:`diffopt.sorting._soft.network_transport`, looped (JAX)."""

    def sorting_network(self, x, cswap, layers):
        """``(out, weights)``: ``cswap`` over the network's layers, looped (JAX)."""

    def sorting_network_pull(self, t, weights, layers, dts):
        """``(M.T @ t, g_temperature)``: the backward pass of :meth:`sorting_network` (JAX)."""

    def sorting_pav(self, a, b, kl):
        """``(v, first)`` of :func:`diffopt.sorting._pav.pav` on NumPy rows, compiled (numba; the projection's PAV)."""

    def sorting_pav_vjp(self, g, a, b, first, kl):
        """``(g_a, g_b)`` of :func:`diffopt.sorting._pav.pav_vjp` on NumPy rows, compiled (numba)."""

    def sorting_sort_desc(self, x, stable):
        """``(values, order)``: the rows of ``x`` sorted descending, differentiable in the values
        (``stable``: ties keep their order along the row; else any order of ties)."""

    def sorting_unsort(self, values, order):
        """``out[..., order[..., j]] = values[..., j]`` along the last axis, differentiable in ``values``."""

    def sorting_pav_device(self, a, b, kl):
        """``(v, first)`` of :func:`diffopt.sorting._pav.pav` on the device, for CUDA arrays (numba.cuda)."""

    def sorting_pav_device_vjp(self, g, a, b, first, kl):
        """``(g_a, g_b)`` of :func:`diffopt.sorting._pav.pav_vjp` on the device, for CUDA arrays (numba.cuda)."""

    def sorting_inverse_permutation(self, order):
        """The inverse of the permutations ``order`` along the last axis (``O(n)``: torch's scatter)."""

    def sorting_host_isotonic(self, stage, packed, kl):
        """The host isotonic ``stage`` (``'forward'``/``'backward'``) on packed rows as one op (torch.compile)."""

    def sorting_isotonic(self, kl):
        """The ``(fwd, bwd)`` pair of :func:`diffopt.sorting._projection.isotonic` (JAX: traced; torch: numba on the tensors' memory)."""

    def jit(self, fn):
        """``fn`` compiled, for a function built once per configuration and reused (JAX)."""

    def promote_float(self, x):
        """An integer ``x`` as float64 keeping its gradient (HIPS autograd's ``astype`` loses it)."""


#: The declared names.
NAMES = frozenset(name for name in vars(SortingKernels) if not name.startswith("_"))


def kernel(name: str, xp: Any) -> Callable[..., Any] | None:
    """The kernel ``name`` of the framework of the namespace ``xp``, or ``None`` if its shim has none.

    Parameters
    ----------
    name : str
        A name of :class:`SortingKernels`.
    xp : diffopt._ops.Namespace
        The call's namespace (:func:`diffopt._ops.namespace`); no array is inspected.

    Raises
    ------
    ValueError
        If ``name`` is not declared by :class:`SortingKernels`.
    """
    if name not in NAMES:
        raise ValueError(f"{name!r} is not a kernel declared by diffopt.sorting._kernels.SortingKernels "
                         f"(declared: {', '.join(sorted(NAMES))})")
    return kernels(xp.name).get(name)
