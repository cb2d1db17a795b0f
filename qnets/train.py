"""The one training loop: every experiment is a `Config` passed to `fit`.

`fit` trains a CIFAR ResNet with ReLinear, stores the result as JSON under `<out_dir>/runs/`
(named by a hash of the config, `qnets.store`) and returns it; a stored result is returned
instead of retraining. Checkpoints are written every `checkpoint_every` epochs, atomically, and a
run started again with the same config resumes from the last one. `fit` drives one `Lane` (a run
advanced a training step at a time, holding the run's lock) to its end; `qnets.streams` drives
several side by side. Each step runs on the device's fast path (`qnets.fastpath.Trainer`).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import torch

from . import data as qdata
from . import locks, relinear
from .config import Config, _f, config_hash, lr_factor, run_name
from .fastpath import (CPU_COMPILE_MIN_STEPS, Trainer, capabilities, channels_last_for, describe_runtime, precision_for,
                       resolve_device)
from .models import resnet
from .store import (COLLAPSE_RULE, STATUSES, StoreError, checkpoint_epoch, checkpoint_path, collapse_reason,
                    conventional_state, epoch_seconds, load_checkpoint_file, load_result, lock_path, prepare,
                    read_checkpoint, read_result, result_path, reusable, waiting_for, weights_path, write_checkpoint,
                    write_result, write_weights)
from .utils import DiskFull, timestamp

# The run in one place: its config (`qnets.config`), its step (`qnets.fastpath`), its store
# (`qnets.store`) and the loop here, under the names notebooks and scripts import from qnets.train.
__all__ = ["Config", "fit", "Lane", "Run", "build_model", "make_loaders", "load_data", "load_datasets",
           "config_hash", "run_name", "lr_factor", "result_path", "checkpoint_path", "lock_path", "load_result",
           "read_result", "read_checkpoint", "checkpoint_epoch", "load_checkpoint_file", "write_result",
           "write_checkpoint", "StoreError", "STATUSES", "COLLAPSE_RULE", "collapse_reason",
           "epoch_seconds", "prepare", "reusable", "Trainer", "capabilities", "precision_for", "describe_runtime",
           "channels_last_for", "resolve_device", "CPU_COMPILE_MIN_STEPS", "_f", "weights_path", "waiting_for"]

def load_data(config: Config, read: dict | None = None) -> "qdata.CIFAR10":
    """The dataset of `config`. `read` (data_root -> the full CIFAR-10) keeps what was read, so
    that several runs read each source once."""
    if config.dataset == "synthetic":
        return qdata.synthetic_cifar10(config.n_train or 2000, config.n_test or 500, seed=config.seed)
    read = {} if read is None else read
    if config.data_root not in read:
        read[config.data_root] = qdata.load_cifar10(config.data_root)
    return qdata.take(read[config.data_root], config.n_train, config.n_test, seed=config.seed)


def load_datasets(configs, read: dict | None = None) -> list:
    """Each config's dataset, reading CIFAR-10 once for all of them (and for later calls given the
    same `read`, see `load_data`)."""
    read = {} if read is None else read
    return [load_data(c, read) for c in configs]


def build_model(config: Config, fingerprint: str | None = None) -> torch.nn.Module:
    """The run's network, initialised (with the data `fingerprint`, trained weights it starts from
    must have been trained on the same data)."""
    torch.manual_seed(config.seed)
    model = resnet(config.depth, config.neuron, config.rezero, config.shortcut)
    if config.init == "naive":
        relinear.naive_init(model)
    elif config.init == "conventional":
        conv = resnet(config.depth, "conventional", config.rezero, config.shortcut)
        conv.load_state_dict(conventional_state(config, fingerprint))
        relinear.from_conventional(model, conv)
    return model


def make_loaders(config: Config, dataset: "qdata.CIFAR10", device: torch.device):
    """The training loader (shuffled, augmented, full batches only: a CUDA graph needs one shape)
    and the test loader (batches of 1,000) of `config` on `device`."""
    if config.batch_size > len(dataset.train):
        raise ValueError(f"Config.batch_size ({config.batch_size}) is larger than the training set "
                         f"({len(dataset.train)} images)")
    channels_last = channels_last_for(config, device)
    train = qdata.DeviceLoader(dataset.train, config.batch_size, train=True, device=device, seed=config.seed,
                               normalize=config.normalize, augment=config.augment, drop_last=True,
                               channels_last=channels_last)
    test = qdata.DeviceLoader(dataset.test, 1000, train=False, device=device, normalize=config.normalize,
                              channels_last=channels_last)
    return train, test


def evaluates(config: Config, epoch: int) -> bool:
    """Whether the test set is scored after `epoch` (0-based): every eval_every epochs and after the last."""
    return (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs


def progress(config: Config, verbose: bool, start_epoch: int, steps_per_epoch: int, label: str | None = None):
    """A progress bar counted in training images (so it moves within an epoch and shows images per
    second), labelled by the run's label (else its name). It is advanced from the host once per step
    (`Lane.training`) and never reads a device value, so it adds no GPU sync."""
    from tqdm.auto import tqdm
    per_epoch = steps_per_epoch * config.batch_size
    return tqdm(total=config.epochs * per_epoch, initial=start_epoch * per_epoch, disable=not verbose,
                unit="img", unit_scale=True, leave=True, desc=label or run_name(config), dynamic_ncols=True,
                mininterval=0.5,  # a redraw at most twice a second: logs of non-interactive runs stay short
                postfix=f"epoch {start_epoch}/{config.epochs}")


def show_epoch(bar, epoch: int, epochs: int, **values) -> None:
    """After an epoch: the bar's epoch counter and the epoch's numbers."""
    bar.set_postfix_str(f"epoch {epoch + 1}/{epochs} " + " ".join(f"{k} {v}" for k, v in values.items()), refresh=True)


NOT_EVALUATED = {"test_loss": None, "test_acc": None, "test_nonfinite": None, "test_max_logit": None}


def history_entry(epoch: int, train_loss: float, train_acc: float, test: dict | None, rates, epoch_time: float,
                  train_time: float, seen: int, model: torch.nn.Module) -> dict:
    """One epoch of a run's history (`test` from Trainer.evaluate, or None when not evaluated)."""
    return {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc} | (test or NOT_EVALUATED) | {
        "lr": rates, "epoch_time": epoch_time, "train_time": train_time, "images_per_s": seen / train_time,
        "quadratic": relinear.quadratic_stats(model).get("overall", {})}


def out_of_time(deadline: float | None, history: list[dict]) -> bool:
    """Whether another epoch, as long as the last one, would end after `deadline`
    (time.monotonic()); never before the first epoch of this process has a measured length."""
    return deadline is not None and bool(history) and time.monotonic() + history[-1]["epoch_time"] > deadline


def partial(config: Config, history: list[dict]) -> dict:
    """What fit returns for a run stopped by its deadline: no result is written; the checkpoint
    holds everything needed to go on."""
    return {"name": run_name(config), "status": "partial", "epochs_run": len(history), "epochs": config.epochs,
            "elapsed": sum(h["epoch_time"] for h in history)}


@dataclass
class Run:
    """One run in progress: what `fit` carries from epoch to epoch and writes into checkpoints."""
    config: Config
    trainer: Trainer
    history: list = field(default_factory=list)
    start: int = 0  # the first epoch to train (after a checkpoint's)
    elapsed: float = 0.0
    started: str = field(default_factory=timestamp)
    saved: int = -1  # the last epoch in a checkpoint
    fingerprint: str | None = None  # of the data the run trains on: recorded in its checkpoints

    def resume(self) -> "Run":
        """Load the run's checkpoint, if there is one for the same data: weights, momentum, RNG
        state and history."""
        ckpt = read_checkpoint(self.config, self.fingerprint)
        if ckpt is None:
            return self
        trainer, cuda = self.trainer, self.trainer.device.type == "cuda"
        trainer.model.load_state_dict(ckpt["model"])
        trainer.opt.load_state_dict(ckpt["optimizer"])
        trainer.rates_on_device(trainer.opt)
        torch.set_rng_state(ckpt["rng"]["cpu"])
        if cuda and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
        self.history, self.elapsed, self.started = ckpt["history"], ckpt["elapsed"], ckpt["started"]
        self.start, self.saved = ckpt["epoch"] + 1, ckpt["epoch"]
        return self

    def checkpoint(self, epoch: int) -> None:
        t = self.trainer
        write_checkpoint(self.config, epoch, t.model.state_dict(), t.opt.state_dict(), self.history, self.elapsed,
                         self.started, t.device.type == "cuda", self.fingerprint)
        self.saved = epoch


def sync(device: torch.device) -> None:
    """Wait for the work queued on the current CUDA stream (only this run's, when runs share the
    GPU on several streams); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.current_stream().synchronize()


class Lane:
    """One run, advanced a training step at a time (`training` is its loop): `fit` drives one lane
    to its end, `qnets.streams.fit_together` several side by side."""

    def __init__(self, config: Config, dataset: "qdata.CIFAR10", device: torch.device, deadline: float | None = None,
                 verbose: bool = True, label: str | None = None, force: bool = False, **extra):
        self.config, self.dataset, self.device, self.deadline, self.extra = config, dataset, device, deadline, extra
        # One process trains a run at a time: RunBusy where another live process holds its lock.
        self.lock, self.result = locks.hold(lock_path(config), run_name(config)), None
        try:
            # the result may have been written while the lock was held elsewhere: then this lane has ended
            self.stored, self.bar = (None if force else reusable(config, dataset)), None
            if self.stored is None:
                self._start(verbose, label)
        except BaseException:
            if self.lock is not None:
                self.lock.release()
            raise
        if self.stored is not None:
            self.result = self.stored
            self.close()

    def _start(self, verbose: bool, label: str | None) -> None:
        config, dataset, device = self.config, self.dataset, self.device
        fingerprint = qdata.fingerprint(dataset)
        model = build_model(config, fingerprint)  # before the loaders: the same random draws as every stored run
        self.train_loader, self.test_loader = make_loaders(config, dataset, device)
        self.run = Run(config, Trainer(config, model, device, len(self.train_loader)), fingerprint=fingerprint).resume()
        self.measured: list[dict] = []  # epochs timed in this process
        self.bar = progress(config, verbose, self.run.start, len(self.train_loader), label)
        self.run.trainer.model.train()
        self._loop = self.training()

    def training(self):
        """The run's loop, one training step per `next` (`fit` drains it; `qnets.streams` interleaves
        several): for each epoch left, stop checkpointed where the deadline would pass within it,
        train its steps on the fast path (`Trainer.train_step`: compiled, graphed), score the test set
        when due, end on a collapse, checkpoint when due; then store the result."""
        run, config, t, steps = self.run, self.config, self.run.trainer, len(self.train_loader)
        for epoch in range(run.start, config.epochs):
            if out_of_time(self.deadline, self.measured):
                if run.saved != epoch - 1:
                    run.checkpoint(epoch - 1)
                self.result = partial(config, run.history)
                return
            sync(t.device)
            t0, seen, rates = time.perf_counter(), 0, None
            t.zero_metrics()
            for i, (x, y) in enumerate(self.train_loader.epoch(epoch)):
                now = t.set_lr(epoch * steps + i)
                rates = rates or now  # the rates of the epoch's first step go into its history
                t.train_step(x, y)
                seen += y.shape[0]
                self.bar.update(y.shape[0])  # host side only: no device sync
                yield
            train_loss, train_acc = t.read_metrics(seen)
            train_time = time.perf_counter() - t0
            test = t.evaluate(self.test_loader) if evaluates(config, epoch) else None
            run.elapsed += (epoch_time := time.perf_counter() - t0)
            run.history.append(history_entry(epoch, train_loss, train_acc, test, rates, epoch_time, train_time,
                                             seen, t.model))
            self.measured.append(run.history[-1])
            show_epoch(self.bar, epoch, config.epochs, loss=f"{train_loss:.3f}", acc=f"{train_acc:.3f}",
                       test=f"{test['test_acc']:.3f}" if test else "-")
            reason = collapse_reason(run.history)
            if reason:
                return self._end("collapsed", reason)
            if (epoch + 1) % config.checkpoint_every == 0 and epoch + 1 < config.epochs:
                run.checkpoint(epoch)
        self._end("completed", None)

    def advance(self) -> bool:
        """One training step; False once the run has ended (its result, or `partial` when its
        deadline stopped it, is then in `result`)."""
        if self.stored is not None:
            return False
        try:
            next(self._loop)
            return True
        except StopIteration:
            self.close()
            return False

    def _end(self, status: str, reason: str | None) -> None:
        r = self.run
        self.result = write_result(self.config, status, reason, r.history, r.trainer.model, r.elapsed, r.started,
                                   self.device, r.trainer, self.dataset, **self.extra)
        # after the result, which is worth more: the weights later runs start from, the final checkpoint
        try:
            if status == "completed" and self.config.neuron == "conventional" and not self.config.init_from:
                # where init=conventional runs start (a network that itself started from weights is no one's start)
                write_weights(self.config, r.trainer.model.state_dict(), r.fingerprint, self.result["final_test_acc"])
            if status == "completed" and r.saved < self.config.epochs - 1:
                r.checkpoint(self.config.epochs - 1)
        except DiskFull as e:
            warnings.warn(f"{run_name(self.config)}: result stored, trained weights or final checkpoint not: "
                          f"{e.strerror}")

    def close(self) -> None:
        """Close the progress bar and release the run's lock (also when a lane stops early)."""
        if self.bar is not None:
            self.bar.close()
        if self.lock is not None:
            lock, self.lock = self.lock, None
            lock.release()


def fit(config: Config, force: bool = False, verbose: bool = True, deadline: float | None = None,
        label: str | None = None) -> dict:
    """Train `config` and return its result (see the module docstring); a stored result for the
    same config is returned without training unless `force`. Resumes from a checkpoint. With a
    `deadline` (time.monotonic()), no epoch starts that would end after it, judged by the last
    epoch's length: the run is then checkpointed and `partial` is returned instead of a result.
    `label` names the run on its progress bar."""
    if not isinstance(config, Config):
        raise TypeError(f"fit expects a qnets.train.Config, got {type(config).__name__}")
    prepare(config, force)
    device = resolve_device(config.device)
    dataset = load_data(config)
    lane = Lane(config, dataset, device, deadline, verbose, label, force)  # a stored result ends it at once
    try:
        while lane.advance():
            pass
    finally:
        lane.close()
    return lane.result
