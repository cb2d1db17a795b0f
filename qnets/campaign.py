"""A preset's plan, advanced in budgeted windows: the plan and where it stands.

The plan (`plan`) lists every run a preset's reproduction needs, in priority order (`PLANS`). A
window (`qnets.window.run`) trains the next runs until its budget is nearly spent, stops between
epochs, checkpoints what is in flight and writes everything a later window needs into one output
folder; `qnets.collect.collect` takes that folder back into results/runs/ and the checkpoints of
unfinished runs into results/campaign/partial/ (committed, so the next window, on any machine,
resumes them exactly). `status_text` says where the plan stands, what it has cost and what is left.

    python -m qnets campaign status --preset cpu
    python -m qnets campaign run --budget 480 --out DIR      # a window
    python -m qnets campaign collect DIR                      # its results in; then make figures
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from . import experiments
from .models import resnet
from .train import Config, checkpoint_epoch, checkpoint_path, epoch_seconds, load_result, run_name

__all__ = ["plan", "status", "status_text", "campaign_dir", "status_file", "PLANS", "MAX_FILES", "MAX_FILE_BYTES",
           "MAX_BYTES"]

CAMPAIGN = "campaign"  # under the plan's results folder: partial/ (checkpoints of runs a budget cut
# short, committed) and status.txt (committed with every step)
MAX_FILES, MAX_FILE_BYTES, MAX_BYTES = 8, 16 * 2**20, 64 * 2**20  # a window's output, small enough to carry
PARTIAL_BUDGET = 32 * 2**20  # the committed partial state, carried to every window beside the data
MARGIN_S = 20.0  # left free at the end of a budget: writing the output folder, shutting down


# Each preset's plan: groups of (notebook, label), in priority order; within a group every label's
# first seed comes before any label's second. A preset without a plan of its own follows the paper's.
PLANS = {
    "paper": [
        # 1. ResNet-20: conventional, quadratic + ReLinear (γ = 1e-5), compact + ReLinear, naive
        [("02", "conventional"), ("02", "relinear-sg"), ("03", "compact"), ("02", "naive")],
        # 2. ResNet-56: conventional, quadratic + ReLinear (γ = 1e-3), + ReZero, compact (ours, the authors')
        [("04", "conventional"), ("04", "relinear"), ("04", "relinear-rezero"), ("04", "compact"),
         ("03", "compact-authors")],
        # 3. the ResNet-20 shrunken-weight runs, then the notebook-05 sweep
        [("02", "relinear-sw-l2"), ("02", "relinear-sw-l1"), ("05", "*")],
    ],
    "cpu": [
        # 1. the calibration pair, then the ResNet-8 core of notebooks 02 and 03
        [("02", "conventional"), ("02", "relinear-sg"), ("02", "gamma=0"), ("02", "naive"), ("03", "compact"),
         ("02", "relinear-sw-l2"), ("02", "relinear-sw-l1"), ("02", "gamma=lr")],
        # 2. the notebook-05 sweep, one seed of every value first
        [("05", "*")],
        # 3. the depth pilot: ResNet-20 conventional and ReLinear, each with and without ReZero
        [("04", "*")],
    ],
}


def plan(preset: str = "paper", only: int | None = None, **overrides) -> list[tuple[str, Config]]:
    """(key, config) of every run of `preset`'s plan (`PLANS`), in priority order, each config once
    (a label of several notebooks is planned where it first appears); ("05", "*") stands for every
    label of notebook 05 but its conventional baseline. `only` keeps the first `only` runs (a smaller
    campaign, for trials); `overrides` replace Config fields."""
    if only is not None and not (isinstance(only, int) and not isinstance(only, bool) and only >= 1):
        raise ValueError(f"only must be a whole number of runs >= 1 (or None for the whole plan), got {only!r}")
    runs = {nb: experiments.labelled_configs(nb, preset, **overrides) for nb in ("02", "03", "04", "05")}
    out, seen = [], set()
    for group in PLANS.get(preset, PLANS["paper"]):
        present = [(nb, name) for nb, label in group
                   for name in ([n for n in runs[nb] if n != "conventional" or nb == "04"] if label == "*" else [label])
                   if name in runs[nb]]
        for s in range(experiments.SEEDS):
            for nb, label in present:
                config = experiments.seeds(runs[nb][label])[s]
                if config not in seen:
                    seen.add(config)
                    out.append((f"{nb}:{label}" + (f"#{s}" if s else ""), config))
    return out[:only]


def campaign_dir(config: Config) -> Path:
    """Where the campaign of `config`'s results folder keeps its committed state."""
    return Path(config.out_dir) / CAMPAIGN


def status_file(planned: list[tuple[str, Config]], preset: str = "paper") -> Path:
    """Where `collect` writes the plan's status: status.txt for the paper's, status-<preset>.txt for another."""
    return campaign_dir(planned[0][1]) / ("status.txt" if preset == "paper" else f"status-{preset}.txt")


def _partial_path(config: Config) -> Path:
    return campaign_dir(config) / "partial" / f"{run_name(config)}.pt"


def _epochs_done(config: Config) -> int:
    """Epochs in the checkpoint of `config` (a local one, else the committed partial one)."""
    for path in (checkpoint_path(config), _partial_path(config)):
        epoch = checkpoint_epoch(path)
        if epoch is not None:
            return epoch + 1
    return 0


def status(preset: str = "paper", only: int | None = None, **overrides) -> list[dict]:
    """One dict per planned run: key, name, state (done, partial, to do), epochs done, and for
    done runs the outcome, device, minutes, and its share of the device: a run trained beside k − 1
    others (`shared` = k) counts 1/k of its wall time and epoch time (`gpu_minutes` on a GPU,
    `cpu_hours` on a CPU)."""
    rows = []
    for key, config in plan(preset, only, **overrides):
        r = load_result(config)
        row = {"key": key, "name": run_name(config), "epochs": config.epochs, "depth": config.depth,
               "neuron": config.neuron}
        if r is not None:
            shared, seconds = _shared(r), epoch_seconds(r["history"])
            on_cpu = r["device"] == "cpu"
            row |= {"state": "done", "done": r["epochs_run"], "status": r["status"], "device": r["device"],
                    "minutes": r["wall_time"] / 60, "accuracy": r["final_test_acc"], "shared": shared,
                    "gpu_minutes": 0.0 if on_cpu else r["wall_time"] / 60 / shared,
                    "cpu_hours": r["wall_time"] / 3600 / shared if on_cpu else 0.0,
                    "epoch_s": seconds / shared if seconds else None}
        else:
            done = _epochs_done(config)
            row |= {"state": "partial" if done else "to do", "done": done}
        rows.append(row)
    return rows


CPU_PRESETS = ("smoke", "quick", "cpu")  # presets whose plan trains on a CPU: status counts CPU-hours


def status_text(preset: str = "paper", only: int | None = None, **overrides) -> str:
    """Every planned run with its state, then the device time spent (GPU-minutes, or CPU-hours for a
    CPU preset) and an estimate of what is left, from the measured epoch times of each kind of
    network on that kind of device (the bench's where no run measured it; a kind measured at
    another depth, scaled by depth; unknown where neither)."""
    rows = status(preset, only, **overrides)
    cpu = preset in CPU_PRESETS
    per_kind: dict[tuple, list[float]] = {}
    for r in rows:
        if r.get("epoch_s") and (r["device"] == "cpu") == cpu:
            per_kind.setdefault((r["depth"], r["neuron"]), []).append(r["epoch_s"])
    benched = 0
    for kind, seconds in _bench_epoch_seconds(cpu).items():  # kinds no campaign run has measured yet
        if kind not in per_kind:
            per_kind[kind], benched = [seconds], benched + 1
    pace = {kind: sum(v) / len(v) for kind, v in per_kind.items()}
    lines = [f"{'run':28s} {'state':8s} {'epochs':>9s}  outcome"]
    spent = left = 0.0
    unknown = scaled = 0
    for r in rows:
        outcome = ""
        if r["state"] == "done":
            outcome = (f"{100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else r["status"]) + \
                f" ({r['minutes']:.1f} min" + (f" shared by {r['shared']} runs" if r["shared"] > 1 else "") + \
                f", {r['device']})"
            spent += r["cpu_hours"] * 60 if cpu else r["gpu_minutes"]
        else:
            seconds = pace.get((r["depth"], r["neuron"]))
            same = [k for k in pace if k[1] == r["neuron"]]
            if seconds is None and same:  # the nearest depth of the same neuron, scaled by depth
                near = min(same, key=lambda k: abs(k[0] - r["depth"]))
                seconds, scaled = pace[near] * r["depth"] / near[0], scaled + 1
            if seconds is None:
                unknown += 1
            else:
                left += (r["epochs"] - r["done"]) * seconds / 60
        lines.append(f"{r['key']:28s} {r['state']:8s} {r['done']:>4d}/{r['epochs']:<4d}  {outcome}")
    done = sum(r["state"] == "done" for r in rows)
    partial = sum(r["state"] == "partial" for r in rows)
    unit, fmt = ("CPU-hours", lambda m: f"{m / 60:.1f}") if cpu else ("GPU-minutes", lambda m: f"{m:.0f}")
    lines.append(f"\n{done} of {len(rows)} runs done, {partial} partial; {fmt(spent)} {unit} spent on the done "
                 f"runs (runs side by side count their share); about {fmt(left)} {unit} left at the measured pace"
                 + (f" ({benched} kinds of network timed by the bench only, not yet by a campaign run)" if benched else "")
                 + (f" ({scaled} runs estimated from another depth)" if scaled else "")
                 + (f", and {unknown} runs of kinds never timed" if unknown else ""))
    return "\n".join(lines)


def _bench_epoch_seconds(cpu: bool = False) -> dict[tuple, float]:
    """Seconds per epoch of the lone fast path, by (depth, neuron), from the bench reports of a GPU
    (or, with `cpu`, of a CPU)."""
    out = {}
    for path in sorted(Path("results/bench").glob("*.json")):
        report = json.loads(path.read_text())
        if report.get("kind") == "packing" or str(report.get("device", "cpu")).startswith("cpu") != cpu:
            continue
        for row in report.get("rows", []):
            if row.get("path") == "fast" and row.get("s_per_epoch"):
                out[(row["depth"], row["neuron"])] = row["s_per_epoch"]
    return out


def _checkpoint_bytes(config: Config) -> int:
    """About how large a checkpoint of `config` is: weights and momentum in float32, plus a margin."""
    return 8 * _parameters(_network(config)) + 2**20


@functools.lru_cache(maxsize=None)
def _parameters(network: tuple) -> int:
    """Parameters of a network (`_network`): built once per process, not for every question a
    window asks while its runs wait (groups, refills)."""
    return sum(p.numel() for p in resnet(*network).parameters())


def _shared(result: dict) -> int:
    """How many runs shared the GPU with the run of `result` (itself included)."""
    return (result.get("together") or result.get("pack") or {}).get("k") or 1


def _network(config: Config) -> tuple:
    return config.depth, config.neuron, config.rezero, config.shortcut
