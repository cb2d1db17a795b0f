"""One quadratic neuron on R²: its conic decision boundary, XOR and the disk, the best line for
comparison, and an explorer to play with its weights (notebook 01)."""
from __future__ import annotations

import math
import zlib

import torch

from .layers import QuadraticLinear


__all__ = ["XOR_NEURON", "DISK_NEURON", "neuron", "conic", "xor_points", "disk_points", "best_line", "single_neuron",
           "plot_neuron", "plot_single_neuron", "explore"]


XOR_NEURON = dict(w_r=(1.0, 0.0), b_r=0.0, w_g=(0.0, -1.0), b_g=0.0, w_b=(0.0, 0.0), c=0.0)  # q = −x1·x2
DISK_NEURON = dict(w_r=(0.0, 0.0), b_r=0.0, w_g=(0.0, 0.0), b_g=1.0, w_b=(-1.0, -1.0), c=1.0)  # q = 1 − ‖x‖²


def neuron(w_r=(0.0, 0.0), b_r=0.0, w_g=(0.0, 0.0), b_g=1.0, w_b=(0.0, 0.0), c=0.0) -> QuadraticLinear:
    """One quadratic neuron on R², q(x) = (w_r·x + b_r)(w_g·x + b_g) + w_b·(x⊙x) + c, in float64."""
    q = QuadraticLinear(2, 1, dtype=torch.float64)
    with torch.no_grad():
        for name, value in (("weight_r", [w_r]), ("bias_r", [b_r]), ("weight_g", [w_g]), ("bias_g", [b_g]),
                            ("weight_b", [w_b]), ("bias_b", [c])):
            getattr(q, name).copy_(torch.tensor(value, dtype=torch.float64))
    return q


def conic(w_r, b_r, w_g, b_g, w_b, c) -> str:
    """The kind of the boundary q(x) = 0: q = xᵀAx + (linear) with A = sym(w_r w_gᵀ) + diag(w_b),
    an ellipse where det A > 0, a hyperbola (or two crossing lines) where det A < 0, a parabola
    (or parallel lines) where det A = 0 ≠ A, a line where A = 0."""
    a = [[w_r[0] * w_g[0] + w_b[0], (w_r[0] * w_g[1] + w_r[1] * w_g[0]) / 2],
         [(w_r[0] * w_g[1] + w_r[1] * w_g[0]) / 2, w_r[1] * w_g[1] + w_b[1]]]
    det = a[0][0] * a[1][1] - a[0][1] ** 2
    if max(abs(v) for row in a for v in row) < 1e-12:
        return "line"
    return "ellipse" if det > 1e-12 else "hyperbola" if det < -1e-12 else "parabola"


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def xor_points() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    return x, (x[:, 0] * x[:, 1] < 0).long()


def disk_points(n: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 2, generator=torch.Generator().manual_seed(zlib.crc32(b"disk")), dtype=torch.float64) * 4 - 2
    return x, (x.square().sum(1) < 1).long()


def best_line(x: torch.Tensor, y: torch.Tensor, angles: int = 3600):
    """The most accurate conventional neuron 1[w·x + b > 0] on (x, y) among unit normals w at
    `angles` evenly spaced angles, each with its best offset b (found exactly, by sorting the
    projections; among equals, the widest margin): (accuracy, w, b)."""
    theta = torch.arange(angles, dtype=torch.float64) * 2 * math.pi / angles
    w = torch.stack((theta.cos(), theta.sin()), 1)
    proj, order = (x.double() @ w.T).sort(0)  # (n, angles), ascending
    ys = y[order].double()
    zero = torch.zeros(1, angles, dtype=torch.float64)
    # cutting after the k smallest projections: those k predicted 0, the rest 1
    correct = torch.cat((zero, (1 - ys).cumsum(0))) + (ys.sum(0) - torch.cat((zero, ys.cumsum(0))))
    edges = torch.cat((proj[:1] - 1, proj, proj[-1:] + 1))
    gap = edges[1:] - edges[:-1]
    correct[gap == 0] = -1  # no threshold cuts between equal projections
    # among the most accurate cuts, the one with the widest gap (a count is a whole number)
    k, a = divmod(int((correct + 0.5 * gap / gap.max()).argmax()), angles)
    return float(correct[k, a]) / len(y), w[a], -float(edges[k, a] + edges[k + 1, a]) / 2


def single_neuron() -> dict:
    """Accuracy of the hand-set quadratic neurons on XOR and the disk, and of the best line."""
    out = {}
    for name, (x, y), weights in (("XOR", xor_points(), XOR_NEURON), ("disk", disk_points(), DISK_NEURON)):
        with torch.no_grad():
            acc = float(((neuron(**weights)(x).squeeze(1) > 0).long() == y).double().mean())
        out[name] = {"points": len(x), "quadratic": acc, "best_line": best_line(x, y)[0]}
    return out


@torch.no_grad()
def plot_neuron(weights: dict, ax=None, extent: float = 2.0):
    """One quadratic neuron's decision region q(x) > 0 and boundary q(x) = 0 on [−extent, extent]²,
    with the XOR points and the unit circle for reference; the title names the conic."""
    import matplotlib.pyplot as plt
    if ax is None:
        ax = plt.subplots(figsize=(4.4, 4.4))[1]
    side = torch.linspace(-extent, extent, 301, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(side, side, indexing="xy"), -1).reshape(-1, 2)
    q = neuron(**weights)(grid).reshape(301, 301).numpy()
    ax.contourf(side.numpy(), side.numpy(), q > 0, levels=[-0.5, 0.5, 1.5], colors=["#dde6f3", "#f6dccb"])
    if q.min() < 0 < q.max():
        ax.contour(side.numpy(), side.numpy(), q, levels=[0], colors="k", linewidths=1.5)
    x, y = xor_points()
    ax.scatter(*x[y == 0].T, s=60, c="C0", label="XOR class 0", zorder=3)
    ax.scatter(*x[y == 1].T, s=60, c="C1", label="XOR class 1", zorder=3)
    t = torch.linspace(0, 2 * math.pi, 200)
    ax.plot(t.cos(), t.sin(), color="0.5", ls=":", lw=1)
    ax.set(aspect="equal", xlabel="$x_1$", ylabel="$x_2$", title=f"q(x) > 0 (orange): {_a(conic(**weights))}")
    return ax


@torch.no_grad()
def plot_single_neuron():
    """XOR and the disk (columns): the hand-set quadratic neuron's region q(x) > 0 (top) and the
    best line's half-plane (bottom), each with its accuracy."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(8.6, 8.4))
    side = torch.linspace(-2, 2, 301, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(side, side, indexing="xy"), -1).reshape(-1, 2)
    for col, (name, (x, y), weights) in enumerate((("XOR", xor_points(), XOR_NEURON),
                                                   ("disk", disk_points(), DISK_NEURON))):
        acc_line, w, b = best_line(x, y)
        q = neuron(**weights)
        regions = ((q(grid).squeeze(1) > 0, float(((q(x).squeeze(1) > 0).long() == y).double().mean()),
                    "one quadratic neuron"), (grid @ w + b > 0, acc_line, "the best line"))
        for row, (inside, acc, kind) in enumerate(regions):
            ax = axes[row, col]
            ax.contourf(side.numpy(), side.numpy(), inside.reshape(301, 301).numpy(), levels=[-0.5, 0.5, 1.5],
                        colors=["#dde6f3", "#f6dccb"])
            size_ = 60 if name == "XOR" else 6
            ax.scatter(*x[y == 0].T, s=size_, c="C0", label="class 0")
            ax.scatter(*x[y == 1].T, s=size_, c="C1", label="class 1")
            ax.set(aspect="equal", xlabel="$x_1$", ylabel="$x_2$", title=f"{name}: {kind}, {100 * acc:.1f}% correct")
            ax.title.set_fontsize(10)
    axes[0, 0].legend(fontsize=8, loc="upper left")
    fig.suptitle("one neuron with weights set by hand, and the best line found by search: no training, no seeds",
                 fontsize=9)
    fig.tight_layout()
    return fig


NEURON_PARAMETERS = {"w_r": 2, "b_r": 1, "w_g": 2, "b_g": 1, "w_b": 2, "c": 1}


def explore(weights: dict | None = None):
    """Draw one quadratic neuron's decision region (`plot_neuron`) as a static figure and, where
    ipywidgets is installed, nine sliders under it that redraw that figure in place: the static
    figure is what a saved notebook shows. Returns the sliders (None without ipywidgets)."""
    import matplotlib.pyplot as plt
    from IPython.display import DisplayHandle, display
    weights = dict(weights or XOR_NEURON)
    fig, ax = plt.subplots(figsize=(4.4, 4.4))
    plot_neuron(weights, ax)
    handle = DisplayHandle()  # the sliders redraw this very output
    handle.display(fig)
    plt.close(fig)
    try:
        import ipywidgets
    except ImportError:
        return None
    sliders = {}
    for name, n in NEURON_PARAMETERS.items():
        values = weights[name] if n > 1 else (weights[name],)
        for i, v in enumerate(values):
            label = f"{name}[{i}]" if n > 1 else name
            sliders[label] = ipywidgets.FloatSlider(value=v, min=-2.0, max=2.0, step=0.05, description=label,
                                                    continuous_update=False)

    def redraw(_change=None):
        for name, n in NEURON_PARAMETERS.items():
            vals = [sliders[f"{name}[{i}]"].value for i in range(n)] if n > 1 else sliders[name].value
            weights[name] = tuple(vals) if n > 1 else vals
        ax.clear()
        plot_neuron(weights, ax)
        handle.update(fig)

    for slider in sliders.values():
        slider.observe(redraw, names="value")
    box = ipywidgets.GridBox(list(sliders.values()), layout=ipywidgets.Layout(grid_template_columns="repeat(3, 1fr)"))
    display(box)
    return box
