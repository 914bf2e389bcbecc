"""Array helpers shared by every family: static shapes, dtype casts, splitting call arguments.

Framework-agnostic (autoray only); imports nothing else of diffopt.
"""

import autoray as ar

__all__ = ["shape_of", "reshape_target", "size", "as_shape", "same_shape", "cast", "split_arrays"]


def shape_of(x):
    """Static shape of ``x``: a tuple of ints (``None`` for a dimension unknown while tracing)."""
    return tuple(int(d) if d is not None else None for d in x.shape)


def same_shape(a, b):
    """Whether the static shapes ``a`` and ``b`` agree (a size unknown while tracing, ``None``,
    agrees with any)."""
    a, b = tuple(a), tuple(b)
    return len(a) == len(b) and all(p is None or q is None or p == q for p, q in zip(a, b))


def reshape_target(shape):
    """``shape`` for ``reshape``: an unknown (traced, e.g. a Keras batch) size given as ``-1``."""
    return tuple(-1 if d is None else d for d in shape)


def size(x, axis, shim):
    """Length of ``x`` along ``axis``: an ``int`` when known, else the framework's traced size.

    Only TensorFlow traces with unknown sizes (``input_signature=[tf.TensorSpec([None, n])]``,
    how Keras traces models); its shim's ``dynamic_size`` gives a scalar tensor, which
    array constructors (noise draws, ``zeros``) accept inside a shape.
    """
    d = x.shape[axis]
    if d is not None:
        return int(d)
    dynamic = getattr(shim, "dynamic_size", None)
    if dynamic is None:
        raise ValueError(f"axis {axis} of an array of shape {tuple(x.shape)} has an unknown size")
    return dynamic(x, axis)


def as_shape(shape):
    """``shape`` (an int or a sequence) as a tuple of ints; a size traced by the framework
    (from :func:`size`) is kept as it is: the framework's array constructors take it."""
    if isinstance(shape, int):
        return (shape,)
    return tuple(_dim(d) for d in shape)


def _dim(d):
    try:
        return int(d)
    except TypeError:
        return d


def cast(x, dtype):
    """``x`` in dtype ``dtype`` (a name); ``x`` itself when it already is."""
    return x if ar.get_dtype_name(x) == dtype else ar.astype(x, dtype)


def split_arrays(args, kwargs, travels):
    """Separate the arrays among ``args``/``kwargs`` for which ``travels(a)`` holds from the rest.

    Returns ``(arrays, rebuild)``: ``rebuild(arrays)`` gives ``(args, kwargs)``
    back with the (possibly traced) arrays put in place. Only top-level
    positional and keyword values are inspected.
    """
    items = list(args) + list(kwargs.values())
    slots = [i for i, a in enumerate(items) if travels(a)]
    nargs, keys = len(args), list(kwargs)

    def rebuild(arrays):
        new = list(items)
        for i, a in zip(slots, arrays):
            new[i] = a
        return tuple(new[:nargs]), dict(zip(keys, new[nargs:]))

    return [items[i] for i in slots], rebuild
