"""`python -m qnets bench`: training throughput of the reference and the fast path.

Reference: built like the authors' scripts — a torchvision-style dataset with PIL transforms
read by a DataLoader with 4 workers, three separate convolutions per quadratic layer, float32,
eager, and a host synchronisation every step (`loss.item()`). Fast: `qnets.train`'s loop — data
and augmentation on the device, fused r/g convolution, and on GPUs channels-last, bf16
autocast, torch.compile and a CUDA graph per step. Both train the same network at the same
batch size; the table reports images/s, ms per step, seconds per epoch (390 steps of 128 plus
one test evaluation), peak memory and FLOP utilisation.
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import data as qdata
from . import relinear
from .models import resnet
from .train import Config, Trainer, fit, make_loaders
from .utils import atomic_json, parse_bool, timestamp, tune_cpu_allocator, versions

# Dense bf16 tensor-core rate from the vendors' data sheets (FLOP/s), by device-name fragment.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depths", default="20,56", help="comma-separated depths (default: 20,56)")
    p.add_argument("--neurons", default="conventional,quadratic,compact", help="neuron kinds to time")
    p.add_argument("--paths", default="reference,fast",
                   help="comma-separated: reference, fast, and nocompile (the fast path without torch.compile)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default: 100 GPU, 4 CPU)")
    p.add_argument("--rounds", type=int, default=None,
                   help="timed rounds; with more than one the paths take turns and each reports its median "
                        "round (default: 1 GPU, 5 CPU, whose speed drifts)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 20 GPU, 2 CPU)")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers of the reference path (default: 4)")
    p.add_argument("--data", default="auto", help="auto (CIFAR-10 if available, else synthetic), cifar10, synthetic")
    p.add_argument("--out", default="results/bench", help="folder of the JSON report (default: results/bench)")
    p.add_argument("--profile", action="store_true",
                   help="also profile a few fast-path steps per network: where the step's time goes, by operator "
                        "or GPU kernel and by kind (convolution, batch norm, ...); stored with the fast row")
    p.add_argument("--profile-steps", type=int, default=5, help="steps profiled with --profile (default: 5)")
    p.add_argument("--pack", default=None, metavar="K,K,...",
                   help="packing mode: aggregate throughput of K runs trained at once, for each K (e.g. 1,2,4,8,16)")
    p.add_argument("--mechanisms", default="streams",
                   help="packing mechanism to time: streams (K trainers on K CUDA streams)")
    p.add_argument("--pack-compile", default="off,on", help="packing: torch.compile settings to time (default: off,on)")
    p.add_argument("--pack-lone", type=parse_bool, default=True, metavar="on|off",
                   help="packing: time the lone fast path first as the baseline (default: on)")
    p.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"),
                   help="packing: memory format of the packed runs (default: auto, as Config)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="packing: precision of the packed runs (default: auto, as Config)")
    p.add_argument("--budget", type=float, default=None,
                   help="packing: start no new measurement after this many seconds")
    p.add_argument("--check", action="store_true", help="also train both paths briefly and compare test accuracy")
    p.add_argument("--check-epochs", type=int, default=3, help="epochs of the --check runs (default: 3)")
    p.add_argument("--check-train", type=int, default=5000, help="training images of the --check runs")


def _load(kind: str) -> qdata.CIFAR10:
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


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reference_steps(model, opt, loader, device, n, sched=None):
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
        _sync(self.device)
        t0 = time.perf_counter()
        _reference_steps(self.model, self.opt, self.loader, self.device, n)
        _sync(self.device)
        return time.perf_counter() - t0

    def evaluate(self):
        test = reference_loader(self.dataset.test, 1000 if self.device.type == "cuda" else 250,
                                self.args.workers, False)
        self.model.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            for x, y in test:
                self.model(x.to(self.device)).argmax(1).eq(y.to(self.device)).sum().item()
            _sync(self.device)
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
        _sync(self.device)
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
        _sync(self.device)
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


def flops_per_image(depth: int, neuron: str) -> float:
    """Training FLOPs per image (forward + backward) from PyTorch's FLOP counter (convolutions
    and matrix products; element-wise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    model = resnet(depth, neuron)
    x = torch.randn(2, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(2, dtype=torch.long)).backward()
    return counter.get_total_flops() / 2


def _device_name(device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _settings(args, gpu: bool) -> tuple[int, int, int]:
    """Timed steps, rounds and warm-up steps: the flags, else per-device defaults; checked."""
    steps = args.steps if args.steps is not None else (100 if gpu else 4)
    rounds = args.rounds if args.rounds is not None else (1 if gpu else 5)
    warmup = args.warmup if args.warmup is not None else (20 if gpu else 2)
    for name, value, least in (("--steps", steps, 1), ("--rounds", rounds, 1), ("--warmup", warmup, 0),
                               ("--batch-size", args.batch_size, 1), ("--workers", args.workers, 0),
                               ("--profile-steps", args.profile_steps, 1)):
        if value < least:
            raise ValueError(f"{name} must be at least {least}, got {value}")
    if args.data not in ("auto", "cifar10", "synthetic"):
        raise ValueError(f"--data must be auto, cifar10 or synthetic, got {args.data!r}")
    return steps, rounds, warmup


def _selection(args) -> tuple[list[str], list[int], list[str]]:
    """The paths, depths and neurons asked for, checked up front."""
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]  # empty: only --check
    bad = set(paths) - set(TIMERS)
    if bad:
        raise ValueError(f"--paths: unknown {sorted(bad)}; choose from {sorted(TIMERS)}")
    depths = [int(d) for d in args.depths.split(",")]
    neurons = [n.strip() for n in args.neurons.split(",")]
    for d in depths:
        resnet(d, neurons[0])  # validates depth and neuron names
    return paths, depths, neurons


def _rows(args, selection, dataset, device, settings, peak) -> list[dict]:
    """Measure every (depth, neuron) on every path; rows printed as they come."""
    (paths, depths, neurons), (steps, rounds, warmup) = selection, settings
    rows, steps_per_epoch = [], qdata.CIFAR10_TRAIN_IMAGES // args.batch_size
    for depth in depths:
        for neuron in neurons:
            flops = flops_per_image(depth, neuron)
            measured = measure(depth, neuron, paths, dataset, device, args, warmup, steps, rounds,
                               args.profile_steps if args.profile else 0)
            for path in paths:
                row = {"depth": depth, "neuron": neuron, "path": path, "batch_size": args.batch_size,
                       "steps": steps, "rounds": rounds, "flops_per_image": flops} | measured[path]
                if "error" not in row:
                    ips = 1000 * args.batch_size / row["ms_per_step"]
                    row.update(images_per_s=ips, s_per_epoch=steps_per_epoch * row["ms_per_step"] / 1000 + row["eval_s"],
                               bf16_utilisation=ips * flops / peak if peak else None)
                if "profile" in row:
                    print(format_profile(f"resnet{depth}-{neuron}", row["profile"]), flush=True)
                rows.append(row)
                print(_text_row(row), flush=True)  # speed-ups come in the table at the end
    return rows


def _merged_report(path: Path, rows: list[dict], name: str, peak, source: str) -> dict:
    """The report of this device: an earlier one's rows, replaced where measured again, with each
    row's speed-up against the reference row of the same network."""
    old = json.loads(path.read_text()) if path.exists() else {}
    key = lambda r: (r["depth"], r["neuron"], r["path"], r["batch_size"])
    merged = {key(r): r for r in old.get("rows", []) + rows}
    for r in merged.values():
        ref = merged.get((r["depth"], r["neuron"], "reference", r["batch_size"]), {})
        r["speedup"] = (r["images_per_s"] / ref["images_per_s"]
                        if r["path"] != "reference" and "images_per_s" in r and "images_per_s" in ref else None)
    return old | {"device": name, "peak_bf16_flops": peak, "versions": versions(), "data": source,
                  "time": timestamp(), "rows": list(merged.values())}


def main(args) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    torch.backends.cudnn.benchmark = True  # both paths pick their fastest convolution algorithms
    settings, selection = _settings(args, gpu), _selection(args)
    # Process-wide, so the reference path gets it too: the speed-up is not the allocator's.
    allocator = None if gpu else tune_cpu_allocator()
    dataset = full = _load(args.data)
    if not gpu:  # evaluation time is measured on 1,000 test images on a CPU and scaled to 10,000
        dataset = qdata.CIFAR10(dataset.train, qdata.subset(dataset.test, min(1000, len(dataset.test))),
                                dataset.source)
    name = _device_name(device)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    if args.pack:
        from . import packbench
        return packbench.main(args, dataset, device, name, peak)
    steps, rounds, warmup = settings
    print(f"device: {name}; batch {args.batch_size}; {warmup} warm-up steps, then "
          + (f"{steps} timed steps" if rounds == 1 else f"{rounds} interleaved rounds of {steps} timed steps")
          + f"; data: {dataset.source}")
    print(_HEADER)
    rows = _rows(args, selection, dataset, device, settings, peak)
    slug = "".join(c if c.isalnum() else "-" for c in (name.split(" (")[0] if gpu else "cpu")).strip("-").lower()
    path = Path(args.out) / f"{slug}.json"
    report = _merged_report(path, rows, name, peak, dataset.source)
    if allocator:
        report["cpu_allocator"] = allocator
    if args.check:
        report["check"] = accuracy_check(full, device, args)
    atomic_json(report, path)
    print(format_report(report))
    print(f"written to {path}")
    return 0


# Measured columns: (Markdown header, plain-text header).
COLUMNS = (("images/s", "img/s"), ("ms/step", "ms/step"), ("s/epoch", "s/epoch"), ("peak GPU MiB", "peak MiB"),
           ("× reference", "x ref"), ("GFLOP/image", "GFLOP/img"), ("% of bf16 peak", "% bf16 peak"))
_PATH_ORDER = {"reference": 0, "nocompile": 1, "fast": 2}


def _cells(r: dict) -> list[str]:
    """The measured values of one row as strings ("-" where a value does not apply)."""
    if "error" in r:
        return [f"failed: {r['error'][:80]}"]
    util, speedup, mib = r.get("bf16_utilisation"), r.get("speedup"), r.get("peak_mib")
    return [f"{r['images_per_s']:,.0f}", f"{r['ms_per_step']:.2f}", f"{r['s_per_epoch']:.2f}",
            "-" if mib is None else f"{mib:,.0f}", "-" if speedup is None else f"{speedup:.1f}",
            f"{r['flops_per_image'] / 1e9:.3f}", "-" if util is None else f"{100 * util:.2f}"]


def _line(network: str, path: str, cells: list[str]) -> str:
    """One plain-text table line."""
    return f"{network:24s} {path:9s} " + " ".join(f"{c:>{max(len(h), 8)}s}" for c, (_, h) in zip(cells, COLUMNS))


def _text_row(r: dict) -> str:
    return _line(f"resnet{r['depth']}-{r['neuron']}", r["path"], _cells(r))


_HEADER = _line("network", "path", [h for _, h in COLUMNS])


def _sorted(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["depth"], r["neuron"], _PATH_ORDER.get(r["path"], 3)))


def format_report(report: dict) -> str:
    """The report as a plain-text table (every network and path measured so far on this device)."""
    lines = [f"{report['device']}:", _HEADER] + [_text_row(r) for r in _sorted(report["rows"])]
    if report.get("check"):
        c = report["check"]
        lines.append(f"accuracy check ({c['epochs']} epochs, {c['n_train']} images): fast {c['fast']:.4f}, "
                     f"reference {c['reference']:.4f} ({'agree' if c['agree'] else 'DISAGREE'} within noise)")
    return "\n".join(lines)


def render_tables(path: str | Path = "results/bench/README.md") -> bool:
    """Regenerate every table of `path` between `<!-- bench NAME.json -->` and `<!-- /bench -->`
    from the stored report beside it (`markdown`). Returns whether the file changed."""
    from .utils import fill_blocks
    path = Path(path)
    text = path.read_text()
    new = fill_blocks(text, "bench", lambda name: markdown(json.loads((path.parent / name).read_text())))
    if new != text:
        path.write_text(new)
    return new != text


def markdown(report: dict) -> str:
    """The report as a Markdown table (for the README; a test keeps the two equal)."""
    if report.get("kind") == "packing":
        from .packbench import markdown as packing_markdown
        return packing_markdown(report)
    if report.get("kind") == "precision":
        from .precision import markdown as precision_markdown
        return precision_markdown(report)
    lines = [f"{report['device']}, PyTorch {report['versions']['torch']}:", "",
             "| network | path | " + " | ".join(h for h, _ in COLUMNS) + " |", "|---|---|" + "---:|" * len(COLUMNS)]
    lines += [f"| ResNet-{r['depth']} {r['neuron']} | {r['path']} | " + " | ".join(_cells(r)) + " |"
              for r in _sorted(report["rows"]) if "error" not in r]
    return "\n".join(lines)


def accuracy_check(dataset, device, args) -> dict:
    """Train a quadratic ResNet (the first of --depths; 20 by default) with ReLinear on the same
    subset and seed through both paths for a few epochs; their test accuracies should agree within
    run-to-run noise."""
    depth = int(args.depths.split(",")[0])
    n_test = min(2000, len(dataset.test))
    data = qdata.take(dataset, min(args.check_train, len(dataset.train)), n_test, seed=0)
    out = {"epochs": args.check_epochs, "n_train": len(data.train), "n_test": len(data.test),
           "batch_size": args.batch_size}
    # fast: the real training loop
    with tempfile.TemporaryDirectory() as tmp:
        kind = "synthetic" if dataset.source.startswith("synthetic") else "cifar10"
        cfg = Config(depth=depth, neuron="quadratic", epochs=args.check_epochs, n_train=len(data.train), n_test=n_test,
                     batch_size=args.batch_size, dataset=kind, schedule="cosine", out_dir=tmp)
        out["fast"] = fit(cfg, verbose=False)["final_test_acc"]
    # reference: the authors' loop
    torch.manual_seed(0)
    model = resnet(depth, "quadratic", fuse_rg=False).to(device)
    opt = relinear.optimizer(model, 0.1, 1e-5, 1e-5)
    loader = reference_loader(data.train, args.batch_size, args.workers, True)
    total = args.check_epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    model.train()
    _reference_steps(model, opt, loader, device, total, sched)
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in reference_loader(data.test, 500, args.workers, False):
            correct += model(x.to(device)).argmax(1).eq(y.to(device)).sum().item()
    out["reference"] = correct / len(data.test)
    # binomial standard error of the difference of two accuracies on n test images
    p = (out["fast"] + out["reference"]) / 2
    out["noise"] = 2 * (2 * p * (1 - p) / len(data.test)) ** 0.5
    out["agree"] = abs(out["fast"] - out["reference"]) <= out["noise"] + 0.03
    print(f"accuracy check ({out['epochs']} epochs, {out['n_train']} images): fast {out['fast']:.4f}, "
          f"reference {out['reference']:.4f}, |diff| {'<=' if out['agree'] else '>'} noise + 3 points")
    return out
