"""Figures and tables of stored results over seeds.

Every function takes `{label: [result, ...]}` (one result per seed, as `experiments.results`
returns) and draws or formats it; none trains anything. Every label keeps one colour across all
figures (`colour`), none of them the grey of a baseline's band. Intervals, as bars and as bands
on learning curves (from three seeds; with two, the curves show each seed), are 95% t-intervals of
the mean over seeds (`qnets.stats`); `heading` says so on the figure, with the preset, the networks
and the seeds.
"""
from __future__ import annotations


from .claims import RATIO_FLOOR, accuracies, difference, figure2, not_held_back, ratio
from .models import flops_per_image
from .stats import summary
from .utils import is_finite

__all__ = ["colour", "heading", "figure_legend", "table", "collapse_count", "curves", "finals", "quadratic_curves",
           "sweep", "sweep_figure", "scatter", "describe"]

# Every label of every notebook, by meaning: ReLinear (shrunken gradients) is green wherever it appears,
# the conventional network blue; none grey (the baseline's band) or pale, none like another of its notebook.
_COLOURS = {"conventional": "#0173b2", "conventional-rezero": "#56b4e9", "conventional-trained-on": "#006374",
            "naive": "#de8f05", "naive-lr/10": "#7b3294", "relinear-sg": "#029e73", "relinear-rezero": "#591e71",
            "relinear-from-conventional": "#8c0800", "relinear-sw-l2": "#cc78bc", "relinear-sw-l1": "#8c564b",
            "compact": "#d55e00", "compact-authors": "#a23582", "gamma=0": "#000000", "gamma=lr": "#9a9b00",
            "qres": "#e7298a", "quadraour": "#8073ac", "quadraour-bn": "#332288", "power": "#882255",
            "square": "#17becf", "product": "#66a61e", "poly": "#a6761d"}
_SPARE = ("#001c7f", "#b1400d", "#12711c", "#592f0d", "#3d6b00", "#6b3d00", "#00435c", "#5c0045")
INTERVAL = "95% CI of the mean over seeds"


def colour(label: str) -> str:
    """The colour of `label` in every figure; other labels (a sweep's values) take a dark one."""
    label = {"quadratic": "relinear-sg", "relinear": "relinear-sg"}.get(label, label)  # the same network
    return _COLOURS.get(label) or _SPARE[sum(map(ord, label)) % len(_SPARE)]


def heading(fig, preset: str, results: dict[str, list[dict]], interval: str = INTERVAL) -> None:
    """The figure's first line: the preset, the networks, the seeds per run, what its bars and bands are."""
    nets = sorted({(r["config"]["depth"], r["config"]["neuron"] == "conventional") for rs in results.values()
                   for r in rs[:1]})
    depths = ", ".join(dict.fromkeys(f"ResNet-{d}" for d, _ in nets)) or "no runs stored"
    n = sorted({len(rs) for rs in results.values() if rs})
    seeds = "" if not n else f" · {n[0]} seeds per run" if len(n) == 1 else f" · {n[0]} to {n[-1]} seeds per run"
    fig.suptitle(f"preset {preset} · {depths}{seeds} · bars and bands: {interval}", fontsize=9)


def _legend(ax, **kw) -> None:
    """A legend only where something is labelled (no warning for an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _axes(ax, title: str | None = None):
    import matplotlib.pyplot as plt
    ax = plt.subplots(figsize=(6.4, 4))[1] if ax is None else ax
    if title:
        ax.set_title(title)
    return ax


def table(results: dict[str, list[dict]], baseline: str | None = None) -> str:
    """Plain-text table, one row per label: network, parameters, seeds, final test accuracy (%) as
    mean ± sd over the seeds (a collapsed seed counts with its last test accuracy, `claims.accuracy`),
    each seed's value, the quadratic terms' final max(‖w_g‖, ‖w_b‖)/‖w_r‖ (median over seeds), and
    with `baseline` the difference to it with its 95% interval, paired by seed where the runs share
    their data order (`claims.difference`); then what happened to seeds that did not complete."""
    col = max([18] + [len(label) for label in results])  # the label column
    head = (f"{'run':{col}s} {'network':28s} {'params':>9s} {'n':>3s} {'final % (mean ± sd)':>20s}  {'per seed':24s}"
            f" {'max(wg,wb)/wr':>13s}")
    head += f" {'vs ' + baseline + ' [95% CI]':>26s}" if baseline in results else ""
    lines, notes = [head, "-" * len(head)], []
    for label, rs in results.items():
        if not rs:
            lines.append(f"{label:{col}s} (no results)")
            continue
        c = rs[0]["config"]
        net = f"ResNet-{c['depth']} {c['neuron']}" + ("+rz" if c["rezero"] else "")
        vals = accuracies(rs)
        s = summary(vals)
        acc = "-" if not vals else f"{s['mean']:.2f}" + (f" ± {s['sd']:.2f}" if s["sd"] is not None else "")
        seeds = " ".join(f"{v:.2f}" for v in vals) or "-"
        q = ratio(rs)
        row = f"{label:{col}s} {net:28s} {rs[0]['params']:9,d} {len(rs):3d} {acc:>20s}  {seeds:24s} " \
              f"{'-' if q is None else f'{q:.2g}':>13s}"
        if baseline in results and label != baseline:
            w = difference(results, label, baseline)
            cell = "-" if w["diff"] is None else f"{w['diff']:+.2f}" + (
                f" [{w['low']:+.2f}, {w['high']:+.2f}]" if w["low"] is not None else " (one seed)")
            row += f" {cell:>26s}"
        lines.append(row)
        for r in rs:
            if r["status"] != "completed":
                seed = r["config"]["seed"]
                notes.append(f"  {label} seed {seed}: {r['status']} after {r['epochs_run']} epochs "
                             f"({r.get('collapse_reason')})")
    if baseline in results:
        notes.append("differences paired by seed where runs share their data order; max(wg,wb)/wr below "
                     "1e-3 means the quadratic terms did not move (nearly the conventional function)")
    return "\n".join(lines + notes)


def collapse_count(results: dict[str, list[dict]]) -> str:
    """How many runs collapsed (training broke down), which, and how many evaluations met non-finite outputs."""
    runs = [(label, r) for label, rs in results.items() for r in rs]
    collapsed = [f"{label} seed {r['config']['seed']} ({r['collapse_reason']})" for label, r in runs
                 if r["status"] == "collapsed"]
    text = f"{len(collapsed)} of {len(runs)} runs collapsed" + (": " + "; ".join(collapsed) if collapsed else "")
    overflow = [f"{label} seed {r['config']['seed']} (from epoch {first}, up to {most} images)" for label, r in runs
                for first, most in [_overflow(r)] if first is not None]
    if overflow:
        text += f"\ntest images with non-finite outputs in evaluation mode: {'; '.join(overflow)}"
    return text


def _overflow(r: dict) -> tuple[int | None, int]:
    bad = [(h["epoch"] + 1, h.get("test_nonfinite") or 0) for h in r["history"] if h.get("test_nonfinite")]
    return (bad[0][0], max(n for _, n in bad)) if bad else (None, 0)


def _per_epoch(rs: list[dict], value) -> dict[int, list[float]]:
    """{epoch (1 = after the first): [value(history entry) of each seed that has a finite one]}."""
    out = {}
    for r in rs:
        for h in r["history"]:
            v = value(h)
            if is_finite(v):
                out.setdefault(h["epoch"] + 1, []).append(v)
    return out


def _epochs_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def curves(results: dict[str, list[dict]], metric: str = "test_acc", ax=None, title: str | None = None,
           legend: bool = True):
    """`metric` against epochs: the mean over seeds at each epoch it was evaluated (markers) with
    its 95% interval as a band from three seeds; a network with two seeds shows each seed's curve as a
    thin line instead (with one degree of freedom the band, ±12.7 standard errors, would be wider than
    the plot) and the axes say so. A cross marks the last epoch of a collapsed seed. `legend=False`
    leaves the legend to `figure_legend`."""
    ax = _axes(ax, title)
    scale = 100 if metric.endswith("acc") else 1
    for label, rs in results.items():
        per = _per_epoch(rs, lambda h: h.get(metric))
        if not per:
            continue
        x = sorted(per)
        stats = [summary([scale * v for v in per[e]]) for e in x]
        ax.plot(x, [s["mean"] for s in stats], "-o", ms=3.5, lw=1.6, color=colour(label), label=label)
        band = [(e, s["low"], s["high"]) for e, s in zip(x, stats) if s["n"] >= 3]
        if band:
            ax.fill_between(*zip(*band), color=colour(label), alpha=0.15, lw=0)
        for r in rs:
            pts = [(h["epoch"] + 1, scale * h[metric]) for h in r["history"] if is_finite(h.get(metric))]
            if pts and len(rs) == 2:
                ax.plot(*zip(*pts), "-", lw=0.8, alpha=0.6, color=colour(label), label="_seed")
            if pts and r["status"] == "collapsed":
                ax.plot(*pts[-1], "x", color=colour(label), ms=9, mew=2)
    if any(len(rs) == 2 for rs in results.values()):
        ax.annotate("thin lines: each seed of a network with two", (0.98, 0.02), xycoords="axes fraction",
                    ha="right", fontsize=7, color="0.3")
    _epochs_axis(ax)
    ax.set_ylabel({"test_acc": "test accuracy (%)", "train_acc": "training accuracy (%)",
                   "train_loss": "training loss"}.get(metric, metric))
    ax.grid(alpha=0.3)
    if legend:
        _legend(ax, fontsize=7)
    return ax


def _honest_limits(ax, values, min_span: float = 4.0):
    """y-limits that hold every value (and interval) drawn but span at least `min_span` points,
    so that a small difference is not drawn as a large one."""
    lo, hi = ax.get_ylim()
    if values:
        lo, hi = min(lo, min(values)), max(hi, max(values))
    if hi - lo < min_span:
        mid = (hi + lo) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    pad = 0.12 * (hi - lo)
    ax.set_ylim(lo - pad, hi + pad)


def _interval(ax, x, vals, colour_, width=0.25):
    s = summary(vals)
    if s["n"] == 0:
        return
    ax.plot([x - width, x + width], [s["mean"]] * 2, color=colour_, lw=2.5)
    if s["low"] is not None:
        ax.plot([x, x], [s["low"], s["high"]], color=colour_, lw=1.5)


def finals(results: dict[str, list[dict]], baseline: str | None = "conventional", ax=None, title: str | None = None):
    """Final test accuracy of every seed (points) with each label's mean (bar) and 95% interval
    of the mean (line); the baseline's mean and interval as a grey band across the plot. A seed
    that did not complete is drawn and counted at its last test accuracy, as the claims count it,
    and named at the foot of its column; a label with no stored run yet keeps its column, marked
    "not run yet" at its top, clear of the baseline's band and the legend."""
    ax = _axes(ax, title)
    labels = list(results)
    base = accuracies(results.get(baseline, [])) if baseline else []
    if len(base) >= 2:
        s = summary(base)
        ax.axhspan(s["low"], s["high"], color="0.85", zorder=0, label=f"{baseline}: mean dashed, 95% CI as band")
    if base:
        ax.axhline(summary(base)["mean"], color="0.4", ls="--", lw=1, zorder=1)
    import pandas as pd
    import seaborn as sns
    df = pd.DataFrame([{"run": label, "acc": v} for label in labels for v in accuracies(results[label])],
                      columns=["run", "acc"])
    if len(df):  # a swarm places the seeds side by side without random jitter: the same figure every time
        sns.swarmplot(df, x="run", y="acc", hue="run", order=labels, palette={l: colour(l) for l in labels},
                      size=6, ax=ax, legend=False, zorder=3)
    for i, label in enumerate(labels):
        _interval(ax, i, accuracies(results[label]), colour(label))
        missing = [r for r in results[label] if r["status"] != "completed"]
        if missing:
            ax.annotate(f"{len(missing)} {'/'.join(sorted({r['status'] for r in missing}))}", (i, 0.03),
                        xycoords=("data", "axes fraction"), ha="center", fontsize=7, color="0.3")
        elif not results[label]:
            ax.annotate("not run yet", (i, 0.97), xycoords=("data", "axes fraction"), ha="center", va="top",
                        rotation=90, fontsize=8, color="0.45")
    _honest_limits(ax, [v for label in labels for v in accuracies(results[label])] + base)
    many = len(labels) > 4
    ax.set_xticks(range(len(labels)), labels, rotation=30 if many else 0, ha="right" if many else "center", fontsize=8)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_xlabel("")
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3, axis="y")
    _legend(ax, fontsize=8, loc="lower right")
    return ax


def quadratic_curves(results: dict[str, list[dict]], keys=("w_g", "w_b"), ax=None, title: str | None = None):
    """How far each quadratic network moved from conventional: ‖w_g‖/‖w_r‖ (solid) and
    ‖w_b‖/‖w_r‖ (dashed) over epochs, mean over seeds, markers where measured. Runs that start at
    ReLinear's initialisation or from a conventional network start at 0 (epoch 0); the axis is
    logarithmic above 1e-5 and linear below, so that the start is drawn."""
    from matplotlib.lines import Line2D
    ax = _axes(ax, title)
    styles = {"w_g": "-", "w_b": "--", "b_g": ":", "c": "-."}
    handles = []
    for label, rs in results.items():
        before = len(ax.lines)
        for key in keys:
            per = _per_epoch(rs, lambda h: h.get("quadratic", {}).get(key))
            if not per:
                continue
            if rs[0]["config"]["init"] in ("relinear", "conventional"):
                per[0] = [0.0]
            x = sorted(per)
            ax.plot(x, [sum(per[e]) / len(per[e]) for e in x], styles.get(key, "-"), marker="o", ms=3,
                    color=colour(label))
        if len(ax.lines) > before:
            handles.append(Line2D([], [], color=colour(label), lw=2, label=label))
    handles += [Line2D([], [], color="0.2", ls=styles[k], label=f"‖{k}‖/‖w_r‖") for k in keys]
    ax.set_yscale("symlog", linthresh=1e-5, linscale=0.3)
    ax.set_ylim(bottom=0)
    _epochs_axis(ax)
    ax.set_ylabel("norm relative to ‖w_r‖ (mean over seeds)")
    ax.grid(alpha=0.3, which="major")
    if len(handles) > len(keys):
        ax.legend(handles=handles, fontsize=7)
    return ax


SWEEP_FIELDS = {"gamma": "gamma_g", "alpha": "alpha_g", "beta": "beta_g"}


def _sweep_points(results: dict[str, list[dict]], param: str) -> list[list]:
    """[ratio, value's name, label, accuracies, seeds not completed] per label, by ratio; a label
    whose terms did not move is placed a decade left of the smallest ratio (and of the floor)."""
    points = []
    for label, rs in results.items():
        if rs:
            v = rs[0]["config"][SWEEP_FIELDS[param]]
            points.append([ratio(rs) or 0.0, "lr" if v is None and param == "gamma" else f"{v:g}", label,
                           accuracies(rs), sum(r["status"] != "completed" for r in rs)])
    moved = [q for q, *_ in points if q > 0]
    zero_at = min(moved + [RATIO_FLOOR]) / 10
    return sorted([p[0] or zero_at, *p[1:]] for p in points)


def _conventional_end(ax, base: list[float]) -> None:
    """The conventional network (ratio 0) across a sweep: its mean dashed, its 95% interval a band."""
    if base:
        s = summary(base)
        name = f"conventional network (ratio 0): {s['mean']:.2f}%, dashed"
        ax.axhline(s["mean"], color="0.4", ls="--", lw=1, label=None if s["low"] is not None else name)
        if s["low"] is not None:
            ax.axhspan(s["low"], s["high"], color="0.85", zorder=0, label=name + "; band: 95% CI")


def _unconstrained_end(ax, runs: list[dict]) -> list[tuple[float, float]]:
    """A penalty's 0 (the γ = lr runs: no penalty) as a square; returns [(ratio, mean)] or []."""
    s = summary(accuracies(runs))
    if not s["n"]:
        return []
    q = ratio(runs) or RATIO_FLOOR
    err = [[s["mean"] - s["low"]], [s["high"] - s["mean"]]] if s["low"] is not None else None
    ax.plot([q] * s["n"], accuracies(runs), "s", color="C0", alpha=0.35, ms=4)
    ax.errorbar([q], [s["mean"]], yerr=err, fmt="s", color="C0", mfc="white", capsize=3, ms=7,
                label="α or β = 0: no penalty (the γ = lr runs)")
    ax.annotate("0", (q, s["mean"]), textcoords="offset points", xytext=(6, 0), ha="left", va="center", fontsize=7)
    return [(q, s["mean"])]


def sweep(results: dict[str, list[dict]], param: str, baseline: list[dict] | None = None, ax=None,
          unconstrained: list[dict] | None = None, legend: bool = True):
    """Figure 2 with data: final test accuracy against how far the quadratic terms moved, the
    measured final max(‖w_g‖, ‖w_b‖)/‖w_r‖ (median over seeds, `claims.ratio`), on a log axis, one
    point per value of `param` (gamma, alpha or beta), labelled with that value; every seed a faint
    point, the mean with its 95% interval. Values whose terms did not move (ratio 0, γ = 0) sit at
    the left edge, marked "0". The conventional `baseline` is a dashed line with a grey band (its 95%
    interval); the floor below which the terms count as unmoved (`claims.RATIO_FLOOR`) is dotted. The
    star is the verdict's: the value that "some `param` lifts the network" reads (`claims.figure2`:
    the best of the values that tested something, moving the terms and, for a penalty, holding them
    back), starred only where that claim is supported; a penalty that held them back no further than
    none is named "not held back". A value with fewer seeds than the others so far is drawn hollow and
    says how many it has. For a penalty (alpha, beta), `unconstrained` (the γ = lr runs: no penalty,
    the full rate) is its 0, at the other end of the axis from the conventional network, drawn as a
    square. `legend=False` leaves the legend to `figure_legend`."""
    ax, points = _axes(ax), _sweep_points(results, param)
    base = accuracies(baseline or [])
    _conventional_end(ax, base)
    ax.axvline(RATIO_FLOOR, color="0.5", ls=":", lw=1, label=f"floor {RATIO_FLOOR:g}: terms unmoved below")
    read = {**results, "conventional": baseline or []} | ({"gamma=lr": unconstrained} if unconstrained else {})
    lifts = next((c for c in figure2(read, param) if "best" in c), None) if base else None
    starred = lifts["best"] if lifts and lifts["verdict"] == "supported" else None
    best, stack, last_q = None, 0, None
    most = max([len(vals) for *_, vals, _ in points] + [0])
    right_end = max([q for q, *_ in points] + [0.0]) if len(points) > 1 else float("inf")
    for q, name, label, vals, bad in points:
        ax.plot([q] * len(vals), vals, "o", color="C0", alpha=0.35, ms=4)
        s = summary(vals)
        if not s["n"]:
            continue
        err = [[s["mean"] - s["low"]], [s["high"] - s["mean"]]] if s["low"] is not None else None
        fewer = s["n"] < most  # still waiting for seeds: drawn hollow and named so
        ax.errorbar([q], [s["mean"]], yerr=err, fmt="o", color="C0", capsize=3, mfc="white" if fewer else "C0")
        stack = stack + 1 if last_q is not None and q < 1.6 * last_q else 0  # neighbours' labels stack upwards
        last_q = q
        left = q > right_end / 10  # labels near the right edge go to the left of their point
        held = param not in ("alpha", "beta") or not not_held_back(read, label)  # as claims.figure2 tests it
        notes = [f"{s['n']} of {most} seeds"] * fewer + [f"{bad} not done"] * bool(bad) + ["not held back"] * (not held)
        ax.annotate(name + "".join(f" ({n})" for n in notes),
                    (q, s["mean"]), textcoords="offset points", xytext=(-5 if left else 5, 5 + 10 * stack),
                    ha="right" if left else "left", fontsize=7)
        if label == starred:
            best = (q, s["mean"])
    line = [(p[0], summary(p[3])["mean"]) for p in points if summary(p[3])["n"]]
    line = sorted(line + _unconstrained_end(ax, unconstrained or []))
    if len(line) > 1:
        ax.plot(*zip(*line), "-", color="C0", alpha=0.5, label="quadratic + ReLinear: mean, 95% CI")
    _honest_limits(ax, [v for *_, vals, _ in points for v in vals] + base + accuracies(unconstrained or []))
    if best is not None:
        ax.plot(best[0], best[1], "*", ms=16, color="C3",
                label="the best value that tested something, above conventional (Bonferroni CI)")
    ax.set_xscale("log")
    ax.set_xlabel("max(‖w_g‖, ‖w_b‖)/‖w_r‖ at the end (median)")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title({"gamma": "γ_g = γ_b (learning rate of the quadratic terms)",
                  "alpha": "α_g = α_b (L2 penalty)", "beta": "β_g = β_b (L1 penalty)"}[param], fontsize=9)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7)
    return ax


def figure_legend(fig, ncol: int = 3) -> None:
    """One legend for the whole figure, below its axes: every label drawn on any axes, once."""
    seen = {}
    for ax in fig.axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(name, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)


def sweep_figure(results: dict[str, list[dict]], preset: str):
    """Notebook 05's figure: Figure 2's three sweeps (γ, α, β; `sweep`) sharing the accuracy axis, one
    legend below, the heading above; `results` holds "conventional" and the "gamma=…", "alpha=…" and
    "beta=…" runs."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(12, 5), layout="constrained", sharey=True)
    for ax, param in zip(axes, ("gamma", "alpha", "beta")):
        runs = {k: rs for k, rs in results.items() if k.startswith(param + "=")}
        sweep(runs, param, baseline=results.get("conventional"), ax=ax, legend=False,
              unconstrained=None if param == "gamma" else results.get("gamma=lr"))
    for ax in axes[1:]:
        ax.set_ylabel("")
    figure_legend(fig, ncol=3)
    heading(fig, preset, {k: rs for k, rs in results.items() if k == "conventional" or "=" in k})
    return fig


def scatter(results: dict[str, list[dict]], x: str = "params", ax=None, title: str | None = None):
    """Final test accuracy against a network's cost: its parameters (`x="params"`, millions) or
    its training work per image (`x="flops"`: GFLOP forward and backward, `models.flops_per_image`),
    both counts independent of the machine. Each seed a faint point, the mean with its 95% interval,
    each network named beside its point; the axis starts at 0 so that sizes compare as ratios."""
    ax = _axes(ax, title)
    for label, rs in results.items():
        vals = accuracies(rs)
        if not vals:
            continue
        c, s = rs[0]["config"], summary(vals)
        xv = rs[0]["params"] / 1e6 if x == "params" else flops_per_image(c["depth"], c["neuron"]) / 1e9
        ax.plot([xv] * len(vals), vals, "o", color=colour(label), alpha=0.35, ms=4)
        err = None if s["low"] is None else [[s["mean"] - s["low"]], [s["high"] - s["mean"]]]
        ax.errorbar([xv], [s["mean"]], yerr=err, fmt="o", ms=7, capsize=3, color=colour(label))
        ax.annotate(f"{label}\n{xv:.3g} {'M' if x == 'params' else 'GFLOP'}", (xv, s["mean"]), fontsize=8,
                    textcoords="offset points", xytext=(7, -3), va="top")
    _honest_limits(ax, [v for rs in results.values() for v in accuracies(rs)])
    ax.set_xlim(0, ax.get_xlim()[1] * 1.25)  # room for the names
    ax.set_xlabel("parameters (millions)" if x == "params" else "training work per image (GFLOP, forward + backward)")
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3)
    return ax


def describe(configs: dict, base=None) -> str:
    """Each label's run as its differences from the preset's recipe (`base`, a Config; by
    default the conventional run's config with the quadratic fields cleared)."""
    import dataclasses
    if not configs:
        return "(no runs)"
    base = base or next(iter(configs.values()))
    skip = {"seed", "out_dir", "data_root", "device", "compile", "cuda_graphs", "channels_last", "checkpoint_every"}
    common = [f"{f.name}={getattr(base, f.name)!r}" for f in dataclasses.fields(base)
              if f.name in ("depth", "epochs", "batch_size", "lr", "schedule", "n_train", "n_test", "dataset")]
    lines = ["recipe: " + ", ".join(common)]
    rates = ("gamma_g", "gamma_b")  # shown for every quadratic run: None means the base rate, no shrinking
    col = max([18] + [len(label) for label in configs])

    def shown(c, name):
        v = getattr(c, name)
        return "lr (no shrinking)" if v is None and name in rates else repr(v)
    for label, c in configs.items():
        quadratic = c.neuron != "conventional"
        diff = [f"{f.name}={shown(c, f.name)}" for f in dataclasses.fields(c) if f.name not in skip
                and (getattr(c, f.name) != getattr(base, f.name) or (quadratic and f.name in rates))]
        lines.append(f"  {label:{col}s} {', '.join(diff) or '(the recipe)'}")
    return "\n".join(lines)
