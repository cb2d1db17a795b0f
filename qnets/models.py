"""CIFAR ResNets of He et al. (2016) with conventional neurons or any quadratic design (layers.DESIGNS).

Structure: 3×3 stem conv (16 channels) + BN + ReLU, three stages of n basic blocks
(16/32/64 channels, strides 1/2/2), global average pool, linear 64→classes; depth = 6n + 2.
Block: relu(bn1(conv1(x))) → bn2(conv2(·)) [× ReZero scalar] → + shortcut(x) → relu.
Only the 3×3 convolutions inside the blocks become quadratic; stem, shortcut convs and the
classifier stay conventional, as in the authors' code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DESIGNS, QuadraticConv2d

__all__ = ["NEURONS", "SHORTCUTS", "ResNet", "resnet", "valid_depth", "flops_per_image", "resnet20", "resnet32",
           "resnet44", "resnet56", "resnet110"]

# conventional, or a quadratic design (layers.DESIGNS) that has a convolution
NEURONS = ("conventional",) + tuple(d for d in DESIGNS if d != "bilinear")
SHORTCUTS = ("A", "B")


def conv3x3(neuron: str, cin: int, cout: int, stride: int, fuse_rg: bool = True) -> nn.Module:
    if neuron == "conventional":
        return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    return QuadraticConv2d(cin, cout, 3, stride, 1, fuse_rg=fuse_rg, design=neuron)


def valid_depth(depth) -> bool:
    """A CIFAR ResNet has depth 6n+2, n >= 1: three stages of n two-layer blocks, a stem and a classifier."""
    return isinstance(depth, int) and not isinstance(depth, bool) and depth >= 8 and (depth - 2) % 6 == 0


def check_depth(depth) -> int:
    if not valid_depth(depth):
        raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth!r}")
    return depth


class ShortcutA(nn.Module):
    """Option A: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.pad = extra_channels // 2

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, neuron: str, shortcut: str, rezero: bool,
                 fuse_rg: bool = True):
        super().__init__()
        self.conv1 = conv3x3(neuron, cin, cout, stride, fuse_rg)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(neuron, cout, cout, 1, fuse_rg)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride == 1 and cin == cout:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ShortcutA(cout - cin)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        # ReZero (Bachlechner et al. 2020): the residual branch starts switched off.
        self.rezero = nn.Parameter(torch.zeros(())) if rezero else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.rezero is not None:
            out = out * self.rezero
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, depth: int = 20, neuron: str = "conventional", rezero: bool = False,
                 shortcut: str = "A", num_classes: int = 10, fuse_rg: bool = True):
        super().__init__()
        check_depth(depth)
        if neuron not in NEURONS:
            raise ValueError(f"neuron must be one of {NEURONS}, got {neuron!r}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        if not isinstance(rezero, bool):
            raise ValueError(f"rezero must be True or False, got {rezero!r}")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.depth, self.neuron, self.rezero, self.shortcut = depth, neuron, bool(rezero), shortcut
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            stage = [BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, neuron, shortcut, rezero,
                                fuse_rg) for i in range(n)]
            blocks.append(nn.Sequential(*stage))
            cin = cout
        self.layer1, self.layer2, self.layer3 = blocks
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():  # quadratic layers initialise themselves (ReLinear)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def extra_repr(self) -> str:
        return f"depth={self.depth}, neuron={self.neuron!r}, rezero={self.rezero}, shortcut={self.shortcut!r}"


def resnet(depth: int, neuron: str = "conventional", rezero: bool = False, shortcut: str = "A",
           num_classes: int = 10, fuse_rg: bool = True) -> ResNet:
    """The one CIFAR ResNet builder: `depth` = 6n+2, `neuron` in NEURONS, `shortcut` "A" or "B";
    `fuse_rg=False` computes w_r·x and w_g·x in two convolutions, as the authors' code does."""
    return ResNet(depth, neuron, rezero, shortcut, num_classes, fuse_rg)


def resnet20(**kw) -> ResNet: return resnet(20, **kw)
def resnet32(**kw) -> ResNet: return resnet(32, **kw)
def resnet44(**kw) -> ResNet: return resnet(44, **kw)
def resnet56(**kw) -> ResNet: return resnet(56, **kw)
def resnet110(**kw) -> ResNet: return resnet(110, **kw)


def flops_per_image(depth: int, neuron: str) -> float:
    """Training FLOPs per image (forward + backward) from PyTorch's FLOP counter (convolutions
    and matrix products; element-wise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    model = resnet(depth, neuron)
    x = torch.randn(2, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(2, dtype=torch.long)).backward()
    return counter.get_total_flops() / 2
