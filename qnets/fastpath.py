"""The fast path of one training step: the `Trainer` holds a run's model and optimiser and runs its
step on the device's best path (channels-last, torch.compile where it pays, and on GPUs bf16
autocast with bf16-split quadratic layers and one CUDA graph per step), with a `Tally` of the test
set kept on the device."""
from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn.functional as F

from . import relinear
from .config import Config, lr_factor
from .layers import quadratic_modules
from .utils import tune_cpu_allocator

__all__ = ["Trainer", "Tally", "capabilities", "precision_for", "describe_runtime", "resolve_device",
           "optimizer_for", "channels_last_for", "CPU_COMPILE_MIN_STEPS"]

WARMUP_STEPS = 3  # before capturing a CUDA graph: optimiser state, compilation, cuDNN autotuning


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
    bf16-split: plain bf16 rounds ReLinear's small quadratic terms away (results/bench/precision-*.json).
    The other quadratic designs (layers.DESIGNS) have no split of their own: fp32."""
    if config.precision != "auto":
        if config.precision == "bf16-split" and config.neuron not in ("conventional", "quadratic", "compact"):
            raise ValueError(f"precision bf16-split exists for the quadratic and compact neurons only, not "
                             f"{config.neuron!r}; use fp32 or bf16")
        return config.precision
    if not caps["bf16"]:
        return "fp32"
    return {"conventional": "bf16", "quadratic": "bf16-split", "compact": "bf16-split"}.get(config.neuron, "fp32")


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

    def zero_metrics(self) -> None:
        """Start a new epoch's running loss and correct count, kept on the device."""
        self.loss_sum.zero_()
        self.correct.zero_()

    def read_metrics(self, seen: int) -> tuple[float, float]:
        """Mean training loss and accuracy over the `seen` examples since `zero_metrics`: the
        epoch's one device synchronisation."""
        return self.loss_sum.item() / seen, self.correct.item() / seen

    def train_step(self, x, y):
        """One training step on the fast path: the loss and correct count accumulate on the device
        (`read_metrics` once an epoch)."""
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
            self.zero_metrics()  # (a step that failed before the optimizer: nothing else to undo)
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
        self.zero_metrics()

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
