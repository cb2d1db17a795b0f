"""Small helpers shared by the package: atomic file writes and version facts."""
from __future__ import annotations

import ctypes
import errno
import functools
import io
import json
import math
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch

VERSION = "0.1.0"  # the package's version (pyproject.toml's; a test keeps them equal)

__all__ = ["atomic_write", "atomic_save", "atomic_json", "strict", "remove_orphans", "provenance", "versions",
           "tune_cpu_allocator", "timestamp", "is_finite", "parse_bool", "parse_duration"]


def timestamp() -> str:
    """Local time with its UTC offset, as every result, checkpoint, report and lock records it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def is_finite(v) -> bool:
    """A real number that is neither NaN nor infinite (stored results have null for NaN)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_bool(text: str) -> bool:
    """A command-line switch: 1/true/yes/on or 0/false/no/off."""
    import argparse
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false (or on, off, 1, 0), got {text!r}")


def parse_duration(text: str) -> float:
    """Seconds from a budget on the command line: 480, 90m, 5h, 1h30m or 45s."""
    import argparse
    import re
    t = str(text).strip().lower()
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", t)
    if not t or m is None or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"expected a duration such as 480 (seconds), 90m, 5h or 1h30m, got {text!r}")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    return hours * 3600 + minutes * 60 + seconds


def _umask() -> int:
    """The process umask, read when a file is written (not at import). On Linux it is read from
    /proc; elsewhere reading it means setting it and back, which is done only here."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fill_blocks(text: str, name: str, render) -> str:
    """`text` with every block between `<!-- name ARG -->` (ARG optional) and `<!-- /name -->`
    replaced by `render(ARG)` (ARG "" when absent): how README blocks are regenerated from results."""
    import re

    def block(m: re.Match) -> str:
        arg = m.group(1) or ""
        return f"<!-- {name}{' ' + arg if arg else ''} -->\n{render(arg)}\n<!-- /{name} -->"
    return re.sub(rf"<!-- {re.escape(name)}(?: ([^>]*?))? -->\n.*?<!-- /{re.escape(name)} -->", block, text, flags=re.S)


class DiskFull(OSError):
    """A write found no space left: names the folder and the space it needed. What was there
    before (the last checkpoint, a stored result) is intact."""

    def __init__(self, path: Path, size: int):
        super().__init__(errno.ENOSPC, f"no space left in {path.parent} to write {path.name} ({size / 2**20:.1f} MiB "
                                       "needed); free some space there and run the same command again (what was "
                                       "stored before, the last checkpoint included, is intact)")


def atomic_write(path: str | Path, write) -> Path:
    """Call `write(file_object)` (into memory first, so its size is known), then write the bytes to
    a temporary file beside `path` and rename it into place, so that a reader (or an interrupted
    run) never sees a half-written file. A full disk raises DiskFull and leaves `path` as it was."""
    path = Path(path)
    buffer = io.BytesIO()
    write(buffer)
    data = buffer.getbuffer()  # (a view, not a copy: a CIFAR-10 cache is 185 MB)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's host and pid in the name: cleaning up removes only files whose writer is gone
    fd, tmp = None, None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_writer()}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            fd = None
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(path, len(data)) from None
        raise
    return path


def atomic_save(obj, path: str | Path) -> Path:
    """torch.save, atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def strict(obj):
    """`obj` with every non-finite float replaced by None, so that it is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def atomic_json(obj, path: str | Path) -> Path:
    """Strict JSON (non-finite numbers as null) with sorted keys and a trailing newline (stable
    diffs), atomically."""
    text = json.dumps(strict(obj), indent=1, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


ORPHAN_AGE_S = 3600.0  # a temporary file of another host (or of unknown writer) untouched this long is left over


def _writer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` on this host is running (a zombie, killed but not reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _orphaned(tmp: Path, stem: str) -> bool:
    """Whether the temporary file `tmp` of an atomic write (named .<stem>.<host>-<pid>.<random>.tmp)
    was left by a writer that is gone: a process of this host no longer running, or else a file
    untouched for ORPHAN_AGE_S."""
    owner = tmp.name[len(stem) + 2:-len(".tmp")].rpartition(".")[0]
    host, _, pid = owner.rpartition("-")
    if host == socket.gethostname() and pid.isdigit():
        return not pid_alive(int(pid))
    try:
        return time.time() - tmp.stat().st_mtime > ORPHAN_AGE_S
    except FileNotFoundError:
        return False


def remove_orphans(path: str | Path) -> list[Path]:
    """Delete the temporary files that atomic writes of `path` left when their processes were
    killed; a live writer's file (this host's process still running, or recently written from
    another host) is left alone."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    orphans = [o for o in path.parent.glob(f".{path.name}.*.tmp") if _orphaned(o, path.name)]
    for o in orphans:
        o.unlink(missing_ok=True)
    return orphans


@functools.cache
def provenance() -> dict:
    """The git commit of the code that runs (and whether its tree has uncommitted changes), or
    None for both outside a git checkout."""
    import subprocess
    root = Path(__file__).resolve().parents[1]
    try:
        def git(*args):
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


def versions() -> dict:
    import torchvision  # (only here: importing it costs a second)
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "qnets": VERSION}


@functools.cache
def tune_cpu_allocator() -> str:
    """Make glibc's malloc keep freed blocks of up to 32 MiB for reuse (once per process).

    CPU training allocates and frees tensors of a few MiB every step. By default glibc hands
    blocks that size back to the kernel and takes them again, so every step pays tens of
    thousands of page faults (a tenth or more of a CPU step's time on a small machine). Setting
    M_MMAP_THRESHOLD (which also turns off its adaptive growth) and M_TRIM_THRESHOLD keeps them in
    the heap; the process then holds on to its peak memory, as PyTorch's GPU allocator does.
    Returns what was done; elsewhere than glibc it does nothing and says so.
    """
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL(None)
            m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
            if libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30):
                return "glibc: mmap threshold 32 MiB, trim threshold 1 GiB"
        except (OSError, AttributeError):
            pass
    return "unchanged (not glibc)"
