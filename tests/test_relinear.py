import copy

import pytest
import torch
import torch.nn.functional as F

import qnets
from qnets import relinear


def small(neuron="quadratic", **kw):
    torch.manual_seed(0)
    return qnets.resnet(8, neuron, **kw).double()  # float64: updates compare without rounding


def one_step(model, seed=0, **opt_kw):
    torch.manual_seed(seed)
    x, y = torch.randn(8, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (8,))
    opt = relinear.optimizer(model, **opt_kw)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return model


def test_roles_follow_structure():
    model = small(rezero=True)
    r = relinear.roles(model)
    names = {id(p): n for n, p in model.named_parameters()}
    by_role = {k: {names[id(p)] for p in v} for k, v in r.items()}
    assert all(n.endswith(("weight_r", "bias_r")) for n in by_role["r"])
    assert all(n.endswith(("weight_g", "bias_g")) for n in by_role["g"])
    assert all(n.endswith(("weight_b", "bias_b")) for n in by_role["b"])
    # The classifier, stem, BN and ReZero scalars are "other" (the authors' substring
    # selection put fc.weight among the r parameters by accident).
    assert {"fc.weight", "fc.bias", "conv1.weight", "bn1.weight"} <= by_role["other"]
    assert any(n.endswith("rezero") for n in by_role["other"])
    assert sum(len(v) for v in r.values()) == len(list(model.parameters()))
    assert len(by_role["r"]) == len(by_role["g"]) == len(by_role["b"]) == 2 * 2 * 3
    assert relinear.roles(small("compact"))["g"] == []


def test_gamma_zero_freezes_g_and_b_bitwise():
    model = small()
    relinear.naive_init(model)  # non-trivial g and b values and gradients
    before = copy.deepcopy(model)
    one_step(model, lr=0.1, gamma_g=0.0, gamma_b=0.0)
    r_before, r_after = relinear.roles(before), relinear.roles(model)
    for role in ("g", "b"):
        for p0, p1 in zip(r_before[role], r_after[role]):
            assert torch.equal(p0, p1)
    assert any(not torch.equal(p0, p1) for p0, p1 in zip(r_before["r"], r_after["r"]))


@pytest.mark.parametrize("k", [0.5, 1e-3])
def test_gamma_scales_update(k):
    lr = 0.1
    base = small()
    relinear.naive_init(base)
    full, shrunk = copy.deepcopy(base), copy.deepcopy(base)
    one_step(full, lr=lr, momentum=0.0)
    one_step(shrunk, lr=lr, gamma_g=k * lr, gamma_b=k * lr, momentum=0.0)
    for role in ("g", "b"):
        for p0, pf, ps in zip(relinear.roles(base)[role], relinear.roles(full)[role], relinear.roles(shrunk)[role]):
            d_full, d_shrunk = pf - p0, ps - p0
            assert d_full.abs().max() > 0
            torch.testing.assert_close(d_shrunk, k * d_full, rtol=1e-9, atol=1e-15)
    for p0, pf, ps in zip(relinear.roles(base)["r"], relinear.roles(full)["r"], relinear.roles(shrunk)["r"]):
        torch.testing.assert_close(ps, pf)  # r learns at the base rate either way


def test_optimizer_groups_and_scheduler_scaling():
    opt = relinear.optimizer(small(), lr=0.1, gamma_g=1e-5, gamma_b=1e-3)
    assert [(g["role"], g["lr"]) for g in opt.param_groups] == [("main", 0.1), ("g", 1e-5), ("b", 1e-3)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [1], 0.1)
    opt.step(); sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 1e-6, 1e-4])
    assert [g["role"] for g in relinear.optimizer(small("conventional"), lr=0.1).param_groups] == ["main"]


def test_penalty_matches_hand_computation_and_gradient():
    model = small()
    relinear.naive_init(model)
    a_g, a_b, b_g, b_b = 0.3, 0.2, 0.05, 0.07
    expected = 0.0
    for _, m in qnets.layers.quadratic_modules(model):
        expected += a_g * m.weight_g.double().square().sum() + b_g * m.weight_g.double().abs().sum()
        expected += a_b * m.weight_b.double().square().sum() + b_b * m.weight_b.double().abs().sum()
    value = relinear.penalty(model, alpha_g=a_g, alpha_b=a_b, beta_g=b_g, beta_b=b_b)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    value.backward()
    for _, m in qnets.layers.quadratic_modules(model):
        torch.testing.assert_close(m.weight_g.grad, 2 * a_g * m.weight_g + b_g * m.weight_g.sign())
        torch.testing.assert_close(m.weight_b.grad, 2 * a_b * m.weight_b + b_b * m.weight_b.sign())
        assert m.weight_r.grad is None and m.bias_g.grad is None  # only g and b weights are penalised
    assert relinear.penalty(model).item() == 0.0


def test_quadratic_stats_measure_departure():
    model = small()
    stats = relinear.quadratic_stats(model)
    assert stats["overall"] == {"w_g": 0.0, "w_b": 0.0, "b_g": 0.0, "c": 0.0}
    assert len(stats["layers"]) == 6
    m = model.layer1[0].conv1
    with torch.no_grad():
        m.weight_g.copy_(0.5 * m.weight_r)
        m.bias_g.add_(m.weight_r.pow(2).mean().sqrt())  # shift b_g by one RMS of w_r
    layer = relinear.quadratic_stats(model)["layers"]["layer1.0.conv1"]
    assert layer["w_g"] == pytest.approx(0.5) and layer["b_g"] == pytest.approx(1.0, rel=1e-5)
    assert 0 < relinear.quadratic_stats(model)["overall"]["w_g"] < 0.5
    assert relinear.quadratic_stats(small("conventional")) == {}


def test_from_conventional_rejects_other_shapes():
    with pytest.raises(ValueError, match="structure"):
        relinear.from_conventional(qnets.resnet(8, "quadratic"), qnets.resnet(14, "conventional"))
    with pytest.raises(ValueError, match="weight shape"):
        relinear.from_conventional(qnets.resnet(8, "quadratic"), _wider_conventional())


def _wider_conventional():
    model = qnets.resnet(8, "conventional")
    model.layer1[0].conv1 = torch.nn.Conv2d(16, 16, 5, padding=2, bias=False)
    return model


@pytest.mark.parametrize("kwargs,name", [
    (dict(lr=-1), "lr"), (dict(lr=0.1, gamma_g=-1e-5), "gamma_g"), (dict(lr=0.1, gamma_b=float("nan")), "gamma_b"),
    (dict(lr=0.1, momentum=-0.5), "momentum"), (dict(lr=0.1, weight_decay=-1), "weight_decay"),
    (dict(lr=0.1, momentum=0, nesterov=True), "nesterov"),
])
def test_optimizer_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        relinear.optimizer(small(), **kwargs)


def test_penalty_bad_arguments():
    with pytest.raises(ValueError, match="beta_b"):
        relinear.penalty(small(), beta_b=-0.1)
