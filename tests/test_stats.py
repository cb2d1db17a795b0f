"""Intervals and verdicts, on numbers whose answers are known."""
import math

import pytest

from qnets import claims
from qnets.stats import summary, t_quantile, verdict, welch


@pytest.mark.parametrize("df,q", [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042), (1e6, 1.960)])
def test_t_quantiles_match_the_tables(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-3)
    assert t_quantile(0.025, df) == pytest.approx(-q, abs=1e-3)


def test_summary_of_three_seeds():
    s = summary([1.0, 2.0, 3.0])
    assert (s["n"], s["mean"], s["sd"]) == (3, 2.0, 1.0)
    assert s["high"] - s["mean"] == pytest.approx(4.303 / math.sqrt(3), abs=1e-3)
    assert summary([5.0])["sd"] is None and summary([])["mean"] is None


def test_welch_interval_and_verdicts():
    a, b = [90.1, 90.4, 90.2], [89.0, 89.3, 89.1]
    w = welch(a, b)
    assert w["diff"] == pytest.approx(1.1) and w["df"] == pytest.approx(4.0)
    se = math.sqrt(2 * summary(a)["sd"] ** 2 / 3)
    assert w["high"] - w["diff"] == pytest.approx(2.776 * se, rel=1e-3)
    assert verdict(w) == "supported" and verdict(w, direction=-1) == "contradicted"
    assert verdict(welch([90.0, 91.0, 89.5], [90.2, 89.8, 90.5])) == "not resolved"
    assert verdict(welch([90.0], [89.0])) == "not resolved"  # one seed: no interval


def fake(label, accs, status="completed", **config):
    return [{"status": status if a is not None else "collapsed", "final_test_acc": None if a is None else a / 100,
             "config": {"seed": i} | config, "collapse_reason": "non-finite training loss" if a is None else None}
            for i, a in enumerate(accs)]


def test_claims_of_notebook_02_on_synthetic_numbers():
    results = {"conventional": fake("c", [90.0, 90.2, 90.1]), "naive": fake("n", [None, 85.0, None]),
               "relinear-sg": fake("r", [91.0, 91.3, 91.1]), "relinear-sw-l2": fake("l2", [89.0, 91.5, 90.0]),
               "relinear-sw-l1": fake("l1", [88.0, 88.3, 88.1])}
    got = {c["claim"].split(" (")[0][:40]: c for c in claims.verdicts("02", results)}
    by = lambda prefix: next(c for k, c in got.items() if k.startswith(prefix))  # noqa: E731
    collapse = by("A quadratic network trained naively")
    assert collapse["verdict"] == "supported" and "Training broke down in 2 of 3 naive seeds" in collapse["evidence"]
    assert by("ReLinear")["verdict"] == "supported"
    assert "CI [" in by("ReLinear")["evidence"]
    assert by("ReLinear is more accurate than training")["verdict"] == "not resolved"  # one naive seed left
    sw = [c for c in claims.verdicts("02", results) if "shrunken weights" in c["claim"]]
    assert [c["verdict"] for c in sw] == ["not resolved", "contradicted"]
    assert claims.markdown(claims.verdicts("02", results)).startswith("- **supported**: A quadratic")


def test_a_sweep_optimum_must_clear_a_corrected_interval():
    base = fake("c", [90.0, 90.1, 89.9])
    results = {"conventional": base, "gamma=0.0": fake("g", [90.0, 90.2, 89.8]),
               "gamma=1e-05": fake("g", [91.0, 91.1, 90.9]), "gamma=lr": fake("g", [80.0, 81.0, 80.5])}
    v = claims.verdicts("05", results)
    assert [c["verdict"] for c in v] == ["supported", "supported"]
    assert "best of the 3 values tried, 0.0, 1e-05, lr: gamma=1e-05" in v[0]["claim"]
    assert "98.3% CI" in v[0]["evidence"]
    noisy = results | {"gamma=1e-05": fake("g", [93.0, 89.0, 91.0])}
    assert claims.verdicts("05", noisy)[0]["verdict"] == "not resolved"


def test_the_conventional_resnet20_is_read_against_he_et_al():
    """An equivalence reading: the 95% interval inside ±1 point of 91.25% is a reproduction, wholly
    outside that band is a failure to reproduce; only runs of the full 200-epoch recipe count."""
    paper = {"depth": 20, "n_train": None, "dataset": "cifar10", "epochs": 200}
    reference = lambda accs, **config: claims._reference({"conventional": fake("c", accs, **(paper | config))})  # noqa: E731
    close = reference([91.0, 91.4, 91.2])
    assert close["verdict"] == "supported" and "Mean of 3 seeds 91.20%" in close["evidence"]
    assert "-0.05 points from the published figure" in close["evidence"]
    assert reference([86.0, 86.5, 86.2])["verdict"] == "contradicted"
    assert reference([89.0, 91.0, 93.0])["verdict"] == "not resolved"  # too wide to say
    one = reference([91.3, None, None])
    assert one["verdict"] == "not resolved" and one["evidence"] == "1 completed seed at 91.30%: too few for an interval"
    assert reference([86.0, 86.5, 86.2], epochs=50) is None  # a shortened schedule is not the recipe
    assert reference([86.0, 86.5, 86.2], depth=8) is None and reference([86.0], n_train=5000) is None
    assert claims.verdicts("02", {"conventional": fake("c", [91.0, 91.4, 91.2], **paper)})[0] == close
