"""Quadratic neurons as PyTorch layers.

A quadratic neuron (Fan et al., arXiv:2110.06081) computes

    q(x) = (w_r·x + b_r) * (w_g·x + b_g) + w_b·(x⊙x) + c

and the compact neuron drops the interaction term: q(x) = w_r·x + b_r + w_b·(x⊙x) + c.
One class serves both kinds; the convolution and the linear layer differ only in the
operator that applies a weight to an input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Quadratic", "QuadraticConv2d", "QuadraticLinear", "INITS", "DESIGNS", "quadratic_modules",
           "product_plus"]

INITS = ("relinear", "naive")

# Every published quadratic neuron, as the parameters it has (role r: the linear term, g and b: the
# quadratic terms, so that `relinear.optimizer` and `penalty` treat each by its role) and whether it
# can start as the conventional layer (ReLinear's start). W·x is the layer's operator (a
# convolution or a matrix product); formulas per output feature.
DESIGNS = {
    # Fan et al., arXiv:2110.06081: (W_r·x + b_r)(W_g·x + b_g) + W_b·(x⊙x) + c
    "quadratic": dict(params=("weight_r", "bias_r", "weight_g", "bias_g", "weight_b", "bias_b"), start=True),
    # Fan et al.'s compact neuron: W_r·x + b_r + W_b·(x⊙x) + c
    "compact": dict(params=("weight_r", "bias_r", "weight_b", "bias_b"), start=True),
    # Bu & Karpatne, SDM 2021 (QRes): (W_r·x)⊙(W_g·x) + W_r·x + b_r
    "qres": dict(params=("weight_r", "bias_r", "weight_g"), start=True),
    # QuadraLib (Xu et al., MLSys 2022), its own neuron without its batch norms: (W_g·x)⊙(W_b·x) + W_r·x + b_r
    "quadraour": dict(params=("weight_r", "bias_r", "weight_g", "weight_b"), start=True),
    # ... and with them: BN(W_g·x)⊙BN(W_b·x) + BN(W_r·x + b_r); starts as the conventional layer then BN
    "quadraour-bn": dict(params=("weight_r", "bias_r", "weight_g", "weight_b"), start=False, norms=True),
    # QuadraLib's other types, none with a linear term (they cannot start as the conventional layer):
    "power": dict(params=("weight_b", "bias_b"), start=False),  # W_b·(x⊙x) + c
    "square": dict(params=("weight_r",), start=False),  # (W_r·x)²
    "product": dict(params=("weight_r", "weight_g"), start=False),  # (W_r·x)⊙(W_g·x)
    "bilinear": dict(params=("weight_b", "bias_b"), start=False),  # xᵀ W_b x + c (linear layers only)
    # the polynomial kernel of Kervolution (Wang et al., CVPR 2019), p = 2: (W_r·x + b_r)²
    "poly": dict(params=("weight_r", "bias_r"), start=False),
}


def product_plus(rg: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """r * g + b, where r and g are the two halves of `rg` along `dim` (the fused r/g output).
    Plain arithmetic: a custom backward for it saved 1% of a CPU step, inside the machine's drift
    (results/bench/cpu.json, path "plainproduct"), and a compiled step fuses it anyway."""
    r, g = rg.chunk(2, dim=dim)
    return r * g + b


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


class Quadratic(nn.Module):
    """A quadratic neuron, for any linear operator: parameters, initialisation and the formula of
    each design in DESIGNS (`design`; `compact=True` is design "compact").

    Subclasses give the weight shape (`_weight_shape`), the operator that applies a weight and a
    bias to an input (`_apply_op`, a convolution or a matrix product), `feature_dim`, where
    output features sit, counted from the end (so unbatched input works too), and `_norm`, a batch
    norm over the output features. With `fuse_rg`, Fan's w_r and w_g are applied in one call on
    stacked weights (one kernel instead of two); without, in two calls, as the authors' code does.

    `split_small_terms` (an attribute; the fast path sets it for bf16-split) matters only under
    autocast, for Fan's two designs: the layer then computes r = w_r·x + b_r in float32 and only its
    small terms, δ = g − 1 = w_g·x + (b_g − 1) and w_b·(x⊙x) + c, in the autocast dtype, and returns
    r + (r·δ + b) in float32. Plain autocast rounds g to 1 and r to 8 bits, which buries a quadratic
    contribution under 1% of r (`qnets.precision` measures it).
    """

    split_small_terms = False

    feature_dim = -1

    def __init__(self, out_features: int, compact: bool, init: str | None, fuse_rg: bool = True, device=None,
                 dtype=None, bias: bool = True, design: str | None = None):
        super().__init__()
        for name, flag in (("compact", compact), ("fuse_rg", fuse_rg), ("bias", bias)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        design = design or ("compact" if compact else "quadratic")
        if design not in DESIGNS or (compact and design != "compact"):
            raise ValueError(f"design must be one of {tuple(DESIGNS)} (compact=True means 'compact'), got {design!r}")
        self.design, self.compact, self.fuse_rg = design, design == "compact", fuse_rg and design == "quadratic"
        kw = dict(device=device, dtype=dtype)
        shape, has = self._weight_shape(), DESIGNS[design]["params"]
        for role in ("r", "g", "b"):
            w_shape = self._bilinear_shape() if design == "bilinear" else shape
            self.register_parameter(f"weight_{role}", nn.Parameter(torch.empty(w_shape, **kw))
                                    if f"weight_{role}" in has else None)
            keep = f"bias_{role}" in has and (bias or role != "r")  # bias=False: no b_r (g's b_g and c stay)
            self.register_parameter(f"bias_{role}", nn.Parameter(torch.empty(out_features, **kw)) if keep else None)
        self.norms = nn.ModuleList([self._norm(out_features, **kw) for _ in range(3)]) \
            if DESIGNS[design].get("norms") else None
        self.reset_parameters(init)

    def _check_init(self, init: str) -> None:
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if init == "relinear" and not DESIGNS[self.design]["start"]:
            raise ValueError(f"design {self.design!r} cannot start as the conventional layer (ReLinear's start): "
                             + ("it has no linear term" if self.design != "quadraour-bn" else
                                "its batch norms follow the linear term") + "; use init='naive'")

    def reset_parameters(self, init: str | None = None) -> None:
        """ReLinear: Kaiming-normal w_r, b_r = 0, w_g = 0, b_g = 1, w_b = 0, c = 0: the neuron is then
        exactly the conventional w_r·x + b_r (for QuadraLib's neuron w_b, the factor beside w_g, stays
        random, so that w_g can learn). Naive: every weight drawn like w_r, biases 0."""
        init = init or ("relinear" if DESIGNS[self.design]["start"] else "naive")
        self._check_init(init)
        # (random draws in this order only: a stored run's initialisation must not change)
        with torch.no_grad():
            for b in (self.bias_r, self.bias_g, self.bias_b):
                if b is not None:
                    b.zero_()
            if self.weight_r is not None:
                nn.init.kaiming_normal_(self.weight_r, nonlinearity="relu")
            for name in ("weight_b", "weight_g"):
                w = getattr(self, name)
                if w is None:
                    continue
                if init == "naive" or (name == "weight_b" and self.design.startswith("quadraour")):
                    nn.init.kaiming_normal_(w, nonlinearity="relu")
                else:
                    w.zero_()
            if init == "relinear" and self.bias_g is not None:
                self.bias_g.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.design not in ("quadratic", "compact"):
            return self._design_forward(x)
        if self.split_small_terms and torch.is_autocast_enabled(x.device.type):
            return self._split_forward(x)
        op = self._apply_op
        b = op(x * x, self.weight_b, self.bias_b)  # w_b·(x⊙x) + c
        if self.compact:
            return op(x, self.weight_r, self.bias_r) + b
        if not self.fuse_rg:
            return op(x, self.weight_r, self.bias_r) * op(x, self.weight_g, self.bias_g) + b
        bias_r = self.bias_r if self.bias_r is not None else torch.zeros_like(self.bias_g)
        rg = op(x, torch.cat((self.weight_r, self.weight_g)), torch.cat((bias_r, self.bias_g)))
        return product_plus(rg, b, self.feature_dim)

    def _design_forward(self, x: torch.Tensor) -> torch.Tensor:
        op, d = self._apply_op, self.design
        if d == "qres":
            r = op(x, self.weight_r, None)
            q = r * op(x, self.weight_g, None) + r
            return q if self.bias_r is None else q + self.bias_r.view(self._bias_view())
        if d in ("quadraour", "quadraour-bn"):
            n = self.norms or (_same,) * 3
            return n[1](op(x, self.weight_g, None)) * n[2](op(x, self.weight_b, None)) + \
                n[0](op(x, self.weight_r, self.bias_r))
        if d == "power":
            return op(x * x, self.weight_b, self.bias_b)
        if d == "bilinear":
            return torch.einsum("...i,oij,...j->...o", x, self.weight_b, x) + self.bias_b
        r = op(x, self.weight_r, self.bias_r)
        return r * op(x, self.weight_g, None) if d == "product" else r * r  # square, poly

    def _bias_view(self) -> tuple[int, ...]:
        return (-1,) + (1,) * (-self.feature_dim - 1)

    def _split_forward(self, x: torch.Tensor) -> torch.Tensor:
        op, x32 = self._apply_op, x.float()
        with torch.autocast(x.device.type, enabled=False):
            r = op(x32, self.weight_r.float(), None if self.bias_r is None else self.bias_r.float())
        small = op(x * x, self.weight_b, self.bias_b)  # in the autocast dtype: w_b·(x⊙x) + c
        if not self.compact:
            small = r * op(x, self.weight_g, self.bias_g - 1) + small  # r·δ
        return r + small.float()

    def _weight_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _bilinear_shape(self) -> tuple[int, ...]:
        raise ValueError(f"design 'bilinear' (xᵀWx) exists for linear layers only, not {type(self).__name__}")

    def _apply_op(self, x, weight, bias):
        raise NotImplementedError

    def _norm(self, features: int, **kw) -> nn.Module:
        raise NotImplementedError


class QuadraticConv2d(Quadratic):
    """q(x) = conv_r(x) * conv_g(x) + conv_b(x²)  (compact: conv_r(x) + conv_b(x²)).

    The three convolutions share every option of `nn.Conv2d` (kernel size, stride, padding, "same"
    and "valid" too, dilation, groups, padding mode); conv_b's bias is the paper's c, and with
    `bias=False` conv_r has none. Parameters: weight_r, bias_r, weight_g, bias_g, weight_b, bias_b.
    (Padding commutes with squaring for every padding mode, so conv_b sees pad(x)² = pad(x²).)
    """

    PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 compact: bool = False, init: str | None = None, fuse_rg: bool = True, device=None, dtype=None,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 design: str | None = None):
        for name, value, least in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                                   ("groups", groups, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        if padding_mode not in self.PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {self.PADDING_MODES}, got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups, self.padding_mode = in_channels, out_channels, groups, \
            padding_mode
        self.kernel_size, self.stride, self.dilation = (_pair(name, v, least) for name, v, least in
                                                        (("kernel_size", kernel_size, 1), ("stride", stride, 1),
                                                         ("dilation", dilation, 1)))
        if padding in ("same", "valid"):
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' needs stride 1 (as in nn.Conv2d)")
            self.padding = padding
        else:
            self.padding = _pair("padding", padding, 0)
        super().__init__(out_channels, compact, init, fuse_rg and groups == 1, device, dtype, bias,  # see _apply_op
                         design)

    feature_dim = -3  # channels, in batched (N, C, H, W) and unbatched (C, H, W) input alike

    def _weight_shape(self):
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def _apply_op(self, x, weight, bias):
        # (r and g fused into one call only with groups=1: a grouped call would mix their groups)
        if self.padding_mode == "zeros":
            return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return F.conv2d(F.pad(x, self._padding_lrtb(), mode=self.padding_mode), weight, bias, self.stride, 0,
                        self.dilation, self.groups)

    def _norm(self, features: int, **kw) -> nn.Module:
        return nn.BatchNorm2d(features, **kw)

    def _padding_lrtb(self) -> tuple[int, int, int, int]:
        """The padding as F.pad takes it (left, right, top, bottom), as nn.Conv2d computes it."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            out = []
            for d, k in zip(reversed(self.dilation), reversed(self.kernel_size)):
                total = d * (k - 1)
                out += [total // 2, total - total // 2]
            return tuple(out)
        return (self.padding[1], self.padding[1], self.padding[0], self.padding[0])

    def extra_repr(self) -> str:
        def plain(v):
            return v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v
        extra = "".join(f", {name}={value!r}" for name, value, default in (
            ("dilation", plain(self.dilation), 1), ("groups", self.groups, 1), ("bias", self.bias_r is not None, True),
            ("padding_mode", self.padding_mode, "zeros"), ("design", self.design, "compact" if self.compact
                                                          else "quadratic")) if value != default)
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={plain(self.kernel_size)}, "
                f"stride={plain(self.stride)}, padding={plain(self.padding)}, compact={self.compact}{extra}")


def _pair(name: str, value, least: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else None
    if pair is None or len(pair) != 2 or any(not isinstance(v, int) or isinstance(v, bool) or v < least
                                             for v in pair):
        raise ValueError(f"{name} must be an integer >= {least} or a pair of them, got {value!r}")
    return pair


class QuadraticLinear(Quadratic):
    """q(x) = (x W_rᵀ + b_r) * (x W_gᵀ + b_g) + (x⊙x) W_bᵀ + c  (compact: no g term)."""

    def __init__(self, in_features: int, out_features: int, compact: bool = False,
                 init: str | None = None, fuse_rg: bool = True, device=None, dtype=None, bias: bool = True,
                 design: str | None = None):
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        super().__init__(out_features, compact, init, fuse_rg, device, dtype, bias, design)

    def _weight_shape(self):
        return (self.out_features, self.in_features)

    def _bilinear_shape(self):
        return (self.out_features, self.in_features, self.in_features)

    def _norm(self, features: int, **kw) -> nn.Module:
        return nn.BatchNorm1d(features, **kw)

    def _apply_op(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, compact={self.compact}"
                + ("" if self.bias_r is not None or "bias_r" not in DESIGNS[self.design]["params"] else ", bias=False")
                + ("" if self.design in ("quadratic", "compact") else f", design={self.design!r}"))


def quadratic_modules(model: nn.Module):
    """Yield (name, module) for every quadratic layer in `model`."""
    for name, m in model.named_modules():
        if isinstance(m, Quadratic):
            yield name, m

