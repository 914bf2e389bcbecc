"""What the drop-in modules of the TensorFlow ``perturbations`` package and its PyTorch port add.

- The noise names and sampler: ``_GUMBEL``, ``_NORMAL``, ``SUPPORTED_NOISES``,
  ``sample_noise_with_gradients(noise, shape)``.
- Their Fenchel-Young losses, each with its original's calling convention
  and value (‖y_σ(θ) − y‖² per instance; gradient y_σ(θ) − y, none to the label):
  :class:`KerasFenchelYoungLoss` (TensorFlow: a Keras loss, ``loss(y_true,
  y_pred)``, reduced as Keras does) and :class:`TorchFenchelYoungLoss` (the
  port: ``loss(input_tensor, y_true, *args)``, per-instance losses).

Both work on arrays of every framework; only the calling convention and the
reduction follow the original each one replaces.
"""

from __future__ import annotations

import autoray as ar

from diffopt._typing import Array, RngLike, Shape
from diffopt._checks import check_choice
from diffopt._ops import do
from diffopt.noise import get_noise
from diffopt.perturbations._engine import Settings
from diffopt.perturbations._fenchel_young import squared_losses
from diffopt.perturbations._perturbed import perturbed

__all__ = ["_GUMBEL", "_NORMAL", "SUPPORTED_NOISES", "noise_sampler", "KerasFenchelYoungLoss",
           "TorchFenchelYoungLoss"]

_GUMBEL = "gumbel"
_NORMAL = "normal"
SUPPORTED_NOISES = (_GUMBEL, _NORMAL)


def noise_sampler(framework):
    """``sample_noise_with_gradients`` drawing in ``framework`` unless told otherwise."""

    def sample_noise_with_gradients(
        noise: str, shape: Shape, *, like: Array | None = None, rng: RngLike = None
    ) -> tuple[Array, Array]:
        """Noise samples of ``shape`` and the gradient of their negative log-density.

        Parameters
        ----------
        noise : {'gumbel', 'normal'}
            One of ``SUPPORTED_NOISES``.
        shape : sequence of int
        like : array, optional
            Framework, dtype and device of the draws; default: a float32
            array of this module's framework.
        rng : optional
            See :mod:`diffopt.random`.

        Returns
        -------
        (samples, gradients)
            Both of ``shape``: Z and ∇ν(Z) (``Z`` for normal, ``1 − exp(−Z)`` for Gumbel).

        Raises
        ------
        ValueError
            For a noise not in ``SUPPORTED_NOISES``.

        Examples
        --------
        >>> import numpy as np
        >>> from diffopt.perturbations import sample_noise_with_gradients
        >>> z, g = sample_noise_with_gradients("normal", (2, 3), like=np.zeros(1), rng=0)
        >>> z.shape, z.dtype, bool(np.array_equal(g, z))  # normal: the gradient is Z
        ((2, 3), dtype('float64'), True)
        >>> z, g = sample_noise_with_gradients("gumbel", (4,), like=np.zeros(1), rng=0)
        >>> bool(np.allclose(g, 1 - np.exp(-z)))
        True
        """
        if noise not in SUPPORTED_NOISES:
            raise ValueError(f"noise={noise!r} is not supported; use one of {SUPPORTED_NOISES}")
        if like is None:
            like = do("zeros", (), dtype="float32", like=framework)
        dist = get_noise(noise)
        samples = dist.sample(tuple(int(d) for d in shape), like, rng)
        return samples, dist.score(samples)

    sample_noise_with_gradients.__qualname__ = "sample_noise_with_gradients"
    return sample_noise_with_gradients


_KERAS_REDUCTIONS = ("sum", "sum_over_batch_size", "mean", "none")


class _SquaredFenchelYoung:
    """Shared settings of the originals' Fenchel-Young losses."""

    def __init__(self, func, num_samples, sigma, noise, batched, maximize):
        if func is not None and not callable(func):
            raise TypeError(f"func must be callable, got {type(func).__name__}")
        self.settings = Settings(num_samples, sigma, noise, batched)
        self.func = func
        self._batched = bool(batched)
        self._maximize = bool(maximize)
        self.perturbed = perturbed(func, num_samples, sigma, noise, batched) if func is not None else None

    def _losses(self, theta, y_true, args, kwargs, rng):
        if self.func is None:
            raise TypeError(f"{type(self).__name__} has no func: pass the solver as its first argument")
        return squared_losses(self.settings, self.func, theta, y_true, self._maximize, args, kwargs, rng)


class KerasFenchelYoungLoss(_SquaredFenchelYoung):
    """Squared-distance Fenchel-Young loss ‖y_σ(θ) − y‖² (Keras drop-in, TensorFlow perturbations).

    Imported as ``diffopt.perturbations.fenchel_young.FenchelYoungLoss``, the
    original's name (``from perturbations import fenchel_young`` becomes
    ``from diffopt.perturbations import fenchel_young``). A Keras-style loss: called
    ``loss(y_true, y_pred, sample_weight=None)``
    with the label first and the model output θ second, so it works in
    ``model.compile(loss=FenchelYoungLoss(func, ...))``. Value: ‖y_σ(θ) − y‖²
    per instance, reduced by ``reduction`` (default ``'sum'``, as the
    original); gradient with respect to θ: y_σ(θ) − y (negated when
    ``maximize=False``); ``y_true`` gets no gradient.

    Parameters
    ----------
    func, num_samples, sigma, noise, batched, maximize
        As in the original (``sigma`` 0.01, normal noise, batched).
    reduction : {'sum', 'sum_over_batch_size', 'none'} or a Keras ``Reduction``, default 'sum'
        ``'mean'`` is an alias of ``'sum_over_batch_size'``.
    name : str, default 'fenchel_young'

    Notes
    -----
    Works on arrays of every framework. The modern
    :class:`diffopt.FenchelYoungLoss` is called ``(theta, y_true)`` instead and
    returns the true Fenchel-Young loss F_σ(θ) − ⟨θ, y⟩.
    """

    def __init__(self, func=None, num_samples=1000, sigma=0.01, noise=_NORMAL, batched=True, maximize=True,
                 reduction="sum", name="fenchel_young"):
        super().__init__(func, num_samples, sigma, noise, batched, maximize)
        reduction = str(getattr(reduction, "value", reduction)).lower()
        self.reduction = check_choice("reduction", reduction, _KERAS_REDUCTIONS)
        self.name = name
        self.__name__ = name

    def __call__(self, y_true, y_pred, sample_weight=None, *, rng=None):
        """The loss: ``y_true`` the label, ``y_pred`` the model output θ (Keras order)."""
        losses = self._losses(y_pred, y_true, (), {}, rng)
        if sample_weight is not None:
            losses = losses * ar.astype(sample_weight, ar.get_dtype_name(losses))
        if self.reduction == "none":
            return losses
        total = do("sum", losses)
        if self.reduction == "sum":
            return total
        count = losses.shape[0] if len(losses.shape) else 1
        return total / float(count)

    def call(self, y_true, y_pred):
        """Unreduced per-instance losses (Keras ``Loss.call``)."""
        return self._losses(y_pred, y_true, (), {}, None)

    def get_config(self):
        """Keras-style configuration."""
        return {"name": self.name, "reduction": self.reduction}


class TorchFenchelYoungLoss(_SquaredFenchelYoung):
    """Squared-distance Fenchel-Young loss ‖y_σ(θ) − y‖² per instance (PyTorch-port drop-in).

    Imported as ``diffopt.perturbations.torch.fenchel_young.FenchelYoungLoss``,
    the port's name (only the import line changes). Called
    ``loss(input_tensor, y_true, *args)`` (θ first; ``args`` go to
    ``func``), also as ``loss.forward(...)``. Value: ‖y_σ(θ) − y‖² per
    instance, unreduced (``[B]``, a scalar when unbatched), as the port;
    gradient with respect to θ: y_σ(θ) − y (negated when ``maximize=False``);
    ``y_true`` gets no gradient. ``device`` is accepted and unused (the
    input's device is used).
    """

    def __init__(self, func=None, num_samples=1000, sigma=0.01, noise=_NORMAL, batched=True, maximize=True,
                 device=None):
        del device
        super().__init__(func, num_samples, sigma, noise, batched, maximize)

    def __call__(self, input_tensor, y_true, *args, rng=None):
        return self._losses(input_tensor, y_true, args, {}, rng)

    forward = __call__
