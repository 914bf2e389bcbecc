"""The demo's checks: each runs one showcase on one framework and compares it with a reference.

Every check function takes the backend name and a :class:`Settings` and
returns a :class:`Result`: table rows ``(backend, check, value, passed)``
plus the arrays the figures draw. References are closed forms
(softmax(θ/σ) for the Gumbel-perturbed argmax, 1 − 2 exp(−Σ e^{θ/σ}) for the
Gumbel-perturbed OR), the numbers printed in the ``differentiable_sorting``
README, a brute-force search (the SPO+ loss and regret over every path of
the demo graph), or a threshold on a learning curve. Monte-Carlo tolerances are
:func:`z_score` standard errors, the standard error bounded from the sample
count.

A check that needs an optional package which is not installed (autograd for
NumPy gradients, SciPy for the grid shortest path, ...) gives a *skipped* row
naming the package and the ``pip install "pydiffopt[...]"`` line that adds it,
never a failure.
"""

import importlib.util
import math
from dataclasses import dataclass, field

import autoray as ar
import numpy as np

import diffopt
from diffopt._demo import frameworks as fw
from diffopt._demo import graph, terrain

__all__ = ["Row", "Result", "Settings", "CHECKS", "NEEDS", "TITLES", "EXTRAS", "run_check", "skipped", "install_hint",
           "check_argmax", "check_or", "check_shortest_path", "check_imle", "check_sorting", "check_dfl",
           "perturbed_or_closed_form", "hard_or", "spo_plus_brute_force", "spo_fit"]

#: Chance that a correct estimator fails a Monte-Carlo comparison.
FALSE_ALARM = 1e-3


def z_score(m):
    """Standard errors allowed when ``m`` entries are compared at once.

    A Gaussian bound: P(any of m |errors| > z·SE) ≤ 2m·exp(−z²/2) = :data:`FALSE_ALARM`.

    Parameters
    ----------
    m : int
        Number of compared entries.

    Returns
    -------
    float
    """
    return math.sqrt(2.0 * math.log(2.0 * m / FALSE_ALARM))


@dataclass
class Row:
    """One line of the demo table.

    ``skip`` is empty for a check that ran; for a skipped one it is the extra of
    ``pydiffopt`` that installs what the check needs (then ``passed`` is False).
    """

    backend: str
    check: str
    value: str
    passed: bool
    skip: str = ""

    @property
    def status(self):
        """``'PASS'``, ``'FAIL'`` or ``'SKIP'``."""
        return "SKIP" if self.skip else ("PASS" if self.passed else "FAIL")


#: Optional module → the extra of ``pydiffopt`` that installs it.
EXTRAS = {"autograd": "autograd", "scipy": "scipy", "matplotlib": "examples", "tqdm": "examples",
          "torch": "torch", "jax": "jax", "jaxlib": "jax", "tensorflow": "tensorflow"}


def install_hint(extras):
    """The pip line that installs ``extras`` (names of ``pydiffopt``'s extras).

    Examples
    --------
    >>> from diffopt._demo.checks import install_hint
    >>> install_hint(["scipy", "autograd", "scipy"])
    'pip install "pydiffopt[autograd,scipy]"'
    """
    return f'pip install "pydiffopt[{",".join(sorted(set(extras)))}]"'


def skipped(backend, check, module):
    """The row of a check skipped because the optional ``module`` is not installed."""
    extra = EXTRAS[module]
    return Row(backend, check, f"skipped: needs {module} ({install_hint([extra])})", False, skip=extra)


@dataclass
class Result:
    """Rows of one check and the data its figure panel draws."""

    rows: list
    data: dict = field(default_factory=dict)


@dataclass
class Settings:
    """Sizes of the demo; :meth:`quick` is the tiny version used by the tests.

    Attributes
    ----------
    argmax_samples, or_samples, path_samples : int
        Monte-Carlo samples of the perturbed argmax, OR and shortest path.
    path_steps : int
        Gradient-ascent steps on the corner edge costs.
    imle_steps : int
        Gradient steps of the I-MLE cost-map fit.
    dfl_steps : int
        Adam steps of the SPO+ training.
    seed : int
    progress : callable or None
        Wraps step ranges (``tqdm``), or ``None``.
    """

    argmax_samples: int = 100_000
    or_samples: int = 20_000
    path_samples: int = 20_000
    path_steps: int = 30
    imle_steps: int = 40
    dfl_steps: int = 40
    seed: int = 0
    progress: object = None

    @classmethod
    def quick(cls, **kw):
        """Small sample counts: every check still has to pass."""
        return cls(argmax_samples=20_000, or_samples=4_000, path_samples=4_000, **kw)


def _fmt_err(err, tol):
    return f"max|err| {err:.2g} (tol {tol:.2g})"


def _compare(backend, check, got, want, tol):
    """A row comparing arrays elementwise with an absolute tolerance."""
    err = float(np.max(np.abs(np.asarray(got, dtype=np.float64) - np.asarray(want, dtype=np.float64))))
    return Row(backend, check, _fmt_err(err, tol), bool(err <= tol))


def _skip_grad(backend, check):
    return skipped(backend, check, "autograd")


# ------------------------------------------------------------ perturbed argmax

ARGMAX_THETA = np.array([[-0.6, 1.9, -0.2, 1.1, -1.0], [-0.6, 1.0, -0.2, 1.8, -1.0]])
ARGMAX_SIGMA = 0.5


def _softmax(theta, sigma):
    e = np.exp((theta - theta.max(-1, keepdims=True)) / sigma)
    return e / e.sum(-1, keepdims=True)


def _softmax_sq_grad(theta, sigma):
    """Gradient of ``Σ softmax(θ/σ)²`` per row: Jᵀ(2p), J = (diag p − ppᵀ)/σ."""
    p = _softmax(theta, sigma)
    g = 2.0 * p
    return p * (g - np.sum(g * p, axis=-1, keepdims=True)) / sigma


def check_argmax(backend, settings):
    """Gumbel-perturbed argmax = softmax(θ/σ): values and gradients of Σ y².

    Value tolerance: z·max √(p(1−p)/N). Gradient tolerance: the estimator
    averages ⟨g, y_i⟩ s_i / σ with |⟨g, y_i⟩| ≤ max|g| = 2 and E s² = 1 for
    Gumbel scores, hence z·2/(σ√N); z from :func:`z_score`.
    """
    n = settings.argmax_samples
    pert = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=n, sigma=ARGMAX_SIGMA, noise="gumbel")
    p = _softmax(ARGMAX_THETA, ARGMAX_SIGMA)
    y = fw.to_numpy(pert(fw.to_backend(ARGMAX_THETA, backend), rng=settings.seed))
    z = z_score(p.size)
    tol = z * float(np.max(np.sqrt(p * (1 - p) / n)))
    rows = [_compare(backend, "perturbed argmax = softmax(θ/σ)", y, p, tol)]
    data = {"perturbed": y, "softmax": p}
    check = "∇ perturbed argmax = ∇ softmax"
    if not fw.has_grad(backend):
        return Result(rows + [_skip_grad(backend, check)], data)
    g = fw.grad(lambda t: ar.do("sum", pert(t, rng=settings.seed) ** 2), ARGMAX_THETA, backend)
    g_tol = z * 2.0 / (ARGMAX_SIGMA * math.sqrt(n))
    rows.append(_compare(backend, check, g, _softmax_sq_grad(ARGMAX_THETA, ARGMAX_SIGMA), g_tol))
    return Result(rows, dict(data, grad=g))


# ---------------------------------------------------------------- perturbed OR

OR_SIGMA = 0.5
OR_GRID = 11


def hard_or(x):
    """OR of the signs of ``x`` along the last axis, as ±1 (any framework).

    Parameters
    ----------
    x : array, shape [..., d]

    Returns
    -------
    array, shape [...]
        1 where some entry is positive, −1 elsewhere.
    """
    positive = ar.astype(x > 0, ar.get_dtype_name(x))
    return 2.0 * ar.do("max", positive, axis=-1) - 1.0


def perturbed_or_closed_form(theta, sigma):
    """Value and gradient of the Gumbel-perturbed OR.

    P(all θ_i + σZ_i ≤ 0) = Π exp(−e^{θ_i/σ}) = exp(−S), S = Σ e^{θ_i/σ}, so the
    value is 2(1 − e^{−S}) − 1 and its gradient 2 e^{−S} e^{θ/σ} / σ.

    Parameters
    ----------
    theta : numpy.ndarray, shape [..., d]
    sigma : float

    Returns
    -------
    value : numpy.ndarray, shape [...]
    grad : numpy.ndarray, shape [..., d]
    """
    e = np.exp(theta / sigma)
    s = e.sum(-1)
    value = 2.0 * (1.0 - np.exp(-s)) - 1.0
    return value, 2.0 * np.exp(-s)[..., None] * e / sigma


def or_grid(size=OR_GRID):
    """Points ``[size², 2]`` of a regular grid on [−1, 1]²."""
    axis = np.linspace(-1.0, 1.0, size)
    a, b = np.meshgrid(axis, axis, indexing="xy")
    return np.stack([a.ravel(), b.ravel()], axis=-1)


def perturbed_or(num_samples, sigma=OR_SIGMA):
    """The Gumbel-perturbed OR, batched over points ``[B, 2]``."""
    return diffopt.perturbed(hard_or, num_samples=num_samples, sigma=sigma, noise="gumbel")


def check_or(backend, settings):
    """Gumbel-perturbed OR on a grid of [−1, 1]²: value and gradient vs the closed form.

    Tolerances: the output is ±1, so its mean has standard error ≤ 1/√N; the
    gradient averages ±s_i/σ with E s² = 1, standard error ≤ 1/(σ√N); z from
    :func:`z_score`.
    """
    n = settings.or_samples
    theta = or_grid()
    pert = perturbed_or(n)
    want, want_grad = perturbed_or_closed_form(theta, OR_SIGMA)
    got = fw.to_numpy(pert(fw.to_backend(theta, backend), rng=settings.seed))
    z = z_score(theta.size)
    rows = [_compare(backend, "perturbed OR = 1 − 2exp(−Σe^{θ/σ})", got, want, z / math.sqrt(n))]
    data = {"theta": theta, "value": got, "closed_form": want}
    check = "∇ perturbed OR = closed form"
    if not fw.has_grad(backend):
        return Result(rows + [_skip_grad(backend, check)], data)
    g = fw.grad(lambda t: ar.do("sum", pert(t, rng=settings.seed + 1)), theta, backend)
    rows.append(_compare(backend, check, g, want_grad, z / (OR_SIGMA * math.sqrt(n))))
    return Result(rows, dict(data, grad=g, closed_form_grad=want_grad))


# -------------------------------------------------------- perturbed shortest path

PATH_SIGMA = 0.05
PATH_LR = 0.002
#: The 6→8 weight must end above this after the ascent.
PATH_TARGET = 0.95


def shortest_path_ascent(backend, num_samples, steps, seed=0, progress=None):
    """Gradient ascent on the four corner costs of :mod:`graph` to lift the 6→8 weight.

    Parameters
    ----------
    backend : str
    num_samples, steps, seed : int
    progress : callable, optional

    Returns
    -------
    dict
        ``history`` (6→8 weight per step), ``first_grad``, ``corner`` (final
        costs), ``paths_before``/``paths_after`` (perturbed edge weights),
        ``final_weight``.
    """
    pert = diffopt.perturbed(graph.dag_shortest_path, num_samples=num_samples, sigma=PATH_SIGMA, batched=False)
    fixed = fw.to_backend(graph.FIXED_COSTS, backend)
    weight_fn = graph.corner_weight_fn(pert, fixed)

    def evaluate(corner, step):
        return weight_fn(fw.to_backend(corner, backend), rng=seed + step)

    def weight_and_grad(corner, step):
        value, (g,) = fw.value_and_grad(lambda c: weight_fn(c, rng=seed + step)[0], [corner], backend)
        return value, g

    before = fw.to_numpy(evaluate(graph.INITIAL_CORNER_COSTS, 10_000)[1])
    corner, history, first_grad = graph.gradient_ascent(weight_and_grad, steps, PATH_LR, progress)
    after = fw.to_numpy(evaluate(corner, 10_001)[1])
    return {"history": np.array(history), "first_grad": first_grad, "corner": corner,
            "paths_before": before, "paths_after": after, "final_weight": float(after[graph.EDGE_6_8])}


def check_shortest_path(backend, settings):
    """Perturbed 9-node shortest path: gradient signs at the start, 6→8 weight after the ascent.

    Lowering the 6→8 cost or raising the three detour costs makes the direct
    edge more likely, so the gradient must be (−, +, +, +); after
    ``path_steps`` steps the weight must exceed :data:`PATH_TARGET` (minus
    four standard errors of a frequency, 2/√N).
    """
    if not fw.has_grad(backend):
        return Result([_skip_grad(backend, "shortest path: 6→8 weight ascent")])
    out = shortest_path_ascent(backend, settings.path_samples, settings.path_steps, settings.seed,
                               settings.progress)
    signs = np.sign(out["first_grad"])
    rows = [Row(backend, "shortest path: ∇ signs = (−,+,+,+)", " ".join(f"{g:+.2f}" for g in out["first_grad"]),
                bool(np.array_equal(signs, [-1, 1, 1, 1])))]
    threshold = PATH_TARGET - 2.0 / math.sqrt(settings.path_samples)
    start, final = out["history"][0], out["final_weight"]
    rows.append(Row(backend, f"shortest path: 6→8 weight, {settings.path_steps} steps",
                    f"{start:.3f} → {final:.3f} (> {threshold:.3f})", bool(final > threshold and start < 0.5)))
    return Result(rows, out)


# ------------------------------------------------------------ I-MLE on a grid

IMLE_SIZE = 8
IMLE_SAMPLES = 10
IMLE_LR = 0.5


def imle_fit(backend, steps, seed=0, progress=None):
    """Fit an 8×8 cost map with I-MLE so that its shortest path matches a target path.

    The target is the shortest path of a synthetic terrain map; the model is
    the cost map itself, started uniform; the loss is the Hamming distance of
    the sampled paths to the target (averaged over samples).

    Returns
    -------
    dict
        ``losses`` per step, ``theta`` (the learned map), ``target``,
        ``costs`` (the terrain's true costs), ``map_path`` (the shortest path of
        the learned map, no noise).
    """
    from diffopt.imle import SumOfGammaNoiseDistribution, TargetDistribution, imle

    data = terrain.Dataset(1, size=IMLE_SIZE, seed=seed)
    solver = imle(diffopt.shortest_path, target_distribution=TargetDistribution(alpha=1.0, beta=2.0),
                  noise_distribution=SumOfGammaNoiseDistribution(k=IMLE_SIZE, nb_iterations=10),
                  nb_samples=IMLE_SAMPLES, minimize=True)
    target = fw.to_backend(np.repeat(data.paths, IMLE_SAMPLES, axis=0), backend)

    def loss(theta, step):
        z = solver(theta, rng=seed + step)
        return ar.do("sum", z * (1.0 - target) + (1.0 - z) * target) / IMLE_SAMPLES

    theta, losses = np.ones((1, IMLE_SIZE, IMLE_SIZE), np.float32), []
    for step in (progress or iter)(range(steps)):
        value, (g,) = fw.value_and_grad(lambda t: loss(t, step), [theta], backend)
        losses.append(value)
        theta = theta - IMLE_LR * g
    map_path = diffopt.solvers.grid_shortest_path(theta[0])
    return {"losses": np.array(losses), "theta": theta[0], "target": data.paths[0], "costs": data.costs[0],
            "map_path": map_path}


def check_imle(backend, settings):
    """I-MLE learns a target path: the Hamming loss of the last 5 steps ≤ 1/4 of the first."""
    check = "I-MLE: Hamming loss to target path"
    if not fw.has_grad(backend):
        return Result([_skip_grad(backend, check)])
    out = imle_fit(backend, settings.imle_steps, settings.seed, settings.progress)
    first, last = out["losses"][0], float(np.mean(out["losses"][-5:]))
    return Result([Row(backend, check, f"{first:.1f} → {last:.1f} (≤ {first / 4:.1f})", bool(last <= first / 4))],
                  out)


# ---------------------------------------------------------------- sorting

#: ``differentiable_sorting`` README: the vector, its soft sort, smoothed (0.05) sort, ∂sort[0]/∂x.
SORT_X = np.array([5.0, -1.0, 9.5, 13.2, 16.2, 20.5, 42.0, 18.0])
SORT_README = np.array([-1.007, 4.996, 9.439, 13.212, 15.948, 18.21, 20.602, 42.0])
SORT_SMOOTH_README = np.array([1.242, 5.333, 9.607, 12.446, 16.845, 18.995, 20.932, 37.999])
SORT_GRAD_README = np.array([7.3447e-03, 9.9257e-01, 8.1266e-05, 3.9275e-06, 3.4427e-08, 1.4447e-09, 0.0, 9.5952e-09])
#: ``differentiable_sorting`` README: the vector to rank and its soft ranks at sigma=0.25.
RANK_X = np.array([1.0, 2.0, 3.0, 4.0, 8.0, 7.0, 6.0, 4.0])
RANK_README = np.array([0.13, 1.09, 2.0, 3.11, 6.99, 6.0, 5.0, 3.11])
#: Scale of the large-value soft sort (float32 ``exp`` overflows above ~88).
BIG_SCALE = 1000.0


def check_sorting(backend, settings):
    """Bitonic soft sort and ranks of the README vectors, and a large-scale float32 sort.

    Tolerances: half a unit of the README's last printed digit plus float32 rounding.
    """
    from diffopt import sorting

    mats = sorting.bitonic_matrices(8)
    x, xr = fw.to_backend(SORT_X, backend), fw.to_backend(RANK_X, backend)
    soft = fw.to_numpy(sorting.diff_sort(mats, x))
    smooth = fw.to_numpy(sorting.diff_sort(mats, x, lambda a, b: sorting.softmax_smooth(a, b, 0.05)))
    ranks = fw.to_numpy(sorting.diff_argsort(mats, xr, sigma=0.25))
    rows = [
        _compare(backend, "diff_sort = README", soft, SORT_README, 1e-3),
        _compare(backend, "diff_sort smooth=0.05 = README", smooth, SORT_SMOOTH_README, 1e-3),
        _compare(backend, "diff_argsort σ=0.25 = README", ranks, RANK_README, 6e-3),
    ]
    big = fw.to_numpy(sorting.soft_sort(fw.to_backend(SORT_X * BIG_SCALE, backend), temperature=BIG_SCALE))
    rel = float(np.max(np.abs(big / BIG_SCALE - SORT_README)))
    finite = bool(np.all(np.isfinite(big)) and np.all(np.diff(big) >= 0))
    rows.append(Row(backend, "soft_sort(1000x, T=1000) float32 = 1000·README",
                    _fmt_err(rel, 1e-3) + ("" if finite else ", NOT finite/monotone"), finite and rel <= 1e-3))
    data = {"x": SORT_X, "soft": soft, "smooth": smooth, "ranks": ranks}
    check = "∂diff_sort[0]/∂x = README"
    if not fw.has_grad(backend):
        return Result(rows + [_skip_grad(backend, check)], data)
    g = fw.grad(lambda v: sorting.diff_sort(mats, v)[0], SORT_X, backend)
    rows.append(_compare(backend, check, g, SORT_GRAD_README, 1e-4))
    return Result(rows, dict(data, grad=g))


# ------------------------------------------------- decision-focused learning (SPO+)

#: Features of the synthetic shortest-path data (a constant feature is appended).
DFL_FEATURES = 5
DFL_TRAIN, DFL_TEST = 100, 200
DFL_LR = 0.05
#: The test regret after training must be below this and below a third of the starting one.
DFL_TARGET = 0.1


def dfl_data(n, seed=0):
    """Features ``x [n, 6]`` and edge costs ``c [n, 14]`` of the demo graph (float32).

    The costs are a quadratic function of the features times multiplicative noise
    (a fixed random 0/1 map ``[5, 14]``, as in PyEPO's shortest-path data), so a
    linear model can rank the paths well but not fit the costs exactly.
    """
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(1234).binomial(1, 0.5, (DFL_FEATURES, len(graph.EDGES)))
    x = rng.normal(size=(n, DFL_FEATURES))
    c = ((x @ mix) / math.sqrt(DFL_FEATURES) + 3.0) ** 2 / 3.5**2 + 0.5
    c = c * rng.uniform(0.8, 1.2, c.shape)
    return np.concatenate([x, np.ones((n, 1))], axis=1).astype(np.float32), c.astype(np.float32)


def spo_plus_brute_force(theta, c):
    """SPO+ loss, its subgradient and the regret of a minimisation over every 0→8 path.

    ``ℓ = −min_w⟨2θ − c, w⟩ + 2⟨θ, w*⟩ − z*`` with ``w* = argmin_w⟨c, w⟩``, ``z* = ⟨c, w*⟩``;
    the subgradient is ``2(w* − w(2θ − c))`` and the regret ``⟨c, w(θ)⟩ − z*``, each min and
    argmin taken over the rows of :func:`graph.all_paths`.

    Returns
    -------
    loss, regret : numpy.ndarray, shape [B]
    grad : numpy.ndarray, shape [B, 14]
    """
    paths = graph.all_paths()
    theta, c = np.asarray(theta, np.float64), np.asarray(c, np.float64)

    def best(costs):
        return paths[np.argmin(costs @ paths.T, axis=1)]

    w_star, w_spo, w_hat = best(c), best(2 * theta - c), best(theta)
    z = np.sum(c * w_star, -1)
    loss = -np.sum((2 * theta - c) * w_spo, -1) + 2 * np.sum(theta * w_star, -1) - z
    return loss, 2 * (w_star - w_spo), np.sum(c * w_hat, -1) - z


def spo_fit(backend, steps, seed=0, progress=None):
    """Train a linear model ``θ̂ = xW`` with the SPO+ loss (Adam) on :func:`dfl_data`.

    Returns
    -------
    dict
        ``regret`` (normalised test regret before each step and after the last), ``losses``.
    """
    from diffopt._demo.optim import Adam

    x, c = dfl_data(DFL_TRAIN, seed)
    x_test, c_test = dfl_data(DFL_TEST, seed + 1)
    loss = diffopt.spo_plus_loss(graph.dag_shortest_path, minimize=True)
    data = [fw.to_backend(a, backend) for a in (x, c, graph.dag_shortest_path(c))]
    w = (np.random.default_rng(seed).normal(size=(x.shape[1], c.shape[1])) * 0.01).astype(np.float32)
    opt, regrets, losses = Adam([w], lr=DFL_LR), [], []

    def test_regret(w):
        return float(diffopt.normalized_regret(graph.dag_shortest_path, x_test @ w, c_test, minimize=True))

    for _ in (progress or iter)(range(steps)):
        regrets.append(test_regret(w))
        value, (g,) = fw.value_and_grad(lambda w_: loss(data[0] @ w_, data[1], data[2]), [w], backend)
        losses.append(value)
        (w,) = opt.step([w], [g])
    return {"regret": np.array(regrets + [test_regret(w)]), "losses": np.array(losses)}


def check_dfl(backend, settings):
    """SPO+ loss, regret and gradient against a search over all 15 paths; SPO+ training lowers the regret.

    Tolerances: the loss and regret are sums of 14 float32 products of size ≲ 5 (1e-4);
    the gradient takes the values 0 and ±2 exactly (1e-6).
    """
    x, c = dfl_data(4, settings.seed + 2)
    theta = (x @ np.random.default_rng(settings.seed).normal(size=(x.shape[1], c.shape[1]))).astype(np.float32)
    want_loss, want_grad, want_regret = spo_plus_brute_force(theta, c)
    w_star = graph.dag_shortest_path(c)
    loss = diffopt.spo_plus_loss(graph.dag_shortest_path, minimize=True, reduction="none")
    args = [fw.to_backend(a, backend) for a in (theta, c, w_star)]
    got_loss = fw.to_numpy(loss(*args))
    got_regret = fw.to_numpy(diffopt.regret(graph.dag_shortest_path, args[0], args[1], minimize=True))
    regret_row = _compare(backend, "regret = brute force, ≤ SPO+", got_regret, want_regret, 1e-4)
    regret_row.passed = regret_row.passed and bool(np.all(got_regret <= got_loss + 1e-4))
    rows = [_compare(backend, "SPO+ loss = brute force over 15 paths", got_loss, want_loss, 1e-4), regret_row]
    check = "∇ SPO+ = 2(w* − w(2θ̂ − c))"
    if not fw.has_grad(backend):
        return Result(rows + [_skip_grad(backend, check), _skip_grad(backend, "SPO+ training")])
    g = fw.grad(lambda t: ar.do("sum", loss(t, args[1], args[2])), theta, backend)
    rows.append(_compare(backend, check, g, want_grad, 1e-6))
    out = spo_fit(backend, settings.dfl_steps, settings.seed, settings.progress)
    first, last = out["regret"][0], out["regret"][-1]
    bound = min(DFL_TARGET, first / 3)
    rows.append(Row(backend, f"SPO+ training: test regret, {settings.dfl_steps} steps",
                    f"{first:.3f} → {last:.3f} (< {bound:.3f})", bool(last < bound)))
    return Result(rows, out)


#: Check name → function, in the order the demo runs them.
CHECKS = {
    "argmax": check_argmax,
    "or": check_or,
    "shortest_path": check_shortest_path,
    "imle": check_imle,
    "sorting": check_sorting,
    "dfl": check_dfl,
}

#: Check name → the optional modules it needs (checked before it runs).
NEEDS = {"imle": ("scipy",)}
#: Check name → its label in a row that stands for the whole check (skipped, or an error).
TITLES = {"argmax": "perturbed argmax", "or": "perturbed OR", "shortest_path": "shortest path",
          "imle": "I-MLE", "sorting": "sorting", "dfl": "SPO+ (decision-focused learning)"}


def run_check(name, backend, settings):
    """Run one check; a missing optional package skips it, an exception becomes a failed row.

    Returns
    -------
    Result
    """
    title = TITLES.get(name, name)
    missing = [m for m in NEEDS.get(name, ()) if importlib.util.find_spec(m) is None]
    if missing:
        return Result([skipped(backend, title, missing[0])])
    try:
        return CHECKS[name](backend, settings)
    except ModuleNotFoundError as exc:
        module = (exc.name or "").partition(".")[0]
        if module in EXTRAS:
            return Result([skipped(backend, title, module)])
        return _error_result(backend, title, exc)
    except Exception as exc:  # report, keep going, exit non-zero at the end
        return _error_result(backend, title, exc)


def _error_result(backend, title, exc):
    return Result([Row(backend, title, f"ERROR {type(exc).__name__}: {exc}"[:200], False)])
