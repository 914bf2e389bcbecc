"""A minimal pytree (nested tuple / list / dict / namedtuple) flatten and unflatten.

Enough for :func:`diffopt.make_perturbed_fun` on every framework without a
dependency: dict keys are visited in sorted order (as in JAX), anything else
is a leaf.
"""

__all__ = ["tree_flatten", "tree_unflatten"]


def tree_flatten(tree):
    """``(leaves, treedef)`` of ``tree``; :func:`tree_unflatten` inverts it."""
    leaves = []
    return leaves, _flatten(tree, leaves)


def _flatten(tree, leaves):
    if isinstance(tree, dict):
        keys = sorted(tree)
        return ("dict", type(tree), keys, [_flatten(tree[k], leaves) for k in keys])
    if isinstance(tree, (tuple, list)):
        return ("seq", type(tree), None, [_flatten(t, leaves) for t in tree])
    leaves.append(tree)
    return None


def tree_unflatten(treedef, leaves):
    """The tree of shape ``treedef`` holding ``leaves`` (in :func:`tree_flatten` order)."""
    it = iter(leaves)
    return _unflatten(treedef, it)


def _unflatten(node, it):
    if node is None:
        return next(it)
    kind, cls, keys, children = node
    values = [_unflatten(c, it) for c in children]
    if kind == "dict":
        return cls(zip(keys, values))
    if hasattr(cls, "_fields"):
        return cls(*values)
    return cls(values)
