"""Notebook 06's mechanism: every design matched in size, trained like the others (batch-norm
designs one network at a time, as they would train alone), verdicts that follow the errors; and
its CIFAR runs in the labels, the claims and the CPU plan."""
import json
import math
from pathlib import Path

import pytest
import torch

from qnets import campaign, claims, experiments
from qnets import designs as D
from qnets import mlps as M
from qnets.layers import DESIGNS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size", [pytest.param(s, marks=pytest.mark.slow) if s == "quick" else s
                                  for s in sorted(D.SIZES)])
def test_every_design_at_each_budget_is_within_the_tolerance_of_fans_count(size):
    s = D.spec(size)
    for d, out in [(d, 1) for d in s["dims"]] + [(2, 2)]:
        points = D.grid(d, out, s)
        assert [p["budget"] for p in points] == sorted({p["budget"] for p in points})
        for p in points:
            assert set(p["params"]) == set(D.NAMES) and p["params"]["quadratic"] == p["budget"] >= s["lo"]
            for name, n in p["params"].items():
                assert abs(n / p["budget"] - 1) <= s["tolerance"], (d, out, name, n, p["budget"])
                family, design = ("relu", "quadratic") if name == "relu" else ("quadratic", name)
                assert sum(q.numel() for q in M.mlp(family, d, p["widths"][name], 1, out, design).parameters()) == n


def test_a_design_with_batch_norms_trains_alone_as_in_a_group_of_its_own():
    s = D.spec("smoke")
    members = [("bump", 0), ("bump", 1)]
    data = M.prepare("regression", 2, members, s)
    both = M.fit("quadratic", 2, 4, 1, members, data, s, 3e-2, design="quadraour-bn")
    one = M.fit("quadratic", 2, 4, 1, members[1:], {**data, "xs": data["xs"][1:], "ys": data["ys"][1:]}, s, 3e-2,
                design="quadraour-bn")
    assert not both[1].training
    for (name, a), b in zip(both[1].state_dict().items(), one[0].state_dict().values()):
        assert torch.equal(a, b), name  # running statistics too
    assert not torch.equal(both[1].state_dict()["0.norms.0.running_mean"], torch.zeros(4))  # they did move
    skeleton = M.mlp("quadratic", 2, 4, design="quadraour-bn")
    params = {k: torch.stack([v.detach()] * 2) for k, v in skeleton.named_parameters()}
    with pytest.raises(ValueError, match="trains alone"):
        M.stacked_forward(skeleton, params, torch.zeros(2, 3, 2))


def _fake(errors: dict, seeds=3) -> dict:
    """Results where every name has error errors[(problem, name)] × (1 + 0.1·seed) at each budget."""
    s = D.spec("smoke")
    rows = []
    for (problem, name), e in errors.items():
        kind = "classification" if problem == "spirals" else "regression"
        for budget in (60, 180):
            for seed in range(seeds):
                rows.append({"problem": problem, "kind": kind, "d": 2, "depth": 1, "family": name, "budget": budget,
                             "width": 1, "params": budget, "seed": seed, "error": e * (1 + 0.1 * seed)})
    return {"spec": s, "rows": rows}


def test_verdicts_follow_the_errors():
    errors = {(p, n): 0.1 for p in ("bump", "spirals") for n in D.NAMES} | {("bump", "quadratic"): 0.01,
                                                                            ("spirals", "quadratic"): 0.01}
    v = {c["claim"].split(" than the ")[1]: c["verdict"] for c in D.verdicts(_fake(errors))}
    assert len(v) == len(D.NAMES) - 1 and set(v.values()) == {"supported"}
    c = D.compare(_fake(errors), "bump", 2, "compact")
    assert math.isclose(c["ratio"], 10.0) and c["low"] < 10 < c["high"]
    errors[("spirals", "qres")] = 0.001  # qres errs less on one problem
    errors[("spirals", "power")] = 0.01  # power as Fan's on one problem
    v = {c["claim"].split(" than the ")[1]: c["verdict"] for c in D.verdicts(_fake(errors))}
    assert v["qres neuron on every problem tried"] == "contradicted"
    assert v["power neuron on every problem tried"] == "not resolved"
    assert v["conventional ReLU neuron on every problem tried"] == "supported"
    table = D.text_table(_fake(errors))
    assert "qres" in table and "−0.1" in table and "+10" in table


@pytest.mark.slow  # trains every design at every budget
def test_a_smoke_measurement_has_every_design_at_every_budget_and_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = D.results("smoke", verbose=False)
    s = res["spec"]
    keys = {(r["problem"], r["family"], r["budget"], r["seed"]) for r in res["rows"]}
    budgets = {p: len(D.grid(2, 2 if p == "spirals" else 1, s)) for p in ("bump", "spirals")}
    assert len(keys) == len(res["rows"]) == len(D.NAMES) * s["seeds"] * sum(budgets.values())
    assert all(r["error"] is None or r["error"] >= 0 for r in res["rows"])
    assert set(res["rates"]) == set(D.NAMES)
    assert D.results("smoke", train_missing=False, verbose=False) == res  # stored, read back


def test_committed_results_match_the_current_spec():
    """Otherwise the notebook (and nbval) would train everything again."""
    stored = json.loads((ROOT / D.result_path("quick")).read_text())
    assert stored["spec"] == json.loads(json.dumps(D.spec("quick")))


def test_cifar_labels_take_relinear_where_a_design_can_start_and_share_notebook_02s_runs():
    configs = experiments.labelled_configs("06", "cpu")
    assert configs["quadratic"] == experiments.labelled_configs("02", "cpu")["relinear-sg"]
    assert configs["compact"] == experiments.labelled_configs("03", "cpu")["compact"]
    assert "bilinear" not in configs  # no convolution of that form
    for name, c in configs.items():
        if name == "conventional":
            continue
        assert c.neuron == name and c.depth == 8 and c.epochs == 15
        if DESIGNS[name]["start"]:
            assert (c.init, c.gamma_g) == ("relinear", configs["quadratic"].gamma_g)
        else:
            assert (c.init, c.gamma_g, c.gamma_b) == ("naive", None, None)


def test_the_cpu_plan_runs_one_seed_of_every_design_before_the_depth_pilot_and_the_rest_after():
    keys = [k for k, _ in campaign.plan("cpu")]
    new = [n for n in experiments.labelled_configs("06", "cpu") if n not in ("conventional", "quadratic", "compact")]
    first = keys.index("06:" + new[0])
    assert keys[first:first + len(new)] == [f"06:{n}" for n in new]
    assert keys[first + len(new)] == "04:conventional" and keys[first - 1].startswith("05:")
    assert keys[-2 * len(new):] == [f"06:{n}#{s}" for s in (1, 2) for n in new]


def test_cifar_claims_compare_fans_network_with_each_design_that_has_runs():
    def run(label, acc, seed):
        return {"label": label, "status": "completed", "final_test_acc": acc, "history": [],
                "config": {"seed": seed, "neuron": label}, "data_order": 0}
    results = {"conventional": [], "quadratic": [run("quadratic", 0.80 + 0.001 * s, s) for s in range(3)],
               "qres": [run("qres", 0.78 + 0.001 * s, s) for s in range(3)], "power": []}
    out = claims.verdicts("06", results)
    assert [c["claim"] for c in out] == [
        "Fan's full quadratic network (ReLinear) is more accurate than the qres network"]
    assert out[0]["verdict"] == "supported"  # (power: no run yet, no claim)


def test_how_far_a_designs_terms_moved_counts_only_what_departs_from_relinears_start():
    def run(neuron, **q):
        return {"config": {"neuron": neuron, "seed": 0}, "history": [{"epoch": 14, "quadratic": q}]}
    assert claims.ratio([run("quadratic", w_g=0.01, w_b=0.2)]) == 0.2
    assert claims.ratio([run("quadraour", w_g=0.01, w_b=0.99)]) == 0.01  # w_b: the random factor beside w_g
    assert claims.ratio([run("compact", w_g=0.0, w_b=0.03)]) == 0.03
    for neuron in ("square", "poly", "product", "quadraour-bn"):  # never the conventional network: no measure
        assert claims.ratio([run(neuron, w_g=0.0, w_b=0.0)]) is None
    assert claims.ratio([run("power")]) is None and claims.ratio([run("conventional")]) is None
