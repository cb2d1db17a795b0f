"""The paper, reproduced in budgeted GPU windows: a fixed plan that every window advances.

GPU time comes as single calls of a few minutes, days apart, on a machine that starts bare. The
plan (`plan`) lists every run of the `paper` preset that the reproduction needs, in priority
order. `run` trains the next runs until its budget is nearly spent, stops between epochs,
checkpoints what is in flight, and writes everything a later window needs into one folder of at
most 8 files of at most 16 MiB (what comes back from the GPU machine). `collect` puts finished
results into results/runs/ and the checkpoints of unfinished runs into results/campaign/partial/,
which is committed, so the next window (any machine, any day) resumes them exactly. `status_text`
says where the plan stands, what it has cost and what is left.

    python -m qnets campaign status
    python -m qnets campaign run --budget 480 --out DIR      # on the GPU machine
    python -m qnets campaign collect DIR                      # back here; then make figures
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import shutil
import signal
import tarfile
import tempfile
import threading
import time
import warnings
from pathlib import Path

from . import experiments
from .locks import RunBusy
from .models import resnet
from .runner import train_group
from .train import (Config, StoreError, checkpoint_epoch, checkpoint_path, config_hash, epoch_seconds,
                    load_checkpoint_file, load_result, read_result, result_path, run_name)
from .utils import atomic_write

__all__ = ["plan", "status", "status_text", "run", "collect", "campaign_dir", "status_file", "MAX_FILES",
           "MAX_FILE_BYTES", "MAX_BYTES"]

CAMPAIGN = "campaign"  # under the plan's results folder: partial/ (checkpoints of runs a budget cut
# short, committed) and status.txt (committed with every step)
MAX_FILES, MAX_FILE_BYTES, MAX_BYTES = 8, 16 * 2**20, 64 * 2**20  # what a GPU call can bring back
PARTIAL_BUDGET = 32 * 2**20  # the committed partial state must travel to the GPU beside the CIFAR-10 archive
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


def _restore_partials(planned: list[tuple[str, Config]]) -> None:
    """Put the committed partial checkpoints where `fit` looks for them (unless a newer one is there)."""
    for _, config in planned:
        src, dst = _partial_path(config), checkpoint_path(config)
        if not src.exists():
            continue
        committed, local = checkpoint_epoch(src), checkpoint_epoch(dst)
        if local is not None and (committed is None or local >= committed):
            continue  # a local checkpoint as new (an unreadable committed one is then left alone)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)  # (an unreadable one is moved aside, with a warning, by read_checkpoint)


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


def run(budget: float, out: str | Path, preset: str = "paper", pack: int = 1, verbose: bool = True,
        only: int | None = None, **overrides) -> dict:
    """Advance the plan (its first `only` runs, if given) within `budget` seconds and write what a
    later window needs into `out` (see the module docstring). Returns a summary: runs finished,
    runs left partial, and why the call stopped."""
    if not budget > 0:
        raise ValueError(f"--budget must be a positive number of seconds, got {budget!r}")
    t_start = time.monotonic()
    deadline = t_start + budget - min(MARGIN_S, budget / 10)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    planned = plan(preset, only, **overrides)
    rejected = [key for key, c in planned if c.neuron != "conventional" and c.precision == "bf16"]
    if rejected:
        raise ValueError(f"{rejected[0]} would train quadratic layers in plain bf16, which rounds ReLinear's small "
                         "quadratic terms away (results/bench/README.md); use precision auto or bf16-split")
    _restore_partials(planned)
    todo = [(key, c) for key, c in planned if load_result(c) is None]
    finished, touched, log = [], [], []
    partial_bytes = sum(_partial_path(c).stat().st_size for _, c in planned if _partial_path(c).exists())
    why = "the plan is done" if not todo else None
    stop = {"asked": False, "training": False}
    with _stop_on_sigterm(stop):
        why = _advance(todo, pack, planned, deadline, partial_bytes, verbose, finished, touched, log, stop) \
            if why is None else why
    cut = list({run_name(c): c for c in touched if c not in finished}.values())
    todo = [(k, c) for k, c in todo if c not in finished]
    summary = {"finished": [run_name(c) for c in finished], "partial": [run_name(c) for c in cut],
               "stopped_because": why or ("the budget is spent" if todo else
                                          "the rest of the plan is being trained by other processes"
                                          if any("busy" in e or "busy" in e.get("states", ()) for e in log)
                                          else "the plan is done"),
               "seconds": time.monotonic() - t_start,
               "log": log, "device": _device_name()}
    _write_out(out, finished, cut, summary, preset, overrides | (
        {"only": only} if only else {}))
    return summary


class WindowStopped(Exception):
    """SIGTERM asked a window to stop: its runs in flight keep their last checkpoint, and what it
    finished is written out as at the end of its budget."""


@contextlib.contextmanager
def _stop_on_sigterm(stop: dict):
    """While a window runs, SIGTERM stops it cleanly: during training by raising WindowStopped (the
    epoch in flight is lost, the checkpoint before it kept), between runs by ending the loop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        stop["asked"] = True
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: writing the output must not be cut short
        if stop["training"]:
            raise WindowStopped("stopped by SIGTERM (the runs in flight kept their last checkpoint)")
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _advance(todo, pack, planned, deadline, partial_bytes, verbose, finished, touched, log, stop) -> str | None:
    """The window's loop (see `run`): trains groups of runs until the plan is done, the budget is
    spent or a stop is asked; appends to `finished`, `touched` and `log`; returns why it stopped."""
    why = None
    compiled: set[tuple] = set()  # networks this process has compiled: later runs of them reuse the code
    while todo and why is None:
        if stop["asked"]:
            return "stopped by SIGTERM"
        group = _fitting(_next_group(todo, pack), PARTIAL_BUDGET - partial_bytes)
        if not group:
            key, first = todo[0]
            why = (f"starting {key} could leave {_checkpoint_bytes(first) / 2**20:.0f} MiB of partial state beside "
                   f"{partial_bytes / 2**20:.0f} MiB, over the {PARTIAL_BUDGET / 2**20:.0f} MiB that travels")
            break
        while len(group) > 1 and time.monotonic() + _first_epoch_seconds(group, planned, compiled) >= deadline:
            group = group[:-1]  # fewer runs side by side finish their first epoch sooner
        need_s = _first_epoch_seconds(group, planned, compiled)
        if time.monotonic() + need_s >= deadline:
            why = (f"the budget is spent: {group[0][0]} needs about {need_s:.0f} s for its first epoch"
                   if need_s else "the budget is spent")
            break
        configs = [c for _, c in group]
        fresh = [c for c in configs if _epochs_done(c) == 0]
        compiled |= {_network(c) for c in configs}
        t0, refilled = time.monotonic(), []

        def refill(live: list[Config]) -> tuple[Config, str] | None:
            """The next run in plan order, to take the place of one that ended: if its partial state
            fits beside what is in flight and its first epoch, beside the runs still training, ends
            before the deadline."""
            taken = {run_name(c) for _, c in group}
            following = [(k, c) for k, c in todo if run_name(c) not in taken][:1]
            in_flight = sum(_checkpoint_bytes(c) for c in fresh)
            if not following or not _fitting(following, PARTIAL_BUDGET - partial_bytes - in_flight):
                return None
            if time.monotonic() + _first_epoch_seconds([(k, c) for k, c in group if c in live] + following, planned,
                                                       compiled) >= deadline:
                return None
            (key, config), = following
            group.append((key, config))
            refilled.append(key)
            fresh.extend([config] if _epochs_done(config) == 0 else [])
            compiled.add(_network(config))
            return config, key
        try:
            rolling = {"refill": refill} if pack > 1 else {}
            stop["training"] = True
            results = train_group(configs, labels=[k for k, _ in group], verbose=verbose, deadline=deadline,
                                  **rolling)  # side by side, runs that end make room for the next ones
        except RunBusy as e:  # another process trains this run: the window goes on with the next
            stop["training"] = False
            log.append({"runs": [k for k, _ in group], "seconds": time.monotonic() - t0, "busy": str(e)})
            todo[:] = [(k, c) for k, c in todo if run_name(c) != e.run]
            continue
        except Exception as e:  # a window is scarce: keep what it did, and what it can still do
            stop["training"] = False
            failure = f"{type(e).__name__}: {str(e)[:500]}"
            log.append({"runs": [k for k, _ in group], "seconds": time.monotonic() - t0, "failed": failure})
            configs = [c for _, c in group]  # refills included
            finished += [c for c in configs if c not in finished and load_result(c) is not None]  # ended before it
            todo[:] = [(k, c) for k, c in todo if c not in finished]
            kept = [c for c in configs if c not in finished and checkpoint_epoch(checkpoint_path(c)) is not None]
            touched += kept
            partial_bytes += sum(_checkpoint_bytes(c) for c in kept if c in fresh)
            if isinstance(e, WindowStopped):
                return str(e)
            if len(group) == 1:
                why = f"{group[0][0]} failed: {failure}"
                break
            warnings.warn(f"training {len(group)} runs at once failed ({failure}); this window trains the rest alone")
            pack = 1
            continue
        stop["training"] = False
        log.append({"runs": [k for k, _ in group], "seconds": time.monotonic() - t0,
                    "states": [r["status"] if r else "busy" for r in results]}
                   | ({"refilled": refilled} if refilled else {}))
        busy = {run_name(config) for (_, config), r in zip(group, results) if r is None}
        todo[:] = [(k, c) for k, c in todo if run_name(c) not in busy]  # another process trains those
        for (key, config), r in zip(group, results):
            if r is None:
                continue
            touched.append(config)
            if r["status"] == "partial":
                partial_bytes += _checkpoint_bytes(config) if config in fresh else 0
            else:
                finished.append(config)
        todo[:] = [(k, c) for k, c in todo if c not in finished]
        if any(r is not None and r["status"] == "partial" for r in results):
            why = "the budget is spent (runs in flight were checkpointed)"
    return why


FIRST_EPOCH_OVERHEAD_S = {"cuda": 60.0, "cpu": 0.0}  # compilation and CUDA-graph capture before the first step


def _network(config: Config) -> tuple:
    return config.depth, config.neuron, config.rezero, config.shortcut


def _first_epoch_seconds(group: list[tuple[str, Config]], planned: list[tuple[str, Config]],
                         compiled: set[tuple] = frozenset()) -> float:
    """What the first epoch of `group`'s runs, trained together in this process, costs: each run's
    share of an epoch of its network measured on this kind of device (from stored results; a run
    that trained beside k − 1 others counts 1/k of its epoch; on a GPU, the bench's lone epoch
    where no run was stored yet), one after another (running side by side only helps), plus
    compilation and graph capture for each network not in `compiled`."""
    import torch
    here, total, networks = _device_name(), 0.0, set()
    benched, benched_cpu = _bench_epoch_seconds(), _bench_epoch_seconds(cpu=True)
    for _, config in group:
        device = "cuda" if torch.cuda.is_available() and config.device != "cpu" else "cpu"
        for _, c in planned:
            r = load_result(c) if _network(c) == _network(config) else None
            seconds = epoch_seconds(r["history"]) if r is not None and r["device"] == here else None
            if seconds:
                total += seconds / _shared(r)
                break
        else:  # no campaign run of this network here yet: the lone fast path's bench time
            total += (benched if device == "cuda" else benched_cpu).get((config.depth, config.neuron), 0.0)
        if _network(config) not in compiled | networks:
            total += FIRST_EPOCH_OVERHEAD_S[device]
            networks.add(_network(config))
    return total


def _next_group(todo: list[tuple[str, Config]], pack: int) -> list[tuple[str, Config]]:
    """The first run still to do and, with `pack` > 1, the next pack − 1 runs to train beside it."""
    return todo[:pack]


def _fitting(group: list[tuple[str, Config]], room: int) -> list[tuple[str, Config]]:
    """The runs of `group`, in order, whose partial state fits in `room` bytes should the budget
    cut them (runs already partial have their state committed); empty when the first does not fit."""
    out = []
    for key, c in group:
        need = 0 if _epochs_done(c) else _checkpoint_bytes(c)
        if need > room:
            break
        room -= need
        out.append((key, c))
    return out


def _device_name() -> str:
    import torch
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _write_out(out: Path, finished: list[Config], partial: list[Config], summary: dict, preset: str,
               overrides: dict) -> None:
    """results.tar (finished results), partial-N.tar (checkpoints, each file under MAX_FILE_BYTES)
    and summary.json: at most MAX_FILES files in all."""
    for old in out.glob("*"):
        if old.is_file() and (old.name.startswith(("results", "partial-")) or old.name == "summary.json"):
            old.unlink()
    files = {"results.tar": _tar_bytes([(result_path(c).name, result_path(c).read_bytes()) for c in finished])}
    chunk, chunks = [], []
    for c in partial:
        data = checkpoint_path(c).read_bytes()
        if len(data) + 10240 > MAX_FILE_BYTES:
            raise ValueError(f"checkpoint {checkpoint_path(c)} is {len(data) / 2**20:.0f} MiB, over the "
                             f"{MAX_FILE_BYTES / 2**20:.0f} MiB a returned file may have")
        if chunk and sum(len(d) for _, d in chunk) + len(data) + 10240 * (len(chunk) + 1) > MAX_FILE_BYTES:
            chunks.append(chunk)
            chunk = []
        chunk.append((checkpoint_path(c).name, data))
    if chunk:
        chunks.append(chunk)
    for i, members in enumerate(chunks):
        files[f"partial-{i}.tar"] = _tar_bytes(members)
    summary = summary | {"preset": preset, "overrides": overrides, "files": sorted(files)}
    files["summary.json"] = (json.dumps(summary, indent=1, sort_keys=True) + "\n").encode()
    if len(files) > MAX_FILES or sum(map(len, files.values())) > MAX_BYTES:
        raise ValueError(f"the output would be {len(files)} files, {sum(map(len, files.values())) / 2**20:.0f} MiB: "
                         f"over the {MAX_FILES} files and {MAX_BYTES / 2**20:.0f} MiB a GPU call brings back")
    for name, data in files.items():
        atomic_write(out / name, lambda f, d=data: f.write(d))


MAX_MEMBERS = 1000  # members of one returned tar: a window finishes a few dozen runs at most


def _members(tar_path: Path, suffix: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of every member of an uncompressed tar written by `run`, read as untrusted:
    regular files only, bare names ending in `suffix`, each at most MAX_FILE_BYTES (read no further
    than that), at most MAX_MEMBERS. Raises ValueError naming the file and the member."""
    if tar_path.is_symlink() or not tar_path.is_file():
        raise ValueError(f"{tar_path}: not a regular file")
    out, total = [], 0
    try:
        with tarfile.open(tar_path, mode="r:") as tar:  # "r:": no decompression, so no decompression bomb
            for m in tar:
                if len(out) == MAX_MEMBERS:
                    raise ValueError(f"{tar_path}: more than {MAX_MEMBERS} members")
                if not m.isreg():
                    raise ValueError(f"{tar_path}: member {m.name!r} is not a regular file")
                if m.name != Path(m.name).name or m.name.startswith(".") or not m.name.endswith(suffix):
                    raise ValueError(f"{tar_path}: member {m.name!r} is not a bare *{suffix} file name")
                if m.size > MAX_FILE_BYTES:
                    raise ValueError(f"{tar_path}: member {m.name!r} is {m.size / 2**20:.0f} MiB, over "
                                     f"{MAX_FILE_BYTES / 2**20:.0f} MiB")
                data = tar.extractfile(m).read(MAX_FILE_BYTES + 1)
                if len(data) != m.size:
                    raise ValueError(f"{tar_path}: member {m.name!r} is cut short")
                total += len(data)
                out.append((m.name, data))
    except tarfile.TarError as e:
        raise ValueError(f"{tar_path}: not an uncompressed tar written by `qnets campaign run` ({e})") from None
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{tar_path}: a member name appears twice")
    return out


def _summary(folder: Path) -> dict:
    """The summary.json of a `run` folder, checked: a known preset, overrides that are Config fields
    (no folders but the project's own results folder), `only` a positive integer, lists of names."""
    path = folder / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no summary.json: not the output of `qnets campaign run`")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size / 2**20:.0f} MiB is not a window's summary")
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path}: not a JSON object")
    if summary.get("preset") not in experiments.PRESETS:
        raise ValueError(f"{path}: preset is {summary.get('preset')!r}, not one of {tuple(experiments.PRESETS)}")
    overrides = summary.get("overrides", {})
    if not isinstance(overrides, dict):
        raise ValueError(f"{path}: overrides is not an object")
    fields = set(Config.__dataclass_fields__) - {"data_root"}
    unknown = sorted(set(overrides) - fields - {"only"})
    if unknown:
        raise ValueError(f"{path}: overrides {unknown} are not Config fields a window may change")
    if "out_dir" in overrides:
        results = Path("results").resolve()
        where = Path(str(overrides["out_dir"])).resolve()
        if where != results and results not in where.parents:
            raise ValueError(f"{path}: out_dir {overrides['out_dir']!r} is outside this project's results folder; "
                             "refused")
    only = overrides.get("only")
    if only is not None and not (isinstance(only, int) and not isinstance(only, bool) and only >= 1):
        raise ValueError(f"{path}: only is {only!r}, not a positive number of runs")
    for key in ("finished", "partial"):
        if not (isinstance(summary.get(key), list) and all(isinstance(n, str) for n in summary[key])):
            raise ValueError(f"{path}: {key} is not a list of run names")
    return summary


def collect(folder: str | Path) -> dict:
    """Take a `run` output folder, as untrusted input, all or nothing: every member of every file is
    checked first (tar members regular files with bare names, results by the store's own checks,
    checkpoints loaded as tensors only, each a run of the summary's plan, exactly the runs the summary
    lists), and only then is anything written, always inside the plan's results folder. Finished
    results go to results/runs/ (a result already stored there is kept), partial checkpoints to
    results/campaign/partial/ (and results/checkpoints/) unless state as new or newer is already
    there (kept, and said), partial state of runs now finished is removed, and the plan's status
    file is rewritten. Returns what was taken and what was kept."""
    folder = Path(folder)
    summary = _summary(folder)
    preset, overrides = summary["preset"], dict(summary.get("overrides", {}))
    only = overrides.pop("only", None)
    planned = plan(preset, only, **overrides)
    by_name = {run_name(c): c for _, c in planned}

    def config_of(member: str) -> Config:
        name = member.rsplit(".", 1)[0]
        if name not in by_name:
            raise ValueError(f"{folder}: {member} is not a run of the {preset} campaign's plan")
        return by_name[name]

    results = _members(folder / "results.tar", ".json")
    partials = [m for tar_path in sorted(folder.glob("partial-*.tar")) for m in _members(tar_path, ".pt")]
    for listed, members, what in ((summary["finished"], results, "results.tar"),
                                  (summary["partial"], partials, "the partial-*.tar files")):
        names = sorted(n.rsplit(".", 1)[0] for n, _ in members)
        if names != sorted(listed):
            raise ValueError(f"{folder}: {what} hold {len(names)} runs, the summary lists {len(listed)}: "
                             "the folder is incomplete or was changed; nothing collected")
    checked_results, checked_partials = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in results:
            config = config_of(name)
            check = Path(tmp) / name
            check.write_bytes(data)
            try:
                read_result(check)  # a bad file stops here, named, before anything is replaced
            except StoreError as e:
                raise ValueError(f"{folder}/results.tar: {str(e).replace(str(check), name)}") from None
            checked_results.append((config, data))
        for name, data in partials:
            config = config_of(name)
            check = Path(tmp) / name
            check.write_bytes(data)
            try:
                ckpt = load_checkpoint_file(check)
            except StoreError as e:
                raise ValueError(f"{folder}: {str(e).replace(str(check), name)}") from None
            if config_hash(ckpt["config"]) != config_hash(config):
                raise ValueError(f"{folder}: {name} holds the checkpoint of another config")
            checked_partials.append((config, data, ckpt["epoch"]))
    taken = {"results": [], "partial": [], "kept": []}
    for config, data in checked_results:
        if load_result_or_none(config) is not None:
            if result_path(config).read_bytes() != data:  # (the same file: a window on this machine wrote it)
                taken["kept"].append(f"{run_name(config)}: another result is already stored; kept it")
                continue
        else:
            atomic_write(result_path(config), lambda f, d=data: f.write(d))
        taken["results"].append(run_name(config))
    for config, data, epoch in checked_partials:
        if load_result_or_none(config) is not None:
            taken["kept"].append(f"{run_name(config)}: finished already; its partial state is not needed")
            continue
        have = max((e for e in (checkpoint_epoch(_partial_path(config)), checkpoint_epoch(checkpoint_path(config)))
                    if e is not None), default=None)
        if have is not None and have > epoch:
            taken["kept"].append(f"{run_name(config)}: the window's {epoch + 1} epochs are older than the "
                                 f"{have + 1} already here; kept those")
            continue
        for dst in (_partial_path(config), checkpoint_path(config)):
            atomic_write(dst, lambda f, d=data: f.write(d))
        taken["partial"].append(run_name(config))
    for _, config in planned:  # a finished run needs no partial state
        if load_result_or_none(config) is not None:
            _partial_path(config).unlink(missing_ok=True)
    text = status_text(preset, only, **overrides)
    atomic_write(status_file(planned, preset), lambda f: f.write((text + "\n").encode()))
    taken["device"], taken["stopped_because"] = str(summary.get("device")), str(summary.get("stopped_because"))
    taken["status_file"] = str(status_file(planned, preset))
    return taken


def load_result_or_none(config: Config) -> dict | None:
    """The stored result of `config`, or None where there is none or it fails the store's checks."""
    try:
        return load_result(config)
    except StoreError:
        return None
