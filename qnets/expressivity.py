"""Expressivity, measured (notebook 01): the three MLP families' errors read as scores, factors,
parameters needed and verdicts, as tables and figures. The families and their training are in
`qnets.mlps`, the single neuron in `qnets.neuron`.

The paper's first claim (Fan et al., arXiv:2110.06081) is that a network of quadratic neurons is
more expressive than a conventional network of the same size, with or without a quadratic
activation; `verdicts` reads it against the stored errors.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .plots import colour
from .stats import error_ratio, summary

from .mlps import FAMILIES, PROBLEMS, error_floor, log_error, problems

__all__ = ["scores", "compare", "curve", "needed", "verdicts", "markdown_table", "text_table", "pieces_table",
           "rate_table", "frame", "plot_scaling", "plot_classification", "plot_pieces", "plot_boundaries"]



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
        logs = [log_error(r["error"], r["kind"], s) for r in rows]
        out.setdefault((problem, d, depth, family), []).append(sum(logs) / len(logs))
    return out


def compare(res: dict, problem: str, d: int, depth: int, other: str, level: float = 0.95) -> dict:
    """The quadratic family against `other` on one problem: Welch's interval of the difference
    of the mean log10 errors over seeds, as the ratio other/quadratic of the geometric-mean
    errors (> 1: the quadratic network's error is lower), and its verdict."""
    sc = scores(res)
    return error_ratio(sc[problem, d, depth, "quadratic"], sc[problem, d, depth, other], level)


def curve(res: dict, problem: str, d: int, depth: int, family: str) -> list[dict]:
    """Per budget: parameters, geometric mean of the test error over seeds and its 95% interval."""
    s = res["spec"]
    out = []
    for (budget,), rows in sorted(_by({"rows": [r for r in res["rows"] if (r["problem"], r["d"], r["depth"],
                                                                               r["family"]) == (problem, d, depth,
                                                                                                family)]},
                                      "budget").items()):
        st = summary([log_error(r["error"], r["kind"], s) for r in rows])
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
    """An error as the table shows it; at the floor (`error_floor`), "≤ floor"."""
    floor = error_floor(kind, s)
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
            logs = [log_error(r["error"], "regression", s) for r in res["rate_check"]
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
    df["log_error"] = [log_error(e, k, s) for e, k in zip(df["error"], df["kind"])]
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
    """Log-log axes with plain labels at 1 and 3 × 10^k on x (parameters) and decades on y, where the
    minor ticks and grid lines are at 2 and 5 × 10^k."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter
    ax.set(xscale="log", yscale="log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 3.0)))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))  # (all eight per decade: a quarter of the drawing time)
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both")


def heading(fig, res: dict, what: str) -> None:
    """The figure's first line: the MLPs' size, their seeds and what its lines and bands are."""
    s = res["spec"]
    fig.suptitle(f"MLPs of size {s['size']} · {s['seeds']} seeds per point · {what}", fontsize=9)


def _figure_legend(fig, ax, extra=()) -> None:
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles + [h for h, _ in extra], labels + [n for _, n in extra], loc="outside lower center",
               ncol=len(labels) + len(extra), fontsize=8, frameon=False)


def _scaling_panel(df, ax, threshold: float, title: str, ylabel: str):
    import seaborn as sns
    palette = family_colours()
    sns.lineplot(df, x="params", y="scored", hue="family", hue_order=FAMILIES, palette=palette, estimator=_geomean,
                 errorbar=_geo_interval, marker="o", ax=ax, legend=False)
    sns.scatterplot(df, x="params", y="scored", hue="family", hue_order=FAMILIES, palette=palette, alpha=0.35, s=12,
                    ax=ax, legend=False)
    ax.axhline(threshold, color="0.5", ls=":", lw=1)
    ax.set(title=title, xlabel="parameters", ylabel=ylabel)
    _log_axes(ax)
    # the limits hold every seed and the threshold; a 3-seed interval may reach beyond them
    ax.set_ylim(min(df["scored"].min(), threshold) / 3, max(df["scored"].max(), threshold) * 3)


def _family_handles(threshold: str | None = None) -> list:
    from matplotlib.lines import Line2D
    out = [(Line2D([], [], color=c, marker="o", label=f), f) for f, c in family_colours().items()]
    return out + ([(Line2D([], [], color="0.5", ls=":"), threshold)] if threshold else [])


_SCALING = ("lines: geometric mean, bands: its 95% CI, faint points: seeds")


def plot_scaling(res: dict, depth: int):
    """Regression: test error (fraction of variance unexplained) against parameters, one panel
    per target (rows) and dimension (columns), at `depth`: each seed a faint point, the line the
    geometric mean over seeds with its 95% interval; dotted, the threshold of the table."""
    import matplotlib.pyplot as plt
    s, df = res["spec"], frame(res)
    df = df[(df["kind"] == "regression") & (df["depth"] == depth)]
    fig, axes = plt.subplots(len(s["targets"]), len(s["dims"]), figsize=(11, 2.6 * len(s["targets"]) + 0.8),
                             squeeze=False, layout="constrained")
    for i, target in enumerate(s["targets"]):
        for j, d in enumerate(s["dims"]):
            _scaling_panel(df[(df["problem"] == target) & (df["d"] == d)], axes[i, j], s["threshold"]["regression"],
                           f"{target}, d = {d}", "variance unexplained" if j == 0 else "")
    thr = s["threshold"]["regression"]
    _figure_legend(fig, axes[0, 0], _family_handles(f"threshold {thr:g} (the table's)"))
    heading(fig, res, f"regression, {_depths(depth)} · {_SCALING}")
    return fig


def plot_classification(res: dict):
    """Classification: test error rate against parameters, one panel per problem (columns) and
    depth (rows), drawn as `plot_scaling`."""
    import matplotlib.pyplot as plt
    s, df = res["spec"], frame(res)
    df = df[df["kind"] == "classification"]
    fig, axes = plt.subplots(len(s["depths"]), len(s["problems"]), figsize=(8, 3 * len(s["depths"]) + 0.8),
                             squeeze=False, layout="constrained")
    for i, depth in enumerate(s["depths"]):
        for j, problem in enumerate(s["problems"]):
            _scaling_panel(df[(df["problem"] == problem) & (df["depth"] == depth)], axes[i, j],
                           s["threshold"]["classification"], f"{problem}, {_depths(depth)}",
                           "test error rate" if j == 0 else "")
    thr = s["threshold"]["classification"]
    _figure_legend(fig, axes[0, 0], _family_handles(f"threshold {thr:g}"))
    heading(fig, res, f"classification (d = 2) · {_SCALING}")
    return fig


def plot_pieces(res: dict, depth: int):
    """Pieces per chord (activation regions along random chords through the data) against
    parameters at `depth`: one panel per regression target (rows) and dimension (columns), the
    classification problems (d = 2) in the last row; mean over seeds with its 95% interval. Dashed,
    for one hidden layer, the most a network of that width can have: width + 1 (relu), 2·width + 1
    (quadratic); the square network is one polynomial, 1 piece."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D
    s, df = res["spec"], frame(res)
    panels = [[(t, d) for d in s["dims"]] for t in s["targets"]] + [[(p, 2) for p in s["problems"]]]
    cols = max(map(len, panels))
    palette = family_colours()
    fig, axes = plt.subplots(len(panels), cols, figsize=(11, 2.4 * len(panels) + 0.8), squeeze=False,
                             layout="constrained")
    for i, row in enumerate(panels):
        for j in range(cols):
            ax = axes[i, j]
            if j >= len(row):
                ax.axis("off")
                continue
            problem, d = row[j]
            sub = df[(df["problem"] == problem) & (df["d"] == d) & (df["depth"] == depth)]
            sns.lineplot(sub, x="params", y="pieces", hue="family", hue_order=FAMILIES, palette=palette, marker="o",
                         errorbar=lambda v: (summary(list(v))["low"], summary(list(v))["high"]), ax=ax, legend=False)
            if depth == 1:
                for family, per in (("relu", 1), ("quadratic", 2)):
                    m = sub[sub["family"] == family].drop_duplicates("params").sort_values("params")
                    ax.plot(m["params"], per * m["width"] + 1, ls="--", lw=1, color=palette[family])
            ax.set(xlabel="parameters" if i == len(panels) - 1 or j >= len(panels[-1]) else "",
                   ylabel="pieces per chord" if j == 0 else "", title=f"{problem}, d = {d}")
            _log_axes(ax)
            ax.set_ylim(0.5, 2 * max(sub["pieces"].max(), 1))
    bound = "most pieces one hidden layer of that width allows"
    if depth > 1:  # the bound (width + 1)^depth is loose: say by how much rather than draw it
        relu = df[(df["depth"] == depth) & (df["family"] == "relu")]
        r = (relu["width"] + 1) ** depth / relu["pieces"]
        bound = f"no bound drawn: relu's, (width + 1)^{depth}, is {r.min():.2g} to {r.max():.2g}× the pieces measured"
    _figure_legend(fig, axes[0, 0], _family_handles() + [(Line2D([], [], color="0.3", ls="--"), bound)])
    heading(fig, res, f"{_depths(depth)} · lines: mean, bands: its 95% CI")
    return fig


@torch.no_grad()
def plot_boundaries(models: dict[tuple[str, str], nn.Module], data: dict[str, tuple], extent: float = 2.0):
    """Decision regions of trained classifiers: models[(problem, family)], data[problem] = (x, y)
    test points drawn over them; one row per problem, one column per family."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    rows = list(dict.fromkeys(p for p, _ in models))
    fig, axes = plt.subplots(len(rows), len(FAMILIES), figsize=(9, 3 * len(rows) + 0.6), squeeze=False,
                             layout="constrained", sharex=True, sharey=True)
    side = torch.linspace(-extent, extent, 300)
    grid = torch.stack(torch.meshgrid(side, side, indexing="xy"), -1).reshape(-1, 2)
    regions, points = ["#dde6f3", "#f6dccb"], ["C0", "C1"]
    for i, problem in enumerate(rows):
        x, y = data[problem]
        for j, family in enumerate(FAMILIES):
            model, ax = models[problem, family], axes[i, j]
            z = model(grid).argmax(1).reshape(300, 300).numpy()
            ax.contourf(side.numpy(), side.numpy(), z, levels=[-0.5, 0.5, 1.5], colors=regions)
            for k in (0, 1):
                ax.scatter(*x[y == k].T, s=2, c=points[k])
            err = float((model(x).argmax(1) != y).double().mean())
            n = sum(p.numel() for p in model.parameters())
            ax.set(aspect="equal", xlabel="$x_1$" if i == len(rows) - 1 else "", ylabel="$x_2$" if j == 0 else "")
            ax.set_title(f"{problem}, {family}\n{n} params, {100 * err:.1f}% error", fontsize=9)
    fig.legend([Line2D([], [], ls="", marker="o", ms=4, color=points[k]) for k in (0, 1)]
               + [Patch(color=regions[k]) for k in (0, 1)],
               ["class 0 (test points)", "class 1 (test points)", "predicted class 0", "predicted class 1"],
               loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    return fig
