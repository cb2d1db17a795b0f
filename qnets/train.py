"""The one training loop: every experiment is a `Config` passed to `fit`.

`fit` trains a CIFAR ResNet with ReLinear, stores the result as JSON under
`<out_dir>/runs/` (named by a hash of the config) and returns it; a stored result is returned
instead of retraining. Checkpoints are written every `checkpoint_every` epochs, atomically, and
a run started again with the same config resumes from the last one. `fit` drives one `Lane`
(a run advanced a training step at a time) to its end; `qnets.streams` drives several side by
side.

The fast path (GPU): data and augmentation on the device, channels-last, bf16 autocast,
`torch.compile`, and one CUDA graph per training step covering forward, backward and the fused
SGD step; metrics are accumulated on the device and read once per epoch. On the CPU it falls
back to eager float32 with the same loop.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import data as qdata
from . import locks, relinear
from .layers import INITS as LAYER_INITS
from .layers import quadratic_modules
from .models import NEURONS, SHORTCUTS, resnet, valid_depth
from .utils import (DiskFull, atomic_json, atomic_save, is_finite, provenance, remove_orphans, timestamp,
                    tune_cpu_allocator, versions)

__all__ = ["Config", "fit", "result_path", "config_hash", "load_result", "STATUSES"]

STATUSES = ("completed", "collapsed", "stopped")  # stopped: by the old collapse rule (legacy_status)
SCHEDULES = ("step", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "bf16-split")
DEVICES = ("auto", "cpu", "cuda")
RUN_INITS = LAYER_INITS + ("conventional",)  # a layer initialisation, or a trained conventional network
DATASETS = ("cifar10", "synthetic")


WARMUP_STEPS = 3  # before capturing a CUDA graph: optimiser state, compilation, cuDNN autotuning


def _f(default, help: str, named: bool = True):
    """A Config field. `named` fields change a run's outcome and enter its result's name;
    the others (runtime: device, speed switches, folders) never do."""
    return field(default=default, metadata={"help": help, "named": named})


# The fields every result name covered when names were introduced, in this form: frozen. A named
# field added to Config later enters a name only where its value differs from its default (the
# value that reproduces the behaviour before it existed), so adding one renames nothing. Never
# change the default of a named field: add a new field instead. `device` was once named; names
# keep its value then, "auto", so that a run's name does not depend on where it ran.
NAME_FIELDS_V1 = ("depth", "neuron", "rezero", "shortcut", "init", "init_from", "gamma_g", "gamma_b", "alpha_g",
                  "alpha_b", "beta_g", "beta_b", "lr", "momentum", "weight_decay", "nesterov", "batch_size", "epochs",
                  "schedule", "warmup_epochs", "dataset", "n_train", "n_test", "normalize", "augment", "device",
                  "seed", "eval_every", "precision")
NAME_PINNED = {"device": "auto"}


@dataclass(frozen=True)
class Config:
    """Everything a run depends on. Fields marked named=False change speed, place or bookkeeping
    only and are left out of the result's name, so a result computed on a GPU is found on a CPU."""
    # model
    depth: int = _f(20, "ResNet depth, 6n+2 (8, 14, 20, 32, 44, 56, 110)")
    neuron: str = _f("quadratic", f"neuron kind: {', '.join(NEURONS)}")
    rezero: bool = _f(False, "scale each residual branch by a learnable scalar initialised to 0")
    shortcut: str = _f("A", "shortcut: A (subsample + zero-pad) or B (1x1 conv + BN)")
    init: str = _f("relinear", "relinear (w_g=0, b_g=1, w_b=0, c=0), naive (g, b random), or "
                               "conventional (copy a trained conventional network: --init-from)")
    init_from: str = _f("", "checkpoint (.pt) of a conventional network of the same depth, for init=conventional")
    # ReLinear
    gamma_g: float | None = _f(1e-5, "learning rate of w_g, b_g (absolute; scheduled like lr); None = lr (no shrinking)")
    gamma_b: float | None = _f(1e-5, "learning rate of w_b, c (absolute; scheduled like lr); None = lr (no shrinking)")
    alpha_g: float = _f(0.0, "L2 weight shrinking: alpha_g * ||w_g||^2 added to the loss")
    alpha_b: float = _f(0.0, "L2 weight shrinking: alpha_b * ||w_b||^2 added to the loss")
    beta_g: float = _f(0.0, "L1 weight shrinking: beta_g * ||w_g||_1 added to the loss")
    beta_b: float = _f(0.0, "L1 weight shrinking: beta_b * ||w_b||_1 added to the loss")
    # optimisation
    lr: float = _f(0.1, "base learning rate (SGD)")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(1e-4, "weight decay on every parameter")
    nesterov: bool = _f(False, "Nesterov momentum")
    batch_size: int = _f(128, "training batch size")
    epochs: int = _f(200, "training epochs")
    schedule: str = _f("step", "step (x0.1 at 50% and 75% of the epochs, rounded: 100/150 of 200, 25/38 of 50), cosine, or constant")
    warmup_epochs: float = _f(0.0, "linear learning-rate warm-up, in epochs")
    # data
    dataset: str = _f("cifar10", "cifar10, or synthetic (generated, for tests and smoke runs)")
    n_train: int | None = _f(None, "stratified training subset size (None = all)")
    n_test: int | None = _f(None, "stratified test subset size (None = all)")
    normalize: str = _f("cifar10", "normalisation statistics: cifar10, or imagenet (as the authors' code)")
    augment: bool = _f(True, "random crop (4-pixel padding) and horizontal flip")
    # runtime
    device: str = _f("auto", "auto (cuda if available), cpu or cuda", named=False)
    seed: int = _f(0, "seed of initialisation, data order and augmentation")
    eval_every: int = _f(1, "evaluate on the test set every k epochs (and after the last)")
    precision: str = _f("auto", "auto (on GPUs with native bf16: bf16 autocast, with the quadratic layers' small "
                                "terms split off (bf16-split) where the network has them; fp32 elsewhere), fp32, "
                                "bf16 (plain autocast), or bf16-split")
    compile: str = _f("auto", "torch.compile the model: auto (on GPUs with native bf16, and on CPUs for runs of "
                              "at least 2,000 steps, where compiling pays back), on, off", named=False)
    cuda_graphs: str = _f("auto", "capture each training step in a CUDA graph: auto (on GPUs), on, off", named=False)
    channels_last: str = _f("auto", "channels-last memory format: auto (on GPUs and CPUs), on, off", named=False)
    checkpoint_every: int = _f(1, "write a checkpoint every k epochs", named=False)
    out_dir: str = _f("results", "results folder (runs/*.json; checkpoints/ is not committed)", named=False)
    data_root: str = _f("data", "CIFAR-10 folder (see qnets.data.load_cifar10)", named=False)

    def __post_init__(self):
        def need(ok, name, what):
            if not ok:
                raise ValueError(f"Config.{name} must be {what}, got {getattr(self, name)!r}")

        def number(name, low=0.0, optional=False):
            v = getattr(self, name)
            if optional and v is None:
                return
            need(relinear.valid_rate(v, low), name,
                 f"a number from {low} to {relinear.MAX_RATE:g}" + (" or None" if optional else ""))

        def integer(name, low, optional=False):
            v = getattr(self, name)
            if optional and v is None:
                return
            need(isinstance(v, int) and not isinstance(v, bool) and v >= low, name,
                 f"an integer >= {low}" + (" or None" if optional else ""))

        def choice(name, allowed):
            need(getattr(self, name) in allowed, name, f"one of {allowed}")

        need(valid_depth(self.depth), "depth", "6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...)")
        choice("neuron", NEURONS)
        choice("shortcut", SHORTCUTS)
        choice("init", RUN_INITS)
        need((self.init == "conventional") == bool(self.init_from), "init_from",
             "a checkpoint path exactly when init='conventional'")
        for name in ("gamma_g", "gamma_b"):
            number(name, optional=True)
        for name in ("alpha_g", "alpha_b", "beta_g", "beta_b", "momentum", "weight_decay", "warmup_epochs"):
            number(name)
        need(self.momentum < 1, "momentum", "below 1 (SGD's momentum is a fraction, e.g. 0.9)")
        number("lr")
        need(self.lr > 0, "lr", "> 0")
        integer("batch_size", 1)
        integer("epochs", 1)
        integer("eval_every", 1)
        integer("checkpoint_every", 1)
        integer("seed", 0)
        integer("n_train", 10, optional=True)
        integer("n_test", 10, optional=True)
        choice("schedule", SCHEDULES)
        choice("dataset", DATASETS)
        choice("normalize", tuple(qdata.MEAN_STD))
        choice("device", DEVICES)
        for name in ("out_dir", "data_root"):
            need(isinstance(getattr(self, name), str) and getattr(self, name).strip() != "", name, "a folder name")
        choice("precision", PRECISIONS)
        for name in ("compile", "cuda_graphs", "channels_last"):
            choice(name, ("auto", "on", "off"))
        for name in ("rezero", "nesterov", "augment"):
            need(isinstance(getattr(self, name), bool), name, "True or False")
        need(not (self.nesterov and self.momentum == 0), "nesterov", "False when momentum is 0")

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def name_key(config: "Config | dict") -> dict:
    """What a result's name covers, from a Config (or a subclass with more fields) or a stored
    config dict: the frozen fields of NAME_FIELDS_V1 (with NAME_PINNED's values) and any later
    named field that is not at its default."""
    if dataclasses.is_dataclass(config):
        values, fields = dataclasses.asdict(config), dataclasses.fields(config)
    else:
        values, fields = dict(config), dataclasses.fields(Config)
    key = {}
    for f in fields:
        if f.name in NAME_FIELDS_V1:
            key[f.name] = NAME_PINNED.get(f.name, values.get(f.name, f.default))
        elif f.metadata.get("named", True) and f.name in values and values[f.name] != f.default:
            key[f.name] = values[f.name]
    return key


def config_hash(config: "Config | dict") -> str:
    """Stable 12-hex-digit name of everything that changes a run's outcome (see name_key)."""
    return hashlib.sha256(json.dumps(name_key(config), sort_keys=True).encode()).hexdigest()[:12]


def run_name(config: Config) -> str:
    rz = "-rezero" if config.rezero else ""
    return f"resnet{config.depth}-{config.neuron}{rz}-{config_hash(config)}"


def result_path(config: Config) -> Path:
    return Path(config.out_dir) / "runs" / f"{run_name(config)}.json"


def checkpoint_path(config: Config) -> Path:
    return Path(config.out_dir) / "checkpoints" / f"{run_name(config)}.pt"


def lock_path(config: Config) -> Path:
    """The run's lock (`qnets.locks`): held by whichever process trains it (not committed)."""
    return Path(config.out_dir) / "cluster" / "locks" / f"{run_name(config)}.lock"


class StoreError(ValueError):
    """A stored result or checkpoint cannot be used; the message names the file and what to do."""


def _fraction(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1)


def read_result(path: str | Path) -> dict:
    """Read and check a stored result. Raises StoreError naming the file and the field at fault."""
    path = Path(path)
    fix = "delete it, or train it again with --force"
    try:
        text = path.read_text()
    except OSError as e:
        raise StoreError(f"{path}: cannot be read ({e.strerror}); {fix}") from None
    try:  # files written before results were strict JSON may hold NaN: read as null
        r = json.loads(text, parse_constant=lambda name: None)
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: not a valid result (broken JSON at line {e.lineno}: {e.msg}); {fix}") from None

    def bad(field, what):
        raise StoreError(f"{path}: field {field!r} {what}; {fix}")
    if not isinstance(r, dict):
        bad("(top level)", "is not an object")
    for key in ("name", "config", "status", "history", "final_test_acc", "epochs_run"):
        if key not in r:
            bad(key, "is missing")
    if r["name"] != path.stem:
        bad("name", f"is {r['name']!r}, not the file's name {path.stem!r}")
    if r["status"] not in STATUSES:
        bad("status", f"is {r['status']!r}, not one of {STATUSES}")
    if not isinstance(r["config"], dict) or config_hash(r["config"]) != path.stem.rsplit("-", 1)[-1]:
        bad("config", "does not match the file's name")
    if not isinstance(r["history"], list) or not all(isinstance(h, dict) and "epoch" in h for h in r["history"]):
        bad("history", "is not a list of epochs")
    if r["epochs_run"] != len(r["history"]):
        bad("epochs_run", f"is {r['epochs_run']!r} but the history holds {len(r['history'])} epochs")
    for key in ("final_test_acc", "best_test_acc"):
        if not _fraction(r.get(key)):
            bad(key, f"is {r.get(key)!r}, not an accuracy between 0 and 1")
    if (r["final_test_acc"] is None) != (r["status"] != "completed"):
        bad("final_test_acc", f"is {r['final_test_acc']!r} for a {r['status']} run")
    _check_against_itself(r, bad)
    return r


def _number(v, low: float = 0.0) -> bool:
    return is_finite(v) and v >= low


def _check_against_itself(r: dict, bad) -> None:
    """A result must agree with itself: the fields the store reads present and in range, its epochs
    numbered in order, its final and best accuracies those of its history's evaluations, its status
    what its history shows. (A digest of the content would prove nothing: whoever edits a file can
    recompute it.) Calls `bad(field, what)` on the first disagreement."""
    if not isinstance(r.get("device"), str) or not r["device"]:
        bad("device", "is missing or not a device name")
    if not _number(r.get("wall_time")):
        bad("wall_time", f"is {r.get('wall_time')!r}, not a number of seconds >= 0")
    if not (isinstance(r.get("params"), int) and not isinstance(r["params"], bool) and r["params"] > 0):
        bad("params", f"is {r.get('params')!r}, not a positive parameter count")
    epochs = r["config"].get("epochs")
    for i, h in enumerate(r["history"]):
        if h["epoch"] != i:
            bad("history", f"holds epoch {h['epoch']!r} at position {i}")
        for key in ("train_acc", "test_acc"):
            if not _fraction(h.get(key)):
                bad("history", f"epoch {i}: {key} is {h.get(key)!r}, not an accuracy between 0 and 1")
        if not (h.get("train_loss") is None or _number(h["train_loss"])):
            bad("history", f"epoch {i}: train_loss is {h.get('train_loss')!r}")
        if not _number(h.get("epoch_time")):
            bad("history", f"epoch {i}: epoch_time is {h.get('epoch_time')!r}, not a number of seconds >= 0")
    tested = [h["test_acc"] for h in r["history"] if h.get("test_acc") is not None]
    if r["status"] == "completed":
        if r["epochs_run"] != epochs:
            bad("epochs_run", f"is {r['epochs_run']!r} for a completed run of {epochs!r} epochs")
        if not tested or r["final_test_acc"] != tested[-1]:
            bad("final_test_acc", f"is {r['final_test_acc']!r} but the history's last evaluation is "
                                  f"{tested[-1] if tested else None!r}")
    if r.get("best_test_acc") is not None and (not tested or r["best_test_acc"] != max(tested)):
        bad("best_test_acc", f"is {r['best_test_acc']!r} but the history's best evaluation is "
                             f"{max(tested) if tested else None!r}")
    if r["status"] == "collapsed" and r.get("collapse_rule") == COLLAPSE_RULE and \
            (not r["history"] or collapse_reason(r["history"]) is None):
        bad("status", "is collapsed but the history shows no breakdown")
    if r["status"] == "completed" and r["history"] and collapse_reason(r["history"]) is not None:
        bad("status", f"is completed but the history shows a breakdown ({collapse_reason(r['history'])})")


def load_result(config: Config) -> dict | None:
    """The stored result of `config` (checked by read_result, labelled by legacy_status), or None.
    Needs no data."""
    path = result_path(config)
    return legacy_status(read_result(path)) if path.exists() else None


# ----------------------------------------------------------------------------- pieces

def lr_factor(config: Config, step: int, steps_per_epoch: int) -> float:
    """Multiplier of every group's base rate at optimiser step `step` (0-based)."""
    total = config.epochs * steps_per_epoch
    warm = config.warmup_epochs * steps_per_epoch
    if warm and step < warm:
        return (step + 1) / warm
    if config.schedule == "step":  # the authors' epochs 100 and 150 of 200, scaled
        epoch = step // steps_per_epoch
        return 0.1 ** sum(epoch >= round(config.epochs * m) for m in (0.5, 0.75))
    if config.schedule == "cosine":
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return 1.0


COMPILED_VARIANTS = 64  # per function: (network, train or eval, layout, batch shape) combinations


def make_room_to_compile() -> None:
    """Let dynamo keep up to COMPILED_VARIANTS compiled variants of a function (default 8).

    Models of one architecture share their compiled code (parameters are inputs of the compiled
    graph, not constants), so the second run of a network in a process, a pack's K trainers and
    a campaign window's later runs of a kind start without compiling. Past the limit dynamo would
    run a function eagerly without a word, so a process that trains or benches many networks
    keeps room for all of them instead."""
    import torch._dynamo.config as dynamo
    for name in ("recompile_limit", "cache_size_limit"):  # the newer name first; older releases
        if hasattr(dynamo, name):
            setattr(dynamo, name, max(getattr(dynamo, name), COMPILED_VARIANTS))
            return


def _switch(value: str, auto: bool) -> bool:
    """An on/off/auto config switch; `auto` is what "auto" means on this device."""
    return value == "on" or (value == "auto" and auto)


def channels_last_for(config: "Config", device: torch.device) -> bool:
    # Measured faster on both: tensor cores want it on GPUs; on CPUs oneDNN's convolutions and
    # their gradients run 10-15% faster for these networks than in NCHW.
    return _switch(config.channels_last, device.type in ("cuda", "cpu"))


NATIVE_BF16 = (8, 0)  # CUDA compute capability with bf16 tensor cores (A100, RTX 30xx, H100 and later)


CPU_COMPILE_MIN_STEPS = 2000  # compiling a ResNet's step takes 15-40 s on 2 cores: 100-200 steps' worth


def capabilities(device: torch.device) -> dict:
    """What the fast path switches on for `device` when precision and compile are "auto": bf16
    autocast only where the card computes bf16 natively (a T4, capability 7.5, would emulate it,
    slower than fp32; it trains in fp32), and torch.compile on the same cards, where it was measured
    to pay (H100, H200; not measured on older cards, so off there). CUDA graphs on any CUDA device.
    On a CPU, torch.compile fuses the element-wise work around the convolutions (1.1-1.2x a step,
    results/bench/README.md) for runs long enough to pay for compiling: "compile" is "long runs"."""
    if device.type != "cuda":
        return {"device": "CPU", "cuda": False, "bf16": False, "compile": "long runs", "cuda_graphs": False}
    capability = torch.cuda.get_device_capability(device)
    native = tuple(capability) >= NATIVE_BF16
    return {"device": torch.cuda.get_device_name(device), "capability": "%d.%d" % tuple(capability),
            "cuda": True, "bf16": native, "compile": native, "cuda_graphs": True}


def precision_for(config: "Config", caps: dict) -> str:
    """The precision a run trains in: fp32, bf16 (plain autocast) or bf16-split. "auto" gives bf16
    autocast only where the card computes bf16 natively, and for networks with quadratic layers
    bf16-split: plain bf16 rounds ReLinear's small quadratic terms away (results/bench/precision-*.json)."""
    if config.precision != "auto":
        return config.precision
    if not caps["bf16"]:
        return "fp32"
    return "bf16" if config.neuron == "conventional" else "bf16-split"


def describe_runtime(device: str = "auto") -> str:
    """One line for a notebook: the device training would use and what the fast path does there."""
    caps = capabilities(resolve_device(device))
    if not caps["cuda"]:
        return (f"runtime: CPU ({torch.get_num_threads()} threads), fp32, torch.compile for runs of "
                f"{CPU_COMPILE_MIN_STEPS:,}+ steps: fine for the smoke, quick and cpu presets, far too slow for "
                f"gpu-short and paper")
    return (f"runtime: {caps['device']} (CUDA capability {caps['capability']}): "
            f"{'bf16 autocast (quadratic layers: bf16-split)' if caps['bf16'] else 'fp32 (no native bf16)'}, "
            f"{'torch.compile' if caps['compile'] else 'no torch.compile'}, CUDA graphs")


def optimizer_for(config: Config, model: torch.nn.Module, **sgd_kw) -> torch.optim.SGD:
    """The lone run's SGD (relinear.optimizer with the config's rates), as its checkpoints store it."""
    return relinear.optimizer(model, config.lr, config.gamma_g, config.gamma_b, config.momentum,
                              config.weight_decay, config.nesterov, **sgd_kw)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("Config.device is 'cuda' but no CUDA device is available; use device='auto' or 'cpu'")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def load_data(config: Config, read: dict | None = None) -> "qdata.CIFAR10":
    """The dataset of `config`. `read` (data_root -> the full CIFAR-10) keeps what was read, so
    that several runs read each source once."""
    if config.dataset == "synthetic":
        return qdata.synthetic_cifar10(config.n_train or 2000, config.n_test or 500, seed=config.seed)
    read = {} if read is None else read
    if config.data_root not in read:
        read[config.data_root] = qdata.load_cifar10(config.data_root)
    return qdata.take(read[config.data_root], config.n_train, config.n_test, seed=config.seed)


def load_datasets(configs, read: dict | None = None) -> list:
    """Each config's dataset, reading CIFAR-10 once for all of them (and for later calls given the
    same `read`, see `load_data`)."""
    read = {} if read is None else read
    return [load_data(c, read) for c in configs]


def build_model(config: Config) -> torch.nn.Module:
    torch.manual_seed(config.seed)
    model = resnet(config.depth, config.neuron, config.rezero, config.shortcut)
    if config.init == "naive":
        relinear.naive_init(model)
    elif config.init == "conventional":
        path = Path(config.init_from)
        if not path.exists():
            raise FileNotFoundError(f"Config.init_from: no checkpoint at {path} (train the conventional "
                                    "network first; its weights are in <out_dir>/checkpoints/)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            conv = resnet(config.depth, "conventional", config.rezero, config.shortcut)
            conv.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        except Exception as e:
            raise ValueError(f"Config.init_from: {path} is not the checkpoint of a conventional ResNet-{config.depth}"
                             f"{' with ReZero' if config.rezero else ''} ({type(e).__name__}); give the .pt that a "
                             "conventional run of the same depth left in <out_dir>/checkpoints/") from None
        relinear.from_conventional(model, conv)
    return model


def make_loaders(config: Config, dataset: "qdata.CIFAR10", device: torch.device):
    """The training loader (shuffled, augmented, full batches only: a CUDA graph needs one shape)
    and the test loader (batches of 1,000) of `config` on `device`."""
    if config.batch_size > len(dataset.train):
        raise ValueError(f"Config.batch_size ({config.batch_size}) is larger than the training set "
                         f"({len(dataset.train)} images)")
    channels_last = channels_last_for(config, device)
    train = qdata.DeviceLoader(dataset.train, config.batch_size, train=True, device=device, seed=config.seed,
                               normalize=config.normalize, augment=config.augment, drop_last=True,
                               channels_last=channels_last)
    test = qdata.DeviceLoader(dataset.test, 1000, train=False, device=device, normalize=config.normalize,
                              channels_last=channels_last)
    return train, test


class Trainer:
    """Holds the model, optimiser and the compiled/graphed step for one run."""

    def __init__(self, config: Config, model: torch.nn.Module, device: torch.device, steps_per_epoch: int):
        self.config, self.device, self.steps_per_epoch = config, device, steps_per_epoch
        cuda = device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True  # pick the fastest convolution algorithms once
        caps = capabilities(device)
        self.precision = precision_for(config, caps)
        self.bf16 = self.precision != "fp32"  # autocast on
        if self.precision == "bf16-split":
            for _, m in quadratic_modules(model):
                m.split_small_terms = True
        if cuda and config.neuron != "conventional" and self.precision in ("fp32", "bf16-split"):
            # Quadratic layers' float32 convolutions must be float32: TF32 (cuDNN's default) keeps
            # only 7% of the quadratic contribution's accuracy at ||w_g||/||w_r|| = 1e-3.
            torch.backends.cudnn.allow_tf32 = False
        self.channels_last = channels_last_for(config, device)
        self.model = model.to(device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
        self.use_graphs = _switch(config.cuda_graphs, cuda) and cuda
        long_run = steps_per_epoch * config.epochs >= CPU_COMPILE_MIN_STEPS
        self.compiled = _switch(config.compile, caps["compile"] is True or (caps["compile"] == "long runs" and long_run))
        if self.compiled:
            make_room_to_compile()
        self.net = torch.compile(self.model, dynamic=False) if self.compiled else self.model  # what the steps call
        self.opt = self._make_optimizer()
        self.penalty_kw = {k: getattr(config, k) for k in ("alpha_g", "alpha_b", "beta_g", "beta_b")}
        self.has_penalty = any(self.penalty_kw.values())
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.graph, self._factor, self._compiled_ok = None, None, False
        self.notes: list[str] = []
        if device.type == "cpu":
            self.notes.append(f"CPU allocator: {tune_cpu_allocator()}")

    def _make_optimizer(self):
        opt = optimizer_for(self.config, self.model, **({"fused": True} if self.device.type == "cuda" else {}))
        self.base_lrs = [g["lr"] for g in opt.param_groups]
        self.rates_on_device(opt)
        return opt

    def rates_on_device(self, opt) -> None:
        """A CUDA graph reads the learning rates from device memory, so with graphs they are tensors
        (also after `load_state_dict`, which restores plain floats)."""
        if self.use_graphs:
            for g in opt.param_groups:
                g["lr"] = torch.tensor(float(g["lr"]), device=self.device)

    def fast_path(self) -> dict:
        """What the run actually used (a failed graph capture falls back to eager and says so)."""
        return {"precision": self.precision, "compile": self.compiled, "cuda_graphs": self.use_graphs,
                "channels_last": self.channels_last, "notes": self.notes}

    def _zero_momentum(self):
        for s in self.opt.state.values():
            if s.get("momentum_buffer") is not None:
                s["momentum_buffer"].zero_()

    def autocast(self):
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def set_lr(self, step: int) -> list[float]:
        factor = lr_factor(self.config, step, self.steps_per_epoch)
        rates = [base * factor for base in self.base_lrs]
        if factor == self._factor:  # unchanged: no kernel launches
            return rates
        self._factor = factor
        for g, rate in zip(self.opt.param_groups, rates):
            if torch.is_tensor(g["lr"]):
                g["lr"].fill_(rate)
            else:
                g["lr"] = rate
        return rates

    def _step(self, x, y):
        """Forward, backward and SGD step; accumulates loss and correct counts on the device."""
        with self.autocast():
            out = self.net(x)
            loss = F.cross_entropy(out, y)
        total = loss + relinear.penalty(self.model, **self.penalty_kw) if self.has_penalty else loss
        total.backward()
        self.opt.step()
        # Gradients to None, never zeroed: each backward then writes its gradients instead of
        # adding them to zeros (one add kernel per parameter, about 6% of a graphed GPU step).
        # A captured step keeps them in the graph's own memory, where each replay rewrites them.
        self.opt.zero_grad(set_to_none=True)
        self.loss_sum += loss.detach().float() * y.shape[0]
        self.correct += (out.detach().argmax(1) == y).sum()

    def train_epoch(self, loader, epoch: int, on_step=None) -> tuple[int, list]:
        """Every training step of `epoch`. Returns the images each run saw and the rates of the
        epoch's first step; losses and correct counts accumulate in loss_sum and correct on the
        device, to be read once afterwards. `on_step(images)` is called after each step (host
        side only: a progress bar)."""
        return drain(self.train_steps(loader, epoch, on_step))

    def train_steps(self, loader, epoch: int, on_step=None):
        """`train_epoch` one step at a time: a generator that yields after each step and returns
        what `train_epoch` returns (so several runs can take turns, see `qnets.streams`)."""
        self.loss_sum.zero_()
        self.correct.zero_()
        seen, rates = 0, None
        for i, (x, y) in enumerate(loader.epoch(epoch)):
            now = self.set_lr(epoch * len(loader) + i)
            rates = rates or now
            self.train_step(x, y)
            seen += y.shape[0]
            if on_step is not None:
                on_step(y.shape[0])
            yield
        return seen, rates

    def train_step(self, x, y):
        if not self.use_graphs:
            if self.compiled and not self._compiled_ok:
                return self._first_compiled_step(x, y)
            return self._step(x, y)
        if self.graph is None:
            self._capture(x, y)
        if x.shape != self.static_x.shape:  # a last partial batch runs eagerly
            return self._step(x, y)
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()

    def _first_compiled_step(self, x, y):
        """The first step of a compiled run without CUDA graphs: where compiling fails (no C++
        compiler, an unsupported operator), the step is undone and the run trains eagerly."""
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        try:
            self._step(x, y)
        except Exception as e:
            with torch.no_grad():
                self.model.load_state_dict(state)
            self.opt.zero_grad(set_to_none=True)
            self.loss_sum.zero_()  # (a step that failed before the optimizer: nothing else to undo)
            self.correct.zero_()
            self._eager_fallback(e)
            self._step(x, y)
        self._compiled_ok = True

    def _eager_fallback(self, e: Exception) -> None:
        warnings.warn(f"compiling or capturing the training step failed; training eagerly: {e}")
        self.notes.append(f"compile/graph capture failed, eager fallback: {type(e).__name__}: {str(e)[:500]}")
        self.use_graphs, self.graph, self.compiled, self.net = False, None, False, self.model

    def _capture(self, x, y):
        """Warm up on a side stream (optimiser state, compilation), then capture one step.
        The warm-up steps are real training steps on the first batch, undone afterwards."""
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.static_x, self.static_y = x.clone(), y.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(stream):
                for _ in range(WARMUP_STEPS):
                    self._step(self.static_x, self.static_y)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step(self.static_x, self.static_y)
            self.graph = graph
        except Exception as e:  # fall back to eager, uncompiled steps rather than lose the run
            self._eager_fallback(e)
            torch.cuda.synchronize()
        # Undo the warm-up: weights, BN statistics and momentum back to where they were.
        with torch.no_grad():
            self.model.load_state_dict(state)
            self._zero_momentum()
        self.loss_sum.zero_()
        self.correct.zero_()

    @torch.no_grad()
    def evaluate(self, loader) -> dict:
        """One pass over `loader` in evaluation mode (see Tally)."""
        self.model.eval()
        tally = Tally(self.device)
        # On a CPU, compiling the evaluation graph (15-30 s) costs more than it saves on a few passes.
        net = self.net if self.device.type == "cuda" else self.model
        for x, y in loader.epoch(0):
            with self.autocast():
                out = net(x)
            tally.add(out.float(), y)
        self.model.train()
        return tally.result()


class Tally:
    """Test-set sums kept on the device. An image whose logits are not all finite (a deep quadratic
    network in evaluation mode can overflow on a few images) counts as wrong and is left out of the
    loss; how many there were and the largest finite |logit| are recorded."""

    def __init__(self, device):
        self.loss = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.nonfinite = torch.zeros((), device=device, dtype=torch.long)
        self.max_logit = torch.zeros((), device=device)
        self.n = 0

    def add(self, out: torch.Tensor, y: torch.Tensor) -> None:
        """out: (N, classes) logits, y: (N,) labels."""
        finite = torch.isfinite(out).all(-1)
        per_image = F.cross_entropy(out, y, reduction="none")
        self.loss += torch.where(finite, per_image, 0).sum()
        self.correct += ((out.argmax(-1) == y) & finite).sum()
        self.nonfinite += (~finite).sum()
        self.max_logit = torch.maximum(self.max_logit, torch.where(torch.isfinite(out), out.abs(), 0).amax())
        self.n += y.shape[0]

    def result(self) -> dict:
        """test_loss (mean over finite images; None if none was), test_acc, test_nonfinite and
        test_max_logit."""
        loss, correct, bad, big = (t.item() for t in (self.loss, self.correct, self.nonfinite, self.max_logit))
        return {"test_loss": loss / (self.n - bad) if bad < self.n else None, "test_acc": correct / self.n,
                "test_nonfinite": bad, "test_max_logit": big}


# ----------------------------------------------------------------------------- fit

# Collapse means that training broke down, judged on the training set alone: the training loss of
# an epoch is not finite, or training accuracy, having once risen more than COLLAPSE_RISEN above
# chance, falls back to within COLLAPSE_FALLEN of it. What the test set does (a deep quadratic
# network in evaluation mode can overflow on a few images) never stops a run: it is recorded.
COLLAPSE_RISEN = 0.10
COLLAPSE_FALLEN = 0.02
COLLAPSE_RULE = 2  # recorded in results; results without it were stopped by rule 1 (see legacy_status)


def collapse_reason(history: list[dict]) -> str | None:
    """Why training has broken down by the end of `history`, or None (COLLAPSE_* above)."""
    last = history[-1]
    if not is_finite(last["train_loss"]):
        return f"non-finite training loss in epoch {last['epoch']}"
    chance = 1 / len(qdata.CIFAR10_CLASSES)
    accs = [h["train_acc"] for h in history if is_finite(h["train_acc"])]
    if accs and max(accs) > chance + COLLAPSE_RISEN and last["train_acc"] < chance + COLLAPSE_FALLEN:
        return f"training accuracy fell back to chance ({last['train_acc']:.3f}) in epoch {last['epoch']}"
    return None


def legacy_status(result: dict) -> dict:
    """A result made before COLLAPSE_RULE 2, as the rule it was made under deserves: rule 1 also
    stopped a run when its *test* loss was not finite. Where the training history shows no
    breakdown, the run did not collapse: it is relabelled "stopped" (not finished, no final
    accuracy), with the reason. Results of rule 2 are returned as they are."""
    if result.get("collapse_rule") == COLLAPSE_RULE or result.get("status") != "collapsed":
        return result
    history = result["history"]
    if history and collapse_reason(history) is None:
        last = history[-1]
        return result | {"status": "stopped", "collapse_reason": None, "stop_reason": (
            f"stopped by the old rule in epoch {last['epoch']}: the test loss was not finite while training "
            f"was healthy (in that epoch: training loss {last['train_loss']:.3f}, training accuracy "
            f"{last['train_acc']:.3f}, test accuracy {last['test_acc']:.3f}); to be re-run")}
    return result


def evaluates(config: Config, epoch: int) -> bool:
    """Whether the test set is scored after `epoch` (0-based): every eval_every epochs and after the last."""
    return (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs


def progress(config: Config, verbose: bool, start_epoch: int, steps_per_epoch: int, label: str | None = None):
    """A progress bar counted in training images (so it moves within an epoch and shows images per
    second), labelled by the run's label (else its name). It is advanced from the host once per step
    (`Trainer.train_epoch`'s `on_step`) and never reads a device value, so it adds no GPU sync."""
    from tqdm.auto import tqdm
    per_epoch = steps_per_epoch * config.batch_size
    return tqdm(total=config.epochs * per_epoch, initial=start_epoch * per_epoch, disable=not verbose,
                unit="img", unit_scale=True, leave=True, desc=label or run_name(config), dynamic_ncols=True,
                mininterval=0.5,  # a redraw at most twice a second: logs of non-interactive runs stay short
                postfix=f"epoch {start_epoch}/{config.epochs}")


def show_epoch(bar, epoch: int, epochs: int, **values) -> None:
    """After an epoch: the bar's epoch counter and the epoch's numbers."""
    bar.set_postfix_str(f"epoch {epoch + 1}/{epochs} " + " ".join(f"{k} {v}" for k, v in values.items()), refresh=True)


CHECKPOINT_KEYS = ("config", "epoch", "model", "optimizer", "history", "elapsed", "started", "rng")


MAX_CHECKPOINT_BYTES = 1 << 30  # far above any CIFAR ResNet's (ResNet-110 quadratic: about 40 MiB)


def load_checkpoint_file(path: str | Path) -> dict:
    """A checkpoint read as untrusted data: tensors and plain containers only (`weights_only=True`,
    so no code in the file runs), then checked: the fields `fit` reads, of the types it reads them
    as. Raises StoreError naming the file."""
    path = Path(path)

    def bad(what):
        raise StoreError(f"{path}: not a usable qnets checkpoint ({what}); delete it, and the run starts from epoch 0")
    try:
        if path.stat().st_size > MAX_CHECKPOINT_BYTES:
            bad(f"{path.stat().st_size / 2**20:.0f} MiB, over {MAX_CHECKPOINT_BYTES / 2**20:.0f} MiB")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except StoreError:
        raise
    except Exception as e:
        bad(f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
    if not isinstance(ckpt, dict):
        bad("not a dictionary")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        bad(f"missing {missing}")
    if not isinstance(ckpt["config"], dict):
        bad("config is not a dictionary")
    epoch, history = ckpt["epoch"], ckpt["history"]
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0):
        bad(f"epoch is {epoch!r}")
    if not (isinstance(history, list) and len(history) == epoch + 1
            and all(isinstance(h, dict) and h.get("epoch") == i for i, h in enumerate(history))):
        bad(f"its history does not hold epochs 0 to {epoch}")
    if not (isinstance(ckpt["model"], dict) and all(torch.is_tensor(v) for v in ckpt["model"].values())):
        bad("model is not a state dict of tensors")
    if not (isinstance(ckpt["optimizer"], dict) and {"state", "param_groups"} <= set(ckpt["optimizer"])):
        bad("optimizer is not an optimizer state dict")
    if not (isinstance(ckpt["rng"], dict) and torch.is_tensor(ckpt["rng"].get("cpu"))
            and ckpt["rng"]["cpu"].dtype == torch.uint8):
        bad("rng holds no CPU generator state")
    if not is_finite(ckpt["elapsed"]) or ckpt["elapsed"] < 0:
        bad(f"elapsed is {ckpt['elapsed']!r}")
    return ckpt


def read_checkpoint(config: Config, fingerprint: str | None = None) -> dict | None:
    """The checkpoint of `config`, or None. A checkpoint counts when it was written for the same
    name (runtime fields such as device, compile or checkpoint_every may differ) and, given a data
    `fingerprint`, for the same data (the one it records, or else that of the run's stored result).
    One that cannot be read, or belongs to another config or other data, is moved aside (kept) with
    a warning: the run restarts."""
    path = checkpoint_path(config)
    if not path.exists():
        return None
    why = None
    try:
        ckpt = load_checkpoint_file(path)
    except StoreError as e:
        why, ckpt = f"it cannot be read ({str(e).split('(', 1)[-1].rsplit(')', 1)[0]})", None
    if ckpt is not None and config_hash(ckpt["config"]) != config_hash(config):
        why = "it was written for another config"
    if ckpt is not None and why is None and fingerprint is not None:
        trained_on = ckpt.get("data_fingerprint") or _stored_fingerprint(config)
        if trained_on is not None and trained_on != fingerprint:
            why = f"it was trained on other data (fingerprint {trained_on}, the data now: {fingerprint})"
    if why is None:
        return ckpt
    aside = path.with_name(f"{path.name}.unusable-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    warnings.warn(f"checkpoint {path}: {why}; moved to {aside.name}, and the run starts from epoch 0")
    return None


def _stored_fingerprint(config: Config) -> str | None:
    """The data fingerprint of the stored result of `config`, if there is a readable one."""
    try:
        stored = load_result(config)
    except StoreError:
        return None
    return stored.get("data_fingerprint") if stored else None


def checkpoint_epoch(path: str | Path) -> int | None:
    """The last epoch (0-based) in the checkpoint at `path`, or None where there is none usable.
    Only reads: unlike read_checkpoint, it moves nothing aside."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return load_checkpoint_file(path)["epoch"]
    except StoreError:
        return None


def write_checkpoint(config: Config, epoch: int, model_state: dict, optimizer_state: dict, history: list[dict],
                     elapsed: float, started: str, cuda: bool, fingerprint: str | None = None) -> None:
    atomic_save({"config": config.to_dict(), "epoch": epoch, "model": model_state, "optimizer": optimizer_state,
                 "history": history, "elapsed": elapsed, "started": started, "data_fingerprint": fingerprint,
                 "rng": {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None}},
                checkpoint_path(config))


NOT_EVALUATED = {"test_loss": None, "test_acc": None, "test_nonfinite": None, "test_max_logit": None}


def history_entry(epoch: int, train_loss: float, train_acc: float, test: dict | None, rates, epoch_time: float,
                  train_time: float, seen: int, model: torch.nn.Module) -> dict:
    """One epoch of a run's history (`test` from Trainer.evaluate, or None when not evaluated)."""
    return {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc} | (test or NOT_EVALUATED) | {
        "lr": rates, "epoch_time": epoch_time, "train_time": train_time, "images_per_s": seen / train_time,
        "quadratic": relinear.quadratic_stats(model).get("overall", {})}


def write_result(config: Config, status: str, reason: str | None, history: list[dict], model: torch.nn.Module,
                 elapsed: float, started: str, device: torch.device, trainer: "Trainer", dataset: "qdata.CIFAR10",
                 **extra) -> dict:
    """Assemble the result of a finished (or collapsed) run, store it and return it."""
    cuda = device.type == "cuda"
    tested = [h["test_acc"] for h in history if h["test_acc"] is not None]
    result = {
        "name": run_name(config), "hash": config_hash(config), "config": config.to_dict(), "status": status,
        "collapse_reason": reason, "collapse_rule": COLLAPSE_RULE, "history": history,
        "final_test_acc": tested[-1] if tested and status == "completed" else None,
        "best_test_acc": max(tested) if tested else None,
        "epochs_run": len(history), "params": sum(p.numel() for p in model.parameters()), "wall_time": elapsed,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "fast_path": trainer.fast_path(),
        "data": dataset.source, "data_fingerprint": qdata.fingerprint(dataset), "versions": versions(),
        "provenance": provenance(), "started": started,
        "finished": timestamp(),
        "quadratic_layers": relinear.quadratic_stats(model).get("layers", {}),
    } | extra
    atomic_json(result, result_path(config))
    return result


def prepare(config: Config, force: bool) -> None:
    """Before a run trains: its output folders must be writable (checked now, not after an epoch),
    temporary files a killed run left are removed, and with `force` its checkpoint goes."""
    for path in (result_path(config), checkpoint_path(config)):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path.parent):
                pass
        except OSError as e:
            raise ValueError(f"Config.out_dir: cannot write into {path.parent} ({e.strerror}); "
                             "choose a writable folder (--out-dir)") from None
        remove_orphans(path)
    if force:
        checkpoint_path(config).unlink(missing_ok=True)


def reusable(config: Config, dataset: "qdata.CIFAR10") -> dict | None:
    """The stored result of `config` if it was trained on exactly `dataset` (same fingerprint);
    otherwise None, with a warning where a stored result is set aside."""
    stored = load_result(config)
    if stored is None:
        return None
    now = qdata.fingerprint(dataset)
    if stored.get("data_fingerprint") == now:
        return stored
    was = stored.get("data_fingerprint") or "not recorded"
    warnings.warn(f"{result_path(config)} was trained on other data ({stored.get('data', '?')}, fingerprint {was}) "
                  f"than the data loaded now ({dataset.source}, fingerprint {now}); training it again")
    return None


def epoch_seconds(history: list[dict]) -> float | None:
    """A run's mean epoch time (test pass included) after its first epoch, which holds compilation."""
    times = [h["epoch_time"] for h in history[1:] if h.get("epoch_time")]
    return sum(times) / len(times) if times else None


def out_of_time(deadline: float | None, history: list[dict]) -> bool:
    """Whether another epoch, as long as the last one, would end after `deadline`
    (time.monotonic()); never before the first epoch of this process has a measured length."""
    return deadline is not None and bool(history) and time.monotonic() + history[-1]["epoch_time"] > deadline


def partial(config: Config, history: list[dict]) -> dict:
    """What fit returns for a run stopped by its deadline: no result is written; the checkpoint
    holds everything needed to go on."""
    return {"name": run_name(config), "status": "partial", "epochs_run": len(history), "epochs": config.epochs,
            "elapsed": sum(h["epoch_time"] for h in history)}


@dataclass
class Run:
    """One run in progress: what `fit` carries from epoch to epoch and writes into checkpoints."""
    config: Config
    trainer: Trainer
    history: list = field(default_factory=list)
    start: int = 0  # the first epoch to train (after a checkpoint's)
    elapsed: float = 0.0
    started: str = field(default_factory=timestamp)
    saved: int = -1  # the last epoch in a checkpoint
    fingerprint: str | None = None  # of the data the run trains on: recorded in its checkpoints

    def resume(self) -> "Run":
        """Load the run's checkpoint, if there is one for the same data: weights, momentum, RNG
        state and history."""
        ckpt = read_checkpoint(self.config, self.fingerprint)
        if ckpt is None:
            return self
        trainer, cuda = self.trainer, self.trainer.device.type == "cuda"
        trainer.model.load_state_dict(ckpt["model"])
        trainer.opt.load_state_dict(ckpt["optimizer"])
        trainer.rates_on_device(trainer.opt)
        torch.set_rng_state(ckpt["rng"]["cpu"])
        if cuda and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
        self.history, self.elapsed, self.started = ckpt["history"], ckpt["elapsed"], ckpt["started"]
        self.start, self.saved = ckpt["epoch"] + 1, ckpt["epoch"]
        return self

    def checkpoint(self, epoch: int) -> None:
        t = self.trainer
        write_checkpoint(self.config, epoch, t.model.state_dict(), t.opt.state_dict(), self.history, self.elapsed,
                         self.started, t.device.type == "cuda", self.fingerprint)
        self.saved = epoch

    def epoch_steps(self, epoch: int, train_loader, test_loader, bar):
        """Train one epoch, score the test set when due: a generator that yields after each
        training step and returns the epoch's history entry (also appended to the history)."""
        t, config = self.trainer, self.config
        sync(t.device)
        t0 = time.perf_counter()
        seen, rates = yield from t.train_steps(train_loader, epoch, on_step=bar.update)
        train_loss, train_acc = t.loss_sum.item() / seen, t.correct.item() / seen
        train_time = time.perf_counter() - t0
        test = t.evaluate(test_loader) if evaluates(config, epoch) else None
        epoch_time = time.perf_counter() - t0
        self.elapsed += epoch_time
        self.history.append(history_entry(epoch, train_loss, train_acc, test, rates, epoch_time, train_time, seen,
                                          t.model))
        show_epoch(bar, epoch, config.epochs, loss=f"{train_loss:.3f}", acc=f"{train_acc:.3f}",
                   test=f"{test['test_acc']:.3f}" if test else "-")
        return self.history[-1]


def drain(steps):
    """Run a generator to its end and return what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def sync(device: torch.device) -> None:
    """Wait for the work queued on the current CUDA stream (only this run's, when runs share the
    GPU on several streams); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.current_stream().synchronize()


class Lane:
    """One run, advanced a training step at a time: `fit` drives one lane to its end,
    `qnets.streams.fit_together` several side by side. Between epochs a lane checks its
    deadline, its collapse rule and its checkpoint schedule exactly as `fit` always has."""

    def __init__(self, config: Config, dataset: "qdata.CIFAR10", device: torch.device, deadline: float | None = None,
                 verbose: bool = True, label: str | None = None, force: bool = False, **extra):
        self.config, self.dataset, self.device, self.deadline, self.extra = config, dataset, device, deadline, extra
        # One process trains a run at a time: RunBusy where another live process holds its lock.
        self.lock, self.result = locks.hold(lock_path(config), run_name(config)), None
        try:
            # the result may have been written while the lock was held elsewhere: then this lane has ended
            self.stored, self.bar = (None if force else reusable(config, dataset)), None
            if self.stored is None:
                self._start(verbose, label)
        except BaseException:
            if self.lock is not None:
                self.lock.release()
            raise
        if self.stored is not None:
            self.result = self.stored
            self.close()

    def _start(self, verbose: bool, label: str | None) -> None:
        config, dataset, device = self.config, self.dataset, self.device
        model = build_model(config)  # before the loaders: the same random draws as every stored run
        self.train_loader, self.test_loader = make_loaders(config, dataset, device)
        self.run = Run(config, Trainer(config, model, device, len(self.train_loader)),
                       fingerprint=qdata.fingerprint(dataset)).resume()
        self.measured: list[dict] = []  # epochs timed in this process
        self.next_epoch, self.steps = self.run.start, None
        self.bar = progress(config, verbose, self.run.start, len(self.train_loader), label)
        self.run.trainer.model.train()

    def advance(self) -> bool:
        """One training step, or between epochs the bookkeeping; False once the run has ended
        (its result, or `partial` when its deadline stopped it, is then in `result`)."""
        if self.stored is not None:
            return False
        run, config = self.run, self.config
        if self.steps is None:
            if self.next_epoch >= config.epochs:
                return self._end("completed", None)
            if out_of_time(self.deadline, self.measured):
                if run.saved != self.next_epoch - 1:
                    run.checkpoint(self.next_epoch - 1)
                self.result = partial(config, run.history)
                return self._close()
            self.steps = run.epoch_steps(self.next_epoch, self.train_loader, self.test_loader, self.bar)
        try:
            next(self.steps)
            return True
        except StopIteration as end:
            self.measured.append(end.value)
        epoch, self.steps = self.next_epoch, None
        reason = collapse_reason(run.history)
        if reason:
            return self._end("collapsed", reason)
        if (epoch + 1) % config.checkpoint_every == 0 and epoch + 1 < config.epochs:
            run.checkpoint(epoch)
        self.next_epoch += 1
        return True

    def _end(self, status: str, reason: str | None) -> bool:
        r = self.run
        self.result = write_result(self.config, status, reason, r.history, r.trainer.model, r.elapsed, r.started,
                                   self.device, r.trainer, self.dataset, **self.extra)
        if status == "completed" and r.saved < self.config.epochs - 1:
            # after the result: the final weights (init_from of a later run) are worth less than the result
            try:
                r.checkpoint(self.config.epochs - 1)
            except DiskFull as e:
                warnings.warn(f"{run_name(self.config)}: result stored, final checkpoint not: {e.strerror}")
        return self._close()

    def _close(self) -> bool:
        self.close()
        return False

    def close(self) -> None:
        """Close the progress bar and release the run's lock (also when a lane stops early)."""
        if self.bar is not None:
            self.bar.close()
        if self.lock is not None:
            lock, self.lock = self.lock, None
            lock.release()


def fit(config: Config, force: bool = False, verbose: bool = True, deadline: float | None = None,
        label: str | None = None) -> dict:
    """Train `config` and return its result (see the module docstring); a stored result for the
    same config is returned without training unless `force`. Resumes from a checkpoint. With a
    `deadline` (time.monotonic()), no epoch starts that would end after it, judged by the last
    epoch's length: the run is then checkpointed and `partial` is returned instead of a result.
    `label` names the run on its progress bar."""
    if not isinstance(config, Config):
        raise TypeError(f"fit expects a qnets.train.Config, got {type(config).__name__}")
    prepare(config, force)
    device = resolve_device(config.device)
    dataset = load_data(config)
    lane = Lane(config, dataset, device, deadline, verbose, label, force)  # a stored result ends it at once
    try:
        while lane.advance():
            pass
    finally:
        lane.close()
    return lane.result
