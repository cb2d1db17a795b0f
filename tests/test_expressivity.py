"""Notebook 01's mechanism: one quadratic neuron separates XOR and a disk exactly; the three
families of MLPs match in size, compute what they say and train together as they would alone;
pieces are counted right; verdicts follow the errors."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import qnets
from qnets import QuadraticLinear
from qnets import expressivity as E
from qnets import mlps as M
from qnets import neuron as N

ROOT = Path(__file__).resolve().parents[1]


def neuron(**values):
    q = QuadraticLinear(2, 1, dtype=torch.float64)
    with torch.no_grad():
        for p in q.parameters():
            p.zero_()
        q.bias_g.fill_(1.0)
        for name, v in values.items():
            getattr(q, name).copy_(torch.tensor(v, dtype=torch.float64))
    return q


def test_one_quadratic_neuron_computes_xor():
    x = torch.tensor([[-1., -1.], [-1., 1.], [1., -1.], [1., 1.]], dtype=torch.float64)
    q = neuron(weight_r=[[1., 0.]], weight_g=[[0., -1.]], bias_g=[0.])
    torch.testing.assert_close(q(x).squeeze(1), -x[:, 0] * x[:, 1])  # q = -x1·x2
    assert torch.equal(q(x).squeeze(1) > 0, x[:, 0] * x[:, 1] < 0)


def test_one_quadratic_neuron_separates_a_disk():
    x = torch.rand(2000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4 - 2
    q = neuron(weight_b=[[-1., -1.]], bias_b=[1.])
    torch.testing.assert_close(q(x).squeeze(1), 1 - x.square().sum(1))
    assert torch.equal(q(x).squeeze(1) > 0, x.square().sum(1) < 1)


def test_no_line_classifies_xor():
    """Any conventional neuron sign(w·x + b) gets at most 3 of the 4 XOR points right."""
    x = torch.tensor([[-1., -1.], [-1., 1.], [1., -1.], [1., 1.]])
    y = x[:, 0] * x[:, 1] < 0
    angles = torch.linspace(0, 2 * torch.pi, 721)[:-1]
    w = torch.stack((angles.cos(), angles.sin()), 1)
    best = max(((x @ wi + b > 0) == y).sum().item() for wi in w for b in torch.linspace(-2.5, 2.5, 51))
    assert best == 3


# ----------------------------------------------------------------------------- the measured comparison


@pytest.mark.parametrize("size", sorted(M.SIZES))
def test_families_at_each_budget_have_parameter_counts_within_two_percent(size):
    s = M.SIZES[size]
    for d, out in [(d, 1) for d in s["dims"]] + [(2, 2)]:
        for depth in s["depths"]:
            grid = M.budget_grid(d, depth, out, s["lo"], s["hi"], s["budgets"])
            assert len(grid) >= 2
            for point in grid:
                counts = [sum(p.numel() for p in M.mlp(f, d, point["widths"][f], depth, out).parameters())
                          for f in M.FAMILIES]
                assert counts == [point["params"][f] for f in M.FAMILIES]
                assert max(counts) <= 1.02 * min(counts), (d, depth, point)


def test_parameter_count_formula_and_matching():
    for family in M.FAMILIES:
        for d, width, depth, out in ((2, 1, 1, 1), (3, 7, 2, 2), (16, 5, 3, 1)):
            model = M.mlp(family, d, width, depth, out)
            assert sum(p.numel() for p in model.parameters()) == M.n_params(family, d, width, depth, out)
    from qnets.layers import DESIGNS
    for design in DESIGNS:  # the quadratic family in every published design
        for d, width, depth, out in ((2, 1, 1, 1), (3, 7, 2, 2)):
            model = M.mlp("quadratic", d, width, depth, out, design=design)
            assert sum(p.numel() for p in model.parameters()) == M.n_params("quadratic", d, width, depth, out, design)
            assert model(torch.randn(4, d)).shape == (4, out)
    assert M.match(21, 2) == {"relu": 5, "square": 5, "quadratic": 2}  # 4·5 + 1 = 10·2 + 1
    with pytest.raises(ValueError, match="within 2%"):
        M.budget_grid(16, 1, 1, 20, 60, 3)  # below one quadratic neuron's worth of conventional matches


def test_square_activation_mlp_computes_its_formula():
    torch.manual_seed(0)
    model = M.mlp("square", 3, 4, depth=2, out=2).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    l1, l2, l3 = (m for m in model if isinstance(m, nn.Linear))
    h1 = (x @ l1.weight.T + l1.bias) ** 2
    h2 = (h1 @ l2.weight.T + l2.bias) ** 2
    torch.testing.assert_close(model(x), h2 @ l3.weight.T + l3.bias)


def test_quadratic_family_starts_as_the_relu_network_and_differs_once_trained():
    torch.manual_seed(0)
    quad = M.mlp("quadratic", 3, 5, depth=2).double()
    relu = M.mlp("relu", 3, 5, depth=2).double()
    assert all(isinstance(m, qnets.QuadraticLinear) for m in quad[:4:2])
    with torch.no_grad():
        for q, r in zip(quad, relu):
            if isinstance(q, qnets.QuadraticLinear):
                r.weight.copy_(q.weight_r)
                r.bias.copy_(q.bias_r)
            elif isinstance(q, nn.Linear):
                r.load_state_dict(q.state_dict())
    x = torch.randn(50, 3, dtype=torch.float64)
    torch.testing.assert_close(quad(x), relu(x))  # ReLinear: w_g = 0, b_g = 1, w_b = 0, c = 0
    y = x.square().sum(1)
    M.train([quad], x[None], y[None], steps=20, lr=1e-2, batch=50, classify=False)
    assert quad[0].weight_b.abs().max() > 0  # the quadratic terms learn


def test_training_together_equals_training_alone():
    """The vmapped training of K networks gives each the weights it gets when trained alone."""
    torch.set_default_dtype(torch.float64)
    try:
        xs = torch.randn(3, 64, 2, generator=torch.Generator().manual_seed(1))
        ys = xs.square().sum(2) + torch.arange(3)[:, None]
        for family in M.FAMILIES:
            def build(seed):
                torch.manual_seed(seed)
                return M.mlp(family, 2, 4, depth=2)
            together = [build(k) for k in range(3)]
            x = xs[:, :5]
            stacked = {name: torch.stack([dict(m.named_parameters())[name] for m in together])
                       for name, _ in together[0].named_parameters()}
            torch.testing.assert_close(M.stacked_forward(together[0], stacked, x),
                                       torch.stack([m(x[k]) for k, m in enumerate(together)]))
            M.train(together, xs, ys, steps=15, lr=1e-2, batch=16, classify=False)
            for k in range(3):
                alone = build(k)
                M.train([alone], xs[k:k + 1], ys[k:k + 1], steps=15, lr=1e-2, batch=16, classify=False)
                for (name, p), q in zip(alone.named_parameters(), together[k].parameters()):
                    torch.testing.assert_close(q, p, msg=f"{family} model {k}: {name}")
                assert not torch.equal(together[k][0].bias if family != "quadratic" else together[k][0].bias_r,
                                       build(k)[0].bias if family != "quadratic" else build(k)[0].bias_r)
    finally:
        torch.set_default_dtype(torch.float32)


def _relu_net(breaks):
    """1-D ReLU network: x ↦ Σ relu(x − c) over the breakpoints c (its pieces are known)."""
    net = nn.Sequential(nn.Linear(1, len(breaks)), nn.ReLU(), nn.Linear(len(breaks), 1)).double()
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.copy_(-torch.tensor(breaks, dtype=torch.float64))
        net[2].weight.fill_(1.0)
    return net


def _tent(k):
    """The tent map t(x) = 2 relu(x) − 4 relu(x − 1/2) composed k times: 2^k linear pieces on (0, 1)."""
    layers = []
    for i in range(k):
        lin = nn.Linear(1 if i == 0 else 2, 2)
        with torch.no_grad():
            if i == 0:
                lin.weight.copy_(torch.tensor([[1.0], [1.0]]))
            else:  # the previous layer's two units give t = 2 h1 − 4 h2
                lin.weight.copy_(torch.tensor([[2.0, -4.0], [2.0, -4.0]]))
            lin.bias.copy_(torch.tensor([0.0, -0.5]))
        layers += [lin, nn.ReLU()]
    out = nn.Linear(2, 1)
    with torch.no_grad():
        out.weight.copy_(torch.tensor([[2.0, -4.0]]))
        out.bias.zero_()
    return nn.Sequential(*layers, out).double()


def test_pieces_counts_hand_built_networks():
    t = torch.linspace(-1, 1, 4001, dtype=torch.float64)[:, None]
    assert M.pieces(_relu_net([-0.5, 0.1, 0.7]), t) == 4
    assert M.pieces(_relu_net([-0.5, 0.1, 1.5]), t) == 3  # a breakpoint off the segment makes no piece
    # no sample on a dyadic point, where a deeper unit's input touches 0 without changing sign
    inside = torch.linspace(1.234e-4, 1 - 1.234e-4, 20000, dtype=torch.float64)[:, None]
    for k in (1, 2, 3, 4):
        net = _tent(k)
        torch.testing.assert_close(net(torch.tensor([[0.0], [2.0 ** -k], [1.0]], dtype=torch.float64)).squeeze(1),
                                   torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))  # the tent's first peak
        assert M.pieces(net, inside) == 2 ** k
    # one quadratic neuron, relu(t² − 1/4) along t ∈ [−1, 1]: 3 pieces (two quadratic roots)
    q = N.neuron(w_b=(1.0, 0.0), c=-0.25)
    line = torch.cat((t, torch.zeros_like(t)), 1)
    assert M.pieces(nn.Sequential(q, nn.ReLU()), line) == 3
    assert M.pieces(M.mlp("square", 2, 3).double(), line) == 1  # one polynomial: no ReLU
    assert M.pieces(_relu_net([-0.5, 0.1, 0.7]), t, stride=4000) == 2  # the two ends: 4 pieces seen as 2


def test_chords_lie_in_the_ball_and_pass_through_their_points():
    g = torch.Generator().manual_seed(0)
    through = torch.tensor([[0.5, 0.0, 0.0], [0.0, 1.9, 0.1]])
    lines = M.chords(through, 2.0, 101, g)
    norms = lines.double().norm(dim=2)
    assert lines.shape == (2, 101, 3) and norms.max() <= 2.0 + 1e-5
    torch.testing.assert_close(norms[:, [0, -1]], torch.full((2, 2), 2.0, dtype=torch.float64))
    for k in range(2):  # the point lies on its chord: distance to the line is 0
        a, b = lines[k, 0].double(), lines[k, -1].double()
        u = (b - a) / (b - a).norm()
        v = through[k].double() - a
        assert (v - (v @ u) * u).norm() < 1e-5


def _fake(errors: dict, seeds=3) -> dict:
    """Results with given test errors: errors[(problem, family)] = error at every budget; each
    seed scaled by 1.1^seed so that seeds spread."""
    s = dict(M.SIZES["smoke"], families=M.FAMILIES)
    rows = []
    for (problem, family), e in errors.items():
        kind = "classification" if problem in M.PROBLEMS else "regression"
        for budget, params in ((21, 21), (61, 61)):
            for seed in range(seeds):
                rows.append({"problem": problem, "kind": kind, "d": 2, "depth": 1, "family": family, "budget": budget,
                             "params": params, "seed": seed, "error": e * (budget / 21) ** -1 * 1.1 ** seed})
    one = {"XOR": {"points": 4, "quadratic": 1.0, "best_line": 0.75},
           "disk": {"points": 10, "quadratic": 1.0, "best_line": 0.8}}
    return {"spec": s, "rows": rows, "single_neuron": one}


def test_verdicts_follow_the_errors():
    lower = _fake({("bump", "relu"): 0.1, ("bump", "square"): 0.2, ("bump", "quadratic"): 0.01,
                   ("spirals", "relu"): 0.3, ("spirals", "square"): 0.3, ("spirals", "quadratic"): 0.03})
    v = E.verdicts(lower)
    assert [c["verdict"] for c in v] == ["supported", "supported", "supported"]
    c = E.compare(lower, "bump", 2, 1, "relu")
    assert math.isclose(c["ratio"], 10.0) and c["low"] < 10 < c["high"] and c["verdict"] == "supported"
    higher = _fake({("bump", "relu"): 0.1, ("bump", "square"): 0.2, ("bump", "quadratic"): 0.01,
                    ("spirals", "relu"): 0.01, ("spirals", "square"): 0.3, ("spirals", "quadratic"): 0.03})
    assert [c["verdict"] for c in E.verdicts(higher)][1:] == ["contradicted", "supported"]
    level = _fake({("bump", f): 0.1 for f in M.FAMILIES} | {("spirals", f): 0.1 for f in M.FAMILIES})
    level["rows"] = [r | {"error": r["error"] * (1.3 if (r["seed"] + (r["family"] == "quadratic")) % 2 else 1)}
                     for r in level["rows"]]
    assert [c["verdict"] for c in E.verdicts(level)][1:] == ["not resolved", "not resolved"]
    bad = _fake({("bump", f): 0.1 for f in M.FAMILIES} | {("spirals", f): 0.1 for f in M.FAMILIES})
    bad["single_neuron"]["disk"]["quadratic"] = 0.99
    assert E.verdicts(bad)[0]["verdict"] == "contradicted"


def test_parameters_needed_are_read_off_the_mean_curve():
    res = _fake({("bump", "relu"): 0.04, ("bump", "square"): 0.5, ("bump", "quadratic"): 0.01,
                 ("spirals", "relu"): 0.1, ("spirals", "square"): 0.1, ("spirals", "quadratic"): 0.1})
    flag, p = E.needed(res, "bump", 2, 1, "relu")  # mean error 0.04·1.1·21/params: 0.02 at 21·0.044/0.02
    assert flag == "" and math.isclose(p, 21 * 0.04 * 1.1 / 0.02)
    assert E.needed(res, "bump", 2, 1, "quadratic")[0] == "≤"
    assert E.needed(res, "bump", 2, 1, "square") == (">", 61)


def test_a_network_whose_outputs_overflow_is_scored_as_the_constant_predictor():
    s = M.SIZES["smoke"]
    assert M.log_error(None, "regression", s) == 0.0
    assert M.log_error(None, "classification", s) == math.log10(0.5)
    assert M.log_error(0.0, "classification", s) == math.log10(1 / s["n_test"])


def test_committed_results_match_the_current_spec():
    """Otherwise the notebook (and nbval) would train everything again."""
    path = ROOT / M.result_path("quick")
    stored = json.loads(path.read_text())
    assert stored["spec"] == json.loads(json.dumps(M.spec("quick")))
    assert len(stored["rows"]) == len({(r["problem"], r["d"], r["depth"], r["family"], r["budget"], r["seed"])
                                       for r in stored["rows"]})


def test_neuron_explorer_redraws_its_figure_and_falls_back_to_it_without_ipywidgets(monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    drawn = []
    from qnets import neuron
    monkeypatch.setattr(neuron, "plot_neuron", lambda weights, ax=None: drawn.append(dict(weights)))
    box = N.explore(N.XOR_NEURON)
    assert len(box.children) == 9 and drawn == [N.XOR_NEURON]
    sliders = {s.description: s for s in box.children}
    for name, value in (("w_r[0]", 0.0), ("w_g[1]", 0.0), ("b_g", 1.0), ("w_b[0]", -1.0), ("w_b[1]", -1.0),
                        ("c", 1.0)):
        sliders[name].value = value
    assert drawn[-1] == N.DISK_NEURON and N.conic(**drawn[-1]) == "ellipse" and N.conic(**drawn[0]) == "hyperbola"
    drawn.clear()
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not installed: the static figure alone
    assert N.explore(N.DISK_NEURON) is None and drawn == [N.DISK_NEURON]


def test_saved_notebooks_keep_the_static_figure_and_drop_widget_views(tmp_path):
    import nbformat
    from qnets.notebooks import WIDGET_VIEW, strip_volatile
    cell = nbformat.v4.new_code_cell("explore()")
    cell.outputs = [nbformat.v4.new_output("display_data", {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}),
                    nbformat.v4.new_output("display_data", {WIDGET_VIEW: {"model_id": "abc"}, "text/plain": "GridBox()"})]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)
    strip_volatile(path)
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert [list(o["data"]) for o in outputs] == [["image/png", "text/plain"]]
    committed = nbformat.read(ROOT / "notebooks" / "01_expressivity.ipynb", as_version=4)
    explorer = next(c for c in committed.cells if c.cell_type == "code" and "explore(" in c.source)
    assert [o for o in explorer.outputs if "image/png" in o.get("data", {})]
    assert not [o for o in explorer.outputs if WIDGET_VIEW in o.get("data", {})]
