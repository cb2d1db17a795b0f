"""Running a plan here: the runs of a preset's notebooks, one after another or K side by side.

`train_plan` is what `make results` / `python -m qnets results` runs locally; the campaign
(`qnets.campaign`) and the cluster jobs (`qnets.cluster`) train their groups with `train_group`.
"""
from __future__ import annotations

import time

from . import locks
from .experiments import plan
from .locks import RunBusy
from .streams import fit_together
from .train import Config, fit, load_result, lock_path, resolve_device, result_path, run_name

__all__ = ["pack_groups", "train_group", "train_plan"]


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
    """Train the selected configs in order; each result is written as soon as it finishes, so an
    interruption loses only the runs in flight (which resume from their checkpoints). With `pack`
    > 1, up to `pack` runs train side by side (`qnets.streams`; a run that ends makes room for the
    next in plan order); results and names are those of lone runs. Prints one summary line per run.
    `runtime` overrides runtime fields (device, compile, ...); `force` trains every selected run again."""
    configs = {k: c.replace(**runtime) for k, c in plan(preset, selection).items()}
    stored = set() if force else {label for label, c in configs.items() if result_path(c).exists()}
    out, t0, began = {}, time.time(), {}  # began: when each run side by side started

    def report(label, r, found=None):
        if r is None:  # another process holds the run's lock (fit_together warned)
            print(f"[{len(out) + 1}/{len(configs)}] {label:24s} busy      another process is training it: left to it",
                  flush=True)
            return
        acc, start, path = r["final_test_acc"], began.get(label, t0), result_path(configs[label])
        if found is None:  # side by side: stored before the run started (here, or by another process)
            found = label in stored or (path.exists() and path.stat().st_mtime < start)
        how = "stored" if found else f"trained in {time.time() - start:.0f}s" + _how(r)
        print(f"[{len(out) + 1}/{len(configs)}] {label:24s} {r['status']:9s} "
              f"test acc {acc if acc is None else f'{acc:.4f}'}  ({how}, {r['device']}) -> "
              f"{result_path(configs[label])}", flush=True)
        out[label] = r

    todo = [label for label in configs if label not in stored]
    if pack > 1 and len(todo) > 1:  # K runs at a time; each that ends makes room for the next
        if all(resolve_device(c.device).type == "cpu" for c in configs.values()):
            print(f"--pack {pack} on a CPU: the runs take turns, no faster than one after another", flush=True)
        for label in (label for label in configs if label in stored):
            report(label, fit(configs[label], verbose=verbose, label=label))
        queue = todo[pack:]

        def refill(live):
            if not queue:
                return None
            began[queue[0]] = time.time()
            return configs[queue[0]], queue.pop(0)
        began |= {label: time.time() for label in todo[:pack]}
        results = train_group([configs[label] for label in todo[:pack]], labels=todo[:pack], refill=refill,
                              on_end=lambda c, label, r: report(label, r), verbose=verbose, force=force)
        for label, r in zip(todo, results):
            if r is None:
                report(label, None)
        return {label: out[label] for label in configs if label in out}
    for label, config in configs.items():
        try:  # decided under the run's lock: stored (perhaps by another process), or trained here
            lock = locks.hold(lock_path(config), run_name(config))
        except RunBusy as e:
            print(f"[{len(out) + 1}/{len(configs)}] {label:24s} busy      {e}", flush=True)
            continue
        try:
            before, t0 = None if force else load_result(config), time.time()
            r = fit(config, force=force, verbose=verbose, label=label)
        finally:
            if lock is not None:
                lock.release()
        report(label, r, found=before is not None and r == before)
    return {label: out[label] for label in configs if label in out}
