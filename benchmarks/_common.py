"""Small helpers shared by the suites: lazy imports that turn into row reasons."""

import importlib

import numpy as np

from benchmarks._harness import Unavailable

GB = 2**30


def need(module, what=None):
    """Import ``module`` or raise :class:`Unavailable` naming it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"{what or module} not installed ({exc.__class__.__name__}: {exc})") from None


def need_attr(module, name, what=None):
    """``module.name`` or :class:`Unavailable` (for diffopt pieces still being written)."""
    mod = need(module, what)
    try:
        return getattr(mod, name)
    except AttributeError:
        raise Unavailable(f"{module}.{name} not available") from None


def jax_modules():
    jax = need("jax")
    jax.config.update("jax_enable_x64", False)
    import jax.numpy as jnp

    return jax, jnp


def aot(jitted, *args):
    """Compile ``jitted`` for ``args`` ahead of time (compilation is set-up, not step time)."""
    return jitted.lower(*args).compile()


def rand(shape, seed, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def too_big(estimate_bytes, limit_gb=8):
    """A skip reason if a peer would need more than ``limit_gb``, else ``None``."""
    if estimate_bytes > limit_gb * GB:
        return f"skipped: would need about {estimate_bytes / GB:.0f} GB (> {limit_gb} GB)"
    return None


class Counter:
    """Counts solver invocations and the instances they solved."""

    def __init__(self):
        self.calls = 0
        self.instances = 0
        self.active = False

    def hit(self, instances):
        if self.active:
            self.calls += 1
            self.instances += int(instances)

    def measure(self, step):
        """Run ``step`` once while counting; return the counts."""
        self.calls = self.instances = 0
        self.active = True
        try:
            step()
        finally:
            self.active = False
        return {"solver_calls_per_step": self.calls, "instances_solved_per_step": self.instances}
