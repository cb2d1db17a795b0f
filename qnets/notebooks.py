"""Helpers the notebooks use, and `python -m qnets notebooks` (what `make figures` and
`make test` run): execute the notebooks with papermill, check them with nbval."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

from .experiments import PRESETS, committed_preset
from .utils import atomic_write

__all__ = ["project_root", "setup", "save_figure", "lab_pre_save", "main"]

KERNEL = "python3"  # the kernel `make venv` installs into .venv as "Python 3 (qnets)" (KERNEL_NAME)
KERNEL_NAME = "Python 3 (qnets)"
# Volatile metadata papermill and Jupyter write; stripped so committed notebooks diff cleanly.
VOLATILE_CELL_KEYS = ("execution", "papermill", "collapsed", "scrolled")
# A widget's view needs the widget state, which a saved notebook does not keep (it is stripped
# below), so saved notebooks keep what else the cell showed (e.g. a static figure) and not the view.
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def project_root(start: Path | None = None) -> Path:
    """The repository root (the folder holding this project's pyproject.toml), else cwd."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "qnets").is_dir():
            return folder
    return here


# ----------------------------------------------------------------------------- the repository address

# pyproject.toml's [project.urls] Repository is the one place the address is written by hand;
# `python -m qnets readme` copies it into the README's Colab badges and the notebooks' Colab cell.
_REPOSITORY_URL = re.compile(r'^Repository\s*=\s*"(https://github\.com/[\w.-]+/[\w.-]+?)/?"', re.M)
_COLAB_BADGE = re.compile(r"colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/")
_COLAB_CELL_LINE = re.compile(r'^REPOSITORY = "[^"]*"', re.M)
_CITATION_LINE = re.compile(r'^repository-code: "[^"]*"', re.M)
COLAB_TAG = "colab"  # the notebook cell that, on Colab only, clones and installs the repository


def repository(root: Path | None = None) -> str:
    """The repository address from pyproject.toml (https://github.com/OWNER/NAME)."""
    text = (Path(root or project_root()) / "pyproject.toml").read_text()
    m = _REPOSITORY_URL.search(text)
    if not m:
        raise ValueError("pyproject.toml has no [project.urls] Repository = \"https://github.com/OWNER/NAME\"")
    return m.group(1)


def _with_repository(text: str, url: str) -> str:
    owner_name = url.removeprefix("https://github.com/")
    text = _COLAB_BADGE.sub(f"colab.research.google.com/github/{owner_name}/blob/", text)
    text = _CITATION_LINE.sub(f'repository-code: "{url}"', text)
    return _COLAB_CELL_LINE.sub(f'REPOSITORY = "{url}"', text)


def sync_repository(root: Path | None = None) -> list[Path]:
    """Write pyproject.toml's repository address into the README's badges, CITATION.cff and every
    notebook's badges and Colab cell; returns the files changed (a fork edits pyproject.toml, then
    runs this)."""
    import nbformat
    root = Path(root or project_root())
    url, changed = repository(root), []
    for path in (root / "README.md", root / "CITATION.cff"):
        text = path.read_text() if path.exists() else ""
        if _with_repository(text, url) != text:
            path.write_text(_with_repository(text, url))
            changed.append(path)
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        touched = False
        for cell in nb.cells:
            new = _with_repository(cell.source, url)
            touched |= new != cell.source
            cell.source = new
        if touched:
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def on_colab() -> bool:
    return "google.colab" in sys.modules


def setup(namespace: dict, notebook: str, **allowed) -> dict:
    """Validate a notebook's parameters (the values of its Parameters cell, or those papermill
    injected after it) and move to the project root; safe to run again.

    `allowed` maps each parameter name to its allowed values (a tuple) or type; a bad value raises
    ValueError here, in the notebook's first cell after its parameters. `preset = "auto"` means the
    largest preset at which `notebook` ("02") is read from stored results (`committed_preset`: what
    `make figures` shows); `train_missing = None` means: train missing runs, except on Colab, where
    Run All would otherwise start hours of training on whatever runtime is attached, and except where
    "auto" chose a preset above quick (its runs still to come are its campaign's, hours each).
    Resolved values are written back into `namespace`. Returns the parameters as a dict."""
    os.chdir(project_root())  # first: the stored results are found from the project root
    auto = namespace.get("preset") == "auto"
    if auto:
        namespace["preset"] = committed_preset(notebook)
    if "train_missing" in allowed and namespace.get("train_missing") is None:
        namespace["train_missing"] = not on_colab() and not (auto and namespace["preset"] != "quick")
    params = {}
    for name, rule in allowed.items():
        value = namespace.get(name)
        ok = value in rule if isinstance(rule, tuple) else isinstance(value, rule)
        if not ok:
            raise ValueError(f"notebook parameter {name}={value!r} is not allowed; expected "
                             f"{'one of ' + repr(rule) if isinstance(rule, tuple) else rule.__name__}")
        params[name] = value
    return params


def save_figure(fig, name: str, folder: str | Path | None) -> Path | None:
    """Save `fig` as <folder>/<name>.png (for the README and GitHub) and .pdf (for print); with no
    folder (a notebook's `figures = None`) nothing is written and the figure stays in the notebook.
    `make figures` passes each notebook a staging folder and moves its figures into figures/ only
    after the notebook succeeded, so exploring a notebook by hand never changes the committed ones.
    Without a folder the figure is still rendered once as if saved (the PNG only: either format leaves the
    same layout): saving moves a constrained layout by fractions of a pixel, and the figure a notebook shows
    must not depend on whether it was saved."""
    import io
    folder = Path(folder) if folder else None
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
    formats = ((".png", {"dpi": 150, "metadata": {"Software": None}}),
               (".pdf", {"metadata": {"CreationDate": None, "Creator": None, "Producer": None}}))
    for suffix, extra in formats if folder else formats[:1]:
        fig.savefig(folder / f"{name}{suffix}" if folder else io.BytesIO(), format=suffix[1:], bbox_inches="tight",
                    **extra)
    return folder / f"{name}.png" if folder else None


# ----------------------------------------------------------------------------- command line

def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--execute", action="store_true",
                      help="run each notebook with papermill into itself (outputs embedded) and regenerate figures/")
    what.add_argument("--check", action="store_true",
                      help="nbval-lax on the committed notebooks, then a papermill run of each with the smoke preset")
    p.add_argument("--preset", default="auto",
                   help="preset for --execute: auto (per notebook, the largest whose results are committed), "
                        "smoke, quick, gpu-short or paper")
    p.add_argument("notebooks", nargs="+", help="notebook files")


def _without_staging(nb):
    """The executed notebook as it is committed: papermill's injected cell gone when it held only
    where the figures were staged (else injected again without that), cells numbered 1, 2, ..."""
    import papermill.parameterize
    values = dict(nb.metadata.get("papermill", {}).get("parameters", {}))
    values.pop("figures", None)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    nb.metadata.setdefault("papermill", {})["parameters"] = {}
    if values:  # another preset than the Parameters cell's: shown where papermill puts it
        for cell in nb.cells:
            cell.metadata.setdefault("tags", [])
        nb = papermill.parameterize.parameterize_notebook(nb, values)
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.get("execution_count") is not None:
            count += 1
            cell.execution_count = count
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = count
    return nb


def merged_streams(outputs: list) -> list:
    """Adjacent stdout (or stderr) outputs as one: how the kernel chunks a cell's printing varies
    from run to run, the text does not."""
    out = []
    for o in outputs:
        if o.get("output_type") == "stream" and out and out[-1].get("output_type") == "stream" \
                and out[-1].get("name") == o.get("name"):
            out[-1]["text"] += o["text"]
        else:
            out.append(o)
    return out


def stripped(nb):
    """`nb` as `make figures` commits it: volatile metadata, widget views and papermill's staging
    gone, streams merged, cells numbered and given stable ids, the project's kernel named."""
    nb = _without_staging(nb)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # papermill's injected cell gets a random id on every run
        for key in VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in merged_streams(cell.outputs) if WIDGET_VIEW not in o.get("data", {})]
        # execution counts stay: they are sequential (hence stable) and nbval needs them
    pm = nb.metadata.get("papermill", {})
    nb.metadata["papermill"] = {"parameters": pm.get("parameters", {})}
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": KERNEL_NAME, "language": "python"}
    return nb


def strip_volatile(path: Path) -> None:
    import nbformat
    nb = stripped(nbformat.read(path, as_version=4))
    tmp = path.with_suffix(".tmp.ipynb")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)


def lab_pre_save(model: dict, path: str, **_) -> None:
    """JupyterLab's pre-save hook (`make lab`, .jupyter/jupyter_server_config.json): a notebook in
    notebooks/ is saved as `make figures` commits it, so re-running one leaves `git status` clean."""
    import json

    import nbformat
    if model.get("type") == "notebook" and PurePosixPath(path.strip("/")).parent == PurePosixPath("notebooks"):
        # read as a file is read (texts as one string each), then stripped
        model["content"] = stripped(nbformat.reads(json.dumps(model["content"]), as_version=4))


def publish(staging: Path, prefix: str, figures: Path) -> list[Path]:
    """Move one notebook's freshly made figures from `staging` into `figures`, replacing its old
    ones (files named <prefix>_*); figures it no longer makes are removed."""
    figures.mkdir(parents=True, exist_ok=True)
    new = sorted(staging.glob(f"{prefix}_*"))
    for old in figures.glob(f"{prefix}_*"):
        if not (staging / old.name).exists():
            old.unlink()
    for path in new:
        shutil.copy2(path, figures / f".{path.name}.tmp")
    for path in new:  # renames only, once every copy is in place
        os.replace(figures / f".{path.name}.tmp", figures / path.name)
    return [figures / p.name for p in new]


def execute(notebook: Path, preset: str, output: Path, extra: dict | None = None) -> None:
    """Run `notebook` with papermill into `output`: `preset` ("auto": the Parameters cell's own) and
    `extra` are papermill parameters."""
    import papermill
    params = ({} if preset == "auto" else {"preset": preset}) | (extra or {})
    papermill.execute_notebook(str(notebook), str(output), parameters=params, kernel_name=KERNEL,
                               cwd=str(notebook.parent), progress_bar=False, log_output=True,
                               stdout_file=sys.stdout, stderr_file=sys.stderr,
                               # the kernel's own log (its warning, on every start, that a kernel on this
                               # machine talks over unencrypted local TCP) stays out of the output
                               extra_arguments=["--IPKernelApp.log_level=ERROR"])


def main(args) -> int:
    paths = [Path(n) for n in args.notebooks]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such notebook(s): {missing}")
    if args.preset != "auto" and args.preset not in PRESETS:
        raise ValueError(f"--preset must be auto or one of {tuple(PRESETS)}, got {args.preset!r}")
    if args.execute:
        for nb in paths:
            committed = committed_preset(nb.name[:2])
            preset = committed if args.preset == "auto" else args.preset
            print(f"== {nb} (preset {preset})", flush=True)
            with tempfile.TemporaryDirectory() as staging:
                # the executed copy is written outside notebooks/: a killed run leaves nothing there
                tmp = Path(staging) / "executed" / nb.name
                tmp.parent.mkdir()
                execute(nb, args.preset, tmp, {"figures": staging})
                strip_volatile(tmp)
                # the committed notebook changes only when the run succeeded
                atomic_write(nb, lambda f: f.write(tmp.read_bytes()))
                if preset == committed:
                    publish(Path(staging), nb.name[:2], Path(project_root()) / "figures")
                else:
                    print(f"   figures of preset {preset} stay in the notebook: figures/ (and the README) show "
                          f"the committed preset {committed}", flush=True)
        return 0
    # --check: (1) the committed notebooks as committed, result tables compared; (2) smoke runs.
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                          "--nbval-kernel-name", KERNEL,
                          *map(str, paths)])
    if rc:
        return rc
    with tempfile.TemporaryDirectory() as tmp:
        for nb in paths:  # smoke figures must not replace the committed ones
            print(f"== smoke: {nb}", flush=True)
            execute(nb, "smoke", Path(tmp) / nb.name, {"figures": tmp})
    print(f"{len(paths)} passed, 0 failed: notebooks ran with the smoke preset")
    return 0
