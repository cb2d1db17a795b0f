"""Notebook 01's problems: radial functions of x ∈ R^d to regress (‖x‖², a Gaussian bump, the ball
indicator) and two 2-D classification problems (two circles, two spirals), each drawn from a seed of
its own (`dataset`)."""
from __future__ import annotations

import zlib

import torch

__all__ = ["TARGETS", "PROBLEMS", "RADIUS", "radial_inputs", "radial_target", "two_circles", "two_spirals", "dataset"]

TARGETS = ("norm2", "bump", "ball")  # radial regression targets
PROBLEMS = ("circles", "spirals")  # 2-D classification
RADIUS = 2.0  # inputs of the radial targets: |x| uniform on [0, RADIUS], direction uniform


def radial_inputs(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    """n points x = r·u, u uniform on the unit sphere of R^d and r uniform on [0, RADIUS]: the
    radius is probed alike in every dimension (a Gaussian's norm would concentrate)."""
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    return (u * RADIUS * torch.rand(n, 1, generator=g, dtype=torch.float64)).float()


def radial_target(name: str, x: torch.Tensor) -> torch.Tensor:
    """‖x‖² (norm2), exp(−‖x‖²/(2·0.7²)) (bump) or 1[‖x‖ < RADIUS/2] (ball: half the points)."""
    r2 = x.double().square().sum(1)
    if name == "norm2":
        y = r2
    elif name == "bump":
        y = torch.exp(-r2 / (2 * 0.7 ** 2))
    elif name == "ball":
        y = (r2 < (RADIUS / 2) ** 2).double()
    else:
        raise ValueError(f"unknown target {name!r}; choose one of {TARGETS}")
    return y.float()


def two_circles(n: int, g: torch.Generator):
    """Two noisy concentric circles, radii 0.5 and 1 (class 1 the outer)."""
    r = torch.where(torch.rand(n, generator=g) < 0.5, 0.5, 1.0)
    t = torch.rand(n, generator=g) * 2 * torch.pi
    x = torch.stack((r * t.cos(), r * t.sin()), 1) + 0.08 * torch.randn(n, 2, generator=g)
    return x, (r > 0.75).long()


def two_spirals(n: int, g: torch.Generator):
    """Two interleaved noisy spirals of one and a half turns."""
    t = torch.sqrt(torch.rand(n, generator=g)) * 3 * torch.pi
    label = (torch.rand(n, generator=g) < 0.5).long()
    angle = t + torch.pi * label
    x = torch.stack((t * angle.cos(), t * angle.sin()), 1) / (3 * torch.pi) * 1.8
    return x + 0.04 * torch.randn(n, 2, generator=g), label


def _generator(*key) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32("/".join(map(str, key)).encode()))


def dataset(problem: str, d: int, n: int, seed: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): `n` points of `problem` (a radial target in R^d, or circles/spirals in R^2), drawn
    from a generator named by (problem, d, seed, split): every seed has its own data."""
    if split not in ("train", "test", "lines"):
        raise ValueError(f"split must be train, test or lines, got {split!r}")
    g = _generator(problem, d, seed, split)
    if problem in PROBLEMS:
        if d != 2:
            raise ValueError(f"{problem} is a problem in d = 2, got d={d}")
        return (two_circles if problem == "circles" else two_spirals)(n, g)
    x = radial_inputs(n, d, g)
    return x, radial_target(problem, x)


