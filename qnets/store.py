"""The results store: a run's result (JSON under `<out_dir>/runs/`, named by `run_name`) and its
checkpoints (`<out_dir>/checkpoints/`), written atomically and read back as untrusted files; the
collapse rule a result's status follows; what a run needs before it trains (`prepare`) and whether
a stored result may be reused (`reusable`: the same data)."""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from . import data as qdata
from . import relinear
from .config import SAME_RECIPE, Config, config_hash, parent, run_name
from .models import resnet
from .utils import atomic_json, atomic_save, is_finite, provenance, remove_orphans, timestamp, versions

__all__ = ["result_path", "checkpoint_path", "lock_path", "StoreError", "read_result", "load_result", "write_result",
           "read_checkpoint", "write_checkpoint", "checkpoint_epoch", "load_checkpoint_file", "STATUSES",
           "weights_path", "write_weights", "start_weights", "waiting_for", "conventional_weights",
           "conventional_state"]

STATUSES = ("completed", "collapsed")


def result_path(config: Config) -> Path:
    return Path(config.out_dir) / "runs" / f"{run_name(config)}.json"


def checkpoint_path(config: Config) -> Path:
    return Path(config.out_dir) / "checkpoints" / f"{run_name(config)}.pt"


def weights_path(config: Config) -> Path:
    """The trained weights of a finished conventional run (committed: later runs start from them)."""
    return Path(config.out_dir) / "weights" / f"{run_name(config)}.pt"


def lock_path(config: Config) -> Path:
    """The run's lock (`qnets.locks`): held by whichever process trains it (not committed)."""
    return Path(config.out_dir) / "cluster" / "locks" / f"{run_name(config)}.lock"


class StoreError(ValueError):
    """A stored result or checkpoint cannot be used; the message names the file and what to do."""


def _fraction(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1)


def read_result(path: str | Path) -> dict:
    """Read and check a stored result. Raises StoreError naming the file and the field at fault."""
    path = Path(path)
    fix = "delete it, or train it again with --force"
    try:
        text = path.read_text()
    except OSError as e:
        raise StoreError(f"{path}: cannot be read ({e.strerror}); {fix}") from None
    try:  # files written before results were strict JSON may hold NaN: read as null
        r = json.loads(text, parse_constant=lambda name: None)
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: not a valid result (broken JSON at line {e.lineno}: {e.msg}); {fix}") from None

    def bad(field, what):
        raise StoreError(f"{path}: field {field!r} {what}; {fix}")
    if not isinstance(r, dict):
        bad("(top level)", "is not an object")
    for key in ("name", "config", "status", "history", "final_test_acc", "epochs_run"):
        if key not in r:
            bad(key, "is missing")
    if r["name"] != path.stem:
        bad("name", f"is {r['name']!r}, not the file's name {path.stem!r}")
    if r["status"] not in STATUSES:
        bad("status", f"is {r['status']!r}, not one of {STATUSES}")
    if not isinstance(r["config"], dict) or config_hash(r["config"]) != path.stem.rsplit("-", 1)[-1]:
        bad("config", "does not match the file's name")
    if not isinstance(r["history"], list) or not all(isinstance(h, dict) and "epoch" in h for h in r["history"]):
        bad("history", "is not a list of epochs")
    if r["epochs_run"] != len(r["history"]):
        bad("epochs_run", f"is {r['epochs_run']!r} but the history holds {len(r['history'])} epochs")
    for key in ("final_test_acc", "best_test_acc"):
        if not _fraction(r.get(key)):
            bad(key, f"is {r.get(key)!r}, not an accuracy between 0 and 1")
    if (r["final_test_acc"] is None) != (r["status"] != "completed"):
        bad("final_test_acc", f"is {r['final_test_acc']!r} for a {r['status']} run")
    _check_against_itself(r, bad)
    return r


def _number(v, low: float = 0.0) -> bool:
    return is_finite(v) and v >= low


def _check_against_itself(r: dict, bad) -> None:
    """A result must agree with itself: the fields the store reads present and in range, its epochs
    numbered in order, its final and best accuracies those of its history's evaluations, its status
    what its history shows. (A digest of the content would prove nothing: whoever edits a file can
    recompute it.) Calls `bad(field, what)` on the first disagreement."""
    if not isinstance(r.get("device"), str) or not r["device"]:
        bad("device", "is missing or not a device name")
    if not _number(r.get("wall_time")):
        bad("wall_time", f"is {r.get('wall_time')!r}, not a number of seconds >= 0")
    if not (isinstance(r.get("params"), int) and not isinstance(r["params"], bool) and r["params"] > 0):
        bad("params", f"is {r.get('params')!r}, not a positive parameter count")
    epochs = r["config"].get("epochs")
    for i, h in enumerate(r["history"]):
        if h["epoch"] != i:
            bad("history", f"holds epoch {h['epoch']!r} at position {i}")
        for key in ("train_acc", "test_acc"):
            if not _fraction(h.get(key)):
                bad("history", f"epoch {i}: {key} is {h.get(key)!r}, not an accuracy between 0 and 1")
        if not (h.get("train_loss") is None or _number(h["train_loss"])):
            bad("history", f"epoch {i}: train_loss is {h.get('train_loss')!r}")
        if not _number(h.get("epoch_time")):
            bad("history", f"epoch {i}: epoch_time is {h.get('epoch_time')!r}, not a number of seconds >= 0")
    tested = [h["test_acc"] for h in r["history"] if h.get("test_acc") is not None]
    if r["status"] == "completed":
        if r["epochs_run"] != epochs:
            bad("epochs_run", f"is {r['epochs_run']!r} for a completed run of {epochs!r} epochs")
        if not tested or r["final_test_acc"] != tested[-1]:
            bad("final_test_acc", f"is {r['final_test_acc']!r} but the history's last evaluation is "
                                  f"{tested[-1] if tested else None!r}")
    if r.get("best_test_acc") is not None and (not tested or r["best_test_acc"] != max(tested)):
        bad("best_test_acc", f"is {r['best_test_acc']!r} but the history's best evaluation is "
                             f"{max(tested) if tested else None!r}")
    if r["status"] == "collapsed" and r.get("collapse_rule") == COLLAPSE_RULE and \
            (not r["history"] or collapse_reason(r["history"]) is None):
        bad("status", "is collapsed but the history shows no breakdown")
    if r["status"] == "completed" and r["history"] and collapse_reason(r["history"]) is not None:
        bad("status", f"is completed but the history shows a breakdown ({collapse_reason(r['history'])})")


def load_result(config: Config) -> dict | None:
    """The stored result of `config` (checked by read_result), or None.
    Needs no data."""
    path = result_path(config)
    return read_result(path) if path.exists() else None


# ----------------------------------------------------------------------------- pieces


# Collapse means that training broke down, judged on the training set alone: the training loss of
# an epoch is not finite, or training accuracy, having once risen more than COLLAPSE_RISEN above
# chance, falls back to within COLLAPSE_FALLEN of it. What the test set does (a deep quadratic
# network in evaluation mode can overflow on a few images) never stops a run: it is recorded.
COLLAPSE_RISEN = 0.10
COLLAPSE_FALLEN = 0.02
COLLAPSE_RULE = 2  # recorded in results (rule 1 also stopped a run on a non-finite test loss)


def collapse_reason(history: list[dict]) -> str | None:
    """Why training has broken down by the end of `history`, or None (COLLAPSE_* above)."""
    last = history[-1]
    if not is_finite(last["train_loss"]):
        return f"non-finite training loss in epoch {last['epoch']}"
    chance = 1 / len(qdata.CIFAR10_CLASSES)
    accs = [h["train_acc"] for h in history if is_finite(h["train_acc"])]
    if accs and max(accs) > chance + COLLAPSE_RISEN and last["train_acc"] < chance + COLLAPSE_FALLEN:
        return f"training accuracy fell back to chance ({last['train_acc']:.3f}) in epoch {last['epoch']}"
    return None


CHECKPOINT_KEYS = ("config", "epoch", "model", "optimizer", "history", "elapsed", "started", "rng")


MAX_CHECKPOINT_BYTES = 1 << 30  # far above any CIFAR ResNet's (ResNet-110 quadratic: about 40 MiB)


def load_checkpoint_file(path: str | Path) -> dict:
    """A checkpoint read as untrusted data: tensors and plain containers only (`weights_only=True`,
    so no code in the file runs), then checked: the fields `fit` reads, of the types it reads them
    as. Raises StoreError naming the file."""
    path = Path(path)

    def bad(what):
        raise StoreError(f"{path}: not a usable qnets checkpoint ({what}); delete it, and the run starts from epoch 0")
    ckpt = _tensors(path, MAX_CHECKPOINT_BYTES, bad)
    if not isinstance(ckpt, dict):
        bad("not a dictionary")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        bad(f"missing {missing}")
    if not isinstance(ckpt["config"], dict):
        bad("config is not a dictionary")
    epoch, history = ckpt["epoch"], ckpt["history"]
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0):
        bad(f"epoch is {epoch!r}")
    if not (isinstance(history, list) and len(history) == epoch + 1
            and all(isinstance(h, dict) and h.get("epoch") == i for i, h in enumerate(history))):
        bad(f"its history does not hold epochs 0 to {epoch}")
    if not (isinstance(ckpt["model"], dict) and all(torch.is_tensor(v) for v in ckpt["model"].values())):
        bad("model is not a state dict of tensors")
    if not (isinstance(ckpt["optimizer"], dict) and {"state", "param_groups"} <= set(ckpt["optimizer"])):
        bad("optimizer is not an optimizer state dict")
    if not (isinstance(ckpt["rng"], dict) and torch.is_tensor(ckpt["rng"].get("cpu"))
            and ckpt["rng"]["cpu"].dtype == torch.uint8):
        bad("rng holds no CPU generator state")
    if not is_finite(ckpt["elapsed"]) or ckpt["elapsed"] < 0:
        bad(f"elapsed is {ckpt['elapsed']!r}")
    return ckpt


def _tensors(path: Path, most: int, bad):
    """An untrusted .pt loaded as tensors and plain containers only (`weights_only`: no code in it
    runs), refused unread above `most` bytes; `bad(what)` raises the caller's error."""
    try:
        size = path.stat().st_size
        if size > most:
            bad(f"{size / 2**20:.1f} MiB, more than such a file holds ({most / 2**20:.1f} MiB)")
        return torch.load(path, map_location="cpu", weights_only=True)
    except ValueError:  # (bad's own, StoreError included)
        raise
    except Exception as e:
        bad(f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")


def read_checkpoint(config: Config, fingerprint: str | None = None) -> dict | None:
    """The checkpoint of `config`, or None. A checkpoint counts when it was written for the same
    name (runtime fields such as device, compile or checkpoint_every may differ) and, given a data
    `fingerprint`, for the same data (the one it records, or else that of the run's stored result).
    One that cannot be read, or belongs to another config or other data, is moved aside (kept) with
    a warning: the run restarts."""
    path = checkpoint_path(config)
    if not path.exists():
        return None
    why = None
    try:
        ckpt = load_checkpoint_file(path)
    except StoreError as e:
        why, ckpt = f"it cannot be read ({str(e).split('(', 1)[-1].rsplit(')', 1)[0]})", None
    if ckpt is not None and config_hash(ckpt["config"]) != config_hash(config):
        why = "it was written for another config"
    if ckpt is not None and why is None and fingerprint is not None:
        trained_on = ckpt.get("data_fingerprint") or _stored_fingerprint(config)
        if trained_on is not None and trained_on != fingerprint:
            why = f"it was trained on other data (fingerprint {trained_on}, the data now: {fingerprint})"
    if why is None:
        return ckpt
    aside = path.with_name(f"{path.name}.unusable-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    warnings.warn(f"checkpoint {path}: {why}; moved to {aside.name}, and the run starts from epoch 0")
    return None


def _stored_fingerprint(config: Config) -> str | None:
    """The data fingerprint of the stored result of `config`, if there is a readable one."""
    try:
        stored = load_result(config)
    except StoreError:
        return None
    return stored.get("data_fingerprint") if stored else None


def checkpoint_epoch(path: str | Path) -> int | None:
    """The last epoch (0-based) in the checkpoint at `path`, or None where there is none usable.
    Only reads: unlike read_checkpoint, it moves nothing aside."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return load_checkpoint_file(path)["epoch"]
    except StoreError:
        return None


def write_checkpoint(config: Config, epoch: int, model_state: dict, optimizer_state: dict, history: list[dict],
                     elapsed: float, started: str, cuda: bool, fingerprint: str | None = None) -> None:
    atomic_save({"config": config.to_dict(), "epoch": epoch, "model": model_state, "optimizer": optimizer_state,
                 "history": history, "elapsed": elapsed, "started": started, "data_fingerprint": fingerprint,
                 "rng": {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None}},
                checkpoint_path(config))


def write_result(config: Config, status: str, reason: str | None, history: list[dict], model: torch.nn.Module,
                 elapsed: float, started: str, device: torch.device, trainer, dataset: "qdata.CIFAR10",
                 **extra) -> dict:
    """Assemble the result of a finished (or collapsed) run, store it and return it."""
    cuda = device.type == "cuda"
    tested = [h["test_acc"] for h in history if h["test_acc"] is not None]
    result = {
        "name": run_name(config), "hash": config_hash(config), "config": config.to_dict(), "status": status,
        "collapse_reason": reason, "collapse_rule": COLLAPSE_RULE, "history": history,
        "final_test_acc": tested[-1] if tested and status == "completed" else None,
        "best_test_acc": max(tested) if tested else None,
        "epochs_run": len(history), "params": sum(p.numel() for p in model.parameters()), "wall_time": elapsed,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "fast_path": trainer.fast_path(),
        "data": dataset.source, "data_fingerprint": qdata.fingerprint(dataset), "versions": versions(),
        "provenance": provenance(), "started": started,
        "finished": timestamp(),
        "quadratic_layers": relinear.quadratic_stats(model).get("layers", {}),
    } | extra
    atomic_json(result, result_path(config))
    return result


def prepare(config: Config, force: bool) -> None:
    """Before a run trains: its output folders must be writable (checked now, not after an epoch),
    temporary files a killed run left are removed, and with `force` its checkpoint goes."""
    for path in (result_path(config), checkpoint_path(config)):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path.parent):
                pass
        except OSError as e:
            raise ValueError(f"Config.out_dir: cannot write into {path.parent} ({e.strerror}); "
                             "choose a writable folder (--out-dir)") from None
        remove_orphans(path)
    if force:
        checkpoint_path(config).unlink(missing_ok=True)


def reusable(config: Config, dataset: "qdata.CIFAR10") -> dict | None:
    """The stored result of `config` if it was trained on exactly `dataset` (same fingerprint);
    otherwise None, with a warning where a stored result is set aside."""
    stored = load_result(config)
    if stored is None:
        return None
    now = qdata.fingerprint(dataset)
    if stored.get("data_fingerprint") == now:
        return stored
    was = stored.get("data_fingerprint") or "not recorded"
    warnings.warn(f"{result_path(config)} was trained on other data ({stored.get('data', '?')}, fingerprint {was}) "
                  f"than the data loaded now ({dataset.source}, fingerprint {now}); training it again")
    return None


def epoch_seconds(history: list[dict]) -> float | None:
    """A run's mean epoch time (test pass included) after its first epoch, which holds compilation."""
    times = [h["epoch_time"] for h in history[1:] if h.get("epoch_time")]
    return sum(times) / len(times) if times else None


# ----------------------------------------------------------------------------- trained weights

def write_weights(config: Config, model_state: dict, fingerprint: str | None, test_acc: float | None) -> Path:
    """Keep a finished conventional run's weights (tensors only), the data they were trained on and
    the test accuracy they reached."""
    state = {k: v.detach().cpu().contiguous() for k, v in model_state.items()}
    return atomic_save({"run": run_name(config), "model": state, "data_fingerprint": fingerprint,
                        "final_test_acc": test_acc}, weights_path(config))


def conventional_weights(path: Path, config: Config, name: str | None = None) -> tuple[dict, str | None]:
    """(state dict, data fingerprint or None) of a conventional network of `config`'s shape read
    from `path` (weights, a checkpoint or a bare state dict), as untrusted data: tensors only, the
    exact names and shapes of that network, finite, and where `name` is given the weights of that
    run. Raises ValueError naming the file."""
    shape = f"conventional ResNet-{config.depth}{' with ReZero' if config.rezero else ''}"
    want = resnet(config.depth, "conventional", config.rezero, config.shortcut).state_dict()
    most = 4 * sum(v.numel() * v.element_size() for v in want.values()) + 2**20  # weights, momentum, history

    def bad(what):
        raise ValueError(f"Config.init_from: {path} is not the checkpoint of a {shape} ({what}); give the weights "
                         f"a conventional run of the same depth left in <out_dir>/weights/") from None
    loaded = _tensors(path, most, bad)
    if name is not None and (not isinstance(loaded, dict) or loaded.get("run") != name):
        bad(f"not the weights of {name}")
    state = loaded.get("model", loaded) if isinstance(loaded, dict) else None
    fingerprint = loaded.get("data_fingerprint") if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or set(state) != set(want):
        bad("other layers")
    for k, v in want.items():
        if not torch.is_tensor(state[k]) or state[k].shape != v.shape or state[k].dtype != v.dtype:
            bad(f"{k} differs")
        if state[k].is_floating_point() and not torch.isfinite(state[k]).all():
            bad(f"{k} is not finite")
    return state, fingerprint if isinstance(fingerprint, str) else None


def start_weights(config: Config) -> Path | None:
    """Where the trained conventional weights of an init='conventional' run are: its init_from file,
    or for SAME_RECIPE its `parent`'s weights (written from the parent's final checkpoint when only
    that is here); None where they are not (yet)."""
    p = parent(config)
    if p is None:
        return Path(config.init_from) if Path(config.init_from).is_file() else None
    if weights_path(p).is_file():
        return weights_path(p)
    try:
        ckpt = load_checkpoint_file(checkpoint_path(p)) if checkpoint_path(p).is_file() else None
    except StoreError:
        ckpt = None
    try:
        stored = load_result(p) if ckpt is not None else None
    except StoreError:
        stored = None
    if stored is None or ckpt["epoch"] != p.epochs - 1 or config_hash(ckpt["config"]) != config_hash(p):
        return None
    return write_weights(p, ckpt["model"], ckpt.get("data_fingerprint"), stored["final_test_acc"])


def waiting_for(config: Config) -> str | None:
    """The run whose weights `config` needs and cannot find yet (None: it can start)."""
    if config.init != "conventional" or start_weights(config) is not None:
        return None
    return run_name(parent(config)) if parent(config) else config.init_from


def conventional_state(config: Config, fingerprint: str | None = None) -> dict:
    """The state dict an init='conventional' run copies (`relinear.from_conventional`), checked; with
    a data `fingerprint`, weights recorded as trained on other data are refused."""
    path = start_weights(config)
    if path is None:
        p = parent(config)  # (None: init_from names a file)
        raise FileNotFoundError(
            f"Config.init_from: no checkpoint at {config.init_from}" if p is None else
            f"Config.init_from={SAME_RECIPE!r}: the weights of {run_name(p)} (the conventional run of this recipe "
            f"and seed) are not in {weights_path(p).parent}: train that run first, and it leaves them there")
    p = parent(config)
    state, trained_on = conventional_weights(path, config, run_name(p) if p else None)
    if fingerprint is not None and trained_on is not None and trained_on != fingerprint:
        raise ValueError(f"Config.init_from: {path} was trained on other data (fingerprint {trained_on}, the data "
                         f"now: {fingerprint}); train the conventional run on this data first")
    return state
