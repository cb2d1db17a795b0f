"""K lone runs side by side on one GPU, each on its own CUDA stream.

One run's kernels (16-64 channels on 32×32 images) leave most of a large GPU idle, and the
GPU waits while the host prepares each step. `fit_together` trains K runs in one process as K
`train.Lane`s that take turns a step at a time; each lane's work (its batches, its captured
CUDA graph, its evaluation and checkpoints) is issued on its own CUDA stream, so the GPU runs
one run's kernels while others wait for theirs. Each run is exactly its lone run: the same
network, compiled code (shared by runs of one network), optimiser, data order and result file,
so the runs may be of different networks and depths, and nothing one run does (diverging
included) reaches another. On a CPU the lanes simply take turns.

Nothing is merged: what it gains is concurrency, measured by `python -m qnets bench --pack K`
(results/bench/*-packing.json).
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence

import torch

from .locks import RunBusy
from .train import Config, Lane, load_data, load_datasets, prepare, resolve_device, reusable, run_name

__all__ = ["fit_together"]


def stream_for(device: torch.device):
    """A new CUDA stream that starts after the work queued so far, and a context that issues work
    on it: (context factory, stream); on a CPU a null context and None."""
    if device.type != "cuda":
        return contextlib.nullcontext, None
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))  # what was set up before starts first
    return (lambda: torch.cuda.stream(stream)), stream


Refill = Callable[[list[Config]], "tuple[Config, str | None] | None"]


def fit_together(configs: Sequence[Config], verbose: bool = True, force: bool = False, deadline: float | None = None,
                 labels: Sequence[str] | None = None, refill: Refill | None = None,
                 on_end: Callable[[Config, "str | None", dict], None] | None = None) -> list[dict]:
    """Train `configs` side by side (see the module docstring) and return their results in order,
    as `fit` would one by one: stored results are returned without training unless `force`; each
    run resumes from its own checkpoint and writes its own result when it ends (a collapsed run
    when it collapses); with a `deadline` each run stops between its epochs, checkpointed, and
    returns `partial`. Whenever a run ends, `refill(configs of the runs still training)` may
    name another (config, label) to take its place, or None; the results of runs started that
    way follow, in the order they started. `on_end(config, label, result)` is called as each run
    ends (a stored one as it is found). A run that started beside others records how many were
    training then, itself included ("together": {"k": ...}). A run that another process is
    training (it holds the run's lock) is left to it, with a warning: its result is None."""
    configs = list(configs)
    _check(configs)
    labels = list(labels) if labels else [None] * len(configs)
    if len(labels) != len(configs):
        raise ValueError(f"fit_together: {len(labels)} labels for {len(configs)} runs")
    return _Together(configs, labels, verbose, force, deadline, refill, on_end).run()


class _Together:
    """The state of `fit_together`: the runs so far (refills appended), their results and lanes."""

    def __init__(self, configs, labels, verbose, force, deadline, refill, on_end):
        self.configs, self.labels, self.verbose, self.force, self.deadline = configs, labels, verbose, force, deadline
        self.refill, self.on_end = refill, on_end
        for c in configs:
            prepare(c, force)
        self.device, self.read = resolve_device(configs[0].device), {}  # read: CIFAR-10 as read once, refills too
        self.datasets = load_datasets(configs, self.read)
        self.results = [None if force else reusable(c, d) for c, d in zip(configs, self.datasets)]
        self.lanes, self.contexts, self.streams, self.live = {}, {}, [], []

    def run(self) -> list[dict | None]:
        todo = [i for i, r in enumerate(self.results) if r is None]
        for i, r in enumerate(self.results):
            if r is not None:
                self.ended(i)
        try:
            for i in todo:
                self.start(i, self.datasets[i], len(todo))
            self.live = list(self.lanes)
            for _ in range(len(self.results) - len(self.live)):  # runs found stored or busy leave their places
                j = self.another()
                if j is None:
                    break
                self.live.append(j)
            while self.live:
                for i in list(self.live):
                    with self.contexts[i]():
                        running = self.lanes[i].advance()
                    if not running:
                        self.live.remove(i)
                        self.results[i] = self.lanes[i].result
                        self.ended(i)
                        j = self.another()
                        if j is not None:
                            self.live.append(j)
        finally:
            for lane in self.lanes.values():
                lane.close()
            for stream in self.streams:  # later work on the default stream sees everything the lanes did
                torch.cuda.current_stream(self.device).wait_stream(stream)
        return self.results

    def ended(self, i: int) -> None:
        if self.on_end is not None:
            self.on_end(self.configs[i], self.labels[i], self.results[i])

    def start(self, i: int, dataset, k: int) -> bool:
        """Start run i's lane; False (the run left to it, its result None) where another process
        trains it."""
        self.contexts[i], stream = stream_for(self.device)
        self.streams.extend([stream] if stream is not None else [])
        try:
            with self.contexts[i]():
                self.lanes[i] = Lane(self.configs[i], dataset, self.device, self.deadline, self.verbose,
                                     self.labels[i], self.force, **({"together": {"k": k}} if k > 1 else {}))
        except RunBusy as e:
            warnings.warn(str(e))
            return False
        return True

    def another(self) -> int | None:
        """The next run `refill` names (one with a stored result is returned as it is)."""
        while self.refill is not None:
            got = self.refill([self.configs[i] for i in self.live])
            if got is None:
                return None
            (config, label), i = got, len(self.configs)
            _check(self.configs + [config])
            prepare(config, self.force)
            dataset = load_data(config, self.read)
            self.configs.append(config)
            self.labels.append(label)
            self.results.append(None if self.force else reusable(config, dataset))
            if self.results[i] is None:
                if self.start(i, dataset, len(self.live) + 1):
                    return i
                continue
            self.ended(i)
        return None


def _check(configs: list) -> None:
    for c in configs:
        if not isinstance(c, Config):
            raise TypeError(f"fit_together expects qnets.train.Config objects, got {type(c).__name__}")
    if len({c.device for c in configs}) > 1:
        raise ValueError("fit_together: the runs name different devices "
                         f"({sorted({c.device for c in configs})}); give them one device")
    if len({run_name(c) for c in configs}) < len(configs):
        raise ValueError("fit_together: a run is listed twice; give each config once")
