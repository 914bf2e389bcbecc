"""Per-framework shims, found lazily from the arrays a call receives.

Every shim module (``numpy``, ``autograd``, ``torch``, ``jax``, ``tensorflow``,
``cupy``; :data:`SHIMS` is the one list of them) exposes the same names. The
contract is written once, as code: :mod:`diffopt.backends._contract` (the
``Shim`` protocol, what each name means, and how to add a backend: one module
plus :func:`register`); the "Shim contract" section of the docs page
``docs/backends.md`` is generated from it. A framework with more than one
file is a package (``torch/``: the shim in ``__init__``, its kernels beside
it; ``jax/``; ``numpy/`` with the numba kernels); the others are one module.

The core never imports a framework: a shim module is imported only when an
array of its framework reaches :func:`get_backend`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence
from types import ModuleType

import importlib
import importlib.util

import autoray

from diffopt.backends._common import SecondOrder
from diffopt.backends._contract import check_shim

__all__ = ["SHIMS", "available", "register", "get_backend", "backend_name", "load", "ops", "kernels", "is_array",
           "same_framework", "SecondOrder"]

#: The one list of frameworks: autoray backend name -> shim module (imported on first use).
SHIMS = {name: f"diffopt.backends.{name}" for name in ("numpy", "autograd", "torch", "jax", "tensorflow", "cupy")}
_SHIMS = {}


def register(name: str, module: str) -> None:
    """Make the shim ``module`` serve arrays whose autoray backend is ``name``.

    Parameters
    ----------
    name : str
        :func:`autoray.infer_backend` of the framework's arrays.
    module : str
        Import path of a module satisfying :class:`diffopt.backends._contract.Shim`;
        it is imported (and checked) the first time such an array is seen.

    Examples
    --------
    >>> from diffopt.backends import SHIMS, register
    >>> register("mylib", "mypackage.diffopt_shim")  # imported only when a mylib array is seen
    >>> SHIMS["mylib"]
    'mypackage.diffopt_shim'
    >>> del SHIMS["mylib"]
    """
    if not isinstance(name, str) or not isinstance(module, str):
        raise TypeError(f"name and module must be strings, got {name!r}, {module!r}")
    SHIMS[name] = module
    _SHIMS.pop(name, None)


def available() -> list[str]:
    """Names of the frameworks importable in this environment.

    Returns
    -------
    list of str
        A subset of the keys of :data:`SHIMS` (``numpy, autograd, torch, jax,
        tensorflow, cupy`` and any registered), in that order. Nothing is
        imported to find out.

    Examples
    --------
    >>> from diffopt.backends import available
    >>> "numpy" in available()
    True
    """
    return [name for name in SHIMS if importlib.util.find_spec(name) is not None]


def load(name: str) -> ModuleType:
    """Import (once) and return the shim module for backend ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`SHIMS`.

    Returns
    -------
    module
        The shim, checked against the contract.

    Raises
    ------
    TypeError
        For an unknown name, or a shim that does not satisfy the contract.

    Examples
    --------
    >>> from diffopt.backends import load
    >>> load("numpy").NAME
    'numpy'
    """
    shim = _SHIMS.get(name)
    if shim is None:
        if name not in SHIMS:
            raise TypeError(
                f"diffopt does not support arrays of backend {name!r}; "
                f"supported: {', '.join(SHIMS)} (diffopt.backends.register adds one)"
            )
        shim = importlib.import_module(SHIMS[name])
        problems = check_shim(shim, name)
        if problems:
            raise TypeError(f"shim {SHIMS[name]} for {name!r} does not satisfy the contract: {'; '.join(problems)}")
        _SHIMS[name] = shim
    return shim


_SHIM_OF = {"jaxlib": "jax"}  # autoray backend names that differ from the shim's
_NO_OPS = {}


def ops(backend: str) -> dict[str, Any]:
    """The private op table of the shim for autoray backend name ``backend``.

    A dict ``name -> function`` (the shim's ``OPS``; empty for frameworks
    without a shim), consulted by :func:`diffopt._ops.do` before autoray.
    Looking it up loads the shim: nothing depends on an earlier import.
    Nothing is cached here but the shim itself (:func:`load`): a dict written
    while ``torch.compile`` traces the reading frame trips its guards.

    Parameters
    ----------
    backend : str
        An autoray backend name (``"jaxlib"`` counts as ``"jax"``).

    Returns
    -------
    dict
        ``name -> function``; empty for a framework without a shim.

    Examples
    --------
    >>> from diffopt.backends import ops
    >>> isinstance(ops("numpy"), dict), ops("builtins")
    (True, {})
    """
    name = _SHIM_OF.get(backend, backend)
    if name not in SHIMS:
        return _NO_OPS
    shim = _SHIMS.get(name)
    return (shim if shim is not None else load(name)).OPS


def shim_name(backend: str) -> str:
    """The key of :data:`SHIMS` serving autoray backend name ``backend`` (``"jaxlib"`` is ``"jax"``)."""
    return _SHIM_OF.get(backend, backend)


def kernels(backend: str) -> Mapping[str, Any]:
    """The kernel table (``KERNELS``) of the shim for autoray backend name ``backend``.

    ``name -> function`` under the names the families declare
    (:func:`diffopt.backends._contract.declared_kernels`); empty for a shim without
    kernels or a framework without a shim. Families ask it through their own
    look-up (e.g. :func:`diffopt.sorting._kernels.kernel`), which rejects an
    undeclared name.

    Examples
    --------
    >>> from diffopt.backends import kernels
    >>> "sorting_fused" in kernels("numpy"), kernels("builtins")
    (True, {})
    """
    name = _SHIM_OF.get(backend, backend)
    if name not in SHIMS:
        return _NO_OPS
    shim = _SHIMS.get(name)
    return getattr(shim if shim is not None else load(name), "KERNELS", _NO_OPS)


def _infer(x):
    if x is None or isinstance(x, (bool, int, float, complex, str)):
        return None
    name = autoray.infer_backend(x)
    if name == "builtins":
        return None
    if name == "jaxlib":
        name = "jax"
    return name


def backend_name(*arrays: Any, argnames: Sequence[str] | None = None) -> str:
    """Name of the one framework that the given arrays belong to.

    Parameters
    ----------
    *arrays
        Arrays (Python scalars and ``None`` are ignored).
    argnames : sequence of str, optional
        Argument names, used in the error message.

    Returns
    -------
    str
        The framework's name; ``"numpy"`` if no argument is an array.

    Raises
    ------
    TypeError
        If the arrays come from two different frameworks. NumPy arrays mixed
        with HIPS autograd boxes count as autograd.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.backends import backend_name
    >>> backend_name(np.zeros(3), 2.0, None)
    'numpy'
    """
    found = {}
    for i, x in enumerate(arrays):
        name = _infer(x)
        if name is not None:
            label = argnames[i] if argnames else f"argument {i}"
            found.setdefault(name, label)
    if "autograd" in found:
        found.pop("numpy", None)
    if len(found) > 1:
        parts = ", ".join(f"{label} is a {name} array" for name, label in found.items())
        raise TypeError(
            f"arrays from different frameworks cannot be mixed in one call ({parts}); "
            "convert them to one framework first"
        )
    if not found:
        return "numpy"
    return next(iter(found))


def is_array(a: Any) -> bool:
    """Whether ``a`` is an array of a framework diffopt has a shim for.

    Parameters
    ----------
    a : object
        Anything.

    Returns
    -------
    bool
        True for an array (anything with a ``shape``) of a framework in :data:`SHIMS`.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.backends import is_array
    >>> is_array(np.zeros(3)), is_array([1.0, 2.0])
    (True, False)
    """
    if not hasattr(a, "shape"):
        return False
    name = autoray.infer_backend(a)
    return _SHIM_OF.get(name, name) in SHIMS


def same_framework(a: Any, shim: ModuleType) -> bool:
    """Whether the array ``a`` belongs to ``shim``'s framework (NumPy and HIPS autograd count as one).

    Parameters
    ----------
    a : array
        The array to test.
    shim : module
        A shim, as returned by :func:`load`.

    Returns
    -------
    bool
        True if ``a`` is an array of the shim's framework.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.backends import load, same_framework
    >>> same_framework(np.zeros(3), load("numpy"))
    True
    """
    name = backend_name(a)
    return name == shim.NAME or {name, shim.NAME} == {"numpy", "autograd"}


def get_backend(*arrays: Any, argnames: Sequence[str] | None = None) -> ModuleType:
    """The shim module for the framework of ``arrays``, imported on first use.

    The shim holds the framework-specific pieces that the core calls (see
    :class:`diffopt.backends._contract.Shim`).

    Parameters
    ----------
    *arrays
        Arrays of one framework (Python scalars and ``None`` are ignored; no
        array at all means NumPy).
    argnames : sequence of str, optional
        Argument names, used in the error message.

    Returns
    -------
    module
        ``diffopt.backends.<name>`` for ``name = backend_name(*arrays)``.

    Raises
    ------
    TypeError
        If the arrays come from two different frameworks.

    Examples
    --------
    >>> import numpy as np
    >>> from diffopt.backends import get_backend
    >>> get_backend(np.zeros(3), 2.0).NAME
    'numpy'
    """
    return load(backend_name(*arrays, argnames=argnames))


def _load_imported() -> None:
    """Load now the shims of the frameworks already imported (imports no framework).

    ``torch.compile`` cannot trace the import of a shim (``importlib`` is a graph
    break, an error under ``fullgraph=True``): a shim loaded here is never imported
    inside a compiled region. A framework imported after diffopt gets its shim on
    its first array, as before. Called once by ``diffopt/__init__.py`` after every
    family is imported (their kernel declarations, against which a shim is checked).
    """
    import sys

    for name in SHIMS:
        if name in sys.modules and name not in _SHIMS:
            try:
                load(name)
            except Exception:  # noqa: BLE001  a broken framework install: report it on first use, as before
                pass
