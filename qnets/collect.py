"""Taking a window's output folder back (`collect`), read as untrusted: every member of every file
checked before anything is written, and nothing written outside the project's results folder.
"""
from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path

from . import experiments
from .campaign import MAX_FILE_BYTES, _partial_path, plan, status_file, status_text
from .store import conventional_weights
from .train import (Config, StoreError, checkpoint_epoch, checkpoint_path, config_hash, load_checkpoint_file,
                    load_result, read_result, result_path, run_name, weights_path)
from .utils import atomic_write

__all__ = ["collect"]


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
    checked first (`_checked`), and only then is anything written, always inside the plan's results
    folder. Finished results go to results/runs/ (a result already stored there is kept), partial
    checkpoints to results/campaign/partial/ (and results/checkpoints/) unless state as new or newer
    is already there (kept, and said), partial state of runs now finished is removed, and the plan's
    status file is rewritten. Returns what was taken and what was kept."""
    folder = Path(folder)
    summary = _summary(folder)
    preset, overrides = summary["preset"], dict(summary.get("overrides", {}))
    only = overrides.pop("only", None)
    planned = plan(preset, only, **overrides)
    checked_results, checked_partials, checked_weights = _checked(folder, summary, planned)
    taken = {"results": [], "partial": [], "weights": [], "kept": []}
    for config, data in checked_results:
        if load_result_or_none(config) is not None:
            if result_path(config).read_bytes() != data:  # (the same file: a window on this machine wrote it)
                taken["kept"].append(f"{run_name(config)}: another result is already stored; kept it")
                continue
        else:
            atomic_write(result_path(config), lambda f, d=data: f.write(d))
        taken["results"].append(run_name(config))
    for config, data in checked_weights:  # a later run starts from them; never replaced once here
        if not weights_path(config).exists():
            atomic_write(weights_path(config), lambda f, d=data: f.write(d))
            taken["weights"].append(run_name(config))
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
    return taken | {"device": str(summary.get("device")), "stopped_because": str(summary.get("stopped_because")),
                    "status_file": str(status_file(planned, preset))}


def _checked(folder: Path, summary: dict, planned: list) -> tuple[list, list]:
    """Every member of the folder's files, checked, before anything is written: tar members regular
    files with bare names, exactly the runs the summary lists, each a run of the plan; results by the
    store's own checks, checkpoints loaded as tensors only and of the right config. Returns
    [(config, bytes)] of results and [(config, bytes, epoch)] of checkpoints; raises ValueError."""
    by_name = {run_name(c): c for _, c in planned}

    def config_of(member: str) -> Config:
        name = member.rsplit(".", 1)[0]
        if name not in by_name:
            raise ValueError(f"{folder}: {member} is not a run of the {summary['preset']} campaign's plan")
        return by_name[name]

    results = _members(folder / "results.tar", ".json")
    weights = _members(folder / "weights.tar", ".pt") if (folder / "weights.tar").exists() else []
    unlisted = [n for n, _ in weights if n.rsplit(".", 1)[0] not in summary["finished"]]
    if unlisted:
        raise ValueError(f"{folder}: weights.tar holds {unlisted[0]}, not a run the window finished")
    partials = [m for tar_path in sorted(folder.glob("partial-*.tar")) for m in _members(tar_path, ".pt")]
    for listed, members, what in ((summary["finished"], results, "results.tar"),
                                  (summary["partial"], partials, "the partial-*.tar files")):
        names = sorted(n.rsplit(".", 1)[0] for n, _ in members)
        if names != sorted(listed):
            raise ValueError(f"{folder}: {what} hold {len(names)} runs, the summary lists {len(listed)}: "
                             "the folder is incomplete or was changed; nothing collected")
    checked_results, checked_partials, checked_weights = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in weights:
            config, check = config_of(name), Path(tmp) / name
            check.write_bytes(data)
            if config.neuron != "conventional":
                raise ValueError(f"{folder}: weights.tar holds {name}, not a conventional run")
            try:
                conventional_weights(check, config, run_name(config))
            except ValueError as e:
                raise ValueError(f"{folder}/weights.tar: {str(e).replace(str(check), name)}") from None
            checked_weights.append((config, data))
        for name, data in results + partials:
            config, check = config_of(name), Path(tmp) / name
            check.write_bytes(data)
            try:  # a bad file stops here, named, before anything is replaced
                if name.endswith(".json"):
                    read_result(check)
                    checked_results.append((config, data))
                    continue
                ckpt = load_checkpoint_file(check)
            except StoreError as e:
                where = f"{folder}/results.tar" if name.endswith(".json") else str(folder)
                raise ValueError(f"{where}: {str(e).replace(str(check), name)}") from None
            if config_hash(ckpt["config"]) != config_hash(config):
                raise ValueError(f"{folder}: {name} holds the checkpoint of another config")
            checked_partials.append((config, data, ckpt["epoch"]))
    return checked_results, checked_partials, checked_weights


def load_result_or_none(config: Config) -> dict | None:
    """The stored result of `config`, or None where there is none or it fails the store's checks."""
    try:
        return load_result(config)
    except StoreError:
        return None
