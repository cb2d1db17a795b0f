"""A preset's plan, advanced in budgeted windows: the plan and where it stands.

The plan (`plan`) lists every run a preset's reproduction needs, in priority order (`PLANS`). A
window (`qnets.window.run`) trains the next runs until its budget is nearly spent, stops between
epochs, checkpoints what is in flight and writes everything a later window needs into one output
folder; `qnets.collect.collect` takes that folder back into results/runs/ and the checkpoints of
unfinished runs into results/campaign/partial/ (committed, so the next window, on any machine,
resumes them exactly). `status_text` says where the plan stands, what it has cost and what is left (`qnets.runner.status`).

    python -m qnets campaign status --preset cpu
    python -m qnets campaign run --budget 480 --out DIR      # a window
    python -m qnets campaign collect DIR                      # its results in; then make figures
"""
from __future__ import annotations

import functools
from pathlib import Path

from . import experiments, runner
from .experiments import PLANS
from .models import resnet
from .train import Config, checkpoint_epoch, checkpoint_path, epoch_seconds, run_name

__all__ = ["plan", "status", "status_text", "campaign_dir", "status_file", "PLANS", "MAX_FILES", "MAX_FILE_BYTES",
           "MAX_BYTES"]

CAMPAIGN = "campaign"  # under the plan's results folder: partial/ (checkpoints of runs a budget cut
# short, committed) and status.txt (committed with every step)
MAX_FILES, MAX_FILE_BYTES, MAX_BYTES = 8, 16 * 2**20, 64 * 2**20  # a window's output, small enough to carry
PARTIAL_BUDGET = 32 * 2**20  # the committed partial state, carried to every window beside the data
MARGIN_S = 20.0  # left free at the end of a budget: writing the output folder, shutting down


def plan(preset: str = "paper", only: int | None = None, **overrides) -> list[tuple[str, Config]]:
    """(key, config) of every run of `preset`'s plan (`PLANS`), in priority order, each config once
    (a label of several notebooks is planned where it first appears); ("05", "*") stands for every
    label of notebook 05 but its conventional baseline. `only` keeps the first `only` runs (a smaller
    campaign, for trials); `overrides` replace Config fields."""
    if only is not None and not (isinstance(only, int) and not isinstance(only, bool) and only >= 1):
        raise ValueError(f"only must be a whole number of runs >= 1 (or None for the whole plan), got {only!r}")
    runs = {nb: experiments.labelled_configs(nb, preset, **overrides) for nb in experiments.NOTEBOOKS[1:]}
    out, seen = [], set()
    for group in PLANS.get(preset, PLANS["paper"]):
        present = []
        for nb, label, *which in group:
            names = [n for n in runs[nb] if n != "conventional" or nb == "04"] if label == "*" else [label]
            present += [(nb, name, which[0] if which else range(experiments.SEEDS)) for name in names
                        if name in runs[nb]]
        for s in range(experiments.SEEDS):
            for nb, label, which in present:
                if s not in which:
                    continue
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
    """`qnets.runner.status` of every planned run (`label` is its key in the plan), the committed
    partial checkpoints counted; a done run also has its share of the device: a run trained beside
    k − 1 others (`shared` = k) counts 1/k of its wall time and epoch time (`gpu_minutes` on a GPU,
    `cpu_hours` on a CPU, `epoch_s`)."""
    rows = runner.status(dict(plan(preset, only, **overrides)), lambda c: (_partial_path(c),))
    for r in rows:
        if r["state"] == "done":
            res, k = r["result"], r["shared"]
            on_cpu, seconds = res["device"] == "cpu", epoch_seconds(res["history"])
            r |= {"gpu_minutes": 0.0 if on_cpu else res["wall_time"] / 60 / k,
                  "cpu_hours": res["wall_time"] / 3600 / k if on_cpu else 0.0, "epoch_s": seconds / k if seconds else None}
    return rows


def status_text(preset: str = "paper", only: int | None = None, **overrides) -> str:
    """`qnets.runner.status_text` of the plan: every planned run, the device time spent (CPU-hours
    for a CPU preset, else GPU-minutes) and what is left at the measured pace."""
    return runner.status_text(dict(plan(preset, only, **overrides)), cpu=preset in experiments.CPU_PRESETS,
                              checkpoints=lambda c: (_partial_path(c),))


def _checkpoint_bytes(config: Config) -> int:
    """About how large a checkpoint of `config` is: weights and momentum in float32, plus a margin."""
    return 8 * _parameters(_network(config)) + 2**20


@functools.lru_cache(maxsize=None)
def _parameters(network: tuple) -> int:
    """Parameters of a network (`_network`): built once per process, not for every question a
    window asks while its runs wait (groups, refills)."""
    return sum(p.numel() for p in resnet(*network).parameters())


def _network(config: Config) -> tuple:
    return config.depth, config.neuron, config.rezero, config.shortcut
