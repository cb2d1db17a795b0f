"""K training runs of one architecture as one network: horizontal fusion.

A lone CIFAR ResNet fills a few percent of a large GPU: its convolutions (16-64 channels on
32×32 images) are too small. `PackedResNet` holds K copies of one architecture side by side in
every layer: a convolution becomes a grouped convolution with K groups, a BatchNorm of C
channels one of K·C (so its statistics stay per run), ReZero's scalar a K-vector, the classifier
a batched matrix product. Run k's images enter as input channels 3k..3k+2 and its logits leave
as `out[:, k]`. Nothing mixes across runs, so each run's gradients, BatchNorm statistics and
SGD updates are those of its lone run up to rounding, and a run that goes non-finite leaves the
others untouched.

`PackedSGD` is torch.optim.SGD's arithmetic with a rate per element (each run and role its own
γ), `PackedLoader` gives each run its own data order and augmentation, exactly those of its
lone `DeviceLoader`, and `PackedTrainer` is the lone `Trainer` (bf16, compile, CUDA graph) on a
packed network. `pack`/`unpack_state` convert lone state dicts both ways, so a packed run
reads and writes lone checkpoints.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import data as qdata
from . import relinear
from .layers import QuadraticConv2d, product_plus
from .models import ResNet, ShortcutA, resnet
from .train import (Config, Trainer, build_model, collapse_reason, evaluates, history_entry, load_datasets, lr_factor,
                    optimizer_for, out_of_time, partial, prepare, progress, read_checkpoint, resolve_device, run_name,
                    show_epoch, write_checkpoint, write_result)
from .utils import timestamp

__all__ = ["PackedResNet", "PackedSGD", "PackedLoader", "PackedTrainer", "pack_key"]

# A view of a packed tensor as (K, *lone shape): run k's copy of one lone tensor is view[k].
Slicer = Callable[[torch.Tensor], torch.Tensor]


def _blocks(k: int, parts: int = 1, index: int = 0) -> Slicer:
    """Packed tensors whose first dimension is K runs × `parts` × the lone first dimension:
    part `index` of each run (r is part 0 and g part 1 of a fused r/g weight)."""
    def view(t: torch.Tensor) -> torch.Tensor:
        return t.view(k, parts, t.shape[0] // (k * parts), *t.shape[1:])[:, index]
    return view


def _per_run(t: torch.Tensor) -> torch.Tensor:  # already (K, *lone shape)
    return t


class PackedConv2d(nn.Module):
    """K conventional convolutions (no bias) as one grouped convolution."""

    def __init__(self, k: int, conv: nn.Conv2d):
        super().__init__()
        if conv.bias is not None or conv.groups != 1:
            raise ValueError("PackedConv2d packs ungrouped convolutions without bias")
        self.k, self.stride, self.padding = k, conv.stride, conv.padding
        self.weight = nn.Parameter(torch.empty(k * conv.out_channels, *conv.weight.shape[1:]))

    def forward(self, x):
        return F.conv2d(x, self.weight, None, self.stride, self.padding, groups=self.k)

    def slicers(self) -> dict[str, tuple[str, Slicer]]:
        return {"weight": ("weight", _blocks(self.k))}


class PackedQuadraticConv2d(nn.Module):
    """K quadratic convolutions. The r and g convolutions of every run are one grouped
    convolution whose K groups each give [r, g]; b is a second one on x²."""

    def __init__(self, k: int, q: QuadraticConv2d):
        super().__init__()
        self.k, self.compact, self.stride, self.padding = k, q.compact, q.stride, q.padding
        shape, cout = q.weight_r.shape, q.out_channels
        parts = 1 if q.compact else 2
        self.weight_rg = nn.Parameter(torch.empty(k * parts * cout, *shape[1:]))
        self.bias_rg = nn.Parameter(torch.empty(k * parts * cout))
        self.weight_b = nn.Parameter(torch.empty(k * cout, *shape[1:]))
        self.bias_b = nn.Parameter(torch.empty(k * cout))

    def _conv(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding, groups=self.k)

    def forward(self, x):
        quad = self._conv(x * x, self.weight_b, self.bias_b)
        rg = self._conv(x, self.weight_rg, self.bias_rg)
        if self.compact:
            return rg + quad
        n, _, h, w = rg.shape
        rg = rg.view(n, self.k, 2, -1, h, w)  # run, (r, g), channel
        quad = quad.view(n, self.k, 1, -1, h, w)
        if torch.compiler.is_compiling():  # the compiler fuses the plain arithmetic itself
            r, g = rg.unbind(2)
            return (r * g + quad.squeeze(2)).reshape(n, -1, h, w)
        return product_plus(rg, quad, 2).reshape(n, -1, h, w)

    def slicers(self) -> dict[str, tuple[str, Slicer]]:
        k, parts = self.k, 1 if self.compact else 2
        out = {"weight_r": ("weight_rg", _blocks(k, parts, 0)), "bias_r": ("bias_rg", _blocks(k, parts, 0)),
               "weight_b": ("weight_b", _blocks(k)), "bias_b": ("bias_b", _blocks(k))}
        if not self.compact:
            out |= {"weight_g": ("weight_rg", _blocks(k, 2, 1)), "bias_g": ("bias_rg", _blocks(k, 2, 1))}
        return out

    def roles(self) -> dict[str, str]:
        """Which lone parameter each packed slice belongs to, by ReLinear role."""
        return {"weight_r": "r", "bias_r": "r", "weight_g": "g", "bias_g": "g", "weight_b": "b", "bias_b": "b"}


class PackedBatchNorm2d(nn.BatchNorm2d):
    """K BatchNorms of C channels as one of K·C channels: statistics stay per run."""

    def __init__(self, k: int, bn: nn.BatchNorm2d):
        super().__init__(k * bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        self.k = k

    def slicers(self) -> dict[str, tuple[str, Slicer]]:
        out = {name: (name, _blocks(self.k)) for name in ("weight", "bias", "running_mean", "running_var")}
        # one step counter serves every run: packed runs step together
        out["num_batches_tracked"] = ("num_batches_tracked", lambda t: t.expand(self.k))
        return out


class PackedShortcutA(nn.Module):
    """Option A per run: subsample by 2 and zero-pad each run's channels."""

    def __init__(self, k: int, shortcut: ShortcutA):
        super().__init__()
        self.k, self.pad = k, shortcut.pad

    def forward(self, x):
        n, c, h, w = x.shape
        x = x[:, :, ::2, ::2].reshape(n, self.k, c // self.k, (h + 1) // 2, (w + 1) // 2)
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad)).reshape(n, -1, (h + 1) // 2, (w + 1) // 2)


class PackedLinear(nn.Module):
    """K linear layers: (N, K·I) -> (N, K, O)."""

    def __init__(self, k: int, fc: nn.Linear):
        super().__init__()
        self.k = k
        self.weight = nn.Parameter(torch.empty(k, fc.out_features, fc.in_features))
        self.bias = nn.Parameter(torch.empty(k, fc.out_features))

    def forward(self, x):
        x = x.view(x.shape[0], self.k, -1).transpose(0, 1)  # (K, N, I)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2)).transpose(0, 1)

    def slicers(self) -> dict[str, tuple[str, Slicer]]:
        return {"weight": ("weight", _per_run), "bias": ("bias", _per_run)}


class _PackedBlock(nn.Module):
    def __init__(self, k: int, block):
        super().__init__()
        self.k = k
        self.conv1, self.bn1 = _pack_module(k, block.conv1), PackedBatchNorm2d(k, block.bn1)
        self.conv2, self.bn2 = _pack_module(k, block.conv2), PackedBatchNorm2d(k, block.bn2)
        self.shortcut = _pack_module(k, block.shortcut)
        self.rezero = nn.Parameter(torch.empty(k)) if block.rezero is not None else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.rezero is not None:
            n, c, h, w = out.shape
            out = (out.view(n, self.k, c // self.k, h, w) * self.rezero.view(1, -1, 1, 1, 1)).view(n, c, h, w)
        return F.relu(out + self.shortcut(x))

    def slicers(self) -> dict[str, tuple[str, Slicer]]:
        return {"rezero": ("rezero", _per_run)} if self.rezero is not None else {}


def _pack_module(k: int, m: nn.Module) -> nn.Module:
    if isinstance(m, QuadraticConv2d):
        return PackedQuadraticConv2d(k, m)
    if isinstance(m, nn.Conv2d):
        return PackedConv2d(k, m)
    if isinstance(m, nn.BatchNorm2d):
        return PackedBatchNorm2d(k, m)
    if isinstance(m, nn.Linear):
        return PackedLinear(k, m)
    if isinstance(m, ShortcutA):
        return PackedShortcutA(k, m)
    if isinstance(m, nn.Identity):
        return nn.Identity()
    if isinstance(m, nn.Sequential):
        return nn.Sequential(*(_pack_module(k, c) for c in m))
    if hasattr(m, "conv1") and hasattr(m, "shortcut"):
        return _PackedBlock(k, m)
    raise TypeError(f"cannot pack a {type(m).__name__}")


class PackedResNet(nn.Module):
    """K ResNets of one architecture (`template`'s) as one network.

    forward: x of shape (N, 3K, H, W), run k's images in channels 3k..3k+2, gives logits
    (N, K, classes). Build it with `PackedResNet.from_models(models)` to copy K lone networks in.
    """

    def __init__(self, k: int, template: ResNet):
        super().__init__()
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.k = k
        self.arch = dict(depth=template.depth, neuron=template.neuron, rezero=template.rezero,
                         shortcut=template.shortcut)
        self.conv1, self.bn1 = PackedConv2d(k, template.conv1), PackedBatchNorm2d(k, template.bn1)
        self.layer1, self.layer2, self.layer3 = (_pack_module(k, s) for s in
                                                 (template.layer1, template.layer2, template.layer3))
        self.fc = PackedLinear(k, template.fc)
        self._slices = self._map(template)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def _map(self, template: ResNet) -> dict[str, tuple[str, Slicer, str]]:
        """lone state-dict key -> (packed key, slicer, ReLinear role of a parameter)."""
        lone_roles = {id(p): role for role, ps in relinear.roles(template).items() for p in ps}
        lone_params = dict(template.named_parameters())
        packed = dict(self.named_modules())
        out = {}
        for name in template.state_dict():
            owner, _, attr = name.rpartition(".")
            module = packed[owner]
            if not hasattr(module, "slicers"):
                raise TypeError(f"no packed slice for {name!r}")
            pkey, slicer = module.slicers()[attr]
            role = lone_roles.get(id(lone_params[name])) if name in lone_params else None
            out[name] = (f"{owner}.{pkey}" if owner else pkey, slicer, role)
        return out

    @classmethod
    def from_models(cls, models: Sequence[ResNet]) -> "PackedResNet":
        """K lone networks of one architecture, packed (their parameters and buffers copied)."""
        if not models:
            raise ValueError("from_models needs at least one model")
        arch = {(m.depth, m.neuron, m.rezero, m.shortcut, m.fc.out_features) for m in models}
        if len(arch) != 1:
            raise ValueError(f"only networks of one architecture can be packed, got {sorted(arch)}")
        w = models[0].conv1.weight
        packed = cls(len(models), models[0]).to(w.device, w.dtype)
        packed.load_lone([m.state_dict() for m in models])
        return packed

    @torch.no_grad()
    def load_lone(self, states: Sequence[dict]) -> None:
        """Copy K lone state dicts (run k's is states[k]) into the packed tensors."""
        if len(states) != self.k:
            raise ValueError(f"expected {self.k} state dicts, got {len(states)}")
        own = self.state_dict(keep_vars=True)
        for name, (pkey, slicer, _) in self._slices.items():
            target = slicer(own[pkey])
            if name.endswith("num_batches_tracked"):
                own[pkey].copy_(states[0][name])
                continue
            target.copy_(torch.stack([s[name].to(target.device, target.dtype) for s in states]))

    def lone_state(self, i: int) -> dict[str, torch.Tensor]:
        """Run i's weights and buffers as the state dict of a lone network (on the CPU)."""
        own = self.state_dict()
        return {name: slicer(own[pkey])[i].detach().to("cpu", copy=True).contiguous()
                for name, (pkey, slicer, _) in self._slices.items()}

    def lone_model(self, i: int) -> ResNet:
        """Run i as a lone network (on the CPU)."""
        model = resnet(**self.arch, num_classes=self.fc.weight.shape[1])
        model.load_state_dict(self.lone_state(i))
        return model

    def parameter_slices(self):
        """Yield (lone name, role, packed parameter, slicer) for every lone parameter."""
        params = dict(self.named_parameters())
        for name, (pkey, slicer, role) in self._slices.items():
            if role is not None:
                yield name, role, params[pkey], slicer


class PackedSGD:
    """torch.optim.SGD's update (weight decay added to the gradient, momentum, optional Nesterov)
    for a packed network, with a learning rate per element: run k's r and other parameters at
    lrs[k]["main"], its g terms at lrs[k]["g"], its b terms at lrs[k]["b"].

    The rates are device tensors, so a CUDA graph that captured `step()` follows `set_factor`
    (the schedule's multiplier, common to the pack); momentum and weight decay are the pack's."""

    def __init__(self, model: PackedResNet, lrs: Sequence[dict[str, float]], momentum: float,
                 weight_decay: float, nesterov: bool = False):
        if len(lrs) != model.k:
            raise ValueError(f"expected {model.k} runs' rates, got {len(lrs)}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.model, self.momentum, self.weight_decay, self.nesterov = model, momentum, weight_decay, nesterov
        self.params = [p for p in model.parameters() if p.requires_grad]
        base = {id(p): torch.zeros_like(p) for p in self.params}
        with torch.no_grad():
            for _, role, p, slicer in model.parameter_slices():
                view = slicer(base[id(p)])
                for k, rates in enumerate(lrs):
                    view[k].fill_(rates["main" if role in ("r", "other") else role])
        self.base_lrs = [base[id(p)] for p in self.params]
        self.lrs = [b.clone() for b in self.base_lrs]
        self.buffers = [torch.zeros_like(p) for p in self.params]
        index = {id(p): j for j, p in enumerate(self.params)}
        self._momentum_views = {name: (index[id(p)], slicer) for name, _, p, slicer in model.parameter_slices()}
        self.factor = 1.0

    @torch.no_grad()
    def set_factor(self, factor: float) -> None:
        """Scale every base rate by `factor` (kernels only when it changes)."""
        if factor != self.factor:
            self.factor = factor
            torch._foreach_copy_(self.lrs, self.base_lrs)
            torch._foreach_mul_(self.lrs, factor)

    @torch.no_grad()
    def step(self) -> None:
        params = self.params
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum:
            torch._foreach_mul_(self.buffers, self.momentum)
            torch._foreach_add_(self.buffers, grads)
            if self.nesterov:
                grads = torch._foreach_add(grads, self.buffers, alpha=self.momentum)
            else:
                grads = self.buffers
        torch._foreach_addcmul_(params, grads, self.lrs, value=-1)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()

    def zero_momentum(self) -> None:
        torch._foreach_zero_(self.buffers)

    def momentum_buffer(self, name: str, i: int) -> torch.Tensor:
        """Run i's momentum buffer of lone parameter `name`."""
        j, slicer = self._momentum_views[name]
        return slicer(self.buffers[j])[i]

    @torch.no_grad()
    def load_momentum(self, name: str, i: int, value: torch.Tensor) -> None:
        self.momentum_buffer(name, i).copy_(value)


class PackedLoader:
    """K runs' training (or test) batches at once: x (N, 3K, H, W) with run k's images in
    channels 3k..3k+2, y (N, K). Run k sees exactly the batches of the lone
    `DeviceLoader(splits[k], seed=seeds[k], ...)`: its own order and augmentation. Runs that
    share a split share one copy of its images on the device."""

    def __init__(self, splits: Sequence[qdata.Split], batch_size: int, *, seeds: Sequence[int], train: bool,
                 device="cpu", **loader_kw):
        if len(splits) != len(seeds) or not splits:
            raise ValueError(f"PackedLoader needs one seed per split, got {len(splits)} splits and {len(seeds)} seeds")
        if len({len(s) for s in splits}) != 1:
            raise ValueError(f"packed runs need splits of one size, got {sorted({len(s) for s in splits})}")
        moved: dict[int, qdata.Split] = {}
        for s in splits:
            if id(s.images) not in moved:
                moved[id(s.images)] = s.to(device)
        self.loaders = [qdata.DeviceLoader(moved[id(s.images)], batch_size, train=train, device=device, seed=seed,
                                           **loader_kw) for s, seed in zip(splits, seeds)]
        self.k, self.first = len(splits), self.loaders[0]
        unique = list(moved.values())
        index = {key: j for j, key in enumerate(moved)}  # by the id of the caller's images
        first = self.first
        self.images = unique[0].images if len(unique) == 1 else torch.cat([u.images for u in unique])
        self.labels = torch.stack([l.labels for l in self.loaders])  # (K, n)
        self.offsets = torch.tensor([index[id(s.images)] * first.n for s in splits],
                                    device=first.device).view(-1, 1)

    def __len__(self) -> int:
        return len(self.first)

    def epoch(self, e: int):
        draws = [l.draw(e) for l in self.loaders]
        order = torch.stack([d[0] for d in draws])  # (K, n)
        aug = None
        if draws[0][1] is not None:
            aug = torch.stack([d[1][0] for d in draws]), torch.stack([d[1][1] for d in draws])
        return self._batches(order, aug)

    def _batches(self, order, aug):
        first, k, b = self.first, self.k, self.first.batch_size
        rows = torch.arange(k, device=first.device).view(-1, 1)
        for i in range(len(self)):
            s = slice(i * b, min((i + 1) * b, first.n))
            idx = order[:, s]  # (K, B)
            u8 = self.images[(idx + self.offsets).flatten()]
            if aug is not None:
                u8 = first._crop_flip(u8, aug[0][:, s].reshape(-1, 2), aug[1][:, s].flatten())
            n = idx.shape[1]
            x = first.normalise(u8).view(k, n, *u8.shape[1:]).transpose(0, 1).reshape(n, -1, *u8.shape[2:])
            if first.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x.to(first.dtype), self.labels[rows, idx].t()


def pack_key(config) -> tuple:
    """Runs whose configs share this key can be packed: the same network, batches, schedule and
    runtime. They may differ in seed, initialisation, ReLinear rates and penalties."""
    varying = {"seed", "init", "init_from", "gamma_g", "gamma_b", "alpha_g", "alpha_b", "beta_g", "beta_b",
               "lr", "checkpoint_every", "out_dir"}
    return tuple((f, getattr(config, f)) for f in Config.__dataclass_fields__ if f not in varying)


def packed_channels_last(config, device: torch.device) -> bool:
    """Memory format of a packed network: with "auto", NCHW on GPUs, where cuDNN's grouped
    convolutions measured faster in it (results/bench/*-packing.json), channels-last on CPUs."""
    if config.channels_last != "auto":
        return config.channels_last == "on"
    return device.type != "cuda"


class PackedTrainer(Trainer):
    """The lone `Trainer`'s step (bf16 autocast, torch.compile, one CUDA graph per step) on a
    packed network; per-run loss and correct counts accumulate on the device, shape (K,)."""

    def __init__(self, configs, model: PackedResNet, device: torch.device, steps_per_epoch: int):
        self.configs = list(configs)
        if len(self.configs) != model.k:
            raise ValueError(f"{model.k} packed runs but {len(self.configs)} configs")
        if len({pack_key(c) for c in self.configs}) != 1:
            raise ValueError("these configs cannot share a pack (see qnets.packed.pack_key)")
        self.metric_shape = (model.k,)
        super().__init__(self.configs[0], model, device, steps_per_epoch)
        dtype = next(model.parameters()).dtype
        coef = {name: torch.tensor([getattr(c, name) for c in self.configs], device=device, dtype=dtype)
                for name in ("alpha_g", "alpha_b", "beta_g", "beta_b")}
        self.penalty_coef = {k: v for k, v in coef.items() if bool((v != 0).any())}
        self.has_penalty = bool(self.penalty_coef)

    def _layout(self) -> bool:
        return packed_channels_last(self.config, self.device)

    def _make_optimizer(self):
        lrs = []
        for c in self.configs:
            lrs.append({"main": c.lr, "g": c.lr if c.gamma_g is None else c.gamma_g,
                        "b": c.lr if c.gamma_b is None else c.gamma_b})
        c = self.config
        opt = PackedSGD(self.model, lrs, c.momentum, c.weight_decay, c.nesterov)
        # the lone optimiser's groups: main, then g and b where the network has such terms
        present = {role for _, role, _, _ in self.model.parameter_slices()}
        groups = ["main"] + [g for g in ("g", "b") if g in present]
        self.base_lrs = [[r[g] for g in groups] for r in lrs]
        return opt

    def _zero_momentum(self):
        self.opt.zero_momentum()

    def set_lr(self, step: int) -> list[list[float]]:
        factor = lr_factor(self.config, step, self.steps_per_epoch)
        self.opt.set_factor(factor)
        return [[rate * factor for rate in rates] for rates in self.base_lrs]

    def penalty(self) -> torch.Tensor:
        """Σ_k α_g[k]‖w_g[k]‖² + α_b[k]‖w_b[k]‖² + β_g[k]‖w_g[k]‖₁ + β_b[k]‖w_b[k]‖₁ (relinear.penalty per run)."""
        total = torch.zeros((), device=self.device)
        for m in self.model.modules():
            if not isinstance(m, PackedQuadraticConv2d):
                continue
            views = {"b": _blocks(m.k)(m.weight_b)}  # (K, *lone shape)
            if not m.compact:
                views["g"] = _blocks(m.k, 2, 1)(m.weight_rg)
            for role, w in views.items():
                dims = tuple(range(1, w.dim()))
                if f"alpha_{role}" in self.penalty_coef:
                    total = total + (self.penalty_coef[f"alpha_{role}"] * w.square().sum(dims)).sum()
                if f"beta_{role}" in self.penalty_coef:
                    total = total + (self.penalty_coef[f"beta_{role}"] * w.abs().sum(dims)).sum()
        return total

    def _step(self, x, y):
        with self.autocast():
            out = self.net(x)  # (N, K, classes)
            losses = F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(0)  # (K,)
        total = losses.sum()
        if self.has_penalty:
            total = total + self.penalty()
        total.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)  # as the lone step: gradients written, not added to zeros
        self.loss_sum += losses.detach().float() * y.shape[0]
        self.correct += (out.detach().argmax(2) == y).sum(0)


# ----------------------------------------------------------------------------- fit


class Pack:
    """K runs in progress as one packed network: each run's history, time and checkpoint epoch,
    and the steps `fit_packed` takes (resume, one epoch, checkpoint, finish)."""

    def __init__(self, configs: list, force: bool):
        if len({pack_key(c) for c in configs}) != 1:
            raise ValueError("fit_packed: these configs differ in more than seed, initialisation and ReLinear "
                             "settings (see qnets.packed.pack_key); train them in separate packs")
        for c in configs:
            prepare(c, force)
        self.configs, self.k, config = configs, len(configs), configs[0]
        self.device = resolve_device(config.device)
        ckpts = [read_checkpoint(c) for c in configs]
        starts = {0 if ck is None else ck["epoch"] + 1 for ck in ckpts}
        if len(starts) != 1:
            raise ValueError(f"fit_packed: runs resume from different epochs {sorted(starts)}; pack them separately")
        self.start = starts.pop()
        self.datasets = load_datasets(configs)
        models = [build_model(c) for c in configs]
        for m, ck in zip(models, ckpts):
            if ck is not None:
                m.load_state_dict(ck["model"])
        kw = dict(normalize=config.normalize, channels_last=packed_channels_last(config, self.device))
        seeds = [c.seed for c in configs]
        self.train_loader = PackedLoader([d.train for d in self.datasets], config.batch_size, seeds=seeds, train=True,
                                         device=self.device, augment=config.augment, drop_last=True, **kw)
        self.test_loader = PackedLoader([d.test for d in self.datasets], 1000, seeds=seeds, train=False,
                                        device=self.device, **kw)
        self.packed = PackedResNet.from_models(models)
        self.trainer = PackedTrainer(configs, self.packed, self.device, len(self.train_loader))
        self._resume_momentum(models, ckpts)
        now = timestamp()
        self.histories = [[] if ck is None else ck["history"] for ck in ckpts]
        self.elapsed = [0.0 if ck is None else ck["elapsed"] for ck in ckpts]
        self.started = [now if ck is None else ck["started"] for ck in ckpts]
        self.saved = [self.start - 1] * self.k
        self.live, self.results = list(range(self.k)), [None] * self.k

    def _resume_momentum(self, models, ckpts) -> None:
        for j, (c, m, ck) in enumerate(zip(self.configs, models, ckpts)):
            if ck is None:
                continue
            lone_opt = optimizer_for(c, m)
            lone_opt.load_state_dict(ck["optimizer"])
            for name, p in m.named_parameters():
                buf = lone_opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    self.trainer.opt.load_momentum(name, j, buf)

    def finish(self, j: int, status: str, reason: str | None) -> None:
        pack = {"k": self.k, "runs": [run_name(c) for c in self.configs]}
        self.results[j] = write_result(self.configs[j], status, reason, self.histories[j], self.packed.lone_model(j),
                                       self.elapsed[j], self.started[j], self.device, self.trainer, self.datasets[j],
                                       pack=pack)
        self.live.remove(j)

    def checkpoint(self, j: int, epoch: int, model=None) -> None:
        """Run j's lone checkpoint (weights, its slice of the momentum), from which a lone or a
        packed run can resume."""
        c, model = self.configs[j], model or self.packed.lone_model(j)
        lone_opt = optimizer_for(c, model)
        for name, p in model.named_parameters():
            lone_opt.state[p]["momentum_buffer"] = self.trainer.opt.momentum_buffer(name, j).detach().cpu().clone()
        write_checkpoint(c, epoch, model.state_dict(), lone_opt.state_dict(), self.histories[j], self.elapsed[j],
                         self.started[j], self.device.type == "cuda")
        self.saved[j] = epoch

    def stop(self, epoch: int) -> list:
        """Out of time before `epoch`: every live run checkpointed and reported partial."""
        for j in list(self.live):
            if self.saved[j] != epoch - 1:
                self.checkpoint(j, epoch - 1)
            self.results[j] = partial(self.configs[j], self.histories[j])
        return self.results

    def epoch(self, epoch: int, bar) -> float:
        """Train and (when due) score one epoch of every run; collapsed runs are written and leave
        the live set; checkpoints when due. Returns the epoch's seconds."""
        trainer, config = self.trainer, self.configs[0]
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        seen, rates = trainer.train_epoch(self.train_loader, epoch, on_step=bar.update)
        train_loss = [v / seen for v in trainer.loss_sum.tolist()]
        train_acc = [v / seen for v in trainer.correct.tolist()]
        train_time = time.perf_counter() - t0
        test = trainer.evaluate(self.test_loader) if evaluates(config, epoch) else None
        epoch_time = time.perf_counter() - t0
        for j in list(self.live):
            self.elapsed[j] += epoch_time
            model = self.packed.lone_model(j)
            self.histories[j].append(history_entry(epoch, train_loss[j], train_acc[j],
                                                   test and {key: v[j] for key, v in test.items()},
                                                   rates[j], epoch_time, train_time, seen, model))
            reason = collapse_reason(self.histories[j])
            if reason:
                self.finish(j, "collapsed", reason)
            elif (epoch + 1) % self.configs[j].checkpoint_every == 0 or epoch + 1 == self.configs[j].epochs:
                self.checkpoint(j, epoch, model)
        show_epoch(bar, epoch, config.epochs, live=len(self.live),
                   acc=f"{max((train_acc[j] for j in self.live), default=0):.3f}")
        return epoch_time


def fit_packed(configs: Sequence, verbose: bool = True, force: bool = False, deadline: float | None = None,
               labels: Sequence[str] | None = None) -> list[dict]:
    """Train K configs that share `pack_key` and start epoch as one packed network; returns their
    results in order. Each run reads and writes its own lone checkpoint and result file (same name
    and schema as `fit`, with "pack" added); a run that collapses is written and dropped from the
    reporting while its slice of the pack idles on. Stored results are not consulted: pass only
    runs to train (`force` also discards their checkpoints). With a `deadline`, as in `fit`: the
    pack stops between epochs, every live run is checkpointed and returns `partial`. `labels` name
    the runs on the progress bar."""
    pack = Pack(list(configs), force)
    config, measured = pack.configs[0], []
    what = ", ".join(labels) if labels else f"resnet{config.depth}-{config.neuron}"
    bar = progress(config, verbose, pack.start, len(pack.train_loader), f"pack of {pack.k}: {what}")
    pack.packed.train()
    try:
        for epoch in range(pack.start, config.epochs):
            if not pack.live:
                break
            if out_of_time(deadline, measured):
                return pack.stop(epoch)
            measured.append({"epoch_time": pack.epoch(epoch, bar)})
    finally:
        bar.close()
    for j in list(pack.live):
        pack.finish(j, "completed", None)
    return pack.results
