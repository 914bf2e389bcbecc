"""Array helpers shared by every family: static shapes, dtype casts, splitting call arguments.

Framework-agnostic (autoray only); imports nothing else of diffopt.
"""

import autoray as ar

__all__ = ["shape_of", "cast", "split_arrays"]


def shape_of(x):
    """Static shape of ``x``: a tuple of ints (``None`` for a dimension unknown while tracing)."""
    return tuple(int(d) if d is not None else None for d in x.shape)


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
