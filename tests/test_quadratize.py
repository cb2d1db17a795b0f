"""Any model made quadratic (`qnets.quadratize`): it starts as exactly the model it came from, in
float64, and trains with ReLinear's optimizer and penalty unchanged."""
import pytest
import torch
from torch import nn

import qnets
from qnets import relinear
from qnets.layers import Quadratic, quadratic_modules

NEURONS = ("quadratic", "compact", "qres", "quadraour")  # the designs that can start as the layer


def _resnet18():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).double()


class Block(nn.Module):
    """A transformer-style MLP block: x + W2 gelu(W1 norm(x))."""

    def __init__(self, d=16):
        super().__init__()
        self.norm, self.up, self.down = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        return x + self.down(nn.functional.gelu(self.up(self.norm(x))))


def _close(a, b):
    return (a - b).abs().max().item() <= 1e-12 * b.abs().max().item()


@pytest.mark.slow  # eight float64 resnet18s
@pytest.mark.parametrize("neuron", NEURONS)
@pytest.mark.parametrize("mode", ("train", "eval"))
def test_a_quadratized_resnet18_computes_what_it_came_from(neuron, mode):
    model = _resnet18().train(mode == "train")
    q = qnets.quadratize(model, neuron=neuron)
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert sorted(n for n, _ in quadratic_modules(q)) == sorted(convs) and len(convs) == 21
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    assert _close(q(x), model(x))
    assert not any(isinstance(m, Quadratic) for m in model.modules())  # the original is left as it is


@pytest.mark.parametrize("neuron", NEURONS)
def test_a_quadratized_mlp_block_computes_and_learns_what_it_came_from(neuron):
    torch.manual_seed(1)
    model = Block().double()
    q = qnets.quadratize(model, neuron=neuron)
    x = torch.randn(5, 7, 16, dtype=torch.float64)
    assert _close(q(x), model(x)) and q.down.bias_r is None  # no bias stays no bias
    model(x).square().sum().backward()
    q(x).square().sum().backward()
    for name in ("up", "down"):  # at ReLinear's start g = 1: w_r learns what the original weight learns
        assert _close(getattr(q, name).weight_r.grad, getattr(model, name).weight.grad)
    groups = {g["role"]: g["params"] for g in relinear.optimizer(q, lr=0.1, gamma_g=1e-3, gamma_b=1e-3).param_groups}
    new = [p for _, m in quadratic_modules(q) for p in (m.weight_g, m.bias_g, m.weight_b, m.bias_b) if p is not None]
    assert {id(p) for p in groups.get("g", []) + groups.get("b", [])} == {id(p) for p in new}
    assert relinear.penalty(q, alpha_g=1.0, beta_g=1.0).item() == 0.0  # w_g starts at 0 in every such design


def test_every_conv2d_option_is_carried_over():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(4, 8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), bias=False),
        nn.Conv2d(8, 8, 3, padding="same", groups=4, padding_mode="reflect"),
        nn.Conv2d(8, 6, 4, padding="same", padding_mode="circular", dilation=2),
        nn.Conv2d(6, 6, 3, padding="valid", padding_mode="replicate", groups=2)).double()
    x = torch.randn(2, 4, 13, 11, dtype=torch.float64)
    for neuron in NEURONS:
        q = qnets.quadratize(model, neuron=neuron)
        assert _close(q(x), model(x)), neuron
        assert [type(m).__name__ for m in q] == ["QuadraticConv2d"] * 4


def test_select_converts_exactly_the_chosen_layers():
    model = _resnet18()
    assert {n for n, _ in quadratic_modules(qnets.quadratize(model, select="layer4.*"))} == {
        n for n, m in model.named_modules() if n.startswith("layer4.") and isinstance(m, nn.Conv2d)}
    assert [n for n, _ in quadratic_modules(qnets.quadratize(model, select=["fc", "conv1"]))] == ["conv1", "fc"]
    only_3x3 = qnets.quadratize(model, select=lambda name, m: isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert all(m.kernel_size == (3, 3) for _, m in quadratic_modules(only_3x3))
    assert len(list(quadratic_modules(only_3x3))) == 16


def test_a_layer_that_cannot_be_carried_over_is_named():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    torch.nn.utils.parametrizations.weight_norm(model[2])
    with pytest.raises(ValueError, match=r"layer '2' \(ParametrizedLinear\) has parametrizations or hooks"):
        qnets.quadratize(model)
    assert [n for n, _ in quadratic_modules(qnets.quadratize(model, select="0"))] == ["0"]  # left out: fine
    with pytest.raises(ValueError, match="neuron must be"):
        qnets.quadratize(model, neuron="cubic")
    with pytest.raises(ValueError, match=r"'power' \(it cannot"):
        qnets.quadratize(model, neuron="power")
    attention = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    with pytest.raises(ValueError, match=r"layer 'self_attn.out_proj' is a NonDynamicallyQuantizableLinear"):
        qnets.quadratize(attention)



@pytest.mark.parametrize("neuron", NEURONS)
def test_linearize_drops_the_quadratic_terms(neuron):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 3)).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    q = qnets.quadratize(model, neuron=neuron)
    assert _close(qnets.linearize(q)(x), model(x))  # the inverse, at ReLinear's start
    with torch.no_grad():  # trained quadratic terms: linearize keeps each layer's part of degree <= 1
        for _, m in quadratic_modules(q):
            for p in (m.weight_g, m.bias_g, m.weight_b, m.bias_b):
                if p is not None:
                    p.add_(0.3 * torch.randn_like(p))
    layer, lin = q[0], qnets.linearize(q)[0]
    gaps = [(layer(e * x) - lin(e * x)).abs().max().item() for e in (1e-2, 1e-3)]
    assert 80 < gaps[0] / gaps[1] < 120  # what is left is quadratic in x: 10x smaller input, 100x smaller gap


@pytest.mark.parametrize("design", ["qres", "quadraour", "power", "poly"])
def test_quadratic_stats_read_every_design(design):
    stats = relinear.quadratic_stats(qnets.resnet(8, design))
    if design == "power":  # no linear term to compare with
        assert stats == {}
    else:
        assert stats["overall"]["w_g"] == 0.0 and set(stats["layers"]) and all(
            v == v for layer in stats["layers"].values() for v in layer.values())  # no NaN


def test_linearize_names_a_layer_without_a_linear_part():
    with pytest.raises(ValueError, match=r"layer 'layer1.0.conv1': design 'power' has no linear part"):
        qnets.linearize(qnets.resnet(8, "power"))
