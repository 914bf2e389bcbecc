"""``fast_soft_sort`` (google-research) drop-in: change ``from fast_soft_sort import X`` to
``from diffopt.sorting.fast_soft_sort import X``.

* :mod:`~diffopt.sorting.fast_soft_sort.numpy_ops`: 1-D NumPy, the functions and the
  ``Isotonic``/``Projection``/``SoftRank``/``SoftSort``/``Sort`` classes (``compute``,
  ``jvp``, ``vjp``, ``jacobian``);
* :mod:`~diffopt.sorting.fast_soft_sort.jax_ops`, ``tf_ops``, ``pytorch_ops``:
  ``soft_rank`` / ``soft_sort`` of ``(batch, n)`` arrays (any shape here: the last
  axis), natively differentiable (``jax.jit``/``vmap``/``grad``, ``tf.function``,
  torch autograd), on :func:`diffopt.sorting.projection_rank` / ``projection_sort``.

Ranks count from 1, as in the original. Where the original is wrong: its KL
``soft_sort`` gradient uses the softmax of the wrong vector inside pooled blocks
(``SoftSort`` sets ``isotonic_.s`` where ``Isotonic`` reads ``input_s``), so it
disagrees with finite differences whenever values are pooled; here the softmax is
that of the sorted values, and the gradient matches finite differences.
"""
