import pytest
import torch

import qnets
from qnets import relinear
from qnets.models import NEURONS

COUNTS = {  # option-A shortcuts, no ReZero; quadratic counts equal the authors' models
    "conventional": [269_722, 464_154, 658_586, 853_018, 1_727_962],
    "quadratic": [806_266, 1_389_114, 1_971_962, 2_554_810, 5_177_626],
    "compact": [538_330, 927_194, 1_316_058, 1_704_922, 3_454_810],
}
FACTORIES = [qnets.resnet20, qnets.resnet32, qnets.resnet44, qnets.resnet56, qnets.resnet110]


@pytest.mark.parametrize("neuron", list(COUNTS))
def test_parameter_counts(neuron):
    counts = [sum(p.numel() for p in f(neuron=neuron).parameters()) for f in FACTORIES]
    assert counts == COUNTS[neuron]


def perturb_conventional(model, seed=0):
    """Make BN statistics, affine parameters and ReZero scalars non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        for name, p in model.named_parameters():
            if name.endswith("rezero"):
                p.fill_(0.5 + torch.rand((), generator=g).item())
    return model


@pytest.mark.parametrize("depth", [20, 56])
@pytest.mark.parametrize("shortcut", ["A", "B"])
@pytest.mark.parametrize("rezero", [False, True])
@pytest.mark.parametrize("neuron", ["quadratic", "compact"])
def test_relinear_init_equals_conventional(depth, shortcut, rezero, neuron):
    torch.manual_seed(depth)
    conv = perturb_conventional(qnets.resnet(depth, "conventional", rezero, shortcut)).double().eval()
    quad = qnets.resnet(depth, neuron, rezero, shortcut).double().eval()
    relinear.from_conventional(quad, conv)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    expected = conv(x)
    assert expected.std() > 0.1  # the blocks are live, not a trivial identity
    torch.testing.assert_close(quad(x), expected, rtol=1e-10, atol=1e-10)
    # The copy made the r terms equal; the g and b terms are ReLinear's.
    stats = relinear.quadratic_stats(quad)["overall"]
    assert stats == {"w_g": 0.0, "w_b": 0.0, "b_g": 0.0, "c": 0.0}


def test_fresh_quadratic_network_equals_conventional_with_same_r():
    """Without from_conventional: copying the r weights of a fresh quadratic network into a
    conventional one (state-dict names differ only by the _r suffix) gives the same function."""
    torch.manual_seed(1)
    quad = qnets.resnet20(neuron="quadratic").double().eval()
    conv = qnets.resnet20(neuron="conventional").double().eval()
    state = {k.replace("weight_r", "weight"): v for k, v in quad.state_dict().items()
             if not any(s in k for s in ("bias_r", "_g", "_b"))}
    conv.load_state_dict(state)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(quad(x), conv(x), rtol=1e-10, atol=1e-10)


def test_rezero_scalars_start_at_zero_and_block_is_identity():
    model = qnets.resnet20(neuron="quadratic", rezero=True)
    scalars = [p for n, p in model.named_parameters() if n.endswith("rezero")]
    assert len(scalars) == 9 and all(p.item() == 0 for p in scalars)
    block = model.layer1[0].eval()
    x = torch.rand(2, 16, 8, 8)  # non-negative, so relu(x) == x
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("neuron", NEURONS)
def test_every_neuron_design_builds_a_resnet(neuron):
    torch.manual_seed(0)
    out = qnets.resnet(8, neuron)(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_output_shape_and_classes():
    assert qnets.resnet(8, "compact", num_classes=7)(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(depth=21), "depth must be 6n+2"), (dict(depth=2), "depth"),
    (dict(neuron="cubic"), "neuron must be one of ('conventional', 'quadratic', 'compact', 'qres'"),
    (dict(shortcut="C"), "shortcut must be one of ('A', 'B')"), (dict(num_classes=1), "num_classes"),
])
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError) as e:
        qnets.resnet(**(dict(depth=20) | kwargs))
    assert fragment in str(e.value)


def test_a_run_of_a_design_without_relinears_start_must_start_naive():
    from qnets.train import Config
    with pytest.raises(ValueError, match="Config.init must be 'naive' for neuron 'power'"):
        Config(neuron="power")
    assert Config(neuron="power", init="naive").neuron == "power" and Config(neuron="qres").init == "relinear"
