"""How much of a quadratic layer's quadratic contribution survives each precision the fast path can use.

ReLinear's quadratic terms start at zero and stay small: a ReLinear ResNet-20 after 50 epochs ends
at ‖w_g‖/‖w_r‖ ≈ 8e-4. A layer computes q = r·g + b with g = 1 + δ, so its quadratic contribution

    Δ = q − r = r·δ + w_b·(x⊙x) + c,        δ = w_g·x + (b_g − 1),

is about that ratio times r. A precision keeps the contribution only if the error of the layer's
output is small against Δ, not against q. bf16 (8 significant bits) resolves 2⁻⁹ ≈ 2e-3 of a value:
rounding g to bf16 leaves g = 1 for |δ| < 2e-3, and rounding r or q buries Δ under an error the size of
Δ itself. `survey` measures, per precision and ratio, the relative error ‖q_p − q₆₄‖ / ‖Δ₆₄‖ and the
correlation of q_p − r₆₄ with Δ₆₄ (float64 is the reference), on random inputs and on the inputs
the quadratic layers of a trained network receive. `train_effect` trains the same seeds in each
precision and compares the quadratic ratios and accuracy they end with.

The arithmetic schemes measured (`SCHEMES`; a run chooses among `config.PRECISIONS`, which has no tf32,
the GPU default for float32 convolutions that fp32 turns off, and adds auto):
- fp32: float32 throughout (on a GPU: TF32 off for the quadratic layers' convolutions);
- tf32: every convolution's operands rounded to TF32's 10-bit mantissa (round to nearest even),
  products summed in float32 or better: what cuDNN does by default for float32 convolutions on a GPU;
- bf16: the layer under bf16 autocast, as the fast path ran it on GPUs (output in bf16);
- bf16-split: the layer's own split under autocast (`Quadratic.split_small_terms`): r = w_r·x + b_r
  in float32, δ and w_b·(x⊙x) + c in bf16 (their errors are relative to themselves), combined as
  q = r + (r·δ + b) in float32.
"""
from __future__ import annotations

import copy
import math
from statistics import median_high

import torch
import torch.nn.functional as F

from .data import DeviceLoader
from .layers import QuadraticConv2d, quadratic_modules
from .train import Config, build_model, fit, load_data, read_checkpoint, resolve_device
from .utils import timestamp, versions

__all__ = ["SCHEMES", "RATIOS", "round_mantissa", "layer_output", "contribution_error", "survey",
           "train_effect", "measure", "markdown"]

SCHEMES = ("fp32", "tf32", "bf16", "bf16-split")
RATIOS = (1e-4, 1e-3, 1e-2, 1e-1)
TF32_BITS, BF16_BITS = 10, 7  # explicit mantissa bits


def round_mantissa(t: torch.Tensor, bits: int) -> torch.Tensor:
    """float32 `t` rounded to `bits` explicit mantissa bits (round to nearest, ties to even), as float32."""
    t = t.float().contiguous()
    i = t.view(torch.int32)
    drop = 23 - bits
    half = (1 << (drop - 1)) - 1
    odd = (i >> drop) & 1
    rounded = ((i + half + odd) >> drop) << drop
    return torch.where(torch.isfinite(t), rounded.view(torch.float32), t)


class _RoundTF32(torch.autograd.Function):
    """Operands rounded to TF32 in the forward pass; the gradient passes straight through (the backward
    convolutions then run on rounded operands, which is close to, not exactly, what TF32 does there)."""

    @staticmethod
    def forward(ctx, t):
        return round_mantissa(t, TF32_BITS)

    @staticmethod
    def backward(ctx, grad):
        return grad


def _conv(layer: QuadraticConv2d, x, weight, bias, tf32: bool = False):
    if tf32:
        x, weight = _RoundTF32.apply(x), _RoundTF32.apply(weight)
    return F.conv2d(x, weight, bias, layer.stride, layer.padding)


def layer_output(layer: QuadraticConv2d, x: torch.Tensor, precision: str) -> torch.Tensor:
    """The full quadratic layer's output q(x) computed in `precision` (fp64: float64), always by the
    layer's own forward (the formula lives in `qnets.layers` alone): a float64 copy, the layer in
    float32, a copy whose convolutions round their operands to TF32, or the layer under bf16
    autocast, plain or with its small terms split off."""
    if precision not in SCHEMES + ("fp64",):
        raise ValueError(f"precision must be one of {SCHEMES}, got {precision!r}")
    if precision == "fp64":
        return copy.deepcopy(layer).double()(x.double())
    x = x.float()
    if precision == "fp32":
        return layer(x)
    if precision == "tf32":
        emulated = copy.deepcopy(layer)
        emulated._apply_op = lambda t, weight, bias: _conv(layer, t, weight, bias, tf32=True)
        return emulated(x)
    split, layer.split_small_terms = layer.split_small_terms, precision == "bf16-split"
    try:  # the layer's own code under autocast: plain, or with its small terms split off
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return layer(x)
    finally:
        layer.split_small_terms = split


@torch.no_grad()
def contribution_error(layer: QuadraticConv2d, x: torch.Tensor, precision: str) -> dict:
    """Relative error ‖q_p − q₆₄‖ / ‖Δ₆₄‖ and correlation of q_p − r₆₄ with Δ₆₄ (see the module docstring)."""
    q64 = layer_output(layer, x, "fp64")
    r64 = _conv(layer, x.double(), layer.weight_r.double(), layer.bias_r.double())
    delta = (q64 - r64).flatten()
    seen = (layer_output(layer, x, precision).double() - r64).flatten()
    err = (seen - delta).norm() / delta.norm()
    corr = torch.corrcoef(torch.stack((seen, delta)))[0, 1]
    return {"rel_error": err.item(), "corr": corr.item(),
            "g_is_one": (layer_output_g(layer, x, precision) == 1).float().mean().item()}


def layer_output_g(layer: QuadraticConv2d, x: torch.Tensor, precision: str) -> torch.Tensor:
    """g = w_g·x + b_g as `precision` holds it (bf16-split keeps δ = g − 1 instead: never exactly 1)."""
    if precision == "bf16":
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return _conv(layer, x.float(), layer.weight_g, layer.bias_g)
    if precision == "bf16-split":
        return torch.zeros(0)
    return _conv(layer, x.float(), layer.weight_g, layer.bias_g, precision == "tf32")


@torch.no_grad()
def set_ratio(layer: QuadraticConv2d, ratio: float, generator: torch.Generator) -> None:
    """Give `layer` quadratic terms at ‖w_g‖/‖w_r‖ = ‖w_b‖/‖w_r‖ = `ratio`: random directions for w_g
    and w_b, and b_g − 1, c at the same ratio to the RMS of w_r's entries (as `relinear.quadratic_stats`
    measures them). w_r and b_r are kept."""
    norm_r = layer.weight_r.norm()
    rms_r = norm_r / math.sqrt(layer.weight_r.numel())
    for w in (layer.weight_g, layer.weight_b):
        w.copy_(torch.randn(w.shape, generator=generator))
        w.mul_(ratio * norm_r / w.norm())
    for bias, base in ((layer.bias_g, 1.0), (layer.bias_b, 0.0)):
        noise = torch.randn(bias.shape, generator=generator)
        bias.copy_(base + ratio * rms_r * noise / noise.pow(2).mean().sqrt())


def _inputs_of_quadratic_layers(model, images: torch.Tensor) -> list[tuple[str, QuadraticConv2d, torch.Tensor]]:
    """(name, layer, the input it receives) for each quadratic layer of `model` on `images` (eval mode)."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, args, name=name: seen.append((name, m, args[0].detach())))
             for name, m in quadratic_modules(model)]
    try:
        with torch.no_grad():
            model.eval()(images)
    finally:
        for h in hooks:
            h.remove()
    return seen


def survey(model, images: torch.Tensor, ratios=RATIOS, precisions=SCHEMES, seed: int = 0,
           layers: int | None = None) -> list[dict]:
    """One row per (input kind, ratio, precision): the median over layers of `contribution_error`.
    Input kinds: "trained" (what the quadratic layers of `model`, a trained network, receive on
    `images`) and "random" (standard normal inputs of the same shape, through the same layers)."""
    import copy
    generator = torch.Generator().manual_seed(seed)
    captured = _inputs_of_quadratic_layers(model, images)[:layers]
    rows = []
    for kind in ("trained", "random"):
        for ratio in ratios:
            per = {p: [] for p in precisions}
            for name, layer, x in captured:
                layer = copy.deepcopy(layer).float()
                set_ratio(layer, ratio, generator)
                if kind == "random":
                    x = torch.randn(x.shape, generator=generator)
                for p in precisions:
                    per[p].append(contribution_error(layer, x, p))
            for p in precisions:
                values = per[p]
                med = lambda key: median_high(v[key] for v in values)  # noqa: E731
                rows.append({"inputs": kind, "ratio": ratio, "precision": p, "rel_error": med("rel_error"),
                             "corr": med("corr"), "g_is_one": med("g_is_one") if p != "bf16-split" else None,
                             "layers": len(values)})
    return rows


def train_effect(base, precisions=("fp32", "bf16", "bf16-split"), seeds=(0, 1), verbose: bool = False) -> list[dict]:
    """Train `base` (a `qnets.train.Config`) once per seed and precision and report each run's final
    test accuracy and quadratic ratios (‖w_g‖/‖w_r‖, ‖w_b‖/‖w_r‖ from `relinear.quadratic_stats`)."""
    rows = []
    for seed in seeds:
        for p in precisions:
            r = fit(base.replace(seed=seed, precision=p), verbose=verbose)
            q = r["history"][-1]["quadratic"]
            rows.append({"precision": p, "seed": seed, "test_acc": r["final_test_acc"], "w_g": q.get("w_g"),
                         "w_b": q.get("w_b"), "seconds": r["wall_time"], "trained_as": r["fast_path"]["precision"]})
    return rows


def measure(out_dir: str, device: str = "cpu", train_epochs: int = 2, seeds=(0, 1), verbose: bool = True) -> dict:
    """The whole measurement on `device`: a quadratic ResNet-8 trained 1 epoch on 5,000 CIFAR-10 images
    (ReLinear, γ = 1e-3) supplies the inputs of `survey`; `train_effect` trains ResNet-8 with γ = 1e-3
    for `train_epochs` epochs on 5,000 images in each precision. Runs are kept under `out_dir`."""
    import platform

    dev = resolve_device(device)
    base = Config(depth=8, neuron="quadratic", gamma_g=1e-3, gamma_b=1e-3, n_train=5000, n_test=2000, epochs=1,
                  schedule="cosine", device=device, precision="fp32", out_dir=out_dir, compile="off")
    fit(base, verbose=verbose)
    model = build_model(base)
    model.load_state_dict(read_checkpoint(base)["model"])
    dataset = load_data(base)
    images, _ = next(iter(DeviceLoader(dataset.test, 64, train=False, device=torch.device("cpu")).epoch(0)))
    layer_rows = survey(model.to("cpu"), images)
    effect = train_effect(base.replace(epochs=train_epochs), seeds=seeds, verbose=verbose)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.machine()})"
    return {"kind": "precision", "device": name, "time": timestamp(), "versions": versions(), "data": dataset.source,
            "layers": layer_rows, "training": effect,
            "training_config": {k: v for k, v in base.replace(epochs=train_epochs).to_dict().items()
                                if k in ("depth", "neuron", "gamma_g", "gamma_b", "n_train", "n_test", "epochs")}}


def markdown(report: dict) -> str:
    """The report as two Markdown tables: what survives per ratio and precision, and the training runs."""
    precisions = sorted({r["precision"] for r in report["layers"]}, key=SCHEMES.index)
    out = [f"{report['device']}, PyTorch {report['versions']['torch']}:", "",
           "| inputs | ‖w_g‖/‖w_r‖ = ‖w_b‖/‖w_r‖ | " + " | ".join(f"{p}: error · corr" for p in precisions) + " |",
           "|---|---:|" + "---:|" * len(precisions)]
    cell = {(r["inputs"], r["ratio"], r["precision"]): r for r in report["layers"]}
    for kind in ("trained", "random"):
        for ratio in sorted({r["ratio"] for r in report["layers"]}):
            values = [cell[(kind, ratio, p)] for p in precisions]
            out.append(f"| {kind} | {ratio:g} | " + " | ".join(
                f"{100 * v['rel_error']:.3g}% · {v['corr']:.4f}" for v in values) + " |")
    c = report["training_config"]
    out += ["", f"Training ResNet-{c['depth']} {c['neuron']}, γ = {c['gamma_g']:g}, {c['epochs']} epochs on "
            f"{c['n_train']:,} images (scored on {c['n_test']:,}), same seeds in each precision:", "",
            "| precision | seed | test accuracy (%) | ‖w_g‖/‖w_r‖ | ‖w_b‖/‖w_r‖ | seconds |", "|---|---:|---:|---:|---:|---:|"]
    for r in report["training"]:
        acc = "-" if r["test_acc"] is None else f"{100 * r['test_acc']:.2f}"
        out.append(f"| {r['precision']} | {r['seed']} | {acc} | {r['w_g']:.3g} | {r['w_b']:.3g} | {r['seconds']:.0f} |")
    return "\n".join(out)
