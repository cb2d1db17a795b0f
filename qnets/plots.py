"""Figures and tables of stored results (dicts returned by `qnets.train.fit`).

Every function takes `{label: result}` and draws or formats it; none trains anything.
"""
from __future__ import annotations

import math

__all__ = ["table", "curves", "quadratic_curves", "sweep", "scatter", "collapse_count"]


def _acc(x):
    return "  -   " if x is None else f"{100 * x:6.2f}"


def table(results: dict[str, dict], baseline: str | None = None) -> str:
    """Plain-text table: one row per run (final and best test accuracy in %, parameters,
    epochs, status, wall time and device); `baseline` adds the difference to that run."""
    base = results.get(baseline, {}).get("final_test_acc") if baseline else None
    head = f"{'run':22s} {'neuron':12s} {'depth':>5s} {'params':>9s} {'epochs':>6s} {'final %':>7s} {'best %':>7s}"
    head += f" {'vs ' + baseline[:10]:>14s}" if base is not None else ""
    head += f" {'status':9s} {'time':>7s}  device"
    lines = [head, "-" * len(head)]
    for label, r in results.items():
        c = r["config"]
        neuron = c["neuron"] + ("+rz" if c["rezero"] else "")
        row = (f"{label:22s} {neuron:12s} {c['depth']:5d} {r['params']:9,d} {r['epochs_run']:3d}/{c['epochs']:<3d}"
               f" {_acc(r['final_test_acc']):>7s} {_acc(r['best_test_acc']):>7s}")
        if base is not None:
            diff = r["final_test_acc"]
            row += f" {'-' if diff is None else f'{100 * (diff - base):+.2f}':>14s}"
        minutes = r["wall_time"] / 60
        row += f" {r['status']:9s} {minutes:6.1f}m  {r['device']}"
        lines.append(row)
    return "\n".join(lines)


def collapse_count(results: dict[str, dict]) -> str:
    """How many runs collapsed (training broke down), and which; runs stopped by the old rule,
    whose training was healthy, are named apart."""
    collapsed = [f"{k} ({r['collapse_reason']})" for k, r in results.items() if r["status"] == "collapsed"]
    text = f"{len(collapsed)} of {len(results)} runs collapsed" + (": " + "; ".join(collapsed) if collapsed else "")
    stopped = [k for k, r in results.items() if r["status"] == "stopped"]
    if stopped:
        text += (f"\n{len(stopped)} stopped early by the old rule (non-finite test loss, healthy training), "
                 f"to be re-run: {', '.join(stopped)}")
    return text


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _axes(ax):
    import matplotlib.pyplot as plt
    return (plt.subplots(figsize=(6.4, 4))[1] if ax is None else ax)


def curves(results: dict[str, dict], metric: str = "test_acc", ax=None, title: str | None = None):
    """`metric` of every run against epochs; a collapsed run ends in a cross, a run stopped by
    the old rule in an open circle."""
    ax = _axes(ax)
    for label, r in results.items():
        pts = [(h["epoch"] + 1, h[metric]) for h in r["history"] if _finite(h.get(metric))]
        if not pts:
            continue
        x, y = zip(*pts)
        scale = 100 if metric.endswith("acc") else 1
        line, = ax.plot(x, [scale * v for v in y], label=label, lw=1.6)
        if r["status"] == "collapsed":
            ax.plot(x[-1], scale * y[-1], "x", color=line.get_color(), ms=9, mew=2)
        elif r["status"] == "stopped":  # stopped by the old rule: an open circle, not a collapse
            ax.plot(x[-1], scale * y[-1], "o", mfc="none", color=line.get_color(), ms=8, mew=1.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel({"test_acc": "test accuracy (%)", "train_acc": "training accuracy (%)"}.get(metric, metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def quadratic_curves(results: dict[str, dict], keys=("w_g", "w_b"), ax=None, title: str | None = None):
    """How far each quadratic network moved from conventional: ‖w_g‖/‖w_r‖ and ‖w_b‖/‖w_r‖ over
    epochs (log scale; 0 at ReLinear's initialisation)."""
    ax = _axes(ax)
    styles = {"w_g": "-", "w_b": "--", "b_g": ":", "c": "-."}
    for i, (label, r) in enumerate((k, r) for k, r in results.items() if r["history"][0]["quadratic"]):
        for key in keys:
            pts = [(h["epoch"] + 1, h["quadratic"][key]) for h in r["history"]
                   if _finite(h["quadratic"].get(key)) and h["quadratic"][key] > 0]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, styles.get(key, "-"), color=f"C{i}", label=f"{label}: {key}/w_r")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("norm relative to w_r")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return ax


def sweep(results: dict[str, dict], param: str, lr: float, baseline: dict | None = None, ax=None):
    """Final test accuracy against a ReLinear hyperparameter (`param` = gamma, alpha or beta) on a
    log axis; gamma = 0 and gamma = lr (no shrinking) sit at the ends, the conventional
    `baseline` is a horizontal line, the best run is starred and collapsed runs are crosses."""
    import numpy as np
    ax = _axes(ax)
    field = {"gamma": "gamma_g", "alpha": "alpha_g", "beta": "beta_g"}[param]
    pts = []
    for r in results.values():
        v = r["config"][field]
        v = lr if v is None else v
        pts.append((v, r["final_test_acc"], r["status"]))
    positive = sorted(v for v, _, _ in pts if v > 0)
    zero_at = positive[0] / 10 if positive else 1e-6  # where gamma = 0 is drawn on the log axis
    xs = [zero_at if v == 0 else v for v, _, _ in pts]
    ok = [(x, 100 * a) for x, (_, a, s) in zip(xs, pts) if s == "completed" and a is not None]
    bad = [x for x, (_, a, s) in zip(xs, pts) if s != "completed" or a is None]
    if ok:
        order = np.argsort([x for x, _ in ok])
        ax.plot([ok[i][0] for i in order], [ok[i][1] for i in order], "o-", color="C0", label="quadratic + ReLinear")
        best = max(ok, key=lambda p: p[1])
        ax.plot(*best, "*", ms=16, color="C3", label=f"best: {best[1]:.2f}%")
    if bad:
        y = min([a for _, a in ok] or [10]) - 2
        ax.plot(bad, [y] * len(bad), "x", ms=10, mew=2, color="k", label="collapsed or stopped")
    if baseline and baseline.get("final_test_acc") is not None:
        ax.axhline(100 * baseline["final_test_acc"], color="gray", ls="--",
                   label=f"conventional: {100 * baseline['final_test_acc']:.2f}%")
    ax.set_xscale("log")
    ticks = sorted(set(xs))
    labels = ["0" if t == zero_at and any(v == 0 for v, _, _ in pts) else ("lr" if t == lr and param == "gamma" else f"{t:g}")
              for t in ticks]
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.minorticks_off()
    symbol = {"gamma": "γ_g = γ_b (learning rate of the quadratic terms)", "alpha": "α_g = α_b (L2 shrinking)",
              "beta": "β_g = β_b (L1 shrinking)"}[param]
    ax.set_xlabel(symbol)
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def scatter(results: dict[str, dict], x: str = "params", ax=None):
    """Final test accuracy against parameter count (`x="params"`) or training time
    (`x="wall_time"`, minutes)."""
    ax = _axes(ax)
    for i, (label, r) in enumerate(results.items()):
        if r["final_test_acc"] is None:
            continue
        xv = r["params"] / 1e6 if x == "params" else r["wall_time"] / 60
        ax.plot(xv, 100 * r["final_test_acc"], "o", ms=9, color=f"C{i}", label=label)
    ax.set_xlabel("parameters (millions)" if x == "params" else "training time (minutes)")
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
