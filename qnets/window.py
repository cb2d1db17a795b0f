"""One budgeted window of a campaign (`qnets.campaign`): `run` trains the plan's next runs until its
budget is nearly spent (never an epoch it cannot finish), checkpoints what is in flight and writes
its output folder: results.tar, weights.tar, partial-N.tar and summary.json, at most MAX_FILES files.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
import tarfile
import threading
import time
import warnings
from pathlib import Path

from .campaign import (MARGIN_S, MAX_BYTES, MAX_FILES, MAX_FILE_BYTES, PARTIAL_BUDGET, _checkpoint_bytes,
                       _epochs_done, _network, _partial_path, plan)
from .experiments import training_cost
from .locks import RunBusy
from .runner import train_group
from .train import (Config, checkpoint_epoch, checkpoint_path, load_result, result_path, run_name, waiting_for,
                    weights_path)
from .utils import atomic_write

__all__ = ["run", "WindowStopped"]


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
    w = _Loop(todo, pack, planned, deadline, partial_bytes, verbose, finished, touched, log, stop)
    why = None
    while todo and why is None:
        if stop["asked"]:
            return "stopped by SIGTERM"
        group, why = w.next_group()
        if group:
            why = w.train(group)
    return why


class _Loop:
    """What `_advance` keeps between groups: the plan left to do, what travels, what was compiled."""

    def __init__(self, todo, pack, planned, deadline, partial_bytes, verbose, finished, touched, log, stop):
        self.todo, self.pack, self.planned, self.deadline = todo, pack, planned, deadline
        self.partial_bytes, self.verbose, self.finished, self.touched, self.log = partial_bytes, verbose, finished, \
            touched, log
        self.stop, self.compiled = stop, set()  # compiled: networks compiled here; later runs reuse the code

    def next_group(self) -> tuple[list, str | None]:
        """The next runs to train side by side, or why none can start (partial state, budget)."""
        ready = [(k, c) for k, c in self.todo if not waiting_for(c)]
        if not ready:
            return [], f"the runs left start from trained weights not here yet (first: {waiting_for(self.todo[0][1])})"
        group = _fitting(_next_group(ready, self.pack), PARTIAL_BUDGET - self.partial_bytes)
        if not group:
            key, first = ready[0]
            return [], (f"starting {key} could leave {_checkpoint_bytes(first) / 2**20:.0f} MiB of partial state "
                        f"beside {self.partial_bytes / 2**20:.0f} MiB, over the {PARTIAL_BUDGET / 2**20:.0f} MiB "
                        "that travels")
        while len(group) > 1 and time.monotonic() + _first_epoch_seconds(group, self.compiled) \
                >= self.deadline:
            group = group[:-1]  # fewer runs side by side finish their first epoch sooner
        need_s = _first_epoch_seconds(group, self.compiled)
        if time.monotonic() + need_s >= self.deadline:
            return [], (f"the budget is spent: {group[0][0]} needs about {need_s:.0f} s for its first epoch"
                        if need_s else "the budget is spent")
        return group, None

    def refill_for(self, group: list, fresh: list, refilled: list):
        """The next run in plan order, to take the place of one that ended: if its partial state fits
        beside what is in flight and its first epoch, beside the runs still training, ends in time."""
        def refill(live: list[Config]) -> tuple[Config, str] | None:
            taken = {run_name(c) for _, c in group}
            following = [(k, c) for k, c in self.todo if run_name(c) not in taken and not waiting_for(c)][:1]
            in_flight = sum(_checkpoint_bytes(c) for c in fresh)
            if not following or not _fitting(following, PARTIAL_BUDGET - self.partial_bytes - in_flight):
                return None
            if time.monotonic() + _first_epoch_seconds([(k, c) for k, c in group if c in live] + following,
                                                       self.compiled) >= self.deadline:
                return None
            (key, config), = following
            group.append((key, config))
            refilled.append(key)
            fresh.extend([config] if _epochs_done(config) == 0 else [])
            self.compiled.add(_network(config))
            return config, key
        return refill

    def train(self, group: list) -> str | None:
        """Train `group` (refilled as runs end); record what happened; return why to stop, or None."""
        configs = [c for _, c in group]
        fresh = [c for c in configs if _epochs_done(c) == 0]
        self.compiled |= {_network(c) for c in configs}
        t0, refilled = time.monotonic(), []
        try:
            rolling = {"refill": self.refill_for(group, fresh, refilled)} if self.pack > 1 else {}
            self.stop["training"] = True
            results = train_group(configs, labels=[k for k, _ in group], verbose=self.verbose,
                                  deadline=self.deadline, **rolling)  # side by side, ended runs make room
        except RunBusy as e:  # another process trains this run: the window goes on with the next
            self.stop["training"] = False
            self.log.append({"runs": [k for k, _ in group], "seconds": time.monotonic() - t0, "busy": str(e)})
            self.todo[:] = [(k, c) for k, c in self.todo if run_name(c) != e.run]
            return None
        except Exception as e:  # a window is scarce: keep what it did, and what it can still do
            self.stop["training"] = False
            return self.failed(group, fresh, e, t0)
        self.stop["training"] = False
        self.log.append({"runs": [k for k, _ in group], "seconds": time.monotonic() - t0,
                         "states": [r["status"] if r else "busy" for r in results]}
                        | ({"refilled": refilled} if refilled else {}))
        busy = {run_name(config) for (_, config), r in zip(group, results) if r is None}
        for (key, config), r in zip(group, results):
            if r is not None:
                self.touched.append(config)
                if r["status"] == "partial":
                    self.partial_bytes += _checkpoint_bytes(config) if config in fresh else 0
                else:
                    self.finished.append(config)
        # runs another process trains are left to it; finished ones are done
        self.todo[:] = [(k, c) for k, c in self.todo if c not in self.finished and run_name(c) not in busy]
        if any(r is not None and r["status"] == "partial" for r in results):
            return "the budget is spent (runs in flight were checkpointed)"
        return None

    def failed(self, group: list, fresh: list, e: Exception, t0: float) -> str | None:
        """Training `group` raised: keep what ended before it and the checkpoints; a group goes on
        alone, a lone run's failure ends the window."""
        failure = f"{type(e).__name__}: {str(e)[:500]}"
        self.log.append({"runs": [k for k, _ in group], "seconds": time.monotonic() - t0, "failed": failure})
        configs = [c for _, c in group]  # refills included
        self.finished += [c for c in configs if c not in self.finished and load_result(c) is not None]
        self.todo[:] = [(k, c) for k, c in self.todo if c not in self.finished]
        kept = [c for c in configs if c not in self.finished and checkpoint_epoch(checkpoint_path(c)) is not None]
        self.touched += kept
        self.partial_bytes += sum(_checkpoint_bytes(c) for c in kept if c in fresh)
        if isinstance(e, WindowStopped):
            return str(e)
        if len(group) == 1:
            return f"{group[0][0]} failed: {failure}"
        warnings.warn(f"training {len(group)} runs at once failed ({failure}); this window trains the rest alone")
        self.pack = 1
        return None


FIRST_EPOCH_OVERHEAD_S = {"cuda": 60.0, "cpu": 0.0}  # compilation and CUDA-graph capture before the first step


def _first_epoch_seconds(group: list[tuple[str, Config]], compiled: set[tuple] = frozenset()) -> float:
    """What the first epoch of `group`'s runs, trained together in this process, costs: an epoch of
    each run at the pace measured on this kind of device (`qnets.experiments.pace`: stored runs, a
    run beside k − 1 others counting 1/k, else the bench), one after another (running side by side
    only helps), plus compilation and graph capture for each network not in `compiled`."""
    import torch
    total, networks = 0.0, set()
    for _, config in group:
        device = "cuda" if torch.cuda.is_available() and config.device != "cpu" else "cpu"
        cost = training_cost([config], device == "cuda", Path(config.out_dir) / "runs", epochs_left=[1])
        total += cost[0] if cost else 0.0
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
    """results.tar (finished results), weights.tar (the trained weights finished conventional runs
    left), partial-N.tar (checkpoints, each file under MAX_FILE_BYTES) and summary.json: at most
    MAX_FILES files in all."""
    for old in out.glob("*"):
        if old.is_file() and (old.name.startswith(("results", "partial-", "weights")) or old.name == "summary.json"):
            old.unlink()
    files = {"results.tar": _tar_bytes([(result_path(c).name, result_path(c).read_bytes()) for c in finished])}
    weights = [weights_path(c) for c in finished if weights_path(c).is_file()]  # where later runs start
    if weights:
        files["weights.tar"] = _tar_bytes([(w.name, w.read_bytes()) for w in weights])
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

