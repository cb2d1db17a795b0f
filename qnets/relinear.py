"""ReLinear: train a quadratic network as a conventional one that grows quadratic terms.

1. Initialise w_g = 0, b_g = 1, w_b = 0, c = 0 (the layers' default), optionally with w_r, b_r
   and every conventional part copied from a trained conventional network (`from_conventional`).
2. Regularise the quadratic terms: shrunken gradients (`optimizer`: g and b learn at gamma_g,
   gamma_b) and/or shrunken weights (`penalty`: alpha·‖w‖² + beta·‖w‖₁ added to the loss).

Parameter roles come from the module structure (`roles`), never from parameter names.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import DESIGNS, Quadratic, QuadraticConv2d, QuadraticLinear, quadratic_modules

__all__ = ["ROLES", "roles", "optimizer", "penalty", "quadratic_stats", "from_conventional",
           "naive_init", "quadratize", "linearize"]

ROLES = ("r", "g", "b", "other")


def roles(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split the trainable parameters of `model` by role: r (weight_r, bias_r), g (weight_g,
    bias_g), b (weight_b, bias_b = c) of quadratic layers, and other (everything else)."""
    out = {k: [] for k in ROLES}
    seen = set()
    for _, m in quadratic_modules(model):
        for role in ("r", "g", "b"):
            for kind in ("weight", "bias"):
                p = getattr(m, f"{kind}_{role}")
                if p is not None and id(p) not in seen:
                    out[role].append(p)
                    seen.add(id(p))
    for p in model.parameters():
        if id(p) not in seen:
            out["other"].append(p)
            seen.add(id(p))
    return out


MAX_RATE = 1e6  # rates and coefficients above this overflow float32 arithmetic in the optimiser


def valid_rate(value, low: float = 0.0) -> bool:
    """The one rule for learning rates, momentum, weight decay and penalty coefficients: a real
    number from `low` to MAX_RATE."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and low <= value <= MAX_RATE


def _check_rate(name: str, value) -> float:
    if not valid_rate(value):
        raise ValueError(f"{name} must be a number from 0 to {MAX_RATE:g}, got {value!r}")
    return float(value)


def optimizer(model: nn.Module, lr: float, gamma_g: float | None = None, gamma_b: float | None = None,
              momentum: float = 0.9, weight_decay: float = 1e-4, nesterov: bool = False,
              **sgd_kw) -> torch.optim.SGD:
    """SGD with three parameter groups: r and other at `lr`, g at `gamma_g`, b at `gamma_b`.

    Rates are absolute and any scheduler scales every group by the same factor, as in the
    authors' code. gamma = lr means no shrinking, gamma = 0 freezes, None means lr.
    Groups carry a "role" key ("main", "g", "b").
    """
    lr = _check_rate("lr", lr)
    gamma_g = lr if gamma_g is None else _check_rate("gamma_g", gamma_g)
    gamma_b = lr if gamma_b is None else _check_rate("gamma_b", gamma_b)
    _check_rate("momentum", momentum)
    _check_rate("weight_decay", weight_decay)
    if nesterov and momentum == 0:
        raise ValueError("nesterov=True needs momentum > 0")
    r = roles(model)
    groups = [{"params": r["r"] + r["other"], "lr": lr, "role": "main"}]
    for role, rate in (("g", gamma_g), ("b", gamma_b)):
        if r[role]:
            groups.append({"params": r[role], "lr": rate, "role": role})
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov, **sgd_kw)


def penalty(model: nn.Module, alpha_g: float = 0.0, alpha_b: float = 0.0, beta_g: float = 0.0,
            beta_b: float = 0.0) -> torch.Tensor:
    """Weight shrinking: alpha_g‖w_g‖² + alpha_b‖w_b‖² + beta_g‖w_g‖₁ + beta_b‖w_b‖₁, summed over
    every quadratic layer's weights (biases are not penalised). Returns a scalar tensor."""
    coef = {name: _check_rate(name, v) for name, v in
            (("alpha_g", alpha_g), ("alpha_b", alpha_b), ("beta_g", beta_g), ("beta_b", beta_b))}
    total = None
    for _, m in quadratic_modules(model):
        for role in ("g", "b"):
            w = getattr(m, f"weight_{role}")
            if w is None:
                continue
            a, b = coef[f"alpha_{role}"], coef[f"beta_{role}"]
            term = (a * w.square().sum() if a else 0) + (b * w.abs().sum() if b else 0)
            if torch.is_tensor(term):
                total = term if total is None else total + term
    if total is None:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return total


@torch.no_grad()
def quadratic_stats(model: nn.Module) -> dict:
    """How far the network has moved from conventional, per quadratic layer and overall.

    For each layer: ‖w_g‖/‖w_r‖, ‖w_b‖/‖w_r‖ (Frobenius norms) and RMS(b_g − 1), RMS(c) over the
    RMS of w_r's entries. All are 0 at ReLinear's initialisation. "overall" pools every layer
    (norms of the concatenated weights). Returns plain floats; an empty dict for a model
    without quadratic layers. Designs without a linear term (no w_r) are left out; in QuadraLib's
    neuron w_b is the random factor beside w_g, so there w_g alone says how far it moved.
    """
    layers, sums = {}, {"w_r": 0.0, "w_g": 0.0, "w_b": 0.0, "b_g": 0.0, "c": 0.0, "n_w": 0, "n_b": 0}
    def sq(t, minus=0.0):
        return 0.0 if t is None else (t.double() - minus).square().sum().item()
    for name, m in quadratic_modules(model):
        if m.weight_r is None:  # a design without a linear term: nothing to compare with
            continue
        wr2, wg2, wb2, bg2, c2 = sq(m.weight_r), sq(m.weight_g), sq(m.weight_b), sq(m.bias_g, 1.0), sq(m.bias_b)
        nw, nb = m.weight_r.numel(), m.weight_r.shape[0]
        rms_r = math.sqrt(wr2 / nw) or float("nan")
        layers[name] = {"w_g": math.sqrt(wg2 / wr2), "w_b": math.sqrt(wb2 / wr2),
                        "b_g": math.sqrt(bg2 / nb) / rms_r, "c": math.sqrt(c2 / nb) / rms_r}
        for k, v in (("w_r", wr2), ("w_g", wg2), ("w_b", wb2), ("b_g", bg2), ("c", c2), ("n_w", nw), ("n_b", nb)):
            sums[k] += v
    if not layers:
        return {}
    rms_r = math.sqrt(sums["w_r"] / sums["n_w"])
    overall = {"w_g": math.sqrt(sums["w_g"] / sums["w_r"]), "w_b": math.sqrt(sums["w_b"] / sums["w_r"]),
               "b_g": math.sqrt(sums["b_g"] / sums["n_b"]) / rms_r, "c": math.sqrt(sums["c"] / sums["n_b"]) / rms_r}
    return {"overall": overall, "layers": layers}


def naive_init(model: nn.Module) -> nn.Module:
    """The baseline ReLinear is compared with: g and b weights drawn like r (Kaiming normal)."""
    for _, m in quadratic_modules(model):
        m.reset_parameters("naive")
    return model


@torch.no_grad()
def from_conventional(q_model: nn.Module, conv_model: nn.Module) -> nn.Module:
    """The paper's conventional-model initialisation: copy a (trained) conventional network of
    the same shape into `q_model`. Each quadratic layer's w_r, b_r take the conventional layer's
    weight and bias (0 when it has none) and its g and b terms are reset to ReLinear's
    (w_g = 0, b_g = 1, w_b = 0, c = 0); every other parameter and buffer (stem, BN statistics,
    classifier, ReZero scalars) is copied as is. Afterwards both networks compute the same
    function. Returns `q_model`."""
    q_mods, c_mods = dict(q_model.named_modules()), dict(conv_model.named_modules())
    if q_mods.keys() != c_mods.keys():
        missing = sorted(q_mods.keys() ^ c_mods.keys())[:5]
        raise ValueError(f"conv_model does not have the structure of q_model (modules differ: {missing})")
    for name, q in q_mods.items():
        c = c_mods[name]
        if isinstance(q, Quadratic):
            if not isinstance(c, (nn.Conv2d, nn.Linear)) or c.weight.shape != q.weight_r.shape:
                raise ValueError(f"conv_model's layer {name!r} ({type(c).__name__}) does not match "
                                 f"the quadratic layer's weight shape {tuple(q.weight_r.shape)}")
            q.reset_parameters("relinear")
            q.weight_r.copy_(c.weight)
            if q.bias_r is not None:
                q.bias_r.copy_(c.bias if c.bias is not None else torch.zeros_like(q.bias_r))
            continue
        if isinstance(c, Quadratic) or type(q) is not type(c):
            raise ValueError(f"layer {name!r} is {type(q).__name__} in q_model but {type(c).__name__} in conv_model")
        for attr in ("_parameters", "_buffers"):
            src = getattr(c, attr)
            for key, t in getattr(q, attr).items():
                if t is not None:
                    t.copy_(src[key])
    return q_model


def quadratize(model: nn.Module, neuron: str = "quadratic", select=None) -> nn.Module:
    """A copy of any `model` in which every selected `nn.Conv2d` and `nn.Linear` is a quadratic
    layer of the same shape and options (stride, padding, dilation, groups, bias or none, padding
    mode, device, dtype), its w_r and b_r copied from the original and its quadratic terms at
    ReLinear's start (w_g = 0, b_g = 1, w_b = 0, c = 0): the copy computes exactly what `model`
    computes, and `optimizer` and `penalty` find the new terms by the structure. `neuron` is a
    design of `layers.DESIGNS` that can start as the conventional layer: "quadratic" (Fan's full
    neuron), "compact", "qres" or "quadraour". `select`: None (every such layer), a pattern or
    list of patterns matched against module names (fnmatch, e.g. "layer3.*"), or a predicate
    `(name, module) -> bool`. `model` itself is left as it is. A layer whose owner reads its weight
    directly cannot be converted: subclasses such as attention's out_proj raise, and so would
    nn.TransformerEncoderLayer's linear layers fail in its inference fast path (leave them out)."""
    import copy
    import fnmatch
    starts = tuple(d for d, spec in DESIGNS.items() if spec["start"])
    if neuron not in starts:
        raise ValueError(f"neuron must be a design that can start as the layer it replaces, one of {starts}, got "
                         f"{neuron!r}" + (" (it cannot: see qnets.layers.DESIGNS)" if neuron in DESIGNS else ""))
    if select is None or callable(select):
        chosen = select or (lambda name, module: True)
    else:
        patterns = [select] if isinstance(select, str) else list(select)
        chosen = lambda name, module: any(fnmatch.fnmatchcase(name, p) for p in patterns)  # noqa: E731
    out = copy.deepcopy(model)
    targets = [(name, m) for name, m in out.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) and name and chosen(name, m)]
    for name, m in targets:
        _replace(out, name, _quadratic_like(name, m, neuron))
    return out


def _quadratic_like(name: str, m: nn.Module, design: str) -> Quadratic:
    from torch.nn.utils import parametrize
    if parametrize.is_parametrized(m) or m._forward_hooks or m._forward_pre_hooks:
        raise ValueError(f"layer {name!r} ({type(m).__name__}) has parametrizations or hooks, which a quadratic "
                         "layer would not carry over; remove them or leave the layer out (select=...)")
    if type(m) not in (nn.Conv2d, nn.Linear):  # e.g. attention's out_proj, whose weight is read directly
        raise ValueError(f"layer {name!r} is a {type(m).__name__}, a kind of {type(m).__mro__[1].__name__} whose "
                         "owner may use its weights directly; leave it out (select=...)")
    kw = dict(design=design, device=m.weight.device, dtype=m.weight.dtype, bias=m.bias is not None)
    if isinstance(m, nn.Conv2d):
        q = QuadraticConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, dilation=m.dilation,
                            groups=m.groups, padding_mode=m.padding_mode, **kw)
    else:
        q = QuadraticLinear(m.in_features, m.out_features, **kw)
    with torch.no_grad():
        q.weight_r.copy_(m.weight)
        if m.bias is not None:
            q.bias_r.copy_(m.bias)
    q.train(m.training)
    for p, old in ((q.weight_r, m.weight), (q.bias_r, m.bias)):
        if p is not None:
            p.requires_grad_(old.requires_grad)
    return q


def linearize(model: nn.Module) -> nn.Module:
    """A copy of `model` with every quadratic layer replaced by its linear part, the quadratic
    terms dropped: q(x) = (w_r·x + b_r)(w_g·x + b_g) + w_b·(x⊙x) + c has the linear part
    (b_g w_r + b_r w_g)·x + b_r b_g + c (compact: w_r·x + b_r + c; QRes and QuadraLib's neuron:
    w_r·x + b_r; the other designs have none, and raise), which is the original layer
    again for a network still at ReLinear's start. For analysis (what did the terms add?)."""
    import copy
    out = copy.deepcopy(model)
    for name, q in list(quadratic_modules(out)):
        if not DESIGNS[q.design]["start"]:  # the designs with a linear term, alone as it
            raise ValueError(f"layer {name!r}: design {q.design!r} has no linear part to keep")
        kw = dict(device=q.weight_r.device, dtype=q.weight_r.dtype)
        if isinstance(q, QuadraticConv2d):
            lin = nn.Conv2d(q.in_channels, q.out_channels, q.kernel_size, q.stride, q.padding, q.dilation, q.groups,
                            bias=True, padding_mode=q.padding_mode, **kw)
        else:
            lin = nn.Linear(q.in_features, q.out_features, bias=True, **kw)
        shape = (-1,) + (1,) * (q.weight_r.dim() - 1)
        b_r = q.bias_r if q.bias_r is not None else torch.zeros(q.weight_r.shape[0], **kw)
        with torch.no_grad():
            if q.design != "quadratic":  # compact: w_r·x + b_r + c; qres, quadraour: w_r·x + b_r
                lin.weight.copy_(q.weight_r)
                lin.bias.copy_(b_r + (q.bias_b if q.compact else 0))
            else:
                lin.weight.copy_(q.bias_g.view(shape) * q.weight_r + b_r.view(shape) * q.weight_g)
                lin.bias.copy_(b_r * q.bias_g + q.bias_b)
        lin.train(q.training)
        _replace(out, name, lin)
    return out


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)
