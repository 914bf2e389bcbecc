"""Type aliases of the public API: annotations only, nothing is checked at run time.

diffopt imports no framework, so an array of any framework is typed :data:`Array`.
"""

from typing import Any, Callable, Union

__all__ = ["Array", "RngLike", "Solver", "NoiseLike", "Shape"]

#: An array of any supported framework: ``numpy.ndarray``, ``torch.Tensor``,
#: ``jax.Array``, ``tf.Tensor`` or ``cupy.ndarray`` (also Python scalars where a scalar fits).
Array = Any

#: ``None`` (the framework's global generator), an ``int`` seed, or the framework's own
#: generator or key (``numpy.random.Generator``, ``torch.Generator``,
#: ``tf.random.Generator``, ``jax.random.key``), or a :class:`diffopt.random.Rng`.
RngLike = Any

#: A solver: ``solver(x, *args, **kwargs) -> Array`` with a leading instance axis.
Solver = Callable[..., Any]

#: A noise name (``'normal'``, ``'gumbel'``) or a :class:`diffopt.noise.Noise` object.
NoiseLike = Union[str, Any]

#: An array shape.
Shape = tuple
