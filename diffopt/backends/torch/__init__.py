"""PyTorch shim: ``torch.autograd.Function`` (with ``setup_context`` and a vmap rule)."""

import ast
import math
import numbers
import operator

import numpy as np
import torch

from diffopt.backends.torch import _isotonic_op, _projection, _samples, _sorting
from diffopt.backends._common import (
    SECOND_ORDER_MESSAGE, as_tuple, check_int_seed, fori_loop, numpy_seed, second_order_spec,
)
from diffopt.backends._rng import SeededRng, child_seed

NAME = "torch"
_SEED_HIGH = 2**62


# autoray's torch translations call e.g. ``torch.sum(input=x, dim=...)`` with the
# tensor as a keyword, which torch.compile (dynamo) rejects. diffopt's own positional
# equivalents, in its private op table (autoray itself is left as it is).
def _reduction(fn):
    def reduce(a, axis=None, keepdims=False, **kwargs):
        if axis is None:
            axis = tuple(range(a.ndim))
        return fn(a, axis, keepdim=keepdims, **kwargs)

    return reduce


def _prod(a, axis=None, keepdims=False):
    return torch.prod(a) if axis is None else torch.prod(a, axis, keepdim=keepdims)


def _transpose(a, axes=None):
    return a.permute(tuple(reversed(range(a.ndim))) if axes is None else tuple(axes))


def _take(a, indices, axis=None):
    """NumPy's ``take``: ``indices`` (a tensor, list or NumPy array of any shape) along ``axis``."""
    idx = torch.as_tensor(indices, device=a.device)
    if axis is None:
        return torch.take(a, idx)
    axis = axis % a.ndim
    out = torch.index_select(a, axis, idx.reshape(-1))
    return out.reshape(a.shape[:axis] + idx.shape + a.shape[axis + 1:])


OPS = {
    "sum": _reduction(torch.sum),
    "max": _reduction(torch.amax),
    "min": _reduction(torch.amin),
    "mean": _reduction(torch.mean),
    "prod": _prod,
    "clip": lambda a, a_min=None, a_max=None: torch.clamp(a, a_min, a_max),
    "concatenate": lambda arrays, axis=0: torch.cat(tuple(arrays), axis),
    "stack": lambda arrays, axis=0: torch.stack(tuple(arrays), axis),
    "expand_dims": lambda a, axis: torch.unsqueeze(a, axis),
    "take_along_axis": lambda arr, indices, axis=-1: torch.take_along_dim(arr, indices, axis),
    # The other names of the sorting network and the core's helpers (diffopt._ops): autoray
    # resolves a name lazily (an import inside a compiled region breaks torch.compile's graph).
    "abs": torch.abs,
    "exp": torch.exp,
    "log": torch.log,
    "log1p": torch.log1p,
    "arctan2": torch.atan2,
    "isfinite": torch.isfinite,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "where": torch.where,
    "reshape": torch.reshape,
    "transpose": _transpose,
    "take": _take,
    "squeeze": lambda a, axis=None: torch.squeeze(a) if axis is None else torch.squeeze(a, axis),
    "argmax": lambda a, axis=None: torch.argmax(a) if axis is None else torch.argmax(a, axis),
    "cumsum": lambda a, axis=None: torch.cumsum(a.reshape(-1) if axis is None else a, 0 if axis is None else axis),
    "tensordot": lambda a, b, axes=2: torch.tensordot(a, b, axes),
    "zeros_like": torch.zeros_like,
    "ones_like": torch.ones_like,
    "full_like": torch.full_like,
    "astype": lambda x, dtype_name: x.to(getattr(torch, dtype_name)),
    # names of the call pipeline (diffopt._call): resolved here, never imported while compiling
    "get_dtype_name": lambda x: str(x.dtype).removeprefix("torch."),
    "einsum": torch.einsum,
    "sqrt": torch.sqrt,
    "tile": torch.tile,
    "stop_gradient": lambda x: x.detach(),  # the core's names autoray lacks
    "erf": torch.erf,
}

# Kernels: faster paths of eager CPU torch, under the names their families declare
# (diffopt.sorting._kernels, diffopt._kernels); each returns None where it does not apply.
KERNELS = {
    "sorting_lse_network": _sorting.lse_network,
    "sorting_pull": _sorting.pull,
    "sorting_fused": _sorting.fused,
    "sorting_inverse_permutation": _projection.inverse_permutation,
    "sorting_sort_desc": _projection.sort_desc,
    "sorting_unsort": _projection.unsort,
    "sorting_isotonic": _projection.isotonic,
    "sorting_pav_device": _projection.cuda_pav,
    "sorting_pav_device_vjp": _projection.cuda_pav_vjp,
    "sorting_host_isotonic": _isotonic_op.host_isotonic,
    "sum_samples": _samples.sum_samples,
    "add_scaled": _samples.add_scaled,
    "stable_argsort": lambda x, axis: torch.argsort(x, dim=axis, stable=True),
}


def _aliases(r, tensors):
    return any(r is t for t in tensors)


class _Pair(torch.autograd.Function):
    """Generic Function: ``forward`` returns outputs then residuals."""

    @staticmethod
    def forward(fwd, bwd, meta, *arrays):
        out, res = fwd(*arrays)
        outs, meta.is_tuple = as_tuple(out)
        meta.nout = len(outs)
        # A residual that is also an input or an output must be a distinct tensor object:
        # residuals are marked non-differentiable, which must not leak onto those.
        res = tuple(r.view_as(r) if _aliases(r, arrays + outs) else r for r in res)
        return (*outs, *res)

    @staticmethod
    def setup_context(ctx, inputs, output):
        fwd, bwd, meta = inputs[:3]
        res = output[meta.nout:]
        ctx.mark_non_differentiable(*res)
        ctx.save_for_backward(*res)
        ctx.bwd, ctx.meta = bwd, meta
        ctx.n_inputs = len(inputs) - 3
        # Residual outputs never get a gradient: don't let torch allocate zeros for them.
        ctx.set_materialize_grads(False)
        ctx.out_specs = [(o.shape, o.dtype, o.device) for o in output[: meta.nout]]
        # The inputs that need a gradient, to tie the cotangents to under create_graph=True
        # (inputs, not outputs: no reference cycle through this node).
        ctx.tie = tuple(a for a in inputs[3:] if isinstance(a, torch.Tensor) and a.requires_grad)
        ctx.arrays = tuple(inputs[3:]) if meta.second is not None else None

    @staticmethod
    def backward(ctx, *grads):
        meta = ctx.meta
        gs = tuple(
            torch.zeros(shape, dtype=dtype, device=device) if g is None else g
            for g, (shape, dtype, device) in zip(grads[: meta.nout], ctx.out_specs)
        )
        if (meta.second is not None and meta.nout == 1 and torch.is_grad_enabled() and ctx.tie
                and not torch._C._are_functorch_transforms_active()):
            # create_graph=True: the backward is an op of (g, inputs), differentiable once more
            # (torch.func transforms keep the first-order backward below: no vmap rule for _Back)
            return (None, None, None, *_Back.run(meta.second, ctx.bwd, tuple(ctx.saved_tensors), gs[0], ctx.arrays))
        with torch.no_grad():
            cot = ctx.bwd(tuple(ctx.saved_tensors), gs if meta.is_tuple else gs[0])
        if len(cot) != ctx.n_inputs:
            raise ValueError(f"backward returned {len(cot)} cotangents for {ctx.n_inputs} inputs")
        if torch.is_grad_enabled() and ctx.tie:  # create_graph=True: differentiating cot again raises
            cot = tuple(None if c is None else _FirstOrderOnly.apply(c, *ctx.tie) for c in cot)
        return (None, None, None, *cot)

    @staticmethod
    def vmap(info, in_dims, fwd, bwd, meta, *arrays):
        dims = in_dims[3:]
        rows = []
        for b in range(info.batch_size):
            sl = [a if d is None else a.select(d, b) for a, d in zip(arrays, dims)]
            rows.append(_Pair.apply(fwd, bwd, meta, *sl))
        outs = tuple(torch.stack(col) for col in zip(*rows))
        return outs, (0,) * len(outs)


class _Back(torch.autograd.Function):
    """A hand-written backward ``bwd(res, g)`` as an op of ``(g, *arrays)``.

    Its own backward is the :class:`~diffopt.backends.SecondOrder` pair: the
    cotangent ``u`` of the returned cotangents gives ``spec.jvp(arrays, res, u)``
    for ``g`` and ``spec.hvp(arrays, res, g, u)`` for the arrays.
    """

    @staticmethod
    def run(spec, bwd, res, g, arrays):
        mask = []
        outs = iter(_Back.apply(spec, bwd, res, mask, g, *arrays))
        return tuple(next(outs) if m else None for m in mask)

    @staticmethod
    def forward(spec, bwd, res, mask, g, *arrays):
        cot = bwd(res, g)
        mask.extend(c is not None for c in cot)
        return tuple(c for c in cot if c is not None)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.spec, ctx.bwd, ctx.res, ctx.mask = inputs[:4]
        ctx.save_for_backward(*inputs[4:])
        ctx.tie = tuple(a for a in inputs[4:] if isinstance(a, torch.Tensor) and a.requires_grad)

    @staticmethod
    def backward(ctx, *us):
        g, *arrays = ctx.saved_tensors
        us = iter(us)
        ts = tuple(next(us) if m else None for m in ctx.mask)
        with torch.no_grad():
            d_g = ctx.spec.jvp(arrays, ctx.res, ts)
            d_arrays = tuple(ctx.spec.hvp(arrays, ctx.res, g, ts))
        grads = (d_g,) + d_arrays
        if torch.is_grad_enabled() and ctx.tie:  # a third derivative raises
            grads = tuple(None if c is None else _FirstOrderOnly.apply(c, *ctx.tie) for c in grads)
        return (None, None, None, None, *grads)


class _FirstOrderOnly(torch.autograd.Function):
    """``c`` (a cotangent), tied to the inputs of the op it came from; its backward raises.

    A derivative of a hand-written gradient would miss how the saved residuals
    depend on the inputs, so it is an error rather than a silently wrong number.
    """

    generate_vmap_rule = True  # torch.func.jacrev vmaps the backward that applies this

    @staticmethod
    def forward(c, *inputs):
        return c.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError(SECOND_ORDER_MESSAGE.format(framework="torch", hint="."))


class _Meta:
    """Output structure, filled by ``forward`` (a plain object: torch.func's pytree
    handling copies dicts, so a dict would not carry the update back)."""

    nout = None
    is_tuple = False
    second = None


def _records_gradient(arrays):
    """Whether autograd (or a ``torch.func`` transform) may differentiate through ``arrays``."""
    if torch._C._are_functorch_transforms_active():
        return True
    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in arrays)


def custom_vjp(fwd, bwd, jit=False, second_order=False):
    """See :mod:`diffopt.backends`. Residuals must be tensors; ``jit`` is ignored.

    Under ``create_graph=True`` the cotangents are tied to the inputs by an op
    whose backward raises, unless ``second_order`` is a
    :class:`~diffopt.backends.SecondOrder`: the backward then runs as an op
    (:class:`_Back`) whose own backward is that estimate.
    """
    meta = _Meta()
    meta.second = second_order_spec(second_order)

    def f(*arrays):
        if torch.compiler.is_compiling() and not _records_gradient(arrays):
            # Nothing to differentiate: the forward alone. (Dynamo inlines a Function's
            # forward without a gradient as if it took a ctx first: its args would shift.)
            return fwd(*arrays)[0]
        flat = _Pair.apply(fwd, bwd, meta, *arrays)
        outs = flat[: meta.nout]
        return outs if meta.is_tuple else outs[0]

    return f


@torch.library.custom_op("diffopt::seeded_draw", mutates_args=())
def _seeded_draw(
    kind: str, seed: int, shape: list[int], dtype: torch.dtype, device: torch.device, alpha: float = 1.0,
    before: str = "()",
) -> torch.Tensor:
    """A ``normal``/``uniform``/``gamma`` draw of a :class:`TorchRng` seeded with ``seed``, after the
    draws ``before`` (the repr of their ``(kind, shape, dtype name, alpha)``), as one op:
    ``torch.compile`` cannot create a ``torch.Generator`` inside a graph, an op can (same numbers:
    the same calls on a generator in the same state as :class:`TorchRng`'s eager draws)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    for k, s, d, a in ast.literal_eval(before):
        _draw(k, s, getattr(torch, d), device, gen, a)
    return _draw(kind, tuple(shape), dtype, device, gen, alpha)


@_seeded_draw.register_fake
def _(kind, seed, shape, dtype, device, alpha=1.0, before="()"):
    return torch.empty(tuple(shape), dtype=dtype, device=device)


def _draw(kind, shape, dtype, device, gen, alpha):
    """One draw from ``gen``: standard normal, uniform [0, 1) or standard Gamma(``alpha``)."""
    if kind == "gamma":  # torch's own sampler, on the device (no host round trip)
        conc = torch.tensor(alpha, dtype=dtype, device=device).expand(shape)
        return torch._standard_gamma(conc, generator=gen)
    return (torch.randn if kind == "normal" else torch.rand)(shape, generator=gen, device=device, dtype=dtype)


# a child seed is a function of Python ints: computed while tracing, a constant of the graph
_constant_child_seed = torch.compiler.assume_constant_result(child_seed)


class TorchRng(SeededRng):
    """Stream backed by a ``torch.Generator`` on ``like``'s device, seeded with ``key``.

    Under ``torch.compile`` each ``normal``/``uniform``/``gamma`` draw of a stream is the op
    ``diffopt::seeded_draw``, which makes the generator inside and replays the stream's earlier
    draws: the same numbers as eager (the perturbed estimators draw once per chunk, from a child
    stream: no replay).
    """

    @property
    def device(self):
        return self.like.device

    def fold(self, index):
        seed = _constant_child_seed(self.key, index) if torch.compiler.is_compiling() else child_seed(self.key, index)
        return type(self)(seed, self.like)

    def _draw(self, kind, shape, dtype, alpha=1.0):
        """A draw from this stream's generator; while compiling, the op ``diffopt::seeded_draw``
        replaying this stream's earlier draws (unless an eager draw made the generator)."""
        if self._gen is None and torch.compiler.is_compiling():
            before = getattr(self, "_drawn", ())
            self._drawn = before + ((kind, tuple(shape), dtype, float(alpha)),)
            return _seeded_draw(kind, self.key, list(shape), getattr(torch, dtype), self.device, alpha, repr(before))
        return _draw(kind, shape, getattr(torch, dtype), self.device, self.generator, alpha)

    def _generator(self):
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.key)
        return gen

    def _clip(self, u, lo, hi):
        return torch.clamp(u, lo, hi)

    def _normal(self, shape, dtype):
        return self._draw("normal", shape, dtype)

    def _uniform(self, shape, dtype):
        return self._draw("uniform", shape, dtype)

    def _gamma(self, shape, alpha, dtype):
        return self._draw("gamma", shape, dtype, alpha)


def make_rng(rng, like):
    """See :mod:`diffopt.backends`; ``None`` draws a seed from torch's global generator."""
    if rng is None:
        seed = int(torch.randint(_SEED_HIGH, (1,)).item())
    elif isinstance(rng, torch.Generator):
        seed = int(torch.randint(_SEED_HIGH, (1,), generator=rng, device=rng.device).item())
    elif isinstance(rng, (numbers.Integral, torch.SymInt)):
        # operator.index: a seed that torch.compile made dynamic (it changed between calls) is
        # specialised, a constant of the graph (one graph per seed, as with dynamic=False)
        seed = check_int_seed(operator.index(rng))
    else:
        seed = numpy_seed(rng, NAME)
    return TorchRng(seed, like)


def map_leading(fn, leaves, size):
    """``fn`` on each leading-axis slice of ``leaves``, results stacked: a Python loop."""
    rows = [fn(tuple(leaf[i] for leaf in leaves)) for i in range(size)]
    return tuple(torch.stack(col, 0) for col in zip(*rows))


def is_symbolic(x):
    """Whether ``x`` is being traced by ``torch.compile``."""
    return bool(torch.compiler.is_compiling())


def on_device(x):
    """Whether ``x`` is off the host (CUDA, MPS, meta...): reading a value would synchronise."""
    return x.device.type != "cpu"


def to_numpy(x):
    """A NumPy copy of ``x`` (bfloat16 goes through float32)."""
    x = x.detach()
    if x.dtype == torch.bfloat16:
        x = x.float()
    return x.cpu().numpy()


@torch.compiler.disable
def host_call(fn, x, out_shape, out_dtype):
    """Run ``fn`` on a host copy of ``x``; the result comes back on ``x``'s device.

    Never traced by ``torch.compile`` (a graph break): dynamo must not step into
    host code (tracing SciPy's MILP, for one, exhausts its recursion limit).
    """
    out = np.asarray(fn(to_numpy(x)))
    return torch.as_tensor(out).to(device=x.device, dtype=getattr(torch, out_dtype))


def from_numpy(a, like):
    """``a`` (NumPy) as a tensor on ``like``'s device."""
    return torch.as_tensor(a, device=like.device)


# -- host solvers under torch.compile ------------------------------------------------------------
#: The host solver calls met while compiling, by token: (solver, args, sorted kwargs); kept for the
#: life of the process (one entry per compiled call site, as the graphs that use them).
_HOST_SOLVES = []


def _remember(solver, args, kwargs):
    """The token of ``(solver, args, kwargs)`` in :data:`_HOST_SOLVES` (added if new)."""
    entry = (solver, tuple(args), tuple(sorted(kwargs.items())))
    flat = (solver, *entry[1], *entry[2])
    for token, seen in enumerate(_HOST_SOLVES):
        other = (seen[0], *seen[1], *seen[2])
        if len(other) == len(flat) and all(map(_same, other, flat)):
            return token
    _HOST_SOLVES.append(entry)
    return len(_HOST_SOLVES) - 1


def _same(a, b):
    """``a`` is ``b``, or both are equal Python scalars/strings (never an array comparison)."""
    scalar = (bool, int, float, complex, str, bytes, type(None))
    return a is b or (type(a) is type(b) and isinstance(a, scalar) and a == b)


# evaluated while tracing, on the real objects: the token is a constant of the graph
_constant_token = torch.compiler.assume_constant_result(_remember)


@torch.library.custom_op("diffopt::host_solve", mutates_args=())
def _host_solve(token: int, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The eager call of the host solver ``token`` on ``x``: the same numbers as eager."""
    solver, args, kwargs = _HOST_SOLVES[token]
    return solver(x, *args, **dict(kwargs))


@_host_solve.register_fake
def _(token, x, dtype):
    solver, args, kwargs = _HOST_SOLVES[token]
    shape = solver.traced_shape(x, args, dict(kwargs))
    return x.new_empty(shape, dtype=dtype)


def compiled_host_solve(solver, x, args, kwargs, out_dtype):
    """``solver(x, *args, **kwargs)`` (a :class:`diffopt.HostSolver`) as the op ``diffopt::host_solve``.

    Used by :class:`diffopt.HostSolver` while ``torch.compile`` traces: the host code runs in the
    op (eager) and in its fake (the output shape, declared or probed once), never under dynamo, so
    ``fullgraph=True`` holds. Extra arguments are host values, constants of the graph.
    """
    # detached: a solver result carries no gradient (as eager's host copy)
    return _host_solve(_constant_token(solver, args, kwargs), x.detach(), getattr(torch, out_dtype))


# -- a Python-held state under torch.compile (AdaptiveTargetDistribution) -------------------------
#: The holders met while compiling, by token (kept for the life of the process, as the graphs).
_HOLDERS = []


def _holder_token(holder):
    """The token of ``holder`` in :data:`_HOLDERS` (by identity; added if new)."""
    for token, seen in enumerate(_HOLDERS):
        if seen is holder:
            return token
    _HOLDERS.append(holder)
    return len(_HOLDERS) - 1


# evaluated while tracing, on the real object: the token is a constant of the graph
_constant_holder = torch.compiler.assume_constant_result(_holder_token)


@torch.library.custom_op("diffopt::held_state", mutates_args=())
def _held_state(token: int, like: torch.Tensor) -> torch.Tensor:
    """The holder's ``state`` when the op runs (float64, on ``like``'s device)."""
    return torch.tensor(_HOLDERS[token].state, dtype=torch.float64, device=like.device)


@_held_state.register_fake
def _(token, like):
    return like.new_empty((3,), dtype=torch.float64)


@torch.library.custom_op("diffopt::commit_held_state", mutates_args=())
def _commit_held_state(token: int, state: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``holder.commit(state)`` when the op runs; returns a copy of ``out`` (which orders the
    commit in the graph: the result is used, so the op is never dropped)."""
    _HOLDERS[token].commit(state.detach().cpu().numpy())
    return out.clone()


@_commit_held_state.register_fake
def _(token, state, out):
    return torch.empty_like(out)


def held_state(holder, like):
    """See :mod:`diffopt.backends`: the op ``diffopt::held_state``, read when the graph runs."""
    return _held_state(_constant_holder(holder), like.detach())


def commit_held_state(holder, state, out):
    """See :mod:`diffopt.backends`: the op ``diffopt::commit_held_state``, written when the graph runs."""
    return _commit_held_state(_constant_holder(holder), state.detach(), out)
