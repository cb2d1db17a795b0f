"""Notebook 01's measurement: three families of MLPs at equal parameter counts, trained.

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
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .experiments import PRESETS
from .layers import DESIGNS, QuadraticLinear
from .targets import PROBLEMS, RADIUS, TARGETS, _generator, dataset
from .neuron import single_neuron
from .stats import summary
from .utils import atomic_write, strict

__all__ = ["FAMILIES", "TARGETS", "PROBLEMS", "SIZES", "Square", "mlp", "n_params", "match", "budget_grid", "dataset",
           "stacked_forward", "train", "error", "pieces", "chords", "spec", "size", "prepare", "fit", "results",
           "result_path", "rate_check", "problems", "error_floor", "log_error"]

FAMILIES = ("relu", "square", "quadratic")
TOLERANCE = 0.02  # parameter counts of the three families at one budget differ by at most this

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


def mlp(family: str, d: int, width: int, depth: int = 1, out: int = 1, design: str = "quadratic") -> nn.Sequential:
    """`depth` hidden layers of `width` neurons of `family` on inputs in R^d, then Linear(width, out);
    the quadratic family's neurons are of `design` (`qnets.layers.DESIGNS`).

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
            layer = QuadraticLinear(fan_in, width, design=design)
        else:
            layer = nn.Linear(fan_in, width)
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        layers += [layer, Square() if family == "square" else nn.ReLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, out))
    return nn.Sequential(*layers)


def n_params(family: str, d: int, width: int, depth: int = 1, out: int = 1, design: str = "quadratic") -> int:
    """Parameters of `mlp(family, d, width, depth, out, design)`: a conventional neuron on n inputs
    has n + 1; a quadratic one n per weight vector (n² for the bilinear form), 1 per bias and 2 per
    batch norm of its design (Fan's: w_r, b_r, w_g, b_g, w_b, c, so 3(n + 1))."""
    def neuron(n: int) -> int:
        if family != "quadratic":
            return n + 1
        spec = DESIGNS[design]
        weights = sum(name.startswith("weight") for name in spec["params"])
        return (weights * (n * n if design == "bilinear" else n) + len(spec["params"]) - weights
                + (6 if spec.get("norms") else 0))
    return neuron(d) * width + (depth - 1) * neuron(width) * width + (width + 1) * out


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


# ----------------------------------------------------------------------------- training

def _cosine(step: int, steps: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / steps))


def stacked_forward(skeleton: nn.Sequential, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The forward of K networks shaped like `skeleton` (an `mlp`), their parameters stacked
    along a first dimension of size K (`params`, named as in the skeleton): x (K, B, d). The layers'
    own forward runs, vectorised over the K networks (`torch.func.vmap`): the quadratic neuron's
    formula lives in `qnets.layers` alone. A skeleton with buffers (batch norms' running statistics,
    which vmap cannot update per network) runs one network at a time: K = 1."""
    if next(skeleton.buffers(), None) is not None:
        if x.shape[0] != 1:
            raise ValueError("a network with buffers (batch norms) trains alone: stack K = 1 of them")
        return torch.func.functional_call(skeleton, {k: v[0] for k, v in params.items()}, (x[0],))[None]
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
        lr: float, design: str = "quadratic") -> list[nn.Module]:
    """The members' networks of one family and width, each initialised from its seed, trained together
    (one at a time where the design has batch norms), returned in eval mode."""
    models = []
    for _, seed in members:
        torch.manual_seed(seed)
        models.append(mlp(family, d, width, depth, 2 if data["classify"] else 1, design))
    if family == "quadratic" and DESIGNS[design].get("norms"):  # (the same batches as together)
        for k, model in enumerate(models):
            train([model], data["xs"][k:k + 1], data["ys"][k:k + 1], s["steps"], lr, s["batch"], data["classify"])
    else:
        train(models, data["xs"], data["ys"], s["steps"], lr, s["batch"], data["classify"])
    return [m.eval() for m in models]


def _groups(s: dict, seeds) -> dict[tuple[str, int], list[tuple[str, int]]]:
    """Members (problem, seed) by (kind, d): those that share an input space train together."""
    groups = {}
    for problem, d, kind in problems(s):
        groups.setdefault((kind, d), []).extend((problem, seed) for seed in seeds)
    return groups


def error_floor(kind: str, s: dict) -> float:
    """The smallest error told apart: one test point (classification), 1e-6 of the variance."""
    return 1 / s["n_test"] if kind == "classification" else 1e-6


def log_error(e: float | None, kind: str, s: dict) -> float:
    """log10 of a test error; a network whose outputs were not finite is scored as the constant
    predictor (variance unexplained 1, error rate 1/2)."""
    if e is None:
        e = 1.0 if kind == "regression" else 0.5
    return math.log10(max(e, error_floor(kind, s)))


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


def choose_rates(check: list[dict], s: dict, families=FAMILIES) -> dict[str, dict]:
    """Each family's rate: the shared s["lr"], unless another rate of the check gives a lower
    log10 error on the same members beyond the 95% interval of the paired differences
    (Bonferroni-corrected for the other rates tried); then the best such rate."""
    out = {}
    others = [r for r in s["rates"] if r != s["lr"]]
    level = 1 - 0.05 / max(1, len(others))
    for family in families:
        logs = {}
        for row in check:
            if row["family"] == family:
                key = (row["d"], row["depth"], row["problem"], row["seed"])
                logs.setdefault(row["rate"], {})[key] = log_error(row["error"], "regression", s)
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


def stored_or_run(path: Path, spec_: dict, run_, train_missing: bool, verbose: bool) -> dict | None:
    """The results stored at `path` when they were made with `spec_`; else, with `train_missing`,
    those of `run_()`, stored there first (None when missing and not trained)."""
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("spec") == json.loads(json.dumps(spec_)):
            return stored
        if verbose:
            print(f"{path} was made with another spec: training again", flush=True)
    if not train_missing:
        return None
    text = json.dumps(run_(), indent=1, allow_nan=False) + "\n"  # keys in the order made
    atomic_write(path, lambda f: f.write(text.encode()))
    return json.loads(text)


def results(preset: str, train_missing: bool = True, verbose: bool = True) -> dict | None:
    """The stored results of `preset`'s size when they were made with the current spec; else,
    with `train_missing`, trained now and stored (None when missing and not trained)."""
    return stored_or_run(result_path(preset), spec(preset), lambda: run(preset, verbose), train_missing, verbose)
