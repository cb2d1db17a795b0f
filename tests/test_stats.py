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


def test_the_figure_counts_a_collapsed_seed_as_the_claims_do():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot

    from qnets import plots
    results = {"conventional": fake("c", [90.0, 90.2, 90.1]), "naive": fake("n", [None, 85.0, 86.0])}
    for r in results["naive"][:1]:
        r["history"] = [{"test_acc": 0.4}]  # evaluated once before it broke down: counted at 40%
    assert claims.accuracies(results["naive"]) == pytest.approx([40.0, 85.0, 86.0])
    ax = plots.finals(results, ax=matplotlib.pyplot.subplots()[1])
    bar = [line.get_ydata()[0] for line in ax.lines if len(set(line.get_xdata())) == 2]  # the mean bars
    assert bar[-1] == pytest.approx(summary([40.0, 85.0, 86.0])["mean"])
    assert "1 collapsed" in [t.get_text() for t in ax.texts] and ax.get_ylim()[0] < 40
    matplotlib.pyplot.close("all")


def test_claims_of_notebook_02_on_synthetic_numbers():
    results = {"conventional": fake("c", [90.0, 90.2, 90.1]), "naive": fake("n", [None, 85.0, None]),
               "relinear-sg": fake("r", [91.0, 91.3, 91.1]), "relinear-sw-l2": fake("l2", [89.0, 91.5, 90.0]),
               "relinear-sw-l1": fake("l1", [88.0, 88.3, 88.1])}
    got = {c["claim"].split(" (")[0][:40]: c for c in claims.verdicts("02", results)}
    by = lambda prefix: next(c for k, c in got.items() if k.startswith(prefix))  # noqa: E731
    collapse = by("A quadratic network trained naively")
    # 2 of 3 against 0 of 3: one-sided Fisher p = C(3,2) C(3,0) / C(6,2) = 0.2; even 3 of 3 gives 0.05
    assert collapse["verdict"] == "not resolved" and "Training broke down in 2 of 3 naive seeds" in collapse["evidence"]
    assert "p = 0.200" in collapse["evidence"] and "the test cannot decide" in collapse["evidence"]
    assert by("ReLinear")["verdict"] == "supported"
    assert "paired by seed, 95% CI [" in by("ReLinear")["evidence"]
    # the collapsed naive seeds count at chance (never evaluated): 91 − 10 twice, 91.3 − 85 once
    against_naive = by("ReLinear is more accurate than training")
    assert against_naive["verdict"] == "not resolved" and "+56.13 points" in against_naive["evidence"]
    sw = [c for c in claims.verdicts("02", results) if "shrunken weights" in c["claim"]]
    assert [c["verdict"] for c in sw] == ["not resolved", "contradicted"]
    assert claims.markdown(claims.verdicts("02", results)).startswith("- **not resolved**: A quadratic")


def test_a_sweep_optimum_must_clear_a_corrected_interval():
    base = fake("c", [90.0, 90.1, 89.9])
    results = {"conventional": base, "gamma=0.0": fake("g", [90.0, 90.2, 89.8]),
               "gamma=1e-05": fake("g", [91.0, 91.1, 90.9]), "gamma=lr": fake("g", [80.0, 81.0, 80.5])}
    v = claims.verdicts("05", results)
    assert [c["verdict"] for c in v] == ["supported", "supported"]
    assert "best of the 3 values that tested something, 0.0, 1e-05, lr: gamma=1e-05" in v[0]["claim"]
    assert "98.3% CI" in v[0]["evidence"]
    noisy = results | {"gamma=1e-05": fake("g", [93.0, 89.0, 91.0])}
    assert claims.verdicts("05", noisy)[0]["verdict"] == "not resolved"
    # one value that moved the terms: its own 95% interval, no correction, named as the one
    v = claims.verdicts("05", {"conventional": base, "gamma=1e-05": results["gamma=1e-05"]})[0]
    assert v["claim"].endswith("(the one value that tested something, gamma=1e-05)")
    assert "paired by seed, 95% CI [+1.00, +1.00]" in v["evidence"] and "Bonferroni" not in v["evidence"]


def test_a_sweep_value_with_fewer_seeds_waits_rather_than_decides():
    """A plan trains one seed of every value first: a value with one lucky seed must not become the
    best, whose missing interval would turn a supported optimum into "not resolved"."""
    base = fake("c", [90.0, 90.1, 89.9])
    results = {"conventional": base, "gamma=1e-05": fake("g", [91.0, 91.1, 90.9]),
               "gamma=0.01": fake("g", [95.0]), "gamma=lr": fake("g", [80.0, 81.0, 80.5])}
    v = claims.verdicts("05", results)
    assert [c["verdict"] for c in v] == ["supported", "supported"]
    assert "best of the 2 values that tested something, 1e-05, lr: gamma=1e-05" in v[0]["claim"]
    assert "1 more with fewer seeds than conventional waits for theirs (0.01)" in v[0]["evidence"]
    complete = results | {"gamma=0.01": fake("g", [95.0, 95.2, 94.8])}  # once it has them, it is read
    assert "best of the 3 values that tested something, 1e-05, 0.01, lr: gamma=0.01" in \
        claims.verdicts("05", complete)[0]["claim"]


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
    one = reference([91.3, None, None])  # two seeds collapsed before any evaluation: they count at chance
    assert one["verdict"] == "not resolved" and one["evidence"].startswith("Mean of 3 seeds 37.10%")
    assert reference([91.3])["evidence"] == "1 seed at 91.30%: too few for an interval"
    assert reference([86.0, 86.5, 86.2], epochs=50) is None  # a shortened schedule is not the recipe
    assert reference([86.0, 86.5, 86.2], depth=8) is None and reference([86.0], n_train=5000) is None
    assert claims.verdicts("02", {"conventional": fake("c", [91.0, 91.4, 91.2], **paper)})[0] == close


def test_a_paired_interval_is_the_t_interval_of_the_per_seed_differences():
    # differences 1.0, 1.5, 0.8: mean 1.1, sd sqrt(0.13); t(0.975, 2) = 4.302653 (tables)
    from qnets.stats import paired
    p = paired({0: 80.0, 1: 81.0, 2: 82.0, 3: 70.0}, {0: 79.0, 1: 79.5, 2: 81.2})  # seed 3 has no pair
    half = 4.302653 * math.sqrt(0.13) / math.sqrt(3)
    assert p["diff"] == pytest.approx(1.1) and p["pairs"] == [0, 1, 2] and p["df"] == 2
    assert (p["low"], p["high"]) == (pytest.approx(1.1 - half, abs=1e-5), pytest.approx(1.1 + half, abs=1e-5))
    assert verdict(p) == "supported"
    # the same numbers unpaired: the seeds' shared part stays in the noise and Welch cannot decide
    assert verdict(welch([80.0, 81.0, 82.0], [79.0, 79.5, 81.2])) == "not resolved"
    assert paired({0: 1.0}, {0: 0.5})["low"] is None


def test_equivalence_within_a_margin_stated_in_advance():
    from qnets.stats import equivalent, paired
    # differences -0.2, 0.1, 0.0: mean -0.0333, sd 0.1528; 90% interval with t(0.95, 2) = 2.919986
    p = paired({0: 79.8, 1: 80.1, 2: 80.0}, {0: 80.0, 1: 80.0, 2: 80.0}, level=0.90)
    half = 2.919986 * 0.152753 / math.sqrt(3)
    assert p["high"] == pytest.approx(-1 / 30 + half, abs=1e-4)
    assert equivalent(p, margin=1.0) == "supported"
    assert equivalent({"low": 1.2, "high": 2.5}, 1.0) == "contradicted"
    assert equivalent({"low": -2.5, "high": -1.0}, 1.0) == "contradicted"
    assert equivalent({"low": 0.5, "high": 1.5}, 1.0) == "not resolved"
    assert equivalent({"low": None, "high": None}, 1.0) == "not resolved"


@pytest.mark.parametrize("counts, p", [
    ((4, 4, 0, 4), 1 / 70),        # Fisher's lady tasting tea: all four right, 1 of C(8,4)
    ((3, 3, 0, 3), 1 / 20),        # three seeds a side: the smallest p there is 0.05
    ((5, 6, 0, 6), 6 / 792),       # C(6,5) C(6,0) / C(12,5)
    ((1, 3, 1, 3), 1 - 3 / 15),    # P(X >= 1), 2 events in 6: 1 - C(3,0) C(3,2) / C(6,2) = 0.8
    ((0, 3, 2, 3), 1.0),
])
def test_fisher_exact_one_sided(counts, p):
    from qnets.stats import fisher_greater
    assert fisher_greater(*counts) == pytest.approx(p)


def with_ratio(rs, q):
    """Results whose quadratic terms ended at ‖w_g‖/‖w_r‖ = ‖w_b‖/‖w_r‖ = q."""
    return [r | {"history": [{"epoch": 0, "quadratic": {"w_g": q, "w_b": q / 2}}]} for r in rs]


def test_a_claim_about_quadratic_terms_that_never_moved_is_not_tested():
    """The quick preset's ReLinear runs ended at ratio 4e-5: whatever the accuracies say, those runs
    compute the conventional function, so the claim is not tested (never supported, never contradicted)."""
    base = fake("c", [79.0, 79.2, 78.9])
    for accs in ([81.0, 81.2, 80.9], [75.0, 75.2, 74.9]):  # far above, far below
        still = {"conventional": base, "relinear-sg": with_ratio(fake("r", accs), 4e-5)}
        claim = next(c for c in claims.verdicts("02", still) if c["claim"].startswith("ReLinear (shrunken"))
        assert claim["verdict"] == "not tested" and "ended at max(‖w_g‖, ‖w_b‖)/‖w_r‖ = 4.0e-05" in claim["evidence"]
    moved = {"conventional": base, "relinear-sg": with_ratio(fake("r", [81.0, 81.2, 80.9]), 0.045)}
    claim = next(c for c in claims.verdicts("02", moved) if c["claim"].startswith("ReLinear (shrunken"))
    assert claim["verdict"] == "supported" and "relinear-sg max(‖w_g‖, ‖w_b‖)/‖w_r‖ = 0.045" in claim["evidence"]
    assert claims.ratio(moved["relinear-sg"]) == 0.045 and claims.ratio(base) is None


def test_a_failed_precondition_is_reported_as_contradicted():
    """"Accuracy falls again at γ = lr" presumes a best γ below lr; where lr itself is best, the claim
    is contradicted, not silently dropped."""
    results = {"conventional": fake("c", [79.0, 79.2, 78.9]),
               "gamma=0.001": with_ratio(fake("g", [79.5, 79.4, 79.6]), 0.04),
               "gamma=lr": with_ratio(fake("g", [80.5, 80.4, 80.6]), 1.0)}
    falls = [c for c in claims.verdicts("05", results) if c["claim"].startswith("Accuracy falls again")]
    assert len(falls) == 1 and falls[0]["verdict"] == "contradicted"
    assert "The best γ of the 2 tried is lr itself (80.50%)" in falls[0]["evidence"]


def test_a_penalty_is_read_from_both_ends_of_figure_2():
    """Along α (and β) the unpenalised end is γ = lr (the penalised runs train the terms at the full
    rate): the best α is read against the conventional network and against γ = lr, paired by seed."""
    results = {"conventional": fake("c", [79.0, 79.2, 78.9]),
               "gamma=lr": with_ratio(fake("g", [81.0, 81.2, 80.9]), 0.97),
               "alpha=0.001": with_ratio(fake("a", [82.0, 82.3, 81.8]), 0.2),
               "alpha=0.1": with_ratio(fake("a", [79.2, 79.0, 79.1]), 0.004)}
    v = {c["claim"]: c for c in claims.verdicts("05", results)}
    falls = v["Accuracy falls again without the penalty (best alpha, alpha=0.001, above γ = lr, unpenalised)"]
    assert falls["verdict"] == "supported" and "alpha=0.001 − gamma=lr: +1.00 points, paired by seed" in falls["evidence"]
    results["alpha=0.001"] = with_ratio(fake("a", [81.5, 80.7, 81.0]), 0.2)  # as often below γ = lr as above
    v = {c["claim"]: c for c in claims.verdicts("05", results)}
    assert v["Accuracy falls again without the penalty (best alpha, alpha=0.001, above γ = lr, unpenalised)"][
        "verdict"] == "not resolved"
    assert not [c for c in claims.verdicts("05", {k: r for k, r in results.items() if k != "gamma=lr"})
                if "without the penalty" in c["claim"]]


def test_compact_is_read_as_equivalent_within_a_margin_stated_in_advance():
    conventional = fake("c", [79.0, 79.2, 78.9])
    close = with_ratio(fake("k", [79.1, 79.0, 79.2]), 0.03)
    far = with_ratio(fake("k", [76.0, 76.3, 75.9]), 0.03)
    read = lambda compact: {c["claim"]: c for c in claims.verdicts(  # noqa: E731
        "03", {"conventional": conventional, "compact": compact, "quadratic": with_ratio(conventional, 0.04)})}
    same = read(close)["The compact quadratic network is as accurate as the conventional one"]
    assert same["verdict"] == "supported" and "90% CI" in same["evidence"] and "margin ±1 point" in same["evidence"]
    assert read(far)["The compact quadratic network is as accurate as the conventional one"]["verdict"] == \
        "contradicted"


def test_a_penalty_that_held_nothing_back_tests_no_shrinking():
    """The quick preset's penalties left ‖w_g‖/‖w_r‖ where the unpenalised network ends (0.34-0.38
    against 0.38): calling "shrunken weights help" contradicted there was wrong; it is not tested."""
    base = {"conventional": fake("c", [39.0, 40.2, 37.6]),
            "gamma=lr": with_ratio(fake("f", [28.1, 27.3, 23.3]), 0.38)}
    loose = base | {"relinear-sw-l2": with_ratio(fake("l2", [27.9, 27.9, 23.0]), 0.34)}
    claim = next(c for c in claims.verdicts("02", loose) if "(L2)" in c["claim"])
    assert claim["verdict"] == "not tested" and "did not hold the quadratic terms back" in claim["evidence"]
    tight = base | {"relinear-sw-l2": with_ratio(fake("l2", [27.9, 27.9, 23.0]), 0.004)}
    assert next(c for c in claims.verdicts("02", tight) if "(L2)" in c["claim"])["verdict"] == "contradicted"
    sweep = base | {"alpha=0.001": with_ratio(fake("a", [27.9, 27.9, 23.0]), 0.36),
                    "alpha=1.0": with_ratio(fake("a", [30.0, 29.9, 29.0]), 1e-5)}  # one loose, one frozen
    (figure,) = claims.verdicts("05", {k: v for k, v in sweep.items() if k != "gamma=lr"} | {"gamma=lr": base["gamma=lr"]}
                                )[-1:]
    assert figure["verdict"] == "not tested" and "alpha=" not in figure["evidence"] and "0.001: 0.36" in figure["evidence"]


def test_notebook_04_reads_the_naive_network_at_depth_against_relinear():
    """The cpu preset's ResNet-20 trio: ReLinear against the naive network, by accuracy and by collapses."""
    results = {"conventional": fake("c", [80.0, 80.2, 80.1]), "relinear": fake("r", [81.0, 81.3, 81.1]),
               "naive": fake("n", [None, None, None])}
    v = {c["claim"]: c for c in claims.verdicts("04", results)}
    better = v["At depth, ReLinear is more accurate than training the quadratic network naively"]
    assert better["verdict"] == "supported" and "relinear − naive" in better["evidence"]
    collapse = next(c for k, c in v.items() if k.startswith("A quadratic network trained naively"))
    # 3 of 3 against 0 of 3: one-sided Fisher p = 1 / C(6,3) = 0.05, not below 0.05
    assert "3 of 3 naive seeds and 0 of 3 relinear seeds" in collapse["evidence"] and "p = 0.050" in collapse["evidence"]
    assert collapse["verdict"] == "not resolved"
    assert not any("naive" in c["claim"] for c in claims.verdicts("04", {k: results[k] for k in ("conventional",
                                                                                                   "relinear")}))
    # a plan's runs still to come: no seed of them yet, said as such (not a test on zero seeds)
    waiting = next(c for c in claims.verdicts("04", results | {"relinear": []}) if "collapse" in c["claim"])
    assert waiting["verdict"] == "not resolved" and waiting["evidence"] == "No seed of relinear yet"


def test_relinear_from_a_trained_conventional_network_is_read_against_that_network_trained_on():
    """The cpu preset's pair started from each seed's trained conventional network: paired by seed,
    and not tested where ReLinear's terms did not move."""
    from qnets import experiments
    a, b = "relinear-from-conventional", "conventional-trained-on"
    configs = experiments.labelled_configs("02", "cpu")
    assert configs[a].init == configs[b].init == "conventional" and configs[a].neuron == "quadratic"

    def claim(results):
        return next(c for c in claims.verdicts("02", results) if c["claim"].startswith("Started from a trained"))
    trained_on = fake(b, [79.5, 79.8, 79.6])
    got = claim({a: with_ratio(fake(a, [80.0, 80.4, 80.2]), 0.03), b: trained_on})
    assert got["verdict"] == "supported" and f"Difference {a} − {b}: +0.57 points, paired by seed" in got["evidence"]
    assert got["evidence"].endswith(f"{a} max(‖w_g‖, ‖w_b‖)/‖w_r‖ = 0.03")
    assert claim({a: with_ratio(fake(a, [80.0, 80.4, 80.2]), 1e-4), b: trained_on})["verdict"] == "not tested"


def test_figure_2_marks_a_value_still_waiting_for_seeds():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot

    from qnets import plots
    runs = {"gamma=0.001": with_ratio(fake("g", [79.5, 79.4, 79.6], gamma_g=1e-3), 0.04),
            "gamma=0.01": with_ratio(fake("g", [80.1], gamma_g=1e-2), 0.2)}
    ax = plots.sweep(runs, "gamma", baseline=fake("c", [79.0, 79.2, 78.9]), ax=matplotlib.pyplot.subplots()[1])
    assert sorted(t.get_text() for t in ax.texts) == ["0.001", "0.01 (1 of 3 seeds)"]
    matplotlib.pyplot.close("all")


def _curves(accs_by_seed, init="relinear", every=2, neuron="quadratic"):
    """Results evaluated every `every` epochs, ending at the given accuracies, terms growing."""
    return [{"status": "completed", "final_test_acc": a / 100, "params": 1000, "collapse_reason": None,
             "config": {"seed": i, "depth": 8, "neuron": neuron, "init": init, "rezero": False},
             "history": [{"epoch": e, "test_acc": (a - 6 + e) / 100 if (e + 1) % every == 0 else None,
                          "quadratic": {"w_g": 1e-3 * (e + 1), "w_b": 5e-4 * (e + 1)}} for e in range(6)]}
            for i, a in enumerate(accs_by_seed)]


def test_figures_state_preset_networks_seeds_and_their_one_kind_of_interval(recwarn):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qnets import plots
    results = {"conventional": _curves([70.0, 71.0, 70.5], neuron="conventional"),
               "relinear-sg": _curves([72.0, 72.5, 71.5]), "naive": _curves([60.0], init="naive")}
    fig, axes = plt.subplots(1, 2)
    plots.curves(results, ax=axes[0])
    plots.heading(fig, "cpu", results)
    assert fig._suptitle.get_text() == ("preset cpu · ResNet-8 · 1 to 3 seeds per run · bars and bands: "
                                        "95% CI of the mean over seeds")
    line = next(ln for ln in axes[0].lines if ln.get_label() == "relinear-sg")
    assert list(line.get_xdata()) == [2, 4, 6] and line.get_marker() == "o"  # where it was evaluated
    assert all(float(t).is_integer() for t in axes[0].get_xticks())  # whole epochs
    assert len(axes[0].collections) == 2  # bands for the labels with an interval; one seed has none
    plots.curves({"conventional": []}, ax=axes[1])  # nothing stored yet: no legend, no warning
    assert axes[1].get_legend() is None and not [w for w in recwarn if "legend" in str(w.message)]
    plt.close("all")


def test_a_network_with_two_seeds_shows_its_seeds_rather_than_a_band_wider_than_the_plot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qnets import plots
    two = _curves([70.0, 74.0])
    ax = plots.curves({"conventional": _curves([70.0, 71.0, 70.5], neuron="conventional"), "relinear-sg": two})
    assert len(ax.collections) == 1  # the three-seed band only
    seeds = [ln for ln in ax.lines if ln.get_label() == "_seed"]
    assert [list(ln.get_ydata()) for ln in seeds] == [pytest.approx([65, 67, 69]), pytest.approx([69, 71, 73])]
    assert all(ln.get_color() == plots.colour("relinear-sg") for ln in seeds)
    assert [t.get_text() for t in ax.texts] == ["thin lines: each seed of a network with two"]
    assert "_seed" not in ax.get_legend_handles_labels()[1]
    ax = plots.curves({"conventional": _curves([70.0, 71.0, 70.5], neuron="conventional")}, title="(b)")
    assert not ax.texts and ax.get_title() == "(b)"
    plt.close("all")


def test_quadratic_terms_start_at_zero_where_relinear_starts_them():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qnets import plots
    ax = plots.quadratic_curves({"relinear-sg": _curves([72.0, 72.5]), "naive": _curves([60.0], init="naive")},
                                ax=plt.subplots()[1])
    first = {(tuple(ln.get_color()) if not isinstance(ln.get_color(), str) else ln.get_color()): ln.get_xydata()[0]
             for ln in ax.lines}
    assert list(first[plots.colour("relinear-sg")]) == [0, 0]  # ReLinear's start, drawn
    assert first[plots.colour("naive")][0] == 1  # a naive start is random: from the first measurement on
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["relinear-sg", "naive", "‖w_g‖/‖w_r‖",
                                                                    "‖w_b‖/‖w_r‖"]  # one entry a network
    plt.close("all")


def test_colours_are_distinct_visible_and_never_a_baselines_grey():
    import itertools
    import math

    from matplotlib.colors import to_rgb

    from qnets import experiments, plots
    for nb in ("02", "03", "04", "06"):
        labels = list(experiments.labelled_configs(nb, "paper" if nb in ("03", "04") else "cpu"))
        colours = [to_rgb(plots.colour(label)) for label in labels]
        for (a, ca), (b, cb) in itertools.combinations(zip(labels, colours), 2):  # one figure draws them all
            assert math.dist(ca, cb) > 0.2, f"notebook {nb}: {a} and {b} look alike"
        for label, (r, g, b) in zip(labels, colours):
            assert max(r, g, b) - min(r, g, b) > 0.15 or max(r, g, b) < 0.2, f"{label} is grey"
            assert 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.7, f"{label} is too pale to see"


def test_a_penalty_sweep_draws_its_unconstrained_end():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qnets import plots
    free = with_ratio(fake("g", [81.5, 81.7, 81.6], gamma_g=None), 0.9)
    runs = {"alpha=0.1": with_ratio(fake("a", [79.0, 79.2, 79.1], alpha_g=0.1), 0.004)}
    ax = plots.sweep(runs, "alpha", baseline=fake("c", [79.0, 79.2, 78.9]), ax=plt.subplots()[1],
                     unconstrained=free)
    assert sorted((t.get_text(), t.xy[0]) for t in ax.texts) == [("0", 0.9), ("0.1", 0.004)]
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "α or β = 0: no penalty (the γ = lr runs)" in names
    assert any(n.startswith("conventional network (ratio 0)") and "band: 95% CI" in n for n in names)
    plt.close("all")


def test_a_sweeps_star_is_the_value_its_verdict_reads():
    """The star marks the value that "some β lifts the network" reads: β = 1e-5 ended highest but
    held the terms back no further than no penalty (it tests no shrinking), so the star is on
    β = 1e-4, the best of the values that tested something, and only while that claim is supported;
    β = 1e-5 is named "not held back" beside its point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qnets import plots
    free = with_ratio(fake("g", [81.5, 81.7, 81.6], gamma_g=None), 0.9)
    base = fake("c", [79.0, 79.2, 78.9])
    runs = {"beta=1e-05": with_ratio(fake("b", [82.1, 82.3, 82.2], beta_g=1e-5), 0.7),
            "beta=0.0001": with_ratio(fake("b", [80.6, 80.9, 80.7], beta_g=1e-4), 0.3)}

    def star(runs):
        ax = plots.sweep(runs, "beta", baseline=base, ax=plt.subplots()[1], unconstrained=free)
        return [tuple(line.get_xydata()[0]) for line in ax.lines if line.get_marker() == "*"]
    lifts = claims.figure2(runs | {"conventional": base, "gamma=lr": free}, "beta")[0]
    assert lifts["verdict"] == "supported" and lifts["best"] == "beta=0.0001"
    assert star(runs) == [pytest.approx((0.3, 80.7333), abs=1e-3)]
    texts = {t.get_text() for t in plt.gca().texts}  # why the highest value is passed over, on the figure itself
    assert texts == {"1e-05 (not held back)", "0.0001", "0"}
    runs["beta=0.0001"] = with_ratio(fake("b", [78.6, 80.9, 79.7], beta_g=1e-4), 0.3)  # not beyond its interval
    assert claims.figure2(runs | {"conventional": base, "gamma=lr": free}, "beta")[0]["verdict"] == "not resolved"
    assert star(runs) == []
    plt.close("all")
