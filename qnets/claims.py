"""The paper's claims, each given a verdict computed from stored multi-seed results.

`verdicts(notebook, results)` takes `{label: [result per seed]}` (`experiments.results`) and
returns one dict per claim the notebook tests: the claim, its verdict ("supported", "not
resolved", "contradicted" or "not tested", see `qnets.stats`) and the numbers behind it.

- Accuracy claims compare final test accuracies (%). Two labels whose runs share their data order
  and augmentation (the same seeds on the same data) are compared seed by seed (`stats.paired`),
  otherwise with Welch's interval; 95% intervals, or Bonferroni-corrected ones (level 1 − 0.05/k)
  for the best of k values. A collapsed seed stays in: it counts with its last test accuracy (chance,
  10%, where it was never evaluated).
- "Comparable accuracy" is an equivalence test with a margin stated in advance
  (EQUIVALENCE_MARGIN points): the 90% interval of the difference within ±margin.
- A claim about what the quadratic terms do is **not tested** where the runs' terms did not move:
  the median over seeds of the final max(‖w_g‖/‖w_r‖, ‖w_b‖/‖w_r‖) below RATIO_FLOOR. Such a network
  computes nearly the conventional function, whatever its accuracy.
- Collapse claims count seeds whose training broke down (`qnets.train.COLLAPSE_*`), with Fisher's
  exact test; with few seeds the verdict says the test cannot decide.
- A claim whose precondition fails is reported, never dropped (the best γ being lr itself
  contradicts "accuracy falls again at γ = lr").
"""
from __future__ import annotations

from .layers import DESIGNS
from .stats import equivalent, fisher_greater, paired, summary, verdict, welch

__all__ = ["verdicts", "markdown", "text", "difference", "ratio", "RATIO_FLOOR", "EQUIVALENCE_MARGIN"]

RATIO_FLOOR = 1e-3  # below it a quadratic layer's quadratic part is about 0.1% of its output
EQUIVALENCE_MARGIN = 1.0  # points of test accuracy: "comparable" means within this, stated in advance
CHANCE = 10.0  # % on CIFAR-10: a collapsed run never evaluated counts as guessing


def accuracy(r: dict) -> float:
    """A seed's final test accuracy in %: a completed run's; a collapsed run's last evaluation (or
    chance)."""
    if r["status"] == "completed":
        return 100 * r["final_test_acc"]
    tested = [h["test_acc"] for h in r.get("history", []) if h.get("test_acc") is not None]
    return 100 * tested[-1] if tested else CHANCE


def accuracies(rs) -> list[float]:
    """Each seed's accuracy as every claim, table and figure counts it (`accuracy`)."""
    return [accuracy(r) for r in rs]


def _by_seed(rs) -> dict[int, float]:
    return {r["config"]["seed"]: accuracy(r) for r in rs}


def _data_order(rs) -> set:
    """What decides a run's batches and augmentation besides its seed."""
    return {tuple(r["config"].get(k) for k in ("dataset", "n_train", "batch_size", "epochs")) for r in rs}


def difference(results, a: str, b: str, level: float = 0.95) -> dict:
    """mean accuracy of `a` minus that of `b`: paired by seed where the two labels' runs share their
    data order (two or more common seeds), else Welch's interval. Adds "how": paired or Welch."""
    ra, rb = results.get(a, []), results.get(b, [])
    if len(_data_order(ra) | _data_order(rb)) == 1 and len(set(_by_seed(ra)) & set(_by_seed(rb))) >= 2:
        return paired(_by_seed(ra), _by_seed(rb), level) | {"how": "paired by seed"}
    return welch(accuracies(ra), accuracies(rb), level) | {"paired": False, "how": "Welch"}


def _terms(neuron: str | None) -> tuple[str, ...]:
    """The ratios that say how far a design's quadratic terms moved from ReLinear's start: none for a
    design without that start (it never computed the conventional function); for `quadraour` only
    w_g's, as its w_b is the random factor beside w_g (docs/neurons.md)."""
    if neuron not in DESIGNS or not DESIGNS[neuron]["start"]:
        return ()
    return ("w_g",) if neuron == "quadraour" else ("w_g", "w_b")


def ratio(rs) -> float | None:
    """How far the quadratic terms moved: the median over seeds of the final
    max(‖w_g‖/‖w_r‖, ‖w_b‖/‖w_r‖) (`relinear.quadratic_stats`; `_terms` says which of the two count);
    None without quadratic layers, or for a design without ReLinear's start."""
    values = sorted(max(q.get(k, 0.0) for k in keys) for r in rs if r.get("history")
                    for q in [r["history"][-1].get("quadratic") or {}]
                    for keys in [_terms(r.get("config", {}).get("neuron", "quadratic"))] if q and keys)
    return values[len(values) // 2] if values else None


def _no_seed_yet(labels: tuple[str, ...], counts) -> str:
    """The evidence of a comparison with nothing to compare: the labels without a seed (else all)."""
    return f"No seed of {' or '.join([x for x, k in zip(labels, counts) if not k] or labels)} yet"


def _interval_text(a: str, b: str, w: dict, level: float) -> str:
    if w["diff"] is None:
        return _no_seed_yet((a, b), w["n"])
    n = f"n = {w['n'][0]}" + ("" if w.get("paired") else f" and {w['n'][1]}")
    if w["low"] is None:
        return f"Difference {a} − {b}: {w['diff']:+.2f} points, {n}: too few seeds for an interval"
    return (f"Difference {a} − {b}: {w['diff']:+.2f} points, {w['how']}, {100 * level:.3g}% CI "
            f"[{w['low']:+.2f}, {w['high']:+.2f}], {n}")


def _unmoved(results, labels) -> str | None:
    """Why a claim about the quadratic terms of `labels` cannot be tested here, or None."""
    for label in labels:
        q = ratio(results.get(label, []))
        if q is not None and q < RATIO_FLOOR:
            return (f"{label}'s quadratic terms ended at max(‖w_g‖, ‖w_b‖)/‖w_r‖ = {q:.1e}, below the floor "
                    f"{RATIO_FLOOR:g}: it computes nearly the conventional function, so these runs cannot show "
                    "what the quadratic terms do")
    return None


def _ratio_note(results, labels) -> str:
    moved = [(label, ratio(results.get(label, []))) for label in labels]
    return "".join(f"; {label} max(‖w_g‖, ‖w_b‖)/‖w_r‖ = {q:.2g}" for label, q in moved if q is not None)


HELD_BACK = 0.5  # a penalty holds the quadratic terms back when they end below this share of the unpenalised run's


def not_held_back(results, label: str, free: str = "gamma=lr") -> str | None:
    """Why a shrunken-weight claim about `label` cannot be tested here: its penalty left the
    quadratic terms about where the same network without a penalty (`free`) ends. None otherwise,
    or where `free` was not run."""
    q, q_free = ratio(results.get(label, [])), ratio(results.get(free, []))
    if q is None or not q_free or q < HELD_BACK * q_free:
        return None
    return (f"{label}'s penalty did not hold the quadratic terms back: they ended at max(‖w_g‖, ‖w_b‖)/‖w_r‖ = "
            f"{q:.2g}, against {q_free:.2g} without a penalty ({free}), so these runs test no shrinking")


def _better(results, a: str, b: str, claim: str, level: float = 0.95, note: str = "",
            quadratic: tuple[str, ...] = (), penalised: tuple[str, ...] = ()) -> dict | None:
    """Claim: mean final accuracy of `a` is above that of `b`; "not tested" where the quadratic
    terms of a label in `quadratic` did not move, or the penalty of a label in `penalised` did not
    hold them back."""
    if a not in results or b not in results:
        return None
    w = difference(results, a, b, level)
    evidence = _interval_text(a, b, w, level) + note
    why = _unmoved(results, quadratic) or next(filter(None, (not_held_back(results, p) for p in penalised)), None)
    if why:
        return {"claim": claim, "verdict": "not tested", "evidence": f"{why}. {evidence}"}
    return {"claim": claim, "verdict": verdict(w), "evidence": evidence + _ratio_note(results, quadratic)}


def _comparable(results, a: str, b: str, claim: str, quadratic: tuple[str, ...] = ()) -> dict | None:
    """Claim: `a` is as accurate as `b`, within ±EQUIVALENCE_MARGIN points (90% interval)."""
    if a not in results or b not in results:
        return None
    w = difference(results, a, b, level=0.90)
    evidence = _interval_text(a, b, w, 0.90) + f"; equivalence margin ±{EQUIVALENCE_MARGIN:g} point, stated in advance"
    unmoved = _unmoved(results, quadratic)
    if unmoved:
        return {"claim": claim, "verdict": "not tested", "evidence": f"{unmoved}. {evidence}"}
    return {"claim": claim, "verdict": equivalent(w, EQUIVALENCE_MARGIN),
            "evidence": evidence + _ratio_note(results, quadratic)}


def _collapse_risk(results, naive: str, relinear: str) -> dict | None:
    if naive not in results or relinear not in results:
        return None
    count = lambda rs: (sum(r["status"] == "collapsed" for r in rs), len(rs))  # noqa: E731
    (cn, nn), (cr, nr) = count(results[naive]), count(results[relinear])
    claim = ("A quadratic network trained naively (random g and b at the full learning rate) is at risk of "
             "collapse; ReLinear avoids it")
    if not nn or not nr:
        return {"claim": claim, "verdict": "not resolved",
                "evidence": _no_seed_yet((naive, relinear), (nn, nr))}
    p_more, p_fewer = fisher_greater(cn, nn, cr, nr), fisher_greater(cr, nr, cn, nn)
    best = fisher_greater(nn, nn, 0, nr)  # every naive seed broke down, no ReLinear one
    v = "supported" if p_more < 0.05 else "contradicted" if p_fewer < 0.05 else "not resolved"
    evidence = (f"Training broke down in {cn} of {nn} {naive} seeds and {cr} of {nr} {relinear} seeds; Fisher's "
                f"exact test, one-sided p = {p_more:.3f}")
    if best >= 0.05:
        evidence += (f" (with {nn} and {nr} seeds even {nn} of {nn} against 0 gives p = {best:.3f}: "
                     "the test cannot decide)")
    return {"claim": claim, "verdict": v, "evidence": evidence}


def figure2(results, param: str, baseline: str = "conventional") -> list[dict]:
    """Figure 2 read as a claim: some value of `param` lifts accuracy above the conventional
    network (the best of the k values that tested something, Bonferroni), and the unshrunken end falls
    below that best: γ = lr, which is also α = β = 0 (the penalties train the terms at the full rate);
    where the best γ is lr itself, that second claim is contradicted, not dropped. A value tests
    something where its quadratic terms moved (ratio at least RATIO_FLOOR) and, for a penalty, were held
    back (below HELD_BACK of γ = lr's). Values with fewer seeds than the baseline are named as waiting,
    not read."""
    labels = [l for l in results if l.startswith(f"{param}=") and accuracies(results[l])]
    if not labels or baseline not in results:
        return []
    # A value enters once it has as many seeds as the baseline: a best picked from one lucky seed
    # would turn the verdict on an interval it cannot have (a plan runs one seed of each value first).
    complete = [l for l in labels if len(results[l]) >= len(results[baseline])]
    pending = [l for l in labels if l not in complete] if complete else []
    labels = complete or labels
    waits = (f"; {len(pending)} more with fewer seeds than {baseline} wait{'s' if len(pending) == 1 else ''} "
             f"for theirs ({', '.join(l.split('=', 1)[1] for l in pending)})") if pending else ""
    testable = [l for l in labels if not _unmoved(results, (l,))
                and not (param in ("alpha", "beta") and not_held_back(results, l))]
    claim = f"Some {param} lifts the quadratic network above the conventional one"
    if not testable:
        moved = ", ".join(f"{l.split('=', 1)[1]}: {q:.2g}" for l in labels
                          for q in [ratio(results[l])] if q is not None)
        return [{"claim": claim, "verdict": "not tested",
                 "evidence": f"No value of the {len(labels)} tried both moved the quadratic terms (max(‖w_g‖, ‖w_b‖)/"
                             f"‖w_r‖ at least {RATIO_FLOOR:g})" + (" and held them back (below "
                             f"{HELD_BACK:g} of γ = lr's)" if param in ("alpha", "beta") else "") +
                             f"; their ratios: {moved}{waits}"}]
    k = len(testable)
    best = max(testable, key=lambda l: summary(accuracies(results[l]))["mean"])
    tried = ", ".join(l.split("=", 1)[1] for l in testable)
    left = (f"; {len(labels) - k} more tried tested nothing" if k < len(labels) else "") + waits
    which, corrected = ((f"best of the {k} values that tested something, {tried}: {best}",
                         f"; Bonferroni-corrected for the {k} values") if k > 1 else
                        (f"the one value that tested something, {best}", ""))
    lifts = _better(results, best, baseline, f"{claim} ({which})", level=1 - 0.05 / k, note=corrected + left,
                    quadratic=(best,))
    out = [lifts and lifts | {"best": best}]  # the value read, for the figure's star (`plots.sweep`)
    falls = "Accuracy falls again once the quadratic terms learn at the full rate"
    if param == "gamma" and "gamma=lr" in results and best != "gamma=lr":
        out.append(_better(results, best, "gamma=lr", f"{falls} (best γ, {best}, above γ = lr)"))
    elif param in ("alpha", "beta") and "gamma=lr" in results:
        out.append(_better(results, best, "gamma=lr", f"Accuracy falls again without the penalty (best {param}, "
                                                      f"{best}, above γ = lr, unpenalised)",
                           quadratic=(best, "gamma=lr")))
    elif param == "gamma" and best == "gamma=lr":
        mean = summary(accuracies(results[best]))["mean"]
        out.append({"claim": falls, "verdict": "contradicted",
                    "evidence": f"The best γ of the {k} tried is lr itself ({mean:.2f}%): accuracy does not fall "
                                f"there (the claim's precondition, a best γ below lr, fails){waits}"})
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
    s = summary(accuracies(rs))
    lo, hi = HE_RESNET20 - REFERENCE_MARGIN, HE_RESNET20 + REFERENCE_MARGIN
    if s["low"] is None:
        v = "not resolved"
        evidence = (f"{s['n']} seed{'' if s['n'] == 1 else 's'}" +
                    (f" at {s['mean']:.2f}%: too few for an interval" if s["n"] else ""))
    else:
        v = ("supported" if lo <= s["low"] and s["high"] <= hi else
             "contradicted" if s["high"] < lo or s["low"] > hi else "not resolved")
        evidence = (f"Mean of {s['n']} seeds {s['mean']:.2f}%, 95% CI [{s['low']:.2f}, {s['high']:.2f}]; "
                    f"{s['mean'] - HE_RESNET20:+.2f} points from the published figure")
    return {"claim": f"The conventional ResNet-20 reproduces He et al.'s {HE_RESNET20}% (within ±{REFERENCE_MARGIN:g} "
                     "point)", "verdict": v, "evidence": evidence}


def _notebook02(results) -> list[dict | None]:
    """Notebook 02's claims: ReLinear against the conventional network, naive training and its controls."""
    return [_reference(results),
            _collapse_risk(results, "naive", "relinear-sg"),
            _better(results, "relinear-sg", "conventional",
                    "ReLinear (shrunken gradients) makes the quadratic network more accurate than the "
                    "conventional one", quadratic=("relinear-sg",)),
            _better(results, "relinear-sg", "gamma=0",
                    "The quadratic terms ReLinear lets grow make the network more accurate than the same "
                    "network with them frozen at their start (γ = 0, the conventional function)",
                    quadratic=("relinear-sg",)),
            _better(results, "relinear-sg", "naive",
                    "ReLinear is more accurate than training the quadratic network naively",
                    quadratic=("relinear-sg",)),
            _better(results, "relinear-sg", "naive-lr/10",
                    "ReLinear is more accurate than the naive network trained at a tenth of the base rate "
                    "(its gain over naive training is not smaller steps alone)", quadratic=("relinear-sg",)),
            _better(results, "relinear-sg", "gamma=lr",
                    "Shrinking the quadratic terms' learning rate makes ReLinear's network more accurate than "
                    "letting them learn at the full rate (γ = lr)", quadratic=("relinear-sg",)),
            _better(results, "relinear-from-conventional", "conventional-trained-on",
                    "Started from a trained conventional network, ReLinear makes it more accurate than the same "
                    "network trained on for as many epochs", quadratic=("relinear-from-conventional",)),
            _better(results, "relinear-sw-l2", "conventional",
                    "ReLinear with shrunken weights (L2) is more accurate than the conventional network",
                    quadratic=("relinear-sw-l2",), penalised=("relinear-sw-l2",)),
            _better(results, "relinear-sw-l1", "conventional",
                    "ReLinear with shrunken weights (L1) is more accurate than the conventional network",
                    quadratic=("relinear-sw-l1",), penalised=("relinear-sw-l1",))]


def verdicts(notebook: str, results: dict[str, list[dict]]) -> list[dict]:
    """The claims notebook `notebook` tests, with verdicts from `results`."""
    nb = str(notebook)[:2]
    out = []
    if nb == "02":
        out += _notebook02(results)
    elif nb == "03":
        out += [_better(results, "quadratic", "conventional",
                        "The full quadratic network (ReLinear) is more accurate than the conventional one",
                        quadratic=("quadratic",)),
                _better(results, "compact", "conventional",
                        "The compact quadratic network (ReLinear) is more accurate than the conventional one",
                        quadratic=("compact",)),
                _comparable(results, "compact", "conventional",
                            "The compact quadratic network is as accurate as the conventional one",
                            quadratic=("compact",)),
                _comparable(results, "compact", "quadratic",
                            "The compact quadratic network, with fewer parameters, is as accurate as the full one",
                            quadratic=("compact", "quadratic"))]
    elif nb == "04":
        out += [_better(results, "relinear", "conventional",
                        "At depth, the quadratic network (ReLinear) is more accurate than the conventional one",
                        quadratic=("relinear",)),
                _better(results, "relinear-rezero", "relinear",
                        "ReZero makes the deep quadratic network more accurate"),
                _better(results, "conventional-rezero", "conventional",
                        "ReZero makes the deep conventional network more accurate (what ReZero does apart from the "
                        "quadratic terms)"),
                _better(results, "relinear", "naive",
                        "At depth, ReLinear is more accurate than training the quadratic network naively",
                        quadratic=("relinear",)),
                _collapse_risk(results, "naive", "relinear")]
    elif nb == "05":
        for param in ("gamma", "alpha", "beta"):
            out += figure2(results, param)
    elif nb == "06":
        out += [_better(results, "quadratic", design, f"Fan's full quadratic network (ReLinear) is more accurate "
                        f"than the {design} network", quadratic=("quadratic",))
                for design, runs in results.items() if runs and design not in ("conventional", "quadratic")]
    return [c for c in out if c]


def text(claims: list[dict]) -> str:
    """Plain-text list of verdicts (for the notebooks)."""
    return "\n".join(f"[{c['verdict']}] {c['claim']}\n    {c['evidence']}" for c in claims) or "(no claims tested)"


def markdown(claims: list[dict], evidence: bool = True) -> str:
    """Markdown list of verdicts, each with its evidence or without (for the READMEs; a test keeps
    them equal)."""
    return "\n".join(f"- **{c['verdict']}**: {c['claim']}." + (f" {c['evidence']}." if evidence else "")
                     for c in claims) or "- (no claims tested)"
