"""Helpers the notebooks use, and `python -m qnets notebooks` (what `make figures` and
`make test` run): execute the notebooks with papermill, check them with nbval."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["project_root", "setup", "save_figure", "main"]

KERNEL = "python3"
# Volatile metadata papermill and Jupyter write; stripped so committed notebooks diff cleanly.
VOLATILE_CELL_KEYS = ("execution", "papermill", "collapsed", "scrolled")


def project_root(start: Path | None = None) -> Path:
    """The repository root (the folder holding this project's pyproject.toml), else cwd."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "qnets").is_dir():
            return folder
    return here


def setup(namespace: dict, **allowed) -> dict:
    """Validate a notebook's parameters and move to the project root.

    `allowed` maps each parameter name to its allowed values (a tuple) or type. Any other
    public name in `namespace` (e.g. a misspelt `-p prest quick`, which papermill only warns
    about) or a bad value raises ValueError here, in the notebook's first cell after its
    parameters. Returns the parameters as a dict.
    """
    import types
    skip = {"In", "Out", "get_ipython", "exit", "quit", "open"}
    # Parameters are lower-case data; modules, functions and CONSTANTS in the namespace are not.
    unknown = sorted(k for k, v in namespace.items() if not k.startswith("_") and k not in skip and k.islower()
                     and k not in allowed and not isinstance(v, types.ModuleType) and not callable(v))
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}; this notebook takes {sorted(allowed)}")
    params = {}
    for name, rule in allowed.items():
        value = namespace.get(name)
        ok = value in rule if isinstance(rule, tuple) else isinstance(value, rule)
        if not ok:
            raise ValueError(f"notebook parameter {name}={value!r} is not allowed; expected "
                             f"{'one of ' + repr(rule) if isinstance(rule, tuple) else rule.__name__}")
        params[name] = value
    os.chdir(project_root())
    return params


def save_figure(fig, name: str, folder: str | Path | None = None) -> Path:
    """Save `fig` as figures/<name>.png (for the README and GitHub) and .pdf (for print).
    $QNETS_FIGURES redirects them (the smoke checks write theirs to a temporary folder)."""
    folder = Path(folder or os.environ.get("QNETS_FIGURES", "figures"))
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / f"{name}.png", dpi=150, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(folder / f"{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None, "Creator": None,
                                                                         "Producer": None})
    return folder / f"{name}.png"


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


def strip_volatile(path: Path) -> None:
    import nbformat
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # papermill's injected cell gets a random id on every run
        for key in VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
        # execution counts stay: they are sequential (hence stable) and nbval needs them
    pm = nb.metadata.get("papermill", {})
    nb.metadata["papermill"] = {"parameters": pm.get("parameters", {})}
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    tmp = path.with_suffix(".tmp.ipynb")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)


def execute(notebook: Path, preset: str, output: Path, extra: dict | None = None) -> None:
    import papermill
    params = {"preset": preset} | (extra or {})
    papermill.execute_notebook(str(notebook), str(output), parameters=params, kernel_name=KERNEL,
                               cwd=str(notebook.parent), progress_bar=False, log_output=True,
                               stdout_file=sys.stdout, stderr_file=sys.stderr)


def main(args) -> int:
    from .experiments import PRESETS, committed_preset
    paths = [Path(n) for n in args.notebooks]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such notebook(s): {missing}")
    if args.preset != "auto" and args.preset not in PRESETS:
        raise ValueError(f"--preset must be auto or one of {tuple(PRESETS)}, got {args.preset!r}")
    if args.execute:
        for nb in paths:
            preset = committed_preset(nb.name[:2]) if args.preset == "auto" else args.preset
            print(f"== {nb} (preset {preset})", flush=True)
            tmp = nb.with_suffix(".running.ipynb")
            try:
                execute(nb, preset, tmp)
                strip_volatile(tmp)
                os.replace(tmp, nb)  # the committed notebook changes only when the run succeeded
            finally:
                tmp.unlink(missing_ok=True)
        return 0
    # --check: (1) the committed notebooks as committed, result tables compared; (2) smoke runs.
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                          "--nbval-kernel-name", KERNEL,
                          *map(str, paths)])
    if rc:
        return rc
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["QNETS_FIGURES"] = tmp  # smoke figures must not replace the committed ones
        for nb in paths:
            print(f"== smoke: {nb}", flush=True)
            execute(nb, "smoke", Path(tmp) / nb.name)
    print(f"{len(paths)} passed, 0 failed: notebooks ran with the smoke preset")
    return 0
