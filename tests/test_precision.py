"""Precision and ReLinear's small quadratic terms: what plain bf16 loses and bf16-split keeps."""
from pathlib import Path

import pytest
import torch

from qnets import precision
from qnets.layers import QuadraticConv2d
from qnets.train import Config, Trainer, build_model, precision_for, read_result

ROOT = Path(__file__).resolve().parents[1]
CAPS_CPU = {"bf16": False}
CAPS_NATIVE_BF16 = {"bf16": True}


def layer_at(ratio: float, seed: int = 0) -> tuple[QuadraticConv2d, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = QuadraticConv2d(32, 32, 3, padding=1)
    precision.set_ratio(layer, ratio, g)
    x = torch.relu(torch.randn(8, 32, 16, 16, generator=g))  # what a layer after BN and ReLU receives
    return layer, x


def test_round_mantissa_is_round_to_nearest_even():
    t = torch.randn(100_000) * 10.0 ** torch.randint(-8, 8, (100_000,)).float()
    assert torch.equal(precision.round_mantissa(t, 7), t.bfloat16().float())  # bf16: 7 explicit bits
    assert precision.round_mantissa(torch.tensor([1 + 2**-11]), 10).item() == 1.0  # a tie goes to even
    assert precision.round_mantissa(torch.tensor([1 + 3 * 2**-11]), 10).item() == 1 + 2**-9


def test_bf16_split_keeps_the_quadratic_contribution_that_plain_bf16_buries():
    layer, x = layer_at(1e-3)
    stats = {p: precision.contribution_error(layer, x, p) for p in ("bf16-split", "bf16", "tf32", "fp32")}
    split, plain = stats["bf16-split"], stats["bf16"]
    assert split["corr"] >= 0.99 and split["rel_error"] <= 0.05, split
    assert plain["corr"] < 0.99 and plain["rel_error"] > 0.05, plain  # the same test fails plain autocast
    assert plain["g_is_one"] > 0.5  # most of g = 1 + δ rounds to exactly 1
    assert stats["tf32"]["rel_error"] > 0.05  # why the quadratic layers' float32 convolutions turn TF32 off
    assert stats["fp32"]["rel_error"] < 1e-3


def test_the_split_changes_nothing_outside_autocast():
    layer, x = layer_at(1e-2)
    plain = layer(x)
    layer.split_small_terms = True
    assert torch.equal(layer(x), plain)
    compact = QuadraticConv2d(32, 32, 3, padding=1, compact=True)
    with torch.no_grad():
        compact.weight_b.copy_(1e-3 * compact.weight_r)
    compact.split_small_terms = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compact(x)
    exact = compact.double()(x.double())
    linear = torch.nn.functional.conv2d(x.double(), compact.weight_r, compact.bias_r, 1, 1)
    assert out.dtype == torch.float32
    err = (out.double() - exact).norm() / (exact - linear).norm()
    assert err < 0.05  # the compact neuron's w_b·(x⊙x) + c survives too


@pytest.mark.parametrize("neuron, caps, config_precision, expected", [
    ("quadratic", CAPS_CPU, "auto", "fp32"),
    ("conventional", CAPS_NATIVE_BF16, "auto", "bf16"),
    ("quadratic", CAPS_NATIVE_BF16, "auto", "bf16-split"),
    ("compact", CAPS_NATIVE_BF16, "auto", "bf16-split"),
    ("quadratic", CAPS_NATIVE_BF16, "bf16", "bf16"),  # a user may force plain autocast
    ("quadratic", CAPS_NATIVE_BF16, "fp32", "fp32"),
    ("qres", CAPS_NATIVE_BF16, "auto", "fp32"),  # no split of its own: its small terms are kept in fp32
])
def test_the_precision_policy(neuron, caps, config_precision, expected):
    config = Config(depth=8, neuron=neuron, precision=config_precision,
                    **({"gamma_g": None, "gamma_b": None} if neuron == "conventional" else {}))
    assert precision_for(config, caps) == expected


def test_bf16_split_is_refused_for_a_design_that_has_none():
    with pytest.raises(ValueError, match="bf16-split exists for the quadratic and compact neurons only"):
        precision_for(Config(depth=8, neuron="quadraour", precision="bf16-split"), CAPS_NATIVE_BF16)


def test_a_bf16_split_trainer_splits_every_quadratic_layer_and_says_so():
    config = Config(depth=8, neuron="quadratic", precision="bf16-split", device="cpu")
    trainer = Trainer(config, build_model(config), torch.device("cpu"), 10)
    layers = [m for m in trainer.model.modules() if isinstance(m, QuadraticConv2d)]
    assert layers and all(m.split_small_terms for m in layers)
    assert trainer.bf16 and trainer.fast_path()["precision"] == "bf16-split"
    plain = Trainer(config.replace(precision="bf16"), build_model(config), torch.device("cpu"), 10)
    assert not any(m.split_small_terms for m in plain.model.modules() if isinstance(m, QuadraticConv2d))
    assert plain.fast_path()["precision"] == "bf16"


def test_the_survey_measures_every_precision_at_every_ratio():
    torch.manual_seed(0)
    model = build_model(Config(depth=8, neuron="quadratic"))
    images = torch.randn(4, 3, 32, 32)
    rows = precision.survey(model, images, ratios=(1e-3, 1e-1), layers=2)
    assert {(r["inputs"], r["ratio"], r["precision"]) for r in rows} == {
        (k, q, p) for k in ("trained", "random") for q in (1e-3, 1e-1) for p in precision.SCHEMES}
    by = {(r["inputs"], r["ratio"], r["precision"]): r for r in rows}
    for kind in ("trained", "random"):  # plain bf16 recovers as the terms grow; the split holds throughout
        assert by[(kind, 1e-1, "bf16")]["rel_error"] < by[(kind, 1e-3, "bf16")]["rel_error"]
        assert by[(kind, 1e-3, "bf16-split")]["rel_error"] < 0.05


def test_the_campaign_trains_no_quadratic_network_in_plain_bf16(tmp_path):
    from qnets import window
    with pytest.raises(ValueError, match="plain bf16, which rounds ReLinear's small quadratic terms away"):
        window.run(60, tmp_path / "out", preset="smoke", only=2, precision="bf16", verbose=False)
    assert not (tmp_path / "out" / "summary.json").exists()


def test_stored_results_trained_in_plain_bf16_with_small_terms_say_so():
    """The committed gpu-short runs trained in plain bf16: ReLinear's (ratio 8e-4) is marked, a network
    whose terms grew to about 1 (where bf16 keeps them) would not be, and the table says what that means."""
    import copy

    from qnets import report
    table = report.markdown_table("02", "gpu-short")
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "ResNet-20 quadratic (bf16)" in rows["relinear-sg"] and "(bf16)" not in rows["conventional"]
    stored = read_result(ROOT / "results/runs/resnet20-quadratic-6f905d98ef5e.json")
    grown = copy.deepcopy(stored)
    grown["history"][-1]["quadratic"] |= {"w_g": 1.1, "w_b": 0.9}
    assert report._plain_bf16(stored) and not report._plain_bf16(grown)
    assert table.endswith(report.BF16_NOTE)
    assert "ResNet-20 compact (bf16)" in report.markdown_table("03", "gpu-short")
    assert "(bf16)" not in report.markdown_table("02", "quick")  # CPU runs: float32
