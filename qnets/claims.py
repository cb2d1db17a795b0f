"""The paper's claims, each given a verdict computed from stored multi-seed results.

`verdicts(notebook, results)` takes `{label: [result per seed]}` (`experiments.results`) and
returns one dict per claim the notebook tests: the claim, its verdict ("supported", "not
resolved" or "contradicted", see `qnets.stats.verdict`) and the numbers behind it. Accuracy
claims compare final test accuracies (completed seeds) with Welch's 95% interval; a claim about
the best of k values uses a Bonferroni-corrected interval (level 1 − 0.05/k). Collapse claims
count seeds whose training broke down (`qnets.train.COLLAPSE_*`).
"""
from __future__ import annotations

from .stats import summary, verdict, welch

__all__ = ["verdicts", "markdown", "text"]


def _finals(rs) -> list[float]:
    return [100 * r["final_test_acc"] for r in rs if r["status"] == "completed" and r["final_test_acc"] is not None]


def _better(results, a: str, b: str, claim: str, level: float = 0.95, note: str = "") -> dict | None:
    """Claim: mean final accuracy of `a` is above that of `b`."""
    if a not in results or b not in results:
        return None
    w = welch(_finals(results[a]), _finals(results[b]), level)
    ns = f"n = {w['n'][0]} and {w['n'][1]}"
    if w["low"] is None:
        empty = [label for label, n in zip((a, b), w["n"]) if n == 0]
        evidence = (f"Difference {a} − {b}: {w['diff']:+.2f} points, {ns}: too few completed seeds for an "
                    "interval" if w["diff"] is not None else f"No completed seed of {' or '.join(empty)}")
    else:
        evidence = (f"Difference {a} − {b}: {w['diff']:+.2f} points, {100 * level:.3g}% CI [{w['low']:+.2f}, "
                    f"{w['high']:+.2f}], {ns}")
    return {"claim": claim, "verdict": verdict(w), "evidence": evidence + note}


def _collapse_risk(results, naive: str, relinear: str) -> dict | None:
    if naive not in results or relinear not in results:
        return None
    count = lambda rs: (sum(r["status"] == "collapsed" for r in rs), len(rs))  # noqa: E731
    (cn, nn), (cr, nr) = count(results[naive]), count(results[relinear])
    stopped = sum(r["status"] == "stopped" for label in (naive, relinear) for r in results[label])
    if cn and not cr:
        v = "supported"
    elif cr > cn:
        v = "contradicted"
    else:
        v = "not resolved"
    evidence = f"Training broke down in {cn} of {nn} {naive} seeds and {cr} of {nr} {relinear} seeds"
    if stopped:
        evidence += (f"; {stopped} {'seed was' if stopped == 1 else 'seeds were'} stopped by the old rule and "
                     f"{'is' if stopped == 1 else 'are'} to be re-run")
    return {"claim": "A quadratic network trained naively (random g and b at the full learning rate) is at risk "
                     "of collapse; ReLinear avoids it", "verdict": v, "evidence": evidence}


def _figure2(results, param: str, field: str, lr: float, baseline: str = "conventional") -> list[dict]:
    """Figure 2 read as a claim: some value of `param` lifts accuracy above the conventional
    network (best of k, Bonferroni), and (for γ) the unshrunken end γ = lr falls below that best."""
    labels = [l for l in results if l.startswith(f"{param}=") and _finals(results[l])]
    if not labels or baseline not in results:
        return []
    k = len(labels)
    best = max(labels, key=lambda l: summary(_finals(results[l]))["mean"])
    tried = ", ".join(l.split("=", 1)[1] for l in labels)
    out = [_better(results, best, baseline, f"Some {param} lifts the quadratic network above the conventional one "
                   f"(best of the {k} values tried, {tried}: {best})", level=1 - 0.05 / k,
                   note=f"; Bonferroni-corrected for the {k} values tried")]
    if param == "gamma" and "gamma=lr" in results and best != "gamma=lr":
        out.append(_better(results, best, "gamma=lr", "Accuracy falls again once the quadratic terms learn at the "
                           f"full rate (best γ, {best}, above γ = lr)"))
    return [c for c in out if c]


# He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), Table 6: ResNet-20 on
# CIFAR-10, 8.75% test error with the 200-epoch-equivalent recipe (64k iterations of batch 128).
HE_RESNET20 = 91.25
REFERENCE_MARGIN = 1.0  # points: how close a reproduction's 95% interval must sit to count as one


def _reference(results, label: str = "conventional") -> dict | None:
    """The conventional ResNet-20 on the full recipe against He et al.'s published accuracy: an
    equivalence reading. Supported when the 95% interval of the mean lies within ±REFERENCE_MARGIN
    points of it, contradicted when the interval lies wholly outside that band, else not resolved.
    Only for runs of that recipe (depth 20, full training set, at least 160 epochs)."""
    recipe = lambda c: (c.get("depth"), c.get("dataset"), c.get("n_train")) == (20, "cifar10", None) and \
        (c.get("epochs") or 0) >= 160  # noqa: E731
    rs = [r for r in results.get(label, []) if recipe(r["config"])]
    if not rs:
        return None
    s = summary(_finals(rs))
    lo, hi = HE_RESNET20 - REFERENCE_MARGIN, HE_RESNET20 + REFERENCE_MARGIN
    if s["low"] is None:
        v = "not resolved"
        evidence = (f"{s['n']} completed seed{'' if s['n'] == 1 else 's'}" +
                    (f" at {s['mean']:.2f}%: too few for an interval" if s["n"] else ""))
    else:
        v = ("supported" if lo <= s["low"] and s["high"] <= hi else
             "contradicted" if s["high"] < lo or s["low"] > hi else "not resolved")
        evidence = (f"Mean of {s['n']} seeds {s['mean']:.2f}%, 95% CI [{s['low']:.2f}, {s['high']:.2f}]; "
                    f"{s['mean'] - HE_RESNET20:+.2f} points from the published figure")
    return {"claim": f"The conventional ResNet-20 reproduces He et al.'s {HE_RESNET20}% (within ±{REFERENCE_MARGIN:g} "
                     "point)", "verdict": v, "evidence": evidence}


def verdicts(notebook: str, results: dict[str, list[dict]], lr: float = 0.1) -> list[dict]:
    """The claims notebook `notebook` tests, with verdicts from `results`."""
    nb = str(notebook)[:2]
    out = []
    if nb == "02":
        out += [_reference(results),
                _collapse_risk(results, "naive", "relinear-sg"),
                _better(results, "relinear-sg", "conventional",
                        "ReLinear (shrunken gradients, γ = 1e-5) makes the quadratic network more accurate than "
                        "the conventional one"),
                _better(results, "relinear-sg", "naive",
                        "ReLinear is more accurate than training the quadratic network naively"),
                _better(results, "relinear-sw-l2", "conventional",
                        "ReLinear with shrunken weights (L2, α = 1e-3) is more accurate than the conventional network"),
                _better(results, "relinear-sw-l1", "conventional",
                        "ReLinear with shrunken weights (L1, β = 1e-5) is more accurate than the conventional network")]
    elif nb == "03":
        out += [_better(results, "quadratic", "conventional",
                        "The full quadratic network (ReLinear) is more accurate than the conventional one"),
                _better(results, "compact", "conventional",
                        "The compact quadratic network (ReLinear) is more accurate than the conventional one")]
    elif nb == "04":
        out += [_better(results, "relinear", "conventional",
                        "At depth, the quadratic network (ReLinear, γ = 1e-3) is more accurate than the conventional one"),
                _better(results, "relinear-rezero", "relinear",
                        "ReZero makes the deep quadratic network more accurate")]
    elif nb == "05":
        for param, field in (("gamma", "gamma_g"), ("alpha", "alpha_g"), ("beta", "beta_g")):
            out += _figure2(results, param, field, lr)
    return [c for c in out if c]


def text(claims: list[dict]) -> str:
    """Plain-text list of verdicts (for the notebooks)."""
    return "\n".join(f"[{c['verdict']}] {c['claim']}\n    {c['evidence']}" for c in claims) or "(no claims tested)"


def markdown(claims: list[dict]) -> str:
    """Markdown list of verdicts (for the README; a test keeps the two equal)."""
    return "\n".join(f"- **{c['verdict']}**: {c['claim']}. {c['evidence']}." for c in claims) or "- (no claims tested)"
