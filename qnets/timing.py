"""Timing one training step, the measuring half of `python -m qnets bench`.

Two paths train the same network at the same batch size: the reference, built like the authors'
scripts (a torchvision-style dataset with PIL transforms read by a DataLoader with 4 workers,
three separate convolutions per quadratic layer, float32, eager, a host synchronisation every
step), and the fast path, `qnets.train`'s Trainer (data and augmentation on the device, fused r/g
convolution, channels-last, torch.compile, and on GPUs bf16 autocast and a CUDA graph per step).
`measure` times them in interleaved rounds; `profile_fast` says where a fast step's time goes;
`flops_per_image` counts a network's work.
"""
from __future__ import annotations

import functools
import gc
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from . import data as qdata
from . import relinear
from .models import flops_per_image, resnet
from .train import Config, Trainer, make_loaders, sync

__all__ = ["TIMERS", "load", "measure", "profile_fast", "format_profile", "flops_per_image", "reference_loader",
           "reference_steps", "device_name", "device_slug"]


def load(kind: str) -> qdata.CIFAR10:
    if kind in ("auto", "cifar10"):
        try:
            return qdata.load_cifar10()
        except qdata.DataError:
            if kind == "cifar10":
                raise
    return qdata.synthetic_cifar10(5000, 1000)


class _PILDataset(torch.utils.data.Dataset):
    """Like torchvision's CIFAR10: one PIL image per item through the transform pipeline."""

    def __init__(self, split: qdata.Split, transform):
        self.images = split.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = split.labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def reference_loader(split: qdata.Split, batch_size: int, workers: int, train: bool, seed: int = 0):
    import torchvision.transforms as T
    mean, std = qdata.MEAN_STD["cifar10"]
    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    transform = T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])
    return torch.utils.data.DataLoader(
        _PILDataset(split, transform), batch_size=batch_size, shuffle=train, num_workers=workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0, drop_last=train,
        generator=torch.Generator().manual_seed(seed))


def reference_steps(model, opt, loader, device, n, sched=None):
    """n authors'-style training steps (data from the loader, .item() every step; the loader
    starts again, reshuffled, when it runs out), stepping `sched` after each when given."""
    done, it = 0, iter(loader)
    while done < n:
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item(), out.argmax(1).eq(y).sum().item()
        if sched is not None:
            sched.step()
        done += 1


class _Timed:
    """One path of one network, built and ready: `train(n)` times n steps, `evaluate()` one pass
    over the test set. Keeping several alive lets the bench interleave their timing."""

    info: dict | None = None

    def train(self, n: int) -> float:
        raise NotImplementedError

    def evaluate(self) -> tuple[float, int]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Reference(_Timed):
    def __init__(self, depth, neuron, dataset, device, args):
        torch.manual_seed(0)
        self.device, self.dataset, self.args = device, dataset, args
        self.model = resnet(depth, neuron, fuse_rg=False).to(device)  # the authors' separate r and g convolutions
        self.opt = relinear.optimizer(self.model, 0.1, 1e-5, 1e-5)
        self.loader = reference_loader(dataset.train, args.batch_size, args.workers, True)

    def train(self, n):
        sync(self.device)
        t0 = time.perf_counter()
        reference_steps(self.model, self.opt, self.loader, self.device, n)
        sync(self.device)
        return time.perf_counter() - t0

    def evaluate(self):
        test = reference_loader(self.dataset.test, 1000 if self.device.type == "cuda" else 250,
                                self.args.workers, False)
        self.model.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            for x, y in test:
                self.model(x.to(self.device)).argmax(1).eq(y.to(self.device)).sum().item()
            sync(self.device)
            seconds = time.perf_counter() - t0
        self.model.train()
        return seconds, len(self.dataset.test)

    def close(self):
        self.loader = None  # ends the persistent workers


def _graphs_compiled() -> int:
    """Graphs torch.compile has produced in this process so far."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


class _Fast(_Timed):
    def __init__(self, depth, neuron, dataset, device, args, compile="auto"):
        config = Config(depth=depth, neuron=neuron, batch_size=args.batch_size, device=device.type, compile=compile)
        self.device = device
        self.loader, self.test = make_loaders(config, dataset, device)
        self.trainer = Trainer(config, resnet(depth, neuron), device, len(self.loader))
        self.batches, self.n_test, self.compiled_eval = self.loader.epoch(0), len(dataset.test), False
        self.graphs_before = _graphs_compiled()

    @property
    def info(self):  # read after the run: a failed graph capture falls back and says so
        return self.trainer.fast_path() | {  # 0 graphs with compile on: it fell back to eager
            "graphs_compiled": _graphs_compiled() - self.graphs_before}

    def train(self, n):
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(n):
            try:
                x, y = next(self.batches)
            except StopIteration:
                self.batches = self.loader.epoch(1)
                x, y = next(self.batches)
            self.trainer.set_lr(0)
            self.trainer.train_step(x, y)
        self.trainer.loss_sum.item()  # the one synchronisation per epoch the loop makes
        sync(self.device)
        return time.perf_counter() - t0

    def evaluate(self):
        if not self.compiled_eval:  # compile the evaluation graph outside the timing
            self.trainer.evaluate(self.test)
            self.compiled_eval = True
        t0 = time.perf_counter()
        self.trainer.evaluate(self.test)
        return time.perf_counter() - t0, self.n_test


# nocompile: the fast path without torch.compile. (A path "plainproduct" in results/bench/cpu.json
# measured the quadratic product without its former custom backward, which was then removed.)
TIMERS = {"reference": _Reference, "fast": _Fast, "nocompile": functools.partial(_Fast, compile="off")}


class _Measurement:
    """The rows of one network's paths as they are built, timed and finished (see `measure`)."""

    def __init__(self, depth, neuron, dataset, device, args, steps, profile_steps):
        self.net = (depth, neuron, dataset, device, args)
        self.gpu, self.steps, self.profile_steps = device.type == "cuda", steps, profile_steps
        self.live, self.rows = {}, {}

    def build(self, path):
        """The path's timer, warmed up, with its own peak memory: what it allocated beyond what was
        already resident (the previous path's model, graphs and data are freed first)."""
        if self.gpu:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if self.gpu else 0
        timed = TIMERS[path](*self.net[:4], self.net[4])
        timed.train(self.warmup)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if self.gpu else None
        self.rows[path] = {"peak_mib": peak, "round_s": []}
        return timed

    def finish(self, path, timed):
        row = self.rows[path]
        if self.profile_steps and path != "reference":
            try:  # a failed profile must not lose the timing
                row["profile"] = profile_fast(timed, self.net[3], self.profile_steps)
            except Exception as e:
                row["profile"] = {"error": f"{type(e).__name__}: {e}"}
        eval_s, n_test = timed.evaluate()
        timed.close()
        row.update(ms_per_step=1000 * statistics.median(row["round_s"]) / self.steps, eval_s=eval_s * 10000 / n_test)
        if timed.info is not None:
            row["fast_path"] = timed.info

    def attempt(self, path, action, *a) -> None:
        """Run one step for `path`; a failure is its row's error, and the other paths go on."""
        try:
            action(path, *a)
        except Exception as e:
            self.rows[path] = {"error": f"{type(e).__name__}: {e}"}
            self.live.pop(path, None)

    def time_round(self, path):
        self.rows[path]["round_s"].append(self.live[path].train(self.steps))


def measure(depth, neuron, paths, dataset, device, args, warmup, steps, rounds, profile_steps=0) -> dict:
    """Time each path of one network over `rounds` rounds of `steps` steps; returns {path: fields}
    ({"error": ...} for a path that failed).

    With one round each path is built, timed and freed in turn. With several the paths take turns
    (reference, fast, reference, fast, ...), so that a machine whose speed drifts, such as a shared
    or throttled CPU, slows every path alike; a path's time per step is then its median round.
    With `profile_steps`, each fast path is then profiled as it stands (see `profile_fast`).
    """
    m = _Measurement(depth, neuron, dataset, device, args, steps, profile_steps)
    m.warmup = warmup

    def start(path):
        m.live[path] = m.build(path)
        if rounds == 1:  # one path at a time: timed and freed before the next is built
            m.time_round(path)
            m.finish(path, m.live.pop(path))

    for path in paths:
        m.attempt(path, start)
    for _ in range(rounds if rounds > 1 else 0):
        for path in list(m.live):
            m.attempt(path, m.time_round)
    for path in list(m.live):
        m.attempt(path, lambda p: m.finish(p, m.live[p]))
    return m.rows


# Kinds of work, recognised by (lower-cased) operator or kernel name; the first match wins.
KINDS = (("batch norm", ("batch_norm", "bn_fw", "bn_bw", "batchnorm")),
         ("optimizer", ("sgd", "foreach", "multi_tensor", "optimizer")),
         ("convolution", ("conv", "xmma", "fprop", "dgrad", "wgrad", "implicit_gemm", "cudnn", "winograd")),
         ("matrix product", ("gemm", "addmm", "aten::mm", "cutlass")),
         ("compiled element-wise", ("triton",)),
         ("memory copy", ("memcpy", "memset", "copy_", "aten::cat", "fill_")))


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), "other element-wise and rest")


def profile_fast(timed: _Timed, device, steps: int, top: int = 12) -> dict:
    """Profile `steps` training steps of a built, warmed-up path: self time per operator on a
    CPU, or per kernel on a GPU, also summed into kinds of work (KINDS). Times are per step."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    gpu = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])) as prof:
        wall = timed.train(steps)
    where = DeviceType.CUDA if gpu else DeviceType.CPU

    def self_us(e):  # the device-time attribute was renamed across PyTorch versions
        if gpu:
            return getattr(e, "self_device_time_total", 0) or getattr(e, "device_time_total", 0)
        return e.self_cpu_time_total

    events = [e for e in prof.key_averages() if e.device_type == where and self_us(e) > 0]
    total = sum(self_us(e) for e in events) or 1.0
    kinds: dict[str, float] = {}
    for e in events:
        kinds[kind_of(e.key)] = kinds.get(kind_of(e.key), 0.0) + self_us(e)
    ms = lambda us: us / 1000 / steps
    return {"steps": steps, "wall_ms_per_step": 1000 * wall / steps, "busy_ms_per_step": ms(total),
            "measured": "GPU kernels" if gpu else "CPU operators",
            "kinds": {k: {"ms_per_step": ms(v), "share": v / total} for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top": [{"name": e.key[:120], "kind": kind_of(e.key), "calls_per_step": e.count / steps,
                     "ms_per_step": ms(self_us(e)), "share": self_us(e) / total}
                    for e in sorted(events, key=self_us, reverse=True)[:top]]}


def format_profile(network: str, prof: dict) -> str:
    if "error" in prof:
        return f"{network}: profile failed: {prof['error']}"
    lines = [f"{network}: fast path, {prof['steps']} profiled steps, {prof['wall_ms_per_step']:.2f} ms per step "
             f"wall, {prof['busy_ms_per_step']:.2f} ms of {prof['measured']}:"]
    lines += [f"  {k:30s} {v['ms_per_step']:9.3f} ms {100 * v['share']:5.1f}%" for k, v in prof["kinds"].items()]
    lines.append("  top:")
    lines += [f"  {t['ms_per_step']:9.3f} ms {100 * t['share']:5.1f}% {t['calls_per_step']:6.1f}x  {t['name'][:90]}"
              for t in prof["top"]]
    return "\n".join(lines)


def device_slug(name: str) -> str:
    """A device name (`device_name`) as a file name: "NVIDIA H200" -> "nvidia-h200", a CPU -> "cpu"."""
    return "".join(c if c.isalnum() else "-" for c in name.split(" (")[0]).strip("-").lower()


def device_name(device) -> str:
    """The card's name, or the CPU's kind and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


