"""Seeds, intervals and verdicts: what several runs of one experiment say.

`summary` describes one label's per-seed values (mean, sample sd, n, 95% interval of the mean);
`welch` gives the difference of two labels' means with Welch's 95% confidence interval, and `paired`
the mean of per-seed differences with its t interval, for runs that share their data order and
augmentation (the same seed); `verdict` turns an interval into "supported", "contradicted" or
"not resolved", and `equivalent` reads one against a margin stated in advance (two one-sided tests:
the 90% interval within ±margin). `fisher_greater` is Fisher's exact test for counts (collapses).
The Student-t quantiles come from the regularised incomplete beta function (no SciPy needed).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

__all__ = ["t_quantile", "summary", "welch", "paired", "verdict", "equivalent", "fisher_greater", "VERDICTS"]

# "not tested": the runs could not show the effect the claim is about (e.g. quadratic terms that
# never moved); "not resolved": they could, and the data cannot decide.
VERDICTS = ("supported", "not resolved", "contradicted", "not tested")


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c if abs(1 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c if abs(1 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


@functools.lru_cache(maxsize=4096)  # the figures ask for the same few quantiles hundreds of times
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t distribution with `df` degrees of freedom (df may be fractional)."""
    if not 0 < p < 1 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    lo, hi = -1e3, 1e3
    for _ in range(200):  # bisection: the cdf is monotone
        mid = (lo + hi) / 2
        if mid in (lo, hi):  # no float lies between them: further steps would change nothing
            break
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def summary(values: Sequence[float], level: float = 0.95) -> dict:
    """mean, sample sd (None for one value), n, the values, and the `level` interval of the mean
    (None for fewer than two values)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "values": [], "low": None, "high": None}
    mean = sum(xs) / n
    if n < 2:
        return {"n": 1, "mean": mean, "sd": None, "values": xs, "low": None, "high": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "values": xs, "low": mean - half, "high": mean + half}


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """mean(a) − mean(b) with Welch's `level` confidence interval (None without two values on
    each side). Where both samples have no spread, the interval is the difference itself."""
    sa, sb = summary(a, level), summary(b, level)
    out = {"diff": None, "low": None, "high": None, "df": None, "n": (sa["n"], sb["n"])}
    if sa["n"] == 0 or sb["n"] == 0:
        return out
    out["diff"] = sa["mean"] - sb["mean"]
    if sa["n"] < 2 or sb["n"] < 2:
        return out
    va, vb = sa["sd"] ** 2 / sa["n"], sb["sd"] ** 2 / sb["n"]
    se = math.sqrt(va + vb)
    if se == 0:
        out.update(low=out["diff"], high=out["diff"], df=math.inf)
        return out
    df = (va + vb) ** 2 / (va ** 2 / (sa["n"] - 1) + vb ** 2 / (sb["n"] - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    out.update(low=out["diff"] - half, high=out["diff"] + half, df=df)
    return out


def paired(a: dict, b: dict, level: float = 0.95) -> dict:
    """mean over the keys (seeds) present in both `a` and `b` of a[k] − b[k], with the `level`
    t interval of that mean (n − 1 degrees of freedom; None for fewer than two pairs). Pairing
    removes what two runs of one seed share (data order, augmentation, much of the initialisation)."""
    keys = sorted(set(a) & set(b))
    d = summary([a[k] - b[k] for k in keys], level)
    return {"diff": d["mean"], "low": d["low"], "high": d["high"], "df": d["n"] - 1 if d["n"] else None,
            "n": (d["n"], d["n"]), "paired": True, "pairs": keys}


def error_ratio(logs_ref: Sequence[float], logs_other: Sequence[float], level: float = 0.95) -> dict:
    """Per-seed mean log10 errors of a reference and another network, read as the ratio other/reference
    of their geometric-mean errors (> 1: the reference errs less), with Welch's `level` interval and
    the verdict of "the reference errs less"."""
    w = welch(logs_ref, logs_other, level)
    ratio = lambda v: None if v is None else 10 ** -v  # noqa: E731
    return {"ratio": ratio(w["diff"]), "low": ratio(w["high"]), "high": ratio(w["low"]), "n": w["n"],
            "verdict": verdict(w, direction=-1)}


def equivalent(interval: dict, margin: float) -> str:
    """Equivalence within ±`margin` (two one-sided tests at 5% each, so give the 90% interval):
    "supported" when the interval lies inside (−margin, +margin), "contradicted" when it lies wholly
    beyond one side, "not resolved" otherwise (including when there is no interval)."""
    low, high = interval.get("low"), interval.get("high")
    if low is None or high is None:
        return "not resolved"
    if -margin < low and high < margin:
        return "supported"
    if low >= margin or high <= -margin:
        return "contradicted"
    return "not resolved"


def fisher_greater(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value of Fisher's exact test that the first group's rate (k1 of n1) exceeds the
    second's (k2 of n2): the hypergeometric probability of k1 or more of the k1 + k2 events falling
    in the first group."""
    if not (0 <= k1 <= n1 and 0 <= k2 <= n2):
        raise ValueError(f"fisher_greater needs 0 <= k <= n, got {k1}/{n1} and {k2}/{n2}")
    k, n = k1 + k2, n1 + n2
    total = math.comb(n, k)
    return sum(math.comb(n1, i) * math.comb(n2, k - i) for i in range(k1, min(k, n1) + 1)) / total


def verdict(interval: dict, direction: int = +1) -> str:
    """"supported" when the whole interval lies on the claimed side of 0 (`direction` +1: the
    difference is claimed positive; -1: negative), "contradicted" when it lies wholly on the
    other side, "not resolved" otherwise (including when there is no interval)."""
    low, high = interval.get("low"), interval.get("high")
    if low is None or high is None:
        return "not resolved"
    low, high = (low, high) if direction > 0 else (-high, -low)
    if low > 0:
        return "supported"
    if high < 0:
        return "contradicted"
    return "not resolved"
