"""The kernels of the core's sample helpers (:mod:`diffopt._ops`), declared (a :class:`typing.Protocol`).

The perturbed engine's ``sum_samples`` and ``add_scaled`` (:func:`diffopt._ops.sum_samples`,
:func:`diffopt._ops.add_scaled`) ask the shim for a faster kernel of the same name
(eager CPU torch: :mod:`diffopt.backends.torch._samples`); it returns ``None``
where it does not apply and the generic op runs. A shim provides them in its
``KERNELS`` table, which :mod:`diffopt.backends._contract` checks against this
declaration (registered there by :func:`~diffopt.backends._contract.declare_kernels`).
"""

from __future__ import annotations

from typing import Protocol

from diffopt.backends._contract import declare_kernels

__all__ = ["SampleKernels", "OrderKernels", "NAMES"]


@declare_kernels
class SampleKernels(Protocol):
    """Kernels of the perturbed engine's sample helpers (all optional for a shim)."""

    def sum_samples(self, x):
        """``sum(x, axis=0)``, or ``None`` where the generic ``sum`` is as good."""

    def add_scaled(self, a, b, scale):
        """``a + scale * b`` laid out in the result's logical order, or ``None``."""


@declare_kernels
class OrderKernels(Protocol):
    """Kernels of the core's orderings (:func:`diffopt._ops.stable_argsort`)."""

    def stable_argsort(self, x, axis):
        """``argsort`` of ``x`` along ``axis`` keeping ties in their order of position (the
        framework's stable-sort keyword). Absent: the framework's plain ``argsort`` is stable (CuPy)."""


#: The declared names.
NAMES = frozenset(name for protocol in (SampleKernels, OrderKernels) for name in vars(protocol)
                  if not name.startswith("_"))
