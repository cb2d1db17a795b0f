"""`python -m qnets bench --pack 1,2,4,8,16`: aggregate throughput of K runs trained at once.

The mechanism timed for every K: streams, K lone fast-path trainers (one CUDA graph each; compiled
or not, and the K trainers of one network share one compilation), their steps issued round-robin
on K CUDA streams (on a CPU the trainers simply take turns: the path runs, nothing overlaps). (A
second mechanism, K runs fused into one grouped network, was measured and removed: its best gain,
1.71x at K = 16, did not pay for its code; its rows stay in the reports, results/bench/.)

Every run trains on its own batches (own seed); images/s are training images summed over the K
runs. The lone fast path (`bench`'s "fast" row, compiled) is timed first as the baseline. Rows
are written to `<out>/<device>-packing.json` as they are measured, so a run stopped by
`--budget` or a timeout keeps what it measured.
"""
from __future__ import annotations

import gc
import json
import time
from pathlib import Path

import torch

from .streams import stream_for
from .timing import device_slug, flops_per_image, measure, profile_fast
from .train import Config, Trainer, build_model, channels_last_for, make_loaders, sync
from .utils import atomic_json, timestamp, versions


def _configs(depth, neuron, k, batch_size, device, compile_, channels_last, precision):
    return [Config(depth=depth, neuron=neuron, seed=i, batch_size=batch_size, device=device.type, compile=compile_,
                   channels_last=channels_last, precision=precision) for i in range(k)]


class _Streams:
    """K lone trainers, each step of each issued on its own CUDA stream (on a CPU they take turns)."""

    def __init__(self, configs, dataset, device):
        self.device, self.trainers, self.loaders, self.batches = device, [], [], []
        self.contexts, self.streams = zip(*(stream_for(device) for _ in configs))
        for c in configs:
            loader, _ = make_loaders(c, dataset, device)
            self.loaders.append(loader)
            self.trainers.append(Trainer(c, build_model(c), device, len(loader)))
            self.batches.append(loader.epoch(0))
        self.epoch = 0

    def steps(self, n):
        cuda = self.device.type == "cuda"
        if cuda:  # each stream starts after what the default stream holds
            for s in self.streams:
                s.wait_stream(torch.cuda.current_stream())
        for _ in range(n):
            for i, (t, on_stream) in enumerate(zip(self.trainers, self.contexts)):
                with on_stream():
                    try:
                        x, y = next(self.batches[i])
                    except StopIteration:
                        self.batches[i] = self.loaders[i].epoch(self.epoch + 1)
                        x, y = next(self.batches[i])
                    t.set_lr(0)
                    t.train_step(x, y)
        if cuda:  # and the default stream after what they did
            for s in self.streams:
                torch.cuda.current_stream().wait_stream(s)

    @property
    def info(self):
        t = self.trainers[0]
        return {"compile": t.compiled, "cuda_graphs": t.use_graphs, "channels_last": t.channels_last,
                "precision": "bf16" if t.bf16 else "fp32", "notes": t.notes}


def measure_pack(configs, dataset, device, warmup, steps, profile_steps=0) -> dict:
    """Build the streams of `configs`, run `warmup` steps, time `steps` steps; one row."""
    gpu = device.type == "cuda"
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if gpu else 0
    t0 = time.perf_counter()
    timed = _Streams(configs, dataset, device)
    timed.steps(warmup)
    sync(device)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    timed.steps(steps)
    sync(device)
    seconds = time.perf_counter() - t0
    c, k = configs[0], len(configs)
    row = {"steps": steps, "build_s": build_s, "ms_per_step": 1000 * seconds / steps,
           "images_per_s": k * c.batch_size * steps / seconds,
           "peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20 if gpu else None, "fast_path": timed.info}
    if profile_steps:

        class _Adapter:  # what profile_fast times: train(n) -> seconds
            def train(self, n):
                t = time.perf_counter()
                timed.steps(n)
                sync(device)
                return time.perf_counter() - t
        try:  # a failed profile must not lose the timing
            row["profile"] = profile_fast(_Adapter(), device, profile_steps)
        except Exception as e:
            row["profile"] = {"error": f"{type(e).__name__}: {e}"}
    return row


def _key(r: dict) -> tuple:
    return (r["mechanism"], r["depth"], r["neuron"], r["k"], r["compile"], r["channels_last"], r["precision"],
            r["batch_size"])


def _choices(args) -> tuple[list[int], list[str]]:
    """The K values and compile settings asked for, checked up front."""
    ks = [int(k) for k in args.pack.split(",")]
    if any(k < 1 for k in ks):
        raise ValueError(f"--pack: every K must be at least 1, got {args.pack}")
    compiles = [c.strip() for c in args.pack_compile.split(",") if c.strip()]
    if not compiles or set(compiles) - {"on", "off"}:
        raise ValueError(f"--pack-compile: expected on, off or both, got {args.pack_compile!r}")
    return ks, compiles


class _Report:
    """The packing report of one device, merged into an earlier one and saved after every row."""

    def __init__(self, args, dataset, name, peak):
        self.path = Path(args.out) / f"{device_slug(name)}-packing.json"
        self.report = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.report |= {"kind": "packing", "device": name, "peak_bf16_flops": peak, "versions": versions(),
                        "data": dataset.source}
        self.rows = {_key(r): r for r in self.report.get("rows", [])}
        self.lone = {(r["depth"], r["neuron"]): r for r in self.report.get("lone", [])}
        self.deadline = time.monotonic() + args.budget if args.budget else None

    def save(self) -> None:
        self.report.update(rows=list(self.rows.values()), lone=list(self.lone.values()),
                           time=timestamp())
        atomic_json(self.report, self.path)

    def spent(self) -> bool:
        if self.deadline and time.monotonic() > self.deadline:
            print("--budget spent: stopping here")
            return True
        return False


def _lone_row(args, depth, neuron, flops, dataset, device, peak, warmup, steps) -> dict | None:
    """The baseline: one lone run of the network on the fast path."""
    measured = measure(depth, neuron, ["fast"], dataset, device, args, warmup, steps, 1,
                       args.profile_steps if args.profile else 0)["fast"]
    if "error" in measured:
        return None
    ips = 1000 * args.batch_size / measured["ms_per_step"]
    print(f"resnet{depth}-{neuron} lone fast path: {ips:,.0f} img/s", flush=True)
    return {"depth": depth, "neuron": neuron, "batch_size": args.batch_size, "images_per_s": ips,
            "bf16_utilisation": ips * flops / peak if peak else None, "flops_per_image": flops} | measured


def _pack_row(args, depth, neuron, k, compile_, flops, dataset, device, peak, warmup, steps) -> dict:
    configs = _configs(depth, neuron, k, args.batch_size, device, compile_, args.channels_last, args.precision)
    head = {"mechanism": "streams", "depth": depth, "neuron": neuron, "k": k, "batch_size": args.batch_size,
            "compile": compile_ == "on",
            "channels_last": channels_last_for(configs[0], device),
            "precision": configs[0].precision if configs[0].precision != "auto" else
            ("bf16" if device.type == "cuda" else "fp32")}
    try:
        row = head | measure_pack(configs, dataset, device, warmup, steps,
                                  args.profile_steps if args.profile else 0)
        row["flops_per_image"] = flops
        row["bf16_utilisation"] = row["images_per_s"] * flops / peak if peak else None
    except Exception as e:  # out of memory included: report and go on
        row = head | {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    return row


def main(args, dataset, device, name, peak) -> int:
    """`bench --pack`: every (network, compile setting, K) measured, the report written after each row."""
    ks, compiles = _choices(args)
    out = _Report(args, dataset, name, peak)
    steps, warmup = args.steps or 50, 10 if args.warmup is None else args.warmup
    print(f"packing: {name}; batch {args.batch_size}; {warmup} warm-up steps, then {steps} timed steps")
    for depth in [int(d) for d in args.depths.split(",")]:
        for neuron in [n.strip() for n in args.neurons.split(",")]:
            flops = flops_per_image(depth, neuron)
            if args.pack_lone and not out.spent():
                row = _lone_row(args, depth, neuron, flops, dataset, device, peak, warmup, steps)
                if row is not None:
                    out.lone[(depth, neuron)] = row
                out.save()
            for compile_, k in ((c, k) for c in compiles for k in ks):
                if out.spent():
                    out.save()
                    return 0
                row = _pack_row(args, depth, neuron, k, compile_, flops, dataset, device, peak, warmup, steps)
                out.rows[_key(row)] = row
                print(format_row(row, out.lone.get((depth, neuron))), flush=True)
                out.save()
    out.save()
    return 0


def _speedup(r: dict, lone: dict | None) -> float | None:
    if lone is None or "images_per_s" not in r or lone.get("batch_size") != r["batch_size"]:
        return None
    return r["images_per_s"] / lone["images_per_s"]


def format_row(r: dict, lone: dict | None = None) -> str:
    head = (f"resnet{r['depth']}-{r['neuron']:9s} {r['mechanism']:8s} K={r['k']:<3d} "
            f"compile={'on ' if r['compile'] else 'off'} {'NHWC' if r['channels_last'] else 'NCHW'} {r['precision']}")
    if "error" in r:
        return f"{head} failed: {r['error'][:120]}"
    util, mib, x = r.get("bf16_utilisation"), r.get("peak_mib"), _speedup(r, lone)
    return (f"{head} {r['images_per_s']:9,.0f} img/s {r['ms_per_step']:7.2f} ms/step "
            f"{'-' if mib is None else f'{mib:,.0f}':>7s} MiB" + ("" if x is None else f" {x:4.2f}x lone")
            + ("" if util is None else f" {100 * util:5.2f}% of bf16 peak"))


def markdown(report: dict) -> str:
    """The packing report as a Markdown table (for the README; a test keeps the two equal)."""
    lone = {(r["depth"], r["neuron"]): r for r in report.get("lone", [])}
    sizes = sorted({r["batch_size"] for r in report["rows"]} | {r["batch_size"] for r in lone.values()})
    lines = [f"{report['device']}, PyTorch {report['versions']['torch']}, batch {'/'.join(map(str, sizes))} per run; "
             "images/s summed over the K runs:", "",
             "| network | mechanism | compile | layout | precision | K | images/s | ms/step | peak GPU MiB "
             "| × lone fast run | % of bf16 peak |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    def line(r, mechanism, compiled, channels_last, precision, k, x):
        mib, util = r.get("peak_mib"), r.get("bf16_utilisation")
        return (f"| ResNet-{r['depth']} {r['neuron']} | {mechanism} | {'on' if compiled else 'off'} | "
                f"{'NHWC' if channels_last else 'NCHW'} | {precision} | {k} | {r['images_per_s']:,.0f} | "
                f"{r['ms_per_step']:.2f} | {'-' if mib is None else f'{mib:,.0f}'} | {'-' if x is None else f'{x:.2f}'} | "
                f"{'-' if util is None else f'{100 * util:.2f}'} |")

    for _, r in sorted(lone.items()):
        f = r["fast_path"]
        lines.append(line(r, "lone fast path", f["compile"], f["channels_last"], f["precision"], 1, 1.0))
    order = lambda r: (r["depth"], r["neuron"], r["mechanism"], r["precision"], not r["channels_last"], r["compile"],
                       r["k"])
    for r in sorted((r for r in report["rows"] if "error" not in r), key=order):
        x = _speedup(r, lone.get((r["depth"], r["neuron"])))
        lines.append(line(r, r["mechanism"], r["compile"], r["channels_last"], r["precision"], r["k"], x))
    return "\n".join(lines)
