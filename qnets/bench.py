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
import json
import math
import tempfile
from pathlib import Path

import torch

from . import data as qdata
from . import packbench, relinear
from .models import resnet
from .precision import markdown as precision_markdown
from .timing import (TIMERS, device_name, device_slug, flops_per_image, format_profile, load, measure, reference_loader,
                     reference_steps)
from .train import Config, fit
from .utils import atomic_json, fill_blocks, parse_bool, timestamp, tune_cpu_allocator, versions

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
    p.add_argument("--check-test", type=int, default=2000, help="test images the --check runs are scored on")


def _settings(args, gpu: bool) -> tuple[int, int, int]:
    """Timed steps, rounds and warm-up steps: the flags, else per-device defaults; checked."""
    steps = args.steps if args.steps is not None else (100 if gpu else 4)
    rounds = args.rounds if args.rounds is not None else (1 if gpu else 5)
    warmup = args.warmup if args.warmup is not None else (20 if gpu else 2)
    for name, value, least in (("--steps", steps, 1), ("--rounds", rounds, 1), ("--warmup", warmup, 0),
                               ("--batch-size", args.batch_size, 1), ("--workers", args.workers, 0),
                               ("--profile-steps", args.profile_steps, 1), ("--check-epochs", args.check_epochs, 1),
                               ("--check-train", args.check_train, 10), ("--check-test", args.check_test, 10)):
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
    dataset = full = load(args.data)
    if not gpu:  # evaluation time is measured on 1,000 test images on a CPU and scaled to 10,000
        dataset = qdata.CIFAR10(dataset.train, qdata.subset(dataset.test, min(1000, len(dataset.test))),
                                dataset.source)
    name = device_name(device)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    if args.pack:
        return packbench.main(args, dataset, device, name, peak)
    steps, rounds, warmup = settings
    print(f"device: {name}; batch {args.batch_size}; {warmup} warm-up steps, then "
          + (f"{steps} timed steps" if rounds == 1 else f"{rounds} interleaved rounds of {steps} timed steps")
          + f"; data: {dataset.source}")
    print(_HEADER)
    rows = _rows(args, selection, dataset, device, settings, peak)
    path = Path(args.out) / f"{device_slug(name)}.json"
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
    path = Path(path)
    text = path.read_text()
    new = fill_blocks(text, "bench", lambda name: markdown(json.loads((path.parent / name).read_text())))
    if new != text:
        path.write_text(new)
    return new != text


def markdown(report: dict) -> str:
    """The report as a Markdown table (for the README; a test keeps the two equal)."""
    if report.get("kind") == "packing":
        return packbench.markdown(report)
    if report.get("kind") == "precision":
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
    n_test = min(args.check_test, len(dataset.test))
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
    reference_steps(model, opt, loader, device, total, sched)
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
