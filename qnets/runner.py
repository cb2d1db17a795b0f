"""Running a plan here, and where each run of a plan stands.

`train_plan` is what `make results` / `python -m qnets results` runs locally; the campaign
(`qnets.campaign`) and the cluster jobs (`qnets.cluster`) train their groups with `train_group`.
`status` is the one account of a plan's runs that `results --status`, the campaign and the cluster
all give: done, running (by whom), failed (why), partial (epochs checkpointed) or to do, and what
the runs left would cost at the measured pace (`qnets.experiments.training_cost`).
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from . import locks
from .experiments import plan, shared, training_cost
from .locks import RunBusy, describe_holder, read_lock, stale
from .streams import fit_together
from .train import (Config, StoreError, checkpoint_epoch, checkpoint_path, fit, load_result, lock_path, resolve_device,
                    result_path, run_name, waiting_for)

__all__ = ["pack_groups", "train_group", "train_plan", "failure_path", "run_state", "status", "status_text"]


def pack_groups(configs: dict[str, Config], pack: int, force: bool = False) -> list[list[str]]:
    """Labels of the configs still to train (all of them with `force`), in plan order, in groups of
    at most `pack` runs to train side by side (`qnets.streams`)."""
    if not isinstance(pack, int) or isinstance(pack, bool) or pack < 1:
        raise ValueError(f"pack must be a positive integer, got {pack!r}")
    todo = [label for label, c in configs.items() if force or not result_path(c).exists()]
    return [todo[i:i + pack] for i in range(0, len(todo), pack)]


def train_group(configs: list[Config], labels: list[str] | None = None, **kw) -> list[dict]:
    """Train runs that `pack_groups` put together and return their results in order: one run by
    `fit`, several side by side by `qnets.streams.fit_together` (also one run with a `refill`, so that
    runs that end make room for the next ones); `kw`: verbose, force, deadline, refill, on_end."""
    if len(configs) > 1 or kw.get("refill") is not None:
        return fit_together(configs, labels=labels, **kw)
    kw.pop("on_end", None)
    return [fit(configs[0], label=labels[0] if labels else None, **kw)]


def _how(r: dict) -> str:
    """How a run shared the GPU, for a summary line."""
    return f" beside {r['together']['k'] - 1} other runs" if r.get("together") else ""


def train_plan(preset: str, selection: str = "all", verbose: bool = True, pack: int = 1, force: bool = False,
               **runtime) -> dict:
    """Train the selected configs in order, each result written as it finishes (an interruption loses
    only the runs in flight, which resume from their checkpoints); runs whose trained start is missing
    wait. With `pack` > 1, up to `pack` runs train side by side (`qnets.streams`), with the results of
    lone runs. One line per run; `runtime` overrides runtime fields, `force` trains every run again."""
    configs = {k: c.replace(**runtime) for k, c in plan(preset, selection).items()}
    stored = set() if force else {label for label, c in configs.items() if result_path(c).exists()}
    out, t0, began = {}, time.time(), {}  # began: when each run started

    def line(label, text):
        print(f"[{len(out) + 1}/{len(configs)}] {label:24s} {text}", flush=True)

    def report(label, r, found=None):
        if r is None:  # another process holds the run's lock (fit_together warned)
            return line(label, "busy      another process is training it: left to it")
        acc, start, path = r["final_test_acc"], began.get(label, t0), result_path(configs[label])
        if found is None:  # side by side: stored before the run started (here, or by another process)
            found = label in stored or (path.exists() and path.stat().st_mtime < start)
        how = "stored" if found else f"trained in {time.time() - start:.0f}s" + _how(r)
        line(label, f"{r['status']:9s} test acc {acc if acc is None else f'{acc:.4f}'}  ({how}, {r['device']}) -> "
                    f"{result_path(configs[label])}")
        out[label] = r

    def waits(label) -> bool:  # a run whose trained start is missing: said, and passed over
        why = None if label in stored else waiting_for(configs[label])
        if why:
            line(label, f"waiting   for the trained weights of {why}")
        return bool(why)

    todo = [label for label in configs if label not in stored]
    if pack > 1 and len(todo) > 1:  # K runs at a time; each that ends makes room for the next
        if all(resolve_device(c.device).type == "cpu" for c in configs.values()):
            print(f"--pack {pack} on a CPU: the runs take turns, no faster than one after another", flush=True)
        for label in (label for label in configs if label in stored):
            report(label, fit(configs[label], verbose=verbose, label=label))
        todo = [label for label in todo if not waits(label)]
        queue = todo[pack:]

        def refill(live):
            while queue and waits(queue[0]):
                queue.pop(0)
            if not queue:
                return None
            began[queue[0]] = time.time()
            return configs[queue[0]], queue.pop(0)
        began |= {label: time.time() for label in todo[:pack]}
        results = train_group([configs[label] for label in todo[:pack]], labels=todo[:pack], refill=refill,
                              on_end=lambda c, label, r: report(label, r), verbose=verbose, force=force) if todo else []
        for label, r in zip(todo, results):
            if r is None:
                report(label, None)
    else:
        for label in (label for label in configs if not waits(label)):  # (asked as each comes up)
            try:
                began[label] = time.time()
                report(label, *_locked_fit(label, configs[label], force, verbose))
            except RunBusy as e:
                line(label, f"busy      {e}")
    return {label: out[label] for label in configs if label in out}


def _locked_fit(label: str, config: Config, force: bool, verbose: bool) -> tuple[dict, bool]:
    """Train one run of a plan under its lock: (its result, whether it was stored already, perhaps
    by another process). Raises RunBusy where another process holds the run."""
    lock = locks.hold(lock_path(config), run_name(config))
    try:
        before = None if force else load_result(config)
        r = fit(config, force=force, verbose=verbose, label=label)
    finally:
        if lock is not None:
            lock.release()
    return r, before is not None and r == before


# ----------------------------------------------------------------------------- where a plan stands

def failure_path(config: Config) -> Path:
    """Where a job that failed on a run records why (the error, the job, its log)."""
    return Path(config.out_dir) / "cluster" / "failed" / f"{run_name(config)}.json"


def run_state(config: Config, checkpoints: tuple[Path, ...] = ()) -> dict:
    """Where one run stands: name, epochs, `done` (epochs trained: the result's, else the first
    checkpoint found here or in `checkpoints`) and `state`: done (with `result`), running (a live
    lock's `holder`), failed (`error`: a stored result that fails its checks, or a job's failure
    record), partial, waiting (`for`: the run whose trained weights it starts from) or to do (with
    `stale` when the lock's last holder stopped)."""
    row = {"name": run_name(config), "epochs": config.epochs, "done": 0}
    try:
        r = load_result(config)
    except StoreError as e:
        return row | {"state": "failed", "error": str(e)}
    if r is not None:
        return row | {"state": "done", "done": r["epochs_run"], "result": r, "shared": shared(r)}
    for path in (checkpoint_path(config), *checkpoints):
        epoch = checkpoint_epoch(path)
        if epoch is not None:
            row["done"] = epoch + 1
            break
    holder = read_lock(lock_path(config))
    why_stale = None if holder is None else stale(holder)
    if holder is not None and why_stale is None:
        return row | {"state": "running", "holder": holder, "heartbeat_age": time.time() - holder["heartbeat"]}
    failure = None
    if failure_path(config).exists():
        with contextlib.suppress(OSError, ValueError):
            failure = json.loads(failure_path(config).read_text())
    if isinstance(failure, dict) and failure.get("error"):
        row |= {"state": "failed", "error": str(failure["error"]), "failure": failure}
    elif why := waiting_for(config):  # (a checkpoint does not help: the run is built from those weights first)
        row |= {"state": "waiting", "for": why}
    else:
        row["state"] = "partial" if row["done"] else "to do"
    return row | ({"stale": {"holder": holder, "why": why_stale}} if holder is not None else {})


def status(configs: dict[str, Config], checkpoints=lambda config: ()) -> list[dict]:
    """`run_state` of every run of `configs` (label -> config), with its `label`; `checkpoints(config)`
    names further places its checkpoint may be (the campaign's committed partial state)."""
    return [{"label": label} | run_state(c, tuple(checkpoints(c))) for label, c in configs.items()]


STATES = ("done", "running", "partial", "failed", "waiting", "to do")  # where a run of a plan stands


def _details(r: dict) -> str:
    if r["state"] == "done":
        res = r["result"]
        acc = res["final_test_acc"]
        return (f"{100 * acc:.2f}%" if acc is not None else res["status"]) + f" ({res['wall_time'] / 60:.1f} min" + (
            f" shared by {r['shared']} runs" if r["shared"] > 1 else "") + f", {res['device']})"
    if r["state"] == "running":
        h = r["holder"]
        return f"{describe_holder(h)}, heartbeat {r['heartbeat_age']:.0f} s ago" + (f"; log {h['log']}" if h.get("log")
                                                                                     else "")
    if r["state"] == "failed":
        f = r.get("failure") or {}
        return r["error"] + (f" ({describe_holder(f | {'since': f.get('time')})})" if f else "") + (
            f"; log {f['log']}" if f.get("log") else "")
    if r["state"] == "waiting":
        return f"starts from the trained weights of {r['for']}"
    return f"last holder {describe_holder(r['stale']['holder'])} stopped: {r['stale']['why']}" if r.get("stale") else ""


def status_text(configs: dict[str, Config], cpu: bool, checkpoints=lambda config: ()) -> str:
    """`status` as a table, a count of each state, the device time the done runs took (CPU-hours,
    or with `cpu` False GPU-minutes; a run trained beside k − 1 others counts 1/k) and what the runs
    not done would take at the pace measured on that kind of device."""
    rows = status(configs, checkpoints)
    w = max([28] + [len(r["label"]) for r in rows])
    lines = [f"{'run':{w}s} {'state':8s} {'epochs':>9s}  details"]
    lines += [f"{r['label']:{w}s} {r['state']:8s} {r['done']:>4d}/{r['epochs']:<4d}  {_details(r)}".rstrip()
              for r in rows]
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    done = [r["result"] for r in rows if r["state"] == "done" and (r["result"]["device"] == "cpu") == cpu]
    spent = sum(r["wall_time"] / shared(r) for r in done)
    unit, fmt = ("CPU-hours", lambda s: f"{s / 3600:.1f}") if cpu else ("GPU-minutes", lambda s: f"{s / 60:.0f}")
    left = [(configs[r["label"]], r["epochs"] - r["done"]) for r in rows if r["state"] != "done"]
    if not left:
        rest = "nothing left"
    else:  # at the pace of the runs stored beside these ones (their results folder)
        cost = training_cost([c for c, _ in left], not cpu, Path(left[0][0].out_dir) / "runs",
                             epochs_left=[n for _, n in left])
        rest = f"about {fmt(cost[0])} {unit} left ({cost[1]})" if cost else \
            f"{unit} left unknown: no run of these networks timed yet"
    lines.append("\n" + ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("done", "to do"))
                 + f" of {len(rows)} runs; {fmt(spent)} {unit} spent on the done runs; {rest}")
    return "\n".join(lines)
