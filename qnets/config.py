"""A run's configuration: every experiment is a `Config`, named by a hash of the fields that change
its outcome (`run_name`), and its learning-rate schedule (`lr_factor`)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field


from . import data as qdata
from . import relinear
from .layers import DESIGNS, INITS as LAYER_INITS
from .models import NEURONS, SHORTCUTS, valid_depth

__all__ = ["Config", "config_hash", "run_name", "name_key", "lr_factor", "parent", "SAME_RECIPE"]

SCHEDULES = ("step", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "bf16-split")
DEVICES = ("auto", "cpu", "cuda")
RUN_INITS = LAYER_INITS + ("conventional",)  # a layer initialisation, or a trained conventional network
SAME_RECIPE = "same-recipe"  # init_from: the conventional run of the same recipe and seed (`parent`), trained first
DATASETS = ("cifar10", "synthetic")



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
    init_from: str = _f("", f"for init=conventional: {SAME_RECIPE} (the conventional run of this recipe and seed, "
                            "whose weights it leaves in <out_dir>/weights/), or a .pt of a conventional network "
                            "of the same depth")
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
        need(self.init == "naive" or self.neuron == "conventional" or DESIGNS[self.neuron]["start"], "init",
             f"'naive' for neuron {self.neuron!r}, which cannot start as the conventional network "
             "(qnets.layers.DESIGNS)")
        need((self.init == "conventional") == bool(self.init_from), "init_from",
             f"given exactly when init='conventional' ({SAME_RECIPE!r} or a .pt file)")
        need(self.init_from in ("", SAME_RECIPE) or self.init_from.endswith(".pt"), "init_from",
             f"{SAME_RECIPE!r} or the path of a .pt file")
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


def parent(config: Config) -> Config | None:
    """The run whose trained weights `config` starts from when its init_from is SAME_RECIPE: the same
    recipe, data and seed with conventional neurons and no ReLinear settings (None otherwise)."""
    if config.init_from != SAME_RECIPE:
        return None
    return config.replace(neuron="conventional", init="relinear", init_from="", gamma_g=None, gamma_b=None,
                          alpha_g=0.0, alpha_b=0.0, beta_g=0.0, beta_b=0.0)


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
