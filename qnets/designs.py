"""Notebook 06's measurement: every published quadratic neuron at equal parameter count.

The neurons of `qnets.layers.DESIGNS` (Fan's full and compact neurons, QRes, QuadraLib's five
types with and without batch norms, Kervolution's polynomial kernel) and the conventional ReLU
neuron, each as an MLP of one hidden layer (`qnets.mlps.mlp`, ReLU after every neuron), learn
notebook 01's problems: radial targets in d = 2 and 8, and the two spirals. At a budget each
design takes the width whose parameter count is nearest; budgets are Fan's network's counts at
widths where every design's nearest count is within `tolerance`. Every design trains alike (Adam,
cosine decay, the same data and batches), at the shared rate unless a rate check on seeds of its
own finds a better one for it (`qnets.mlps.choose_rates`). Designs that can start as the
conventional layer start there (ReLinear's start); the others start from random weights.

`verdicts` reads one question per design: does Fan's neuron reach a lower error than it at equal
parameter count on every problem? Errors are read as in notebook 01: per seed, the mean log10
test error over the budgets; Welch's 95% interval over seeds.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

from . import mlps
from .layers import DESIGNS
from .plots import colour
from .stats import error_ratio, summary
from .targets import PROBLEMS, TARGETS
from .utils import strict

__all__ = ["NAMES", "SIZES", "spec", "grid", "run", "results", "scores", "compare", "verdicts", "text_table",
           "markdown_table", "plot_ratios", "plot_scaling"]

REFERENCE = "quadratic"  # Fan's neuron: every other design is compared with it
NAMES = ("relu", *DESIGNS)  # the conventional neuron, then every quadratic design
SIZES = {
    "smoke": dict(dims=(2,), targets=("bump",), problems=("spirals",), seeds=2, budgets=2, lo=60, hi=200,
                  n_train=2000, n_test=500, batch=64, steps=60, lr=3e-2, rates=(1e-2, 3e-2), tolerance=0.1),
    "quick": dict(dims=(2, 8), targets=TARGETS, problems=("spirals",), seeds=3, budgets=4, lo=60, hi=2000,
                  n_train=50_000, n_test=4096, batch=128, steps=1000, lr=3e-2, rates=(1e-2, 3e-2, 1e-1),
                  tolerance=0.1),
}


def spec(preset: str) -> dict:
    """Everything that determines the stored results of `preset`'s size (smoke, else quick)."""
    size = mlps.size(preset)
    return {"size": size, **SIZES[size], "depths": (1,), "names": NAMES, "lines": 1, "points": 2,
            "radius": mlps.RADIUS, "threshold": {"regression": 0.02, "classification": 0.02}}


def _family(name: str) -> tuple[str, str]:
    return ("relu", REFERENCE) if name == "relu" else ("quadratic", name)


def count(name: str, d: int, width: int, out: int) -> int:
    """Parameters of the one-hidden-layer network of `name` at `width`."""
    family, design = _family(name)
    return mlps.n_params(family, d, width, 1, out, design)


def width(name: str, budget: int, d: int, out: int) -> int:
    """The width of `name` whose parameter count is nearest to `budget` (the smaller on a tie)."""
    w = 1
    while count(name, d, w + 1, out) <= budget:
        w += 1
    return min((w, w + 1), key=lambda v: abs(count(name, d, v, out) - budget))


def grid(d: int, out: int, s: dict) -> list[dict]:
    """About s["budgets"] budgets spaced evenly in log in [lo, hi]: Fan's network's counts at which
    every design's nearest count lies within s["tolerance"]. [{"budget", "widths", "params"}]."""
    feasible, q = [], 1
    while (b := count(REFERENCE, d, q, out)) <= 1.5 * s["hi"]:
        params = {n: count(n, d, width(n, b, d, out), out) for n in NAMES}
        if b >= s["lo"] and max(abs(p / b - 1) for p in params.values()) <= s["tolerance"]:
            feasible.append(b)
        q += 1
    if not feasible:
        raise ValueError(f"no budget in [{s['lo']}, {1.5 * s['hi']:g}] fits every design within "
                         f"{s['tolerance']:.0%} (d={d})")
    lo, hi = feasible[0], max(feasible[0], min(s["hi"], feasible[-1]))
    picked = sorted({min(feasible, key=lambda v: abs(math.log(v / (lo * (hi / lo) ** (i / max(1, s["budgets"] - 1))))))
                     for i in range(s["budgets"])})
    return [{"budget": b, "widths": (w := {n: width(n, b, d, out) for n in NAMES}),
             "params": {n: count(n, d, w[n], out) for n in NAMES}} for b in picked]


def _rate_check(s: dict, verbose: bool) -> list[dict]:
    """Every design at every rate on the regression targets, each dimension, the middle budget,
    with seeds of its own (100, 101, ...)."""
    rows, seeds = [], [100 + i for i in range(s["seeds"])]
    for d in s["dims"]:
        members = [(t, seed) for t in s["targets"] for seed in seeds]
        data = mlps.prepare("regression", d, members, s)
        points = grid(d, 1, s)
        point = points[len(points) // 2]
        for name in NAMES:
            family, design = _family(name)
            for rate in s["rates"]:
                models = mlps.fit(family, d, point["widths"][name], 1, members, data, s, rate, design=design)
                for (problem, seed), model in zip(members, models):
                    xt, yt, scale, _ = data["members"][problem, seed]
                    error = strict(mlps.error(model, xt, yt, False, scale))
                    rows.append({"family": name, "rate": rate, "d": d, "depth": 1, "problem": problem, "seed": seed,
                                 "params": point["params"][name], "error": error})
        if verbose:
            print(f"learning-rate check, d={d}: done", flush=True)
    return rows


def run(preset: str, verbose: bool = True) -> dict:
    """Train every design at every budget, problem and seed of `preset`'s size, after the rate check."""
    s = spec(preset)
    t0, c0 = time.time(), time.process_time()
    check = _rate_check(s, verbose)
    rates = mlps.choose_rates(check, s, families=NAMES)
    groups = {}
    for problem, d, kind in mlps.problems(s):
        groups.setdefault((kind, d), []).extend((problem, seed) for seed in range(s["seeds"]))
    rows, done = [], 0
    for (kind, d), members in groups.items():
        data = mlps.prepare(kind, d, members, s)
        points = grid(d, 2 if data["classify"] else 1, s)
        for name in NAMES:
            tf, (family, design) = time.time(), _family(name)
            for point in points:
                models = mlps.fit(family, d, point["widths"][name], 1, members, data, s, rates[name]["rate"],
                                  design=design)
                for (problem, seed), model in zip(members, models):
                    xt, yt, scale, _ = data["members"][problem, seed]
                    rows.append({"problem": problem, "kind": kind, "d": d, "depth": 1, "family": name,
                                 "budget": point["budget"], "width": point["widths"][name],
                                 "params": point["params"][name], "seed": seed,
                                 "error": strict(mlps.error(model, xt, yt, data["classify"], scale))})
            done += 1
            if verbose:
                print(f"[{done}/{len(groups) * len(NAMES)}] {kind} d={d}, {name}: {len(points)} budgets × "
                      f"{len(members)} networks in {time.time() - tf:.1f}s", flush=True)
    return {"spec": s, "rates": rates, "rate_check": check, "rows": rows,
            "time": {"wall_s": round(time.time() - t0, 1), "cpu_s": round(time.process_time() - c0, 1)}}


def result_path(preset: str, root: str | Path = ".") -> Path:
    """results/designs/<size>.json; the smoke size goes to results/smoke/ (not committed)."""
    size = mlps.size(preset)
    return Path(root) / ("results/smoke/designs" if size == "smoke" else "results/designs") / f"{size}.json"


def results(preset: str, train_missing: bool = True, verbose: bool = True) -> dict | None:
    """The stored results of `preset`'s size when made with the current spec; else, with
    `train_missing`, trained now and stored (None when missing and not trained)."""
    return mlps.stored_or_run(result_path(preset), spec(preset), lambda: run(preset, verbose), train_missing,
                              verbose)


# ----------------------------------------------------------------------------- reading

def problems(res: dict) -> list[tuple[str, int]]:
    return [(p, d) for p, d, _ in mlps.problems(res["spec"])]


def scores(res: dict) -> dict[tuple, list[float]]:
    """(problem, d, name) -> per seed, the mean over the budgets of log10 test error."""
    s, per = res["spec"], {}
    for r in res["rows"]:
        per.setdefault((r["problem"], r["d"], r["family"], r["seed"]), []).append(
            mlps.log_error(r["error"], r["kind"], s))
    out = {}
    for (problem, d, name, _), logs in sorted(per.items(), key=lambda kv: kv[0][3]):
        out.setdefault((problem, d, name), []).append(sum(logs) / len(logs))
    return out


def compare(res: dict, problem: str, d: int, name: str, level: float = 0.95) -> dict:
    """`name` against Fan's neuron on one problem: the ratio name/Fan of the geometric-mean errors
    (> 1: Fan's errs less) with Welch's interval over seeds, and the verdict of "Fan's errs less"."""
    sc = scores(res)
    return error_ratio(sc[problem, d, REFERENCE], sc[problem, d, name], level)


def _label(problem: str, d: int) -> str:
    return problem if problem in PROBLEMS else f"{problem} d={d}"


def verdicts(res: dict) -> list[dict]:
    """Per design: "Fan's neuron reaches a lower error at equal parameter count on every problem
    tried". Supported when it does on each problem (95% Welch interval), contradicted when the
    design errs less on some problem at the Bonferroni-corrected level, not resolved otherwise."""
    probs, out = problems(res), []
    k = len(probs)
    for name in NAMES:
        if name == REFERENCE:
            continue
        per = {pd: compare(res, *pd, name) for pd in probs}
        strict_ = {pd: compare(res, *pd, name, level=1 - 0.05 / k)["verdict"] for pd in probs}
        sup = [pd for pd, c in per.items() if c["verdict"] == "supported"]
        con = [pd for pd, v in strict_.items() if v == "contradicted"]
        evidence = (f"Lower mean log error over the budgets, 95% Welch interval over {res['spec']['seeds']} seeds: on "
                    f"{len(sup)} of {k} problems")
        if con:
            evidence += f"; {name} errs less beyond the Bonferroni-corrected interval on " + ", ".join(
                _label(*pd) for pd in con)
        what = "the conventional ReLU neuron" if name == "relu" else f"the {name} neuron"
        out.append({"claim": f"At equal parameter count, Fan's neuron reaches a lower test error than {what} on "
                             "every problem tried",
                    "verdict": "supported" if len(sup) == k else "contradicted" if con else "not resolved",
                    "evidence": evidence})
    return out


def _ratio_text(c: dict) -> str:
    if c["ratio"] is None:
        return "—"
    mark = {"supported": "+", "contradicted": "−"}.get(c["verdict"], "~")
    return f"{mark}{c['ratio']:.3g}"


def _spread(res: dict, name: str) -> str:
    """The range of a design's parameter counts relative to Fan's network at the same problem and budget."""
    ref = {(r["problem"], r["budget"]): r["params"] for r in res["rows"] if r["family"] == REFERENCE}
    dev = [r["params"] / ref[r["problem"], r["budget"]] - 1 for r in res["rows"] if r["family"] == name]
    return f"{min(dev):+.1%} to {max(dev):+.1%}"


def text_table(res: dict, errors: bool = False) -> str:
    """Per design and problem: the geometric-mean error over budgets and seeds (Fan's row), and for
    the others the ratio of theirs to Fan's, marked + (Fan's errs less, 95%), − (the design errs
    less) or ~ (not resolved); then each design's parameters at the budgets (its spread). With
    `errors`, every row gives its own geometric-mean error instead."""
    probs, sc, s = problems(res), scores(res), res["spec"]
    cols = [_label(*pd) for pd in probs]
    lines = [f"{'':13s}" + "".join(f"{c:>12s}" for c in cols) + "   params (vs Fan's)"]
    for name in NAMES:
        if name == REFERENCE or errors:
            cells = [f"{10 ** (sum(sc[pd + (name,)]) / len(sc[pd + (name,)])):.3g}" for pd in probs]
        else:
            cells = [_ratio_text(compare(res, *pd, name)) for pd in probs]
        lines.append(f"{name:13s}" + "".join(f"{c:>12s}" for c in cells) + f"   {_spread(res, name)}")
    floor = ", ".join(f"{k} {mlps.error_floor(k, s):.2g}" for k in ("regression", "classification"))
    what = "every row: its geometric-mean error" if errors else \
        "Fan's row: its geometric-mean error; others: their error / Fan's"
    return "\n".join(lines) + f"\n({what}; errors at the floor ({floor}) count as the floor)"


def markdown_table(res: dict) -> str:
    """`text_table` as Markdown, with the data line under it; for results/README.md."""
    probs, sc, s = problems(res), scores(res), res["spec"]
    out = ["| design | " + " | ".join(_label(*pd) for pd in probs) + " | params vs Fan's |",
           "|---|" + "---:|" * len(probs) + "---|"]
    for name in NAMES:
        if name == REFERENCE:
            cells = [f"error {10 ** (sum(sc[pd + (name,)]) / len(sc[pd + (name,)])):.3g}" for pd in probs]
        else:
            cells = [_ratio_text(compare(res, *pd, name)) + "×" for pd in probs]
        out.append(f"| {name} | " + " | ".join(cells) + f" | {_spread(res, name)} |")
    rates = sorted({v["rate"] for v in res["rates"].values()})
    out += ["", f"Data `synthetic`: {s['n_train']:,} training and {s['n_test']:,} test points per problem and seed, "
                f"{s['seeds']} seeds; one hidden layer; Adam, {s['steps']:,} steps of {s['batch']}, at "
                + (f"{rates[0]:g} for every design" if len(rates) == 1 else "the rate the check chose per design")
                + f"; {len(res['rows']):,} networks trained in {res['time']['wall_s'] / 60:.1f} min."]
    return "\n".join(out)


# ----------------------------------------------------------------------------- figures

_MARKERS = "osD^v<>ph*"


def plot_ratios(res: dict):
    """Each design's error over Fan's (geometric mean over budgets), per problem, with the 95%
    interval: left of 1 the design errs less, right of 1 Fan's does."""
    probs = problems(res)
    names = [n for n in NAMES if n != REFERENCE]
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(names) * len(probs) / 3 + 1.8), layout="constrained")
    offsets = [(i - (len(probs) - 1) / 2) * 0.8 / len(probs) for i in range(len(probs))]
    cmap = plt.get_cmap("tab10")
    for j, pd in enumerate(probs):
        for i, name in enumerate(names):
            c = compare(res, *pd, name)
            if c["ratio"] is None:
                continue
            y = i + offsets[j]
            lo, hi = (c["low"] or c["ratio"]), (c["high"] or c["ratio"])
            ax.plot([lo, hi], [y, y], color=cmap(j), lw=1.4)
            ax.plot(c["ratio"], y, _MARKERS[j % len(_MARKERS)], color=cmap(j), ms=5,
                    label=_label(*pd) if i == 0 else None)
    ax.axvline(1, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("error of the design / error of Fan's neuron (geometric mean over budgets; 95% Welch interval)")
    ax.set_title(f"Every design against Fan's neuron at equal parameter count ({res['spec']['seeds']} seeds)\n"
                 "right of 1: Fan's neuron errs less")
    ax.legend(loc="lower right", fontsize=8, title="problem", title_fontsize=8)
    return fig


def plot_scaling(res: dict):
    """Test error against parameters, one panel per problem, one line per design (geometric mean
    over seeds)."""
    probs, s = problems(res), res["spec"]
    cols = min(4, len(probs))
    rows = math.ceil(len(probs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.0 * rows), layout="constrained", squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, pd in zip(axes.flat, probs):
        for i, name in enumerate(NAMES):
            per = {}
            for r in res["rows"]:
                if (r["problem"], r["d"], r["family"]) == (*pd, name):
                    per.setdefault(r["params"], []).append(mlps.log_error(r["error"], r["kind"], s))
            xs = sorted(per)
            style = dict(color=colour("conventional") if name == "relu" else colour("quadratic")
                         if name == REFERENCE else cmap(i), lw=2.2 if name in ("relu", REFERENCE) else 1.1)
            ax.plot(xs, [10 ** summary(per[x])["mean"] for x in xs], marker=_MARKERS[i % len(_MARKERS)], ms=3,
                    label=name, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # (log axes over less than a decade label their minor ticks, which collide)
            axis.set_minor_formatter(NullFormatter())
        ax.set_title(_label(*pd), fontsize=9)
        ax.set_xlabel("parameters", fontsize=8)
    for ax in axes.flat[len(probs):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("test error")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.suptitle(f"Test error against parameters, geometric mean of {s['seeds']} seeds")
    return fig
