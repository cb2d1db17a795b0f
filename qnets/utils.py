"""Small helpers shared by the package: atomic file writes and version facts."""
from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import torch

__all__ = ["atomic_write", "atomic_save", "atomic_json", "versions"]


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write) -> Path:
    """Call `write(file_object)` on a temporary file beside `path`, then rename it into place,
    so that a reader (or an interrupted run) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj, path: str | Path) -> Path:
    """torch.save, atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_json(obj, path: str | Path) -> Path:
    """JSON with sorted keys and a trailing newline (stable diffs), atomically."""
    text = json.dumps(obj, indent=1, sort_keys=True, allow_nan=True) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def versions() -> dict:
    import torchvision

    from . import __version__
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "qnets": __version__}
