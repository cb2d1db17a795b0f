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

__all__ = ["Quadratic", "QuadraticConv2d", "QuadraticLinear", "INITS", "quadratic_modules", "product_plus"]

INITS = ("relinear", "naive")


def product_plus(rg: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """r * g + b, where r and g are the two halves of `rg` along `dim` (the fused r/g output).
    Plain arithmetic: a custom backward for it saved 1% of a CPU step, inside the machine's drift
    (results/bench/cpu.json, path "plainproduct"), and a compiled step fuses it anyway."""
    r, g = rg.chunk(2, dim=dim)
    return r * g + b


class Quadratic(nn.Module):
    """The quadratic neuron, for any linear operator: parameters, initialisation and the formula.

    Subclasses give the weight shape (`_weight_shape`), the operator that applies a weight and a
    bias to an input (`_apply_op`, a convolution or a matrix product) and `feature_dim`, where
    output features sit, counted from the end (so unbatched input works too). With `fuse_rg`,
    w_r and w_g are applied in one call on stacked weights (one kernel instead of two); without,
    in two calls, as the authors' code does.

    `split_small_terms` (an attribute; the fast path sets it for bf16-split) matters only under
    autocast: the layer then computes r = w_r·x + b_r in float32 and only its small terms,
    δ = g − 1 = w_g·x + (b_g − 1) and w_b·(x⊙x) + c, in the autocast dtype, and returns
    r + (r·δ + b) in float32. Plain autocast rounds g to 1 and r to 8 bits, which buries a quadratic
    contribution under 1% of r (`qnets.precision` measures it).
    """

    split_small_terms = False

    feature_dim = -1

    def __init__(self, out_features: int, compact: bool, init: str, fuse_rg: bool = True, device=None,
                 dtype=None, bias: bool = True):
        super().__init__()
        for name, flag in (("compact", compact), ("fuse_rg", fuse_rg), ("bias", bias)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.compact, self.fuse_rg = compact, fuse_rg
        kw = dict(device=device, dtype=dtype)
        shape = self._weight_shape()
        self.weight_r = nn.Parameter(torch.empty(shape, **kw))
        # bias=False: no b_r, as a conventional layer without bias (g's b_g and the paper's c stay)
        self.bias_r = nn.Parameter(torch.empty(out_features, **kw)) if bias else None
        if self.compact:
            self.register_parameter("weight_g", None)
            self.register_parameter("bias_g", None)
        else:
            self.weight_g = nn.Parameter(torch.empty(shape, **kw))
            self.bias_g = nn.Parameter(torch.empty(out_features, **kw))
        self.weight_b = nn.Parameter(torch.empty(shape, **kw))
        self.bias_b = nn.Parameter(torch.empty(out_features, **kw))  # the paper's c
        self.reset_parameters(init)

    def reset_parameters(self, init: str = "relinear") -> None:
        """ReLinear: Kaiming-normal w_r, b_r = 0, w_g = 0, b_g = 1, w_b = 0, c = 0 (the neuron
        is then exactly the conventional w_r·x + b_r). Naive: g and b drawn like r."""
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        with torch.no_grad():
            nn.init.kaiming_normal_(self.weight_r, nonlinearity="relu")
            if self.bias_r is not None:
                self.bias_r.zero_()
            self.bias_b.zero_()
            if init == "relinear":
                self.weight_b.zero_()
                if not self.compact:
                    self.weight_g.zero_()
                    self.bias_g.fill_(1.0)
            else:
                nn.init.kaiming_normal_(self.weight_b, nonlinearity="relu")
                if not self.compact:
                    nn.init.kaiming_normal_(self.weight_g, nonlinearity="relu")
                    self.bias_g.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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

    def _apply_op(self, x, weight, bias):
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
                 compact: bool = False, init: str = "relinear", fuse_rg: bool = True, device=None, dtype=None,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros"):
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
        super().__init__(out_channels, compact, init, fuse_rg and groups == 1, device, dtype, bias)  # see _apply_op

    feature_dim = -3  # channels, in batched (N, C, H, W) and unbatched (C, H, W) input alike

    def _weight_shape(self):
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def _apply_op(self, x, weight, bias):
        # (r and g fused into one call only with groups=1: a grouped call would mix their groups)
        if self.padding_mode == "zeros":
            return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return F.conv2d(F.pad(x, self._padding_lrtb(), mode=self.padding_mode), weight, bias, self.stride, 0,
                        self.dilation, self.groups)

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
            ("padding_mode", self.padding_mode, "zeros")) if value != default)
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
                 init: str = "relinear", fuse_rg: bool = True, device=None, dtype=None, bias: bool = True):
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        super().__init__(out_features, compact, init, fuse_rg, device, dtype, bias)

    def _weight_shape(self):
        return (self.out_features, self.in_features)

    def _apply_op(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, compact={self.compact}"
                + ("" if self.bias_r is not None else ", bias=False"))


def quadratic_modules(model: nn.Module):
    """Yield (name, module) for every quadratic layer in `model`."""
    for name, m in model.named_modules():
        if isinstance(m, Quadratic):
            yield name, m

