"""Expressivity, measured: three families of MLPs at equal parameter counts.

The paper's first claim (Fan et al., arXiv:2110.06081) is that a network of quadratic neurons
is more expressive than a conventional network of the same size, with or without a quadratic
activation. Three families test it:

    relu       conventional neurons, σ(z) = max(z, 0)
    square     conventional neurons, σ(z) = z²  (the quadratic activation)
    quadratic  quadratic neurons (`QuadraticLinear`, ReLinear initialisation), σ = ReLU

each with `depth` hidden layers of one width and a linear output layer. At a given budget each
family takes the width whose parameter count is nearest; budgets are the quadratic network's
counts at widths where the conventional counts fall within 2% (`budget_grid`).

Targets: radial functions of x ∈ R^d (‖x‖², a Gaussian bump, the ball indicator) regressed in
d = 2, 4, 8, 16, and two 2-D classification problems (circles, spirals). Errors: the fraction
of the test targets' variance left unexplained (regression) or the test error rate
(classification). Every family trains alike: Adam on the same data for the same steps, at a
shared rate unless a learning-rate check on seeds of its own finds a better one for that family
(`rate_check`). Every (family, width) trains its seeds and targets together, their parameters
stacked (`train`); each network's gradients and Adam updates are those it would have alone.

`pieces` counts the activation regions of a trained network along a line: the maximal
intervals on which no ReLU changes sign, on each of which the network is one polynomial (of
degree 1 for relu, up to 2^depth for quadratic; a square network is one polynomial everywhere).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import platform
import time
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .experiments import PRESETS
from .layers import QuadraticLinear
from .plots import colour
from .stats import summary, verdict, welch
from .utils import atomic_write, strict

__all__ = ["FAMILIES", "TARGETS", "PROBLEMS", "SIZES", "Square", "mlp", "n_params", "match", "budget_grid", "dataset",
           "stacked_forward", "train", "error", "pieces", "chords", "spec", "prepare", "fit", "results",
           "result_path", "neuron", "best_line", "single_neuron", "scores", "compare", "curve", "needed", "verdicts",
           "markdown_table", "text_table", "pieces_table", "rate_table", "frame", "plot_scaling",
           "plot_classification", "plot_pieces", "plot_boundaries", "plot_single_neuron", "plot_neuron", "explore"]

FAMILIES = ("relu", "square", "quadratic")
TARGETS = ("norm2", "bump", "ball")  # radial regression targets
PROBLEMS = ("circles", "spirals")  # 2-D classification
TOLERANCE = 0.02  # parameter counts of the three families at one budget differ by at most this
RADIUS = 2.0  # inputs of the radial targets: |x| uniform on [0, RADIUS], direction uniform

# Sizes: smoke checks that the code runs (seconds); quick is the measurement (minutes, 2 CPU cores).
# gpu-short and paper run as quick: nothing here needs a GPU.
SIZES = {
    "smoke": dict(dims=(2,), depths=(1,), targets=("bump",), problems=("spirals",), seeds=3, budgets=2, lo=20, hi=150,
                  n_train=2000, n_test=500, batch=64, steps=60, lr=3e-2, rates=(1e-2, 3e-2), lines=4, points=512,
                  threshold={"regression": 0.02, "classification": 0.02}),
    "quick": dict(dims=(2, 4, 8, 16), depths=(1, 2), targets=TARGETS, problems=PROBLEMS, seeds=3, budgets=5, lo=20,
                  hi=2000, n_train=50_000, n_test=4096, batch=128, steps=1000, lr=3e-2, rates=(1e-2, 3e-2, 1e-1),
                  lines=8, points=4096, threshold={"regression": 0.02, "classification": 0.02}),
}


def size(preset: str) -> str:
    """The size a preset runs at: smoke, else quick."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {tuple(PRESETS)}")
    return "smoke" if preset == "smoke" else "quick"


# ----------------------------------------------------------------------------- the three families

class Square(nn.Module):
    """The quadratic activation σ(z) = z²."""

    def forward(self, z):
        return z * z


def mlp(family: str, d: int, width: int, depth: int = 1, out: int = 1) -> nn.Sequential:
    """`depth` hidden layers of `width` neurons of `family` on inputs in R^d, then Linear(width, out).

    Hidden conventional layers start like a quadratic layer's w_r (Kaiming normal, zero bias),
    so a quadratic network starts as the relu network of its width; the output layer keeps
    PyTorch's default initialisation in every family."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    for name, value in (("d", d), ("width", width), ("depth", depth), ("out", out)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    layers, fan_in = [], d
    for _ in range(depth):
        if family == "quadratic":
            layer = QuadraticLinear(fan_in, width)
        else:
            layer = nn.Linear(fan_in, width)
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        layers += [layer, Square() if family == "square" else nn.ReLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, out))
    return nn.Sequential(*layers)


def n_params(family: str, d: int, width: int, depth: int = 1, out: int = 1) -> int:
    """Parameters of `mlp(family, d, width, depth, out)`: a quadratic neuron has three weight
    vectors and three biases (w_r, b_r, w_g, b_g, w_b, c), a conventional one one of each."""
    per = 3 if family == "quadratic" else 1
    return per * (d + 1) * width + (depth - 1) * per * (width + 1) * width + (width + 1) * out


def match(budget: int, d: int, depth: int = 1, out: int = 1) -> dict[str, int]:
    """Each family's width whose parameter count is nearest to `budget` (the smaller on a tie)."""
    widths = {}
    for family in FAMILIES:
        w = 1
        while n_params(family, d, w + 1, depth, out) <= budget:
            w += 1
        widths[family] = min((w, w + 1), key=lambda v: abs(n_params(family, d, v, depth, out) - budget))
    return widths


def spread(widths: dict[str, int], d: int, depth: int = 1, out: int = 1) -> float:
    """Largest over smallest parameter count of the families at `widths`, minus 1."""
    counts = [n_params(f, d, w, depth, out) for f, w in widths.items()]
    return max(counts) / min(counts) - 1


def budget_grid(d: int, depth: int, out: int, lo: float, hi: float, n: int,
                tolerance: float = TOLERANCE) -> list[dict]:
    """About `n` budgets spaced evenly in log from the smallest feasible one ≥ `lo` to `hi`.

    A budget is feasible when it is the quadratic network's count at some width and each
    conventional family's nearest count lies within `tolerance` of it. Small budgets are often
    infeasible: a quadratic neuron costs 3(d + 1) + out parameters, so in d = 16 the smallest
    feasible one-layer budget is some 300. Returns [{"budget", "widths", "params"}], ascending."""
    feasible = []
    for q in itertools.count(1):
        b = n_params("quadratic", d, q, depth, out)
        if b > 1.5 * hi:
            break
        widths = match(b, d, depth, out)
        if widths["quadratic"] == q and spread(widths, d, depth, out) <= tolerance and b >= lo:
            feasible.append(b)
    if not feasible:
        raise ValueError(f"no budget in [{lo}, {1.5 * hi:g}] matches the families within {tolerance:.0%} "
                         f"(d={d}, depth={depth})")
    start = feasible[0]
    stop = max(start, min(hi, feasible[-1]))
    picked = []
    for i in range(n):
        target = start * (stop / start) ** (i / max(1, n - 1))
        b = min(feasible, key=lambda v: abs(math.log(v / target)))
        if b not in picked:
            picked.append(b)
    return [{"budget": b, "widths": (w := match(b, d, depth, out)),
             "params": {f: n_params(f, d, w[f], depth, out) for f in FAMILIES}} for b in sorted(picked)]


# ----------------------------------------------------------------------------- targets

def radial_inputs(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    """n points x = r·u, u uniform on the unit sphere of R^d and r uniform on [0, RADIUS]: the
    radius is probed alike in every dimension (a Gaussian's norm would concentrate)."""
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    return (u * RADIUS * torch.rand(n, 1, generator=g, dtype=torch.float64)).float()


def radial_target(name: str, x: torch.Tensor) -> torch.Tensor:
    """‖x‖² (norm2), exp(−‖x‖²/(2·0.7²)) (bump) or 1[‖x‖ < RADIUS/2] (ball: half the points)."""
    r2 = x.double().square().sum(1)
    if name == "norm2":
        y = r2
    elif name == "bump":
        y = torch.exp(-r2 / (2 * 0.7 ** 2))
    elif name == "ball":
        y = (r2 < (RADIUS / 2) ** 2).double()
    else:
        raise ValueError(f"unknown target {name!r}; choose one of {TARGETS}")
    return y.float()


def two_circles(n: int, g: torch.Generator):
    """Two noisy concentric circles, radii 0.5 and 1 (class 1 the outer)."""
    r = torch.where(torch.rand(n, generator=g) < 0.5, 0.5, 1.0)
    t = torch.rand(n, generator=g) * 2 * torch.pi
    x = torch.stack((r * t.cos(), r * t.sin()), 1) + 0.08 * torch.randn(n, 2, generator=g)
    return x, (r > 0.75).long()


def two_spirals(n: int, g: torch.Generator):
    """Two interleaved noisy spirals of one and a half turns."""
    t = torch.sqrt(torch.rand(n, generator=g)) * 3 * torch.pi
    label = (torch.rand(n, generator=g) < 0.5).long()
    angle = t + torch.pi * label
    x = torch.stack((t * angle.cos(), t * angle.sin()), 1) / (3 * torch.pi) * 1.8
    return x + 0.04 * torch.randn(n, 2, generator=g), label


def _generator(*key) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32("/".join(map(str, key)).encode()))


def dataset(problem: str, d: int, n: int, seed: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): `n` points of `problem` (a radial target in R^d, or circles/spirals in R^2), drawn
    from a generator named by (problem, d, seed, split): every seed has its own data."""
    if split not in ("train", "test", "lines"):
        raise ValueError(f"split must be train, test or lines, got {split!r}")
    g = _generator(problem, d, seed, split)
    if problem in PROBLEMS:
        if d != 2:
            raise ValueError(f"{problem} is a problem in d = 2, got d={d}")
        return (two_circles if problem == "circles" else two_spirals)(n, g)
    x = radial_inputs(n, d, g)
    return x, radial_target(problem, x)


# ----------------------------------------------------------------------------- training

def _cosine(step: int, steps: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / steps))


def stacked_forward(skeleton: nn.Sequential, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The forward of K networks shaped like `skeleton` (an `mlp`), their parameters stacked
    along a first dimension of size K (`params`, named as in the skeleton): x (K, B, d). The layers'
    own forward runs, vectorised over the K networks (`torch.func.vmap`): the quadratic neuron's
    formula lives in `qnets.layers` alone."""
    return torch.func.vmap(lambda p, xk: torch.func.functional_call(skeleton, p, (xk,)))(params, x)


def train(models: list[nn.Module], xs: torch.Tensor, ys: torch.Tensor, steps: int, lr: float, batch: int,
          classify: bool, seed: int = 0) -> list[float]:
    """Train K networks of one architecture (`mlp`s) together with Adam at `lr`, cosine-decayed
    to 0 over `steps` steps of `batch` points: network k learns targets ys[k] at inputs xs[k] (N
    points each; regression: mean squared error, `classify`: cross-entropy on logits), all of
    them at the same positions of their own data (one shuffle per pass, from `seed`). Their
    parameters are stacked and their losses summed, so each network's gradients and Adam updates
    are those it would have alone. The trained weights are written back into `models`. Returns
    each network's mean training loss over the last 5% of the steps."""
    names = [name for name, _ in models[0].named_parameters()]
    params = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).requires_grad_()
              for name in names}
    opt = torch.optim.Adam(params.values(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n, per_pass = xs.shape[1], xs.shape[1] // batch
    tail, last = torch.zeros(len(models), dtype=torch.float64), max(1, steps // 20)
    for step in range(steps):
        if step % per_pass == 0:  # a new pass: shuffle once, then take contiguous slices
            perm = torch.randperm(n, generator=g)
            xp, yp = xs[:, perm], ys[:, perm]
        i = (step % per_pass) * batch
        x, y = xp[:, i:i + batch], yp[:, i:i + batch]
        out = stacked_forward(models[0], params, x)
        if classify:
            loss = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)
        else:
            loss = (out.squeeze(-1) - y).square().mean(1)
        for group in opt.param_groups:
            group["lr"] = lr * _cosine(step, steps)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        if step >= steps - last:
            tail += loss.detach().double()
    with torch.no_grad():
        for k, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(params[name][k])
    return [float(v) / last for v in tail]


@torch.no_grad()
def error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classify: bool, scale=(0.0, 1.0)) -> float:
    """Test error: the error rate (classification), or the fraction of the variance of y left
    unexplained, Σ(ŷ − y)² / Σ(y − ȳ)², with ŷ = model(x)·std + mean (`scale` = (mean, std) of
    the training targets the model was fitted to after standardising)."""
    out = model(x)
    if classify:
        return float((out.argmax(1) != y).double().mean())
    pred = out.squeeze(-1).double() * scale[1] + scale[0]
    y = y.double()
    return float((pred - y).square().sum() / (y - y.mean()).square().sum())


# ----------------------------------------------------------------------------- pieces along lines

@torch.no_grad()
def pieces(model: nn.Module, points: torch.Tensor, stride: int = 1) -> int:
    """The number of activation regions of `model` along `points` (ordered samples of a line):
    1 + the number of consecutive samples (every `stride`-th) at which some ReLU switches on or
    off. On each region the network is one polynomial along the line. Regions narrower than the
    sample spacing can be missed, so the count is a lower bound; a network without ReLUs (the
    square family) has one region."""
    signs = []
    hooks = [m.register_forward_hook(lambda _m, _inp, out: signs.append((out > 0).flatten(1)))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        model(points[::stride])
    finally:
        for h in hooks:
            h.remove()
    if not signs:
        return 1
    pattern = torch.cat(signs, 1)
    return 1 + int((pattern[1:] != pattern[:-1]).any(1).sum())


def chords(through: torch.Tensor, radius: float, n_points: int, g: torch.Generator) -> torch.Tensor:
    """For each point p in `through` (m, d), `n_points` evenly spaced samples of the chord of the
    ball of `radius` that passes through p in a random direction: (m, n_points, d)."""
    m, d = through.shape
    p = through.double()
    u = torch.randn(m, d, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    pu = (p * u).sum(1)
    half = torch.sqrt((pu.square() - p.square().sum(1) + radius ** 2).clamp_min(0))
    t = torch.linspace(0, 1, n_points, dtype=torch.float64)
    start, stop = -pu - half, -pu + half
    ts = start[:, None] + (stop - start)[:, None] * t[None]
    return (p[:, None] + ts[..., None] * u[:, None]).float()


# ----------------------------------------------------------------------------- the experiment

def spec(preset: str) -> dict:
    """Everything that determines the stored results of `preset`'s size."""
    return {"size": size(preset), **SIZES[size(preset)], "families": FAMILIES, "tolerance": TOLERANCE,
            "radius": RADIUS}


def result_path(preset: str, root: str | Path = ".") -> Path:
    """results/expressivity/<size>.json; the smoke size goes to results/smoke/ (not committed)."""
    name = size(preset)
    folder = Path(root) / ("results/smoke/expressivity" if name == "smoke" else "results/expressivity")
    return folder / f"{name}.json"


def problems(s: dict) -> list[tuple[str, int, str]]:
    """(problem, d, kind) of every problem in spec `s`."""
    out = [(t, d, "regression") for d in s["dims"] for t in s["targets"]]
    return out + [(p, 2, "classification") for p in s["problems"]]


def prepare(kind: str, d: int, members: list[tuple[str, int]], s: dict) -> dict:
    """Training arrays of a group of (problem, seed) members, each member's test set, the mean
    and sd its regression targets were standardised with, and its chords for counting pieces."""
    classify = kind == "classification"
    xs, ys, per = [], [], {}
    for problem, seed in members:
        x, y = dataset(problem, d, s["n_train"], seed, "train")
        scale = (0.0, 1.0) if classify else (float(y.double().mean()), float(y.double().std()))
        xs.append(x)
        ys.append(y if classify else (y - scale[0]) / scale[1])
        xt, yt = dataset(problem, d, s["n_test"], seed, "test")
        through, _ = dataset(problem, d, s["lines"], seed, "lines")
        per[problem, seed] = (xt, yt, scale, chords(through, s["radius"], s["points"], _generator("chords", problem,
                                                                                                  d, seed)))
    return {"xs": torch.stack(xs), "ys": torch.stack(ys), "members": per, "classify": classify}


def fit(family: str, d: int, width: int, depth: int, members: list[tuple[str, int]], data: dict, s: dict,
        lr: float) -> list[nn.Module]:
    """The members' networks of one family and width, each initialised from its seed, trained together."""
    models = []
    for _, seed in members:
        torch.manual_seed(seed)
        models.append(mlp(family, d, width, depth, 2 if data["classify"] else 1))
    train(models, data["xs"], data["ys"], s["steps"], lr, s["batch"], data["classify"])
    return models


def _groups(s: dict, seeds) -> dict[tuple[str, int], list[tuple[str, int]]]:
    """Members (problem, seed) by (kind, d): those that share an input space train together."""
    groups = {}
    for problem, d, kind in problems(s):
        groups.setdefault((kind, d), []).extend((problem, seed) for seed in seeds)
    return groups


def rate_check(s: dict, verbose: bool = True) -> list[dict]:
    """The learning-rate check: every family at every rate in s["rates"], on the regression
    targets in the smallest and largest dimension, each depth, at the middle budget, with seeds
    of its own (100, 101, ...) so that the measurement does not reuse them."""
    rows = []
    seeds = [100 + i for i in range(s["seeds"])]
    dims = sorted({s["dims"][0], s["dims"][-1]})
    for d in dims:
        members = [(t, seed) for t in s["targets"] for seed in seeds]
        data = prepare("regression", d, members, s)
        for depth in s["depths"]:
            grid = budget_grid(d, depth, 1, s["lo"], s["hi"], s["budgets"])
            point = grid[len(grid) // 2]
            for family in FAMILIES:
                for rate in s["rates"]:
                    models = fit(family, d, point["widths"][family], depth, members, data, s, rate)
                    for (problem, seed), model in zip(members, models):
                        xt, yt, scale, _ = data["members"][problem, seed]
                        rows.append({"family": family, "rate": rate, "d": d, "depth": depth, "problem": problem,
                                     "seed": seed, "params": point["params"][family],
                                     "error": strict(error(model, xt, yt, False, scale))})
        if verbose:
            print(f"learning-rate check, d={d}: done", flush=True)
    return rows


def choose_rates(check: list[dict], s: dict) -> dict[str, dict]:
    """Each family's rate: the shared s["lr"], unless another rate of the check gives a lower
    log10 error on the same members beyond the 95% interval of the paired differences
    (Bonferroni-corrected for the other rates tried); then the best such rate."""
    out = {}
    others = [r for r in s["rates"] if r != s["lr"]]
    level = 1 - 0.05 / max(1, len(others))
    for family in FAMILIES:
        logs = {}
        for row in check:
            if row["family"] == family:
                key = (row["d"], row["depth"], row["problem"], row["seed"])
                logs.setdefault(row["rate"], {})[key] = _log_error(row["error"], "regression", s)
        shared = logs.get(s["lr"], {})
        best, tried = None, {}
        for rate in others:
            diffs = [logs[rate][k] - shared[k] for k in shared if k in logs.get(rate, {})]
            tried[rate] = summary(diffs, level)
            if tried[rate]["high"] is not None and tried[rate]["high"] < 0 and (
                    best is None or tried[rate]["mean"] < tried[best]["mean"]):
                best = rate
        out[family] = {"rate": s["lr"] if best is None else best,
                       "vs_shared": {str(r): {k: t[k] for k in ("mean", "low", "high", "n")}
                                     for r, t in tried.items()}}
    return out


def run(preset: str, verbose: bool = True) -> dict:
    """Train every family at every budget, depth, problem and seed of `preset`'s size, after the
    learning-rate check; measure test errors and pieces along chords. Returns the results."""
    s = spec(preset)
    t0, c0 = time.time(), time.process_time()
    check = rate_check(s, verbose)
    rates = choose_rates(check, s)
    rows = []
    groups = _groups(s, range(s["seeds"]))
    total, done = len(groups) * len(s["depths"]) * len(FAMILIES), 0
    for (kind, d), members in groups.items():
        data = prepare(kind, d, members, s)
        out = 2 if data["classify"] else 1
        for depth in s["depths"]:
            grid = budget_grid(d, depth, out, s["lo"], s["hi"], s["budgets"])
            for family in FAMILIES:
                tf = time.time()
                for point in grid:
                    width = point["widths"][family]
                    models = fit(family, d, width, depth, members, data, s, rates[family]["rate"])
                    for (problem, seed), model in zip(members, models):
                        xt, yt, scale, lines = data["members"][problem, seed]
                        fine = [pieces(model, line) for line in lines]
                        coarse = [pieces(model, line, stride=4) for line in lines]
                        rows.append({"problem": problem, "kind": kind, "d": d, "depth": depth, "family": family,
                                     "budget": point["budget"], "width": width, "params": point["params"][family],
                                     "seed": seed, "error": strict(error(model, xt, yt, data["classify"], scale)),
                                     "pieces": sum(fine) / len(fine), "pieces_coarse": sum(coarse) / len(coarse)})
                done += 1
                if verbose:
                    print(f"[{done}/{total}] {kind} d={d}, {depth} hidden, {family}: {len(grid)} budgets × "
                          f"{len(members)} networks in {time.time() - tf:.1f}s", flush=True)
    return {"spec": s, "rates": rates, "rate_check": check, "rows": rows, "single_neuron": single_neuron(),
            "time": {"wall_s": round(time.time() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
                     "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.machine(),
                     "torch": torch.__version__.split("+")[0]}}


def results(preset: str, train_missing: bool = True, verbose: bool = True) -> dict | None:
    """The stored results of `preset`'s size when they were made with the current spec; else,
    with `train_missing`, trained now and stored (None when missing and not trained)."""
    path = result_path(preset)
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("spec") == json.loads(json.dumps(spec(preset))):
            return stored
        if verbose:
            print(f"{path} was made with another spec: training again", flush=True)
    if not train_missing:
        return None
    text = json.dumps(run(preset, verbose), indent=1, allow_nan=False) + "\n"  # keys in the order made
    atomic_write(path, lambda f: f.write(text.encode()))
    return json.loads(text)


# ----------------------------------------------------------------------------- one neuron

XOR_NEURON = dict(w_r=(1.0, 0.0), b_r=0.0, w_g=(0.0, -1.0), b_g=0.0, w_b=(0.0, 0.0), c=0.0)  # q = −x1·x2
DISK_NEURON = dict(w_r=(0.0, 0.0), b_r=0.0, w_g=(0.0, 0.0), b_g=1.0, w_b=(-1.0, -1.0), c=1.0)  # q = 1 − ‖x‖²


def neuron(w_r=(0.0, 0.0), b_r=0.0, w_g=(0.0, 0.0), b_g=1.0, w_b=(0.0, 0.0), c=0.0) -> QuadraticLinear:
    """One quadratic neuron on R², q(x) = (w_r·x + b_r)(w_g·x + b_g) + w_b·(x⊙x) + c, in float64."""
    q = QuadraticLinear(2, 1, dtype=torch.float64)
    with torch.no_grad():
        for name, value in (("weight_r", [w_r]), ("bias_r", [b_r]), ("weight_g", [w_g]), ("bias_g", [b_g]),
                            ("weight_b", [w_b]), ("bias_b", [c])):
            getattr(q, name).copy_(torch.tensor(value, dtype=torch.float64))
    return q


def conic(w_r, b_r, w_g, b_g, w_b, c) -> str:
    """The kind of the boundary q(x) = 0: q = xᵀAx + (linear) with A = sym(w_r w_gᵀ) + diag(w_b),
    an ellipse where det A > 0, a hyperbola (or two crossing lines) where det A < 0, a parabola
    (or parallel lines) where det A = 0 ≠ A, a line where A = 0."""
    a = [[w_r[0] * w_g[0] + w_b[0], (w_r[0] * w_g[1] + w_r[1] * w_g[0]) / 2],
         [(w_r[0] * w_g[1] + w_r[1] * w_g[0]) / 2, w_r[1] * w_g[1] + w_b[1]]]
    det = a[0][0] * a[1][1] - a[0][1] ** 2
    if max(abs(v) for row in a for v in row) < 1e-12:
        return "line"
    return "ellipse" if det > 1e-12 else "hyperbola" if det < -1e-12 else "parabola"


def xor_points() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    return x, (x[:, 0] * x[:, 1] < 0).long()


def disk_points(n: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 2, generator=_generator("disk"), dtype=torch.float64) * 4 - 2
    return x, (x.square().sum(1) < 1).long()


def best_line(x: torch.Tensor, y: torch.Tensor, angles: int = 3600):
    """The most accurate conventional neuron 1[w·x + b > 0] on (x, y) among unit normals w at
    `angles` evenly spaced angles, each with its best offset b (found exactly, by sorting the
    projections; among equals, the widest margin): (accuracy, w, b)."""
    theta = torch.arange(angles, dtype=torch.float64) * 2 * math.pi / angles
    w = torch.stack((theta.cos(), theta.sin()), 1)
    proj, order = (x.double() @ w.T).sort(0)  # (n, angles), ascending
    ys = y[order].double()
    zero = torch.zeros(1, angles, dtype=torch.float64)
    # cutting after the k smallest projections: those k predicted 0, the rest 1
    correct = torch.cat((zero, (1 - ys).cumsum(0))) + (ys.sum(0) - torch.cat((zero, ys.cumsum(0))))
    edges = torch.cat((proj[:1] - 1, proj, proj[-1:] + 1))
    gap = edges[1:] - edges[:-1]
    correct[gap == 0] = -1  # no threshold cuts between equal projections
    # among the most accurate cuts, the one with the widest gap (a count is a whole number)
    k, a = divmod(int((correct + 0.5 * gap / gap.max()).argmax()), angles)
    return float(correct[k, a]) / len(y), w[a], -float(edges[k, a] + edges[k + 1, a]) / 2


def single_neuron() -> dict:
    """Accuracy of the hand-set quadratic neurons on XOR and the disk, and of the best line."""
    out = {}
    for name, (x, y), weights in (("XOR", xor_points(), XOR_NEURON), ("disk", disk_points(), DISK_NEURON)):
        with torch.no_grad():
            acc = float(((neuron(**weights)(x).squeeze(1) > 0).long() == y).double().mean())
        out[name] = {"points": len(x), "quadratic": acc, "best_line": best_line(x, y)[0]}
    return out


# ----------------------------------------------------------------------------- what the results say

def _floor(kind: str, s: dict) -> float:
    """The smallest error told apart: one test point (classification), 1e-6 of the variance."""
    return 1 / s["n_test"] if kind == "classification" else 1e-6


def _log_error(e: float | None, kind: str, s: dict) -> float:
    """log10 of a test error; a network whose outputs were not finite is scored as the constant
    predictor (variance unexplained 1, error rate 1/2)."""
    if e is None:
        e = 1.0 if kind == "regression" else 0.5
    return math.log10(max(e, _floor(kind, s)))


def _by(res: dict, *keys) -> dict:
    out = {}
    for row in res["rows"]:
        out.setdefault(tuple(row[k] for k in keys), []).append(row)
    return out


def scores(res: dict) -> dict[tuple, list[float]]:
    """(problem, d, depth, family) -> per seed, the mean over the budgets of log10 test error:
    the height of the error-against-budget curve on the log scale."""
    s = res["spec"]
    out = {}
    for (problem, d, depth, family, seed), rows in _by(res, "problem", "d", "depth", "family", "seed").items():
        logs = [_log_error(r["error"], r["kind"], s) for r in rows]
        out.setdefault((problem, d, depth, family), []).append(sum(logs) / len(logs))
    return out


def compare(res: dict, problem: str, d: int, depth: int, other: str, level: float = 0.95) -> dict:
    """The quadratic family against `other` on one problem: Welch's interval of the difference
    of the mean log10 errors over seeds, as the ratio other/quadratic of the geometric-mean
    errors (> 1: the quadratic network's error is lower), and its verdict."""
    sc = scores(res)
    w = welch(sc[problem, d, depth, "quadratic"], sc[problem, d, depth, other], level)
    ratio = lambda v: None if v is None else 10 ** -v  # noqa: E731
    return {"ratio": ratio(w["diff"]), "low": ratio(w["high"]), "high": ratio(w["low"]), "n": w["n"],
            "verdict": verdict(w, direction=-1)}


def curve(res: dict, problem: str, d: int, depth: int, family: str) -> list[dict]:
    """Per budget: parameters, geometric mean of the test error over seeds and its 95% interval."""
    s = res["spec"]
    out = []
    for (budget,), rows in sorted(_by({"rows": [r for r in res["rows"] if (r["problem"], r["d"], r["depth"],
                                                                               r["family"]) == (problem, d, depth,
                                                                                                family)]},
                                      "budget").items()):
        st = summary([_log_error(r["error"], r["kind"], s) for r in rows])
        out.append({"budget": budget, "params": rows[0]["params"], "error": 10 ** st["mean"],
                    "low": None if st["low"] is None else 10 ** st["low"],
                    "high": None if st["high"] is None else 10 ** st["high"], "n": st["n"]})
    return out


def needed(res: dict, problem: str, d: int, depth: int, family: str) -> tuple[str, float]:
    """Parameters the family needs to reach the threshold error of the problem's kind, read off
    its mean curve (log-log interpolation between budgets): ("", p); ("≤", smallest budget) when
    it is reached there already; (">", largest budget) when it is not reached."""
    s = res["spec"]
    kind = "classification" if problem in PROBLEMS else "regression"
    target = math.log10(s["threshold"][kind])
    points = curve(res, problem, d, depth, family)
    pts = [(math.log10(p["params"]), math.log10(p["error"])) for p in points]
    if pts[0][1] <= target:
        return "≤", points[0]["params"]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if y1 <= target:
            return "", 10 ** (x0 + (x1 - x0) * (target - y0) / (y1 - y0))
    return ">", points[-1]["params"]


def _depths(depth: int) -> str:
    return f"{depth} hidden layer{'s' if depth > 1 else ''}"


OTHERS = {"relu": "conventional networks with ReLU", "square": "conventional networks with the quadratic activation"}


def verdicts(res: dict) -> list[dict]:
    """The claims notebook 01 tests, with verdicts computed from `res` (claims.markdown's format).

    Per depth and per conventional family, "lower error at equal parameter count on every
    problem" is supported when it is supported on each problem (95% Welch interval of the mean
    log10 error over the budgets, seeds as replicates), contradicted when the opposite holds on
    some problem at the Bonferroni-corrected level, and not resolved otherwise."""
    s, one = res["spec"], res["single_neuron"]
    q_ok = all(v["quadratic"] == 1.0 for v in one.values())
    line_fails = all(v["best_line"] < 1.0 for v in one.values())
    out = [{"claim": "A single quadratic neuron separates XOR and the inside of a disk, which no single "
                     "conventional neuron does",
            "verdict": "supported" if q_ok and line_fails else "contradicted",
            "evidence": "Hand-set quadratic neurons classify " + ", ".join(
                f"{100 * v['quadratic']:.1f}% of the {v['points']:,} {k} points" for k, v in one.items())
            + "; the best line found classifies " + ", ".join(f"{100 * v['best_line']:.1f}%" for v in one.values())
            + " (exact, no seeds: a construction, and a line cannot separate either set)"}]
    probs = [(p, d) for p, d, _ in problems(s)]
    k = len(probs)
    for depth in s["depths"]:
        for other, name in OTHERS.items():
            per = {(p, d): compare(res, p, d, depth, other) for p, d in probs}
            strict = {(p, d): compare(res, p, d, depth, other, level=1 - 0.05 / k)["verdict"] for p, d in probs}
            sup = [pd for pd, c in per.items() if c["verdict"] == "supported"]
            con = [pd for pd, v in strict.items() if v == "contradicted"]
            v = "supported" if len(sup) == k else "contradicted" if con else "not resolved"
            label = lambda pd: pd[0] if pd[0] in PROBLEMS else f"{pd[0]} d={pd[1]}"  # noqa: E731
            rest = [pd for pd in probs if pd not in sup]
            evidence = (f"Lower mean log error over the budgets, 95% Welch interval over {s['seeds']} seeds: on "
                        f"{len(sup)} of {k} problems")
            if rest:
                evidence += "; not on " + ", ".join(
                    label(pd) + (" (every family below the threshold at the smallest budget)"
                                 if all(needed(res, *pd, depth, f)[0] == "≤" for f in FAMILIES) else "")
                    for pd in rest)
            if con:
                evidence += (f"; higher beyond the Bonferroni-corrected interval on "
                             f"{', '.join(label(pd) for pd in con)}")
            out.append({"claim": f"At equal parameter count, networks of quadratic neurons ({_depths(depth)}) reach "
                                 f"a lower test error than {name} on every problem tried",
                        "verdict": v, "evidence": evidence})
    return out


def _fmt_error(e: float, kind: str, s: dict) -> str:
    """An error as the table shows it; at the floor (`_floor`), "≤ floor"."""
    floor = _floor(kind, s)
    bound = "≤" if e <= floor * (1 + 1e-9) else ""
    e = max(e, floor)
    return bound + (f"{100 * e:.2g}%" if kind == "classification" else f"{e:.2g}")


def _fmt_factor(v: float) -> str:
    return f"{v:,.0f}" if v >= 10 else f"{v:.2g}"


def _fmt_needed(flag_value: tuple[str, float]) -> str:
    flag, value = flag_value
    return f"{flag}{value:,.0f}"


def _fmt_ratio(c: dict) -> str:
    if c["ratio"] is None:
        return "-"
    if c["low"] is None:
        return f"{_fmt_factor(c['ratio'])}× (no interval)"
    return f"{c['verdict']}: {_fmt_factor(c['ratio'])}× [{_fmt_factor(c['low'])}, {_fmt_factor(c['high'])}]"


def markdown_table(res: dict) -> str:
    """One row per problem and depth: the test error each family reaches at the largest budget
    (geometric mean over seeds), the parameters each needs to reach the threshold error, and
    the quadratic network against each conventional family: the ratio of geometric-mean errors
    over the budgets (other/quadratic: > 1 means lower quadratic error), its 95% interval and
    verdict. Then one line on the data and the training. For the README; a test keeps it equal."""
    s = res["spec"]
    rows = ["| problem | d | hidden layers | params | test error at the largest budget: relu · square · quadratic "
            "| params to reach the threshold: relu · square · quadratic | error relu / quadratic "
            "| error square / quadratic |", "|---|---:|---:|---|---|---|---|---|"]
    for problem, d, kind in problems(s):
        for depth in s["depths"]:
            curves = {f: curve(res, problem, d, depth, f) for f in FAMILIES}
            budgets = [p["budget"] for p in curves["quadratic"]]
            last = " · ".join(_fmt_error(curves[f][-1]["error"], kind, s) for f in FAMILIES)
            need = " · ".join(_fmt_needed(needed(res, problem, d, depth, f)) for f in FAMILIES)
            rows.append(f"| {problem} | {d} | {depth} | {budgets[0]:,}–{budgets[-1]:,} | {last} | {need} | "
                        + " | ".join(_fmt_ratio(compare(res, problem, d, depth, o)) for o in OTHERS) + " |")
    rows.append("")
    t, rates = res["time"], res["rates"]
    shared = all(r["rate"] == s["lr"] for r in rates.values())
    rate_text = (f"Adam at {s['lr']:g} for every family (the learning-rate check found no better rate for any)"
                 if shared else "Adam at " + ", ".join(f"{r['rate']:g} ({f})" for f, r in rates.items())
                 + " (chosen by the learning-rate check)")
    rows.append(f"Data `synthetic`: {s['n_train']:,} training and {s['n_test']:,} test points per problem and seed, "
                f"{s['seeds']} seeds; thresholds: {s['threshold']['regression']:g} of the variance unexplained, "
                f"{100 * s['threshold']['classification']:g}% error; {rate_text}, {s['steps']:,} steps of "
                f"{s['batch']}; {len(res['rows']):,} networks trained in {t['wall_s'] / 60:.1f} min "
                f"({t['cpu_s'] / 60:.1f} min CPU time, {t['threads']} thread) on {t['machine']}, "
                f"PyTorch {t['torch']}.")
    return "\n".join(rows)


def text_table(res: dict) -> str:
    """`markdown_table`'s rows as plain text (for the notebook): per problem and depth, the
    parameters each family needs to reach the threshold, and the error ratios with their
    intervals and verdicts."""
    s = res["spec"]
    head = (f"{'problem':8s} {'d':>2s} {'L':>1s}  {'params needed: relu':>19s} {'square':>7s} {'quadratic':>9s}   "
            f"{'error relu / quadratic [95% CI]':34s} {'error square / quadratic [95% CI]':34s}")
    lines = [head, "-" * len(head)]
    for problem, d, _ in problems(s):
        for depth in s["depths"]:
            need = [_fmt_needed(needed(res, problem, d, depth, f)) for f in FAMILIES]
            cells = []
            for other in OTHERS:
                c = compare(res, problem, d, depth, other)
                cells.append("-" if c["low"] is None else f"{c['ratio']:7.3g}× [{c['low']:.3g}, {c['high']:.3g}] "
                                                         f"{c['verdict']}")
            lines.append(f"{problem:8s} {d:2d} {depth:1d}  {need[0]:>19s} {need[1]:>7s} {need[2]:>9s}   "
                         f"{cells[0]:34s} {cells[1]:34s}")
    return "\n".join(lines)


def pieces_table(res: dict) -> str:
    """Per problem and depth at the largest budget: each family's width and pieces per chord
    (mean over seeds, 95% interval), and for one hidden layer the most its width allows."""
    s = res["spec"]
    head = f"{'problem':8s} {'d':>2s} {'L':>1s}  " + "  ".join(f"{f + ' (width): pieces [95% CI]':>36s}"
                                                                  for f in ("relu", "quadratic"))
    lines = [head, "-" * len(head)]
    by = _by(res, "problem", "d", "depth", "family", "budget")
    for problem, d, _ in problems(s):
        for depth in s["depths"]:
            cells = []
            for family in ("relu", "quadratic"):
                top = max(b for (p, dd, L, f, b) in by if (p, dd, L, f) == (problem, d, depth, family))
                rows = by[problem, d, depth, family, top]
                st = summary([r["pieces"] for r in rows])
                most = "" if depth > 1 else f" ≤ {(1 if family == 'relu' else 2) * rows[0]['width'] + 1}"
                cells.append(f"({rows[0]['width']}) {st['mean']:.1f} [{st['low']:.1f}, {st['high']:.1f}]{most}")
            lines.append(f"{problem:8s} {d:2d} {depth:1d}  " + "  ".join(f"{c:>36s}" for c in cells))
    fine = sum(r["pieces"] for r in res["rows"])
    coarse = sum(r["pieces_coarse"] for r in res["rows"])
    lines.append(f"sampling {s['points']:,} points per chord; at a quarter of them the counts total "
                 f"{100 * (1 - coarse / fine):.1f}% fewer pieces")
    return "\n".join(lines)


def rate_table(res: dict) -> str:
    """The learning-rate check: per family and rate, the geometric-mean test error over the
    check's networks and the paired difference in log10 error to the shared rate (interval
    Bonferroni-corrected for the other rates tried); then the rate each family trained with."""
    s = res["spec"]
    lines = [f"{'family':10s} {'rate':>6s} {'error (geometric mean)':>23s}  {'log10 error − shared [CI]':>27s}"]
    lines.append("-" * len(lines[0]))
    for family in FAMILIES:
        for rate in s["rates"]:
            logs = [_log_error(r["error"], "regression", s) for r in res["rate_check"]
                    if r["family"] == family and r["rate"] == rate]
            vs = res["rates"][family]["vs_shared"].get(str(rate))
            diff = "(shared)" if vs is None else f"{vs['mean']:+.2f} [{vs['low']:+.2f}, {vs['high']:+.2f}]"
            lines.append(f"{family:10s} {rate:6g} {10 ** (sum(logs) / len(logs)):23.3g}  {diff:>27s}")
    lines.append("trained with: " + ", ".join(f"{f} {r['rate']:g}" for f, r in res["rates"].items()))
    return "\n".join(lines)


def frame(res: dict):
    """The rows as a pandas DataFrame, with the log10 error each is scored by (`log_error`) and
    that error (`scored`: floored, a non-finite one as the constant predictor's)."""
    import pandas as pd
    s = res["spec"]
    df = pd.DataFrame(res["rows"])
    df["log_error"] = [_log_error(e, k, s) for e, k in zip(df["error"], df["kind"])]
    df["scored"] = 10 ** df["log_error"]
    return df


# ----------------------------------------------------------------------------- figures

def family_colours() -> dict[str, tuple]:
    """relu and quadratic in the colours of the conventional and quadratic networks of the other
    notebooks (`plots.colour`); square in red."""
    import seaborn as sns
    return {"relu": colour("conventional"), "square": sns.color_palette("colorblind")[3],
            "quadratic": colour("quadratic")}


def _geomean(v) -> float:
    return 10 ** (sum(math.log10(x) for x in v) / len(v))


def _geo_interval(v) -> tuple[float, float]:
    st = summary([math.log10(x) for x in v])
    if st["low"] is None:
        return st["mean"], st["mean"]
    return 10 ** st["low"], 10 ** st["high"]


def _log_axes(ax) -> None:
    """Log-log axes with plain labels at 1, 2, 5 × 10^k on x (parameters) and decades on y."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter
    ax.set(xscale="log", yscale="log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend() is not None:
        ax.legend(fontsize=7, title=None)


def _scaling_panel(df, ax, threshold: float, title: str, legend: bool):
    import seaborn as sns
    palette = family_colours()
    sns.lineplot(df, x="params", y="scored", hue="family", hue_order=FAMILIES, palette=palette, estimator=_geomean,
                 errorbar=_geo_interval, marker="o", ax=ax, legend=legend)
    sns.scatterplot(df, x="params", y="scored", hue="family", hue_order=FAMILIES, palette=palette, alpha=0.35, s=12,
                    ax=ax, legend=False)
    ax.axhline(threshold, color="0.5", ls=":", lw=1)
    ax.set(title=title, xlabel="parameters", ylabel="test error")
    _log_axes(ax)
    # the limits hold every seed and the threshold; a 3-seed interval may reach beyond them
    ax.set_ylim(min(df["scored"].min(), threshold) / 3, max(df["scored"].max(), threshold) * 3)


def plot_scaling(res: dict, depth: int):
    """Regression: test error (fraction of variance unexplained) against parameters, one panel
    per target (rows) and dimension (columns), at `depth`: each seed a faint point, the line the
    geometric mean over seeds with its 95% interval; dotted, the threshold of the table."""
    import matplotlib.pyplot as plt
    s, df = res["spec"], frame(res)
    df = df[(df["kind"] == "regression") & (df["depth"] == depth)]
    fig, axes = plt.subplots(len(s["targets"]), len(s["dims"]), figsize=(3.4 * len(s["dims"]),
                                                                       2.9 * len(s["targets"])), squeeze=False)
    for i, target in enumerate(s["targets"]):
        for j, d in enumerate(s["dims"]):
            _scaling_panel(df[(df["problem"] == target) & (df["d"] == d)], axes[i, j], s["threshold"]["regression"],
                           f"{target}, d = {d}", legend=(i, j) == (0, 0))
            if j:
                axes[i, j].set_ylabel("")
    fig.suptitle(f"{_depths(depth)}: variance unexplained against parameters", y=1.0)
    fig.tight_layout()
    return fig


def plot_classification(res: dict):
    """Classification: test error rate against parameters, one panel per problem (columns) and
    depth (rows), drawn as `plot_scaling`."""
    import matplotlib.pyplot as plt
    s, df = res["spec"], frame(res)
    df = df[df["kind"] == "classification"]
    fig, axes = plt.subplots(len(s["depths"]), len(s["problems"]), figsize=(4.2 * len(s["problems"]),
                                                                          3.3 * len(s["depths"])), squeeze=False)
    for i, depth in enumerate(s["depths"]):
        for j, problem in enumerate(s["problems"]):
            _scaling_panel(df[(df["problem"] == problem) & (df["depth"] == depth)], axes[i, j],
                           s["threshold"]["classification"], f"{problem}, {_depths(depth)}", legend=(i, j) == (0, 0))
    fig.tight_layout()
    return fig


def plot_pieces(res: dict, target: str = "bump"):
    """Pieces per chord (activation regions along random chords through the data) against
    parameters, for `target` in every dimension and the classification problems (columns) at
    each depth (rows): mean over seeds with its 95% interval. Dashed, for one hidden layer, the
    most a network of that width can have: width + 1 (relu), 2·width + 1 (quadratic)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    s, df = res["spec"], frame(res)
    panels = [(target, d) for d in s["dims"]] + [(p, 2) for p in s["problems"]]
    palette = family_colours()
    fig, axes = plt.subplots(len(s["depths"]), len(panels), figsize=(3.2 * len(panels), 3.0 * len(s["depths"])),
                             squeeze=False, sharey="row")
    for i, depth in enumerate(s["depths"]):
        for j, (problem, d) in enumerate(panels):
            ax, sub = axes[i, j], df[(df["problem"] == problem) & (df["d"] == d) & (df["depth"] == depth)]
            sns.lineplot(sub, x="params", y="pieces", hue="family", hue_order=FAMILIES, palette=palette, marker="o",
                         errorbar=lambda v: (summary(list(v))["low"], summary(list(v))["high"]), ax=ax,
                         legend=(i, j) == (0, 0))
            if depth == 1:
                for family, per in (("relu", 1), ("quadratic", 2)):
                    m = sub[sub["family"] == family].drop_duplicates("params").sort_values("params")
                    ax.plot(m["params"], per * m["width"] + 1, ls="--", lw=1, color=palette[family])
            ax.set(xlabel="parameters", ylabel="pieces per chord" if j == 0 else "",
                   title=f"{problem}{'' if problem in PROBLEMS else f', d = {d}'}, {_depths(depth)}")
            _log_axes(ax)
            ax.set_ylim(0.5, 2 * max(sub["pieces"].max(), 1))
    fig.tight_layout()
    return fig


@torch.no_grad()
def plot_boundaries(models: dict[tuple[str, str], nn.Module], data: dict[str, tuple], extent: float = 2.0):
    """Decision regions of trained classifiers: models[(problem, family)], data[problem] = (x, y)
    test points drawn over them; one row per problem, one column per family."""
    import matplotlib.pyplot as plt
    rows = list(dict.fromkeys(p for p, _ in models))
    fig, axes = plt.subplots(len(rows), len(FAMILIES), figsize=(3.3 * len(FAMILIES), 3.3 * len(rows)), squeeze=False)
    side = torch.linspace(-extent, extent, 300)
    grid = torch.stack(torch.meshgrid(side, side, indexing="xy"), -1).reshape(-1, 2)
    for i, problem in enumerate(rows):
        x, y = data[problem]
        for j, family in enumerate(FAMILIES):
            model, ax = models[problem, family], axes[i, j]
            z = model(grid).argmax(1).reshape(300, 300).numpy()
            ax.contourf(side.numpy(), side.numpy(), z, levels=[-0.5, 0.5, 1.5], colors=["#dde6f3", "#f6dccb"])
            ax.scatter(*x[y == 0].T, s=2, c="C0")
            ax.scatter(*x[y == 1].T, s=2, c="C1")
            err = float((model(x).argmax(1) != y).double().mean())
            n = sum(p.numel() for p in model.parameters())
            ax.set(aspect="equal", xticks=[], yticks=[])
            ax.set_title(f"{problem}, {family}: {n} params, {100 * err:.1f}% error", fontsize=9)
    fig.tight_layout()
    return fig


@torch.no_grad()
def plot_neuron(weights: dict, ax=None, extent: float = 2.0):
    """One quadratic neuron's decision region q(x) > 0 and boundary q(x) = 0 on [−extent, extent]²,
    with the XOR points and the unit circle for reference; the title names the conic."""
    import matplotlib.pyplot as plt
    if ax is None:
        ax = plt.subplots(figsize=(4.4, 4.4))[1]
    side = torch.linspace(-extent, extent, 301, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(side, side, indexing="xy"), -1).reshape(-1, 2)
    q = neuron(**weights)(grid).reshape(301, 301).numpy()
    ax.contourf(side.numpy(), side.numpy(), q > 0, levels=[-0.5, 0.5, 1.5], colors=["#dde6f3", "#f6dccb"])
    if q.min() < 0 < q.max():
        ax.contour(side.numpy(), side.numpy(), q, levels=[0], colors="k", linewidths=1.5)
    x, y = xor_points()
    ax.scatter(*x[y == 0].T, s=60, c="C0", label="XOR class 0", zorder=3)
    ax.scatter(*x[y == 1].T, s=60, c="C1", label="XOR class 1", zorder=3)
    t = torch.linspace(0, 2 * math.pi, 200)
    ax.plot(t.cos(), t.sin(), color="0.5", ls=":", lw=1)
    ax.set(aspect="equal", xlabel="$x_1$", ylabel="$x_2$", title=f"q(x) > 0 (orange): a {conic(**weights)}")
    return ax


@torch.no_grad()
def plot_single_neuron():
    """XOR and the disk (columns): the hand-set quadratic neuron's region q(x) > 0 (top) and the
    best line's half-plane (bottom), each with its accuracy."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(8.6, 8.4))
    side = torch.linspace(-2, 2, 301, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(side, side, indexing="xy"), -1).reshape(-1, 2)
    for col, (name, (x, y), weights) in enumerate((("XOR", xor_points(), XOR_NEURON),
                                                   ("disk", disk_points(), DISK_NEURON))):
        acc_line, w, b = best_line(x, y)
        q = neuron(**weights)
        regions = ((q(grid).squeeze(1) > 0, float(((q(x).squeeze(1) > 0).long() == y).double().mean()),
                    "one quadratic neuron"), (grid @ w + b > 0, acc_line, "the best line"))
        for row, (inside, acc, kind) in enumerate(regions):
            ax = axes[row, col]
            ax.contourf(side.numpy(), side.numpy(), inside.reshape(301, 301).numpy(), levels=[-0.5, 0.5, 1.5],
                        colors=["#dde6f3", "#f6dccb"])
            size_ = 60 if name == "XOR" else 6
            ax.scatter(*x[y == 0].T, s=size_, c="C0", label="class 0")
            ax.scatter(*x[y == 1].T, s=size_, c="C1", label="class 1")
            ax.set(aspect="equal", xlabel="$x_1$", ylabel="$x_2$", title=f"{name}: {kind}, {100 * acc:.1f}% correct")
            ax.title.set_fontsize(10)
    axes[0, 0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


NEURON_PARAMETERS = {"w_r": 2, "b_r": 1, "w_g": 2, "b_g": 1, "w_b": 2, "c": 1}


def explore(weights: dict | None = None):
    """Draw one quadratic neuron's decision region (`plot_neuron`) as a static figure and, where
    ipywidgets is installed, nine sliders under it that redraw that figure in place: the static
    figure is what a saved notebook shows. Returns the sliders (None without ipywidgets)."""
    import matplotlib.pyplot as plt
    from IPython.display import DisplayHandle, display
    weights = dict(weights or XOR_NEURON)
    fig, ax = plt.subplots(figsize=(4.4, 4.4))
    plot_neuron(weights, ax)
    handle = DisplayHandle()  # the sliders redraw this very output
    handle.display(fig)
    plt.close(fig)
    try:
        import ipywidgets
    except ImportError:
        return None
    sliders = {}
    for name, n in NEURON_PARAMETERS.items():
        values = weights[name] if n > 1 else (weights[name],)
        for i, v in enumerate(values):
            label = f"{name}[{i}]" if n > 1 else name
            sliders[label] = ipywidgets.FloatSlider(value=v, min=-2.0, max=2.0, step=0.05, description=label,
                                                    continuous_update=False)

    def redraw(_change=None):
        for name, n in NEURON_PARAMETERS.items():
            vals = [sliders[f"{name}[{i}]"].value for i in range(n)] if n > 1 else sliders[name].value
            weights[name] = tuple(vals) if n > 1 else vals
        ax.clear()
        plot_neuron(weights, ax)
        handle.update(fig)

    for slider in sliders.values():
        slider.observe(redraw, names="value")
    box = ipywidgets.GridBox(list(sliders.values()), layout=ipywidgets.Layout(grid_template_columns="repeat(3, 1fr)"))
    display(box)
    return box
