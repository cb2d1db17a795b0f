"""K lone runs side by side on one GPU, each on its own CUDA stream.

One run's kernels (16-64 channels on 32×32 images) leave most of a large GPU idle, and the
GPU waits while the host prepares each step. `fit_together` trains K runs in one process as K
`train.Lane`s that take turns a step at a time; each lane's work (its batches, its captured
CUDA graph, its evaluation and checkpoints) is issued on its own CUDA stream, so the GPU runs
one run's kernels while others wait for theirs. Each run is exactly its lone run: the same
network, compiled code (shared by runs of one network), optimiser, data order and result file,
so the runs may be of different networks and depths, and nothing one run does (diverging
included) reaches another. On a CPU the lanes simply take turns.

Unlike `qnets.packed` (K runs of one network fused into one, grouped convolutions), nothing is
merged: what it gains is concurrency, measured by `python -m qnets bench --pack K --mechanisms
streams` (results/bench/*-packing.json).
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from .train import Config, Lane, load_datasets, prepare, resolve_device, reusable, run_name

__all__ = ["fit_together"]


def _stream_for(device: torch.device):
    if device.type != "cuda":
        return contextlib.nullcontext, None
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))  # what was set up before starts first
    return (lambda: torch.cuda.stream(stream)), stream


def fit_together(configs: Sequence[Config], verbose: bool = True, force: bool = False, deadline: float | None = None,
                 labels: Sequence[str] | None = None) -> list[dict]:
    """Train `configs` side by side (see the module docstring) and return their results in order,
    as `fit` would one by one: stored results are returned without training unless `force`; each
    run resumes from its own checkpoint and writes its own result when it ends (a collapsed run
    when it collapses); with a `deadline` each run stops between its epochs, checkpointed, and
    returns `partial`. The results record the runs that trained together ("together")."""
    configs = list(configs)
    for c in configs:
        if not isinstance(c, Config):
            raise TypeError(f"fit_together expects qnets.train.Config objects, got {type(c).__name__}")
    if len({c.device for c in configs}) > 1:
        raise ValueError("fit_together: the runs name different devices "
                         f"({sorted({c.device for c in configs})}); give them one device")
    if len({run_name(c) for c in configs}) < len(configs):
        raise ValueError("fit_together: a run is listed twice; give each config once")
    labels = list(labels) if labels else [None] * len(configs)
    if len(labels) != len(configs):
        raise ValueError(f"fit_together: {len(labels)} labels for {len(configs)} runs")
    for c in configs:
        prepare(c, force)
    device = resolve_device(configs[0].device)
    datasets = load_datasets(configs)
    results: list[dict | None] = [None if force else reusable(c, d) for c, d in zip(configs, datasets)]
    todo = [i for i, r in enumerate(results) if r is None]
    together = {"k": len(todo), "runs": [run_name(configs[i]) for i in todo]}
    lanes, contexts, streams = {}, {}, []
    try:
        for i in todo:
            contexts[i], stream = _stream_for(device)
            streams += [stream] if stream is not None else []
            with contexts[i]():
                lanes[i] = Lane(configs[i], datasets[i], device, deadline, verbose, labels[i],
                                **({"together": together} if len(todo) > 1 else {}))
        live = list(lanes)
        while live:
            for i in list(live):
                with contexts[i]():
                    if not lanes[i].advance():
                        live.remove(i)
                        results[i] = lanes[i].result
    finally:
        for lane in lanes.values():
            lane.bar.close()
        for stream in streams:  # later work on the default stream sees everything the lanes did
            torch.cuda.current_stream(device).wait_stream(stream)
    return results
