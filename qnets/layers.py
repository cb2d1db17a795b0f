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
                 dtype=None):
        super().__init__()
        for name, flag in (("compact", compact), ("fuse_rg", fuse_rg)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.compact, self.fuse_rg = compact, fuse_rg
        kw = dict(device=device, dtype=dtype)
        shape = self._weight_shape()
        self.weight_r = nn.Parameter(torch.empty(shape, **kw))
        self.bias_r = nn.Parameter(torch.empty(out_features, **kw))
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
        rg = op(x, torch.cat((self.weight_r, self.weight_g)), torch.cat((self.bias_r, self.bias_g)))
        return product_plus(rg, b, self.feature_dim)

    def _split_forward(self, x: torch.Tensor) -> torch.Tensor:
        op, x32 = self._apply_op, x.float()
        with torch.autocast(x.device.type, enabled=False):
            r = op(x32, self.weight_r.float(), self.bias_r.float())
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

    Every convolution has a bias (conv_b's bias is the paper's c) and shares kernel size,
    stride and padding. Parameters: weight_r, bias_r, weight_g, bias_g, weight_b, bias_b.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, compact: bool = False, init: str = "relinear", fuse_rg: bool = True,
                 device=None, dtype=None):
        for name, value, least in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                                   ("kernel_size", kernel_size, 1), ("stride", stride, 1),
                                   ("padding", padding, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        super().__init__(out_channels, compact, init, fuse_rg, device, dtype)

    feature_dim = -3  # channels, in batched (N, C, H, W) and unbatched (C, H, W) input alike

    def _weight_shape(self):
        k = self.kernel_size
        return (self.out_channels, self.in_channels, k, k)

    def _apply_op(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, compact={self.compact}")


class QuadraticLinear(Quadratic):
    """q(x) = (x W_rᵀ + b_r) * (x W_gᵀ + b_g) + (x⊙x) W_bᵀ + c  (compact: no g term)."""

    def __init__(self, in_features: int, out_features: int, compact: bool = False,
                 init: str = "relinear", fuse_rg: bool = True, device=None, dtype=None):
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        super().__init__(out_features, compact, init, fuse_rg, device, dtype)

    def _weight_shape(self):
        return (self.out_features, self.in_features)

    def _apply_op(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, compact={self.compact}"


def quadratic_modules(model: nn.Module):
    """Yield (name, module) for every quadratic layer in `model`."""
    for name, m in model.named_modules():
        if isinstance(m, Quadratic):
            yield name, m

