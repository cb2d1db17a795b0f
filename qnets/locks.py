"""Per-run locks: a run trains in one process at a time, whichever started it (a local plan, a
campaign window, a cluster job) and on whichever host shares the results folder.

A lock is a file created with O_EXCL that records its holder (host, pid, and a job's id and log)
and since when; its mtime is the holder's heartbeat, refreshed every HEARTBEAT_S seconds by a
thread. A lock is stale when the heartbeat is older than STALE_AFTER_S (the holder or its node
died), or at once when the holder ran on this host and its process is gone; the next taker then
takes it over. A holder that finds its lock taken over (it was suspended for longer than
STALE_AFTER_S) is interrupted.
"""
from __future__ import annotations

import _thread
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from .utils import pid_alive, timestamp

__all__ = ["HEARTBEAT_S", "STALE_AFTER_S", "RunLock", "RunBusy", "take", "read_lock", "stale", "held_here",
           "hold", "describe_holder"]

HEARTBEAT_S = 30.0  # how often a holder refreshes its lock's mtime
STALE_AFTER_S = 300.0  # a lock this long without a heartbeat (ten missed beats) has lost its holder
GUARD_STALE_S = 60.0  # a taker holds the guard for breaking a stale lock for milliseconds; this old, its owner died

_HELD: dict[Path, "RunLock"] = {}  # the locks this process holds, by absolute path


class RunBusy(RuntimeError):
    """Another live process holds the run's lock: it is training the run."""

    def __init__(self, run: str, holder: dict):
        self.run, self.holder = run, holder
        super().__init__(f"{run} is being trained by {describe_holder(holder)}: left to it")


def describe_holder(h: dict) -> str:
    who = f"job {h['job_id']}" if h.get("job_id") else f"pid {h.get('pid', '?')}"
    return f"{who} on {h.get('host', '?')} since {h.get('since', '?')}"


def whoami() -> dict:
    """This process as a lock holder (host and pid; a cluster job adds its job id and log)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "job_id": None, "log": None}


def read_lock(path: str | Path) -> dict | None:
    """The holder recorded in the lock at `path`, plus `heartbeat` (its mtime) and `inode`; None
    when there is no lock. A lock read between its creation and its first write has only those two."""
    try:
        with open(path, "rb") as f:
            st, text = os.fstat(f.fileno()), f.read()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = None
    return (holder if isinstance(holder, dict) else {}) | {"heartbeat": st.st_mtime, "inode": st.st_ino}


def stale(holder: dict) -> str | None:
    """Why the lock of `holder` (from read_lock) is stale, or None while its holder may be alive:
    no heartbeat for STALE_AFTER_S seconds, or a holder on this host whose process is gone."""
    age = time.time() - holder["heartbeat"]
    if age > STALE_AFTER_S:
        return f"no heartbeat for {age:.0f} s (stale after {STALE_AFTER_S:.0f} s)"
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid):
        return f"its process {pid} on {holder['host']} is gone"
    return None


class RunLock:
    """A run's lock, held by this process. A heartbeat thread refreshes the lock's mtime every
    HEARTBEAT_S seconds. If it finds the lock gone or taken over, it records why in `lost` and
    interrupts the main thread."""

    def __init__(self, path: Path, record: dict, took_over: dict | None = None):
        # absolute: the heartbeat must find the lock wherever the process's current folder goes
        self.path, self.record, self.took_over, self.lost = Path(path).absolute(), record, took_over, None
        _HELD[self.path] = self
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {path.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            now = read_lock(self.path)
            if now is None or now.get("token") != self.record["token"]:
                self.lost = ("its lock was removed" if now is None else
                             f"its lock was taken over by job {now.get('job_id')} on {now.get('host')}")
                _thread.interrupt_main()
                return
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        _HELD.pop(self.path, None)
        now = read_lock(self.path)
        if now is not None and now.get("token") == self.record["token"]:
            self.path.unlink(missing_ok=True)


def _break(path: Path, seen: dict) -> bool:
    """Remove the stale lock `seen` at `path`, unless the lock has changed since it was read.
    Jobs take turns through a guard file, so that none removes a lock another job has just
    taken. Returns False when another job holds the guard."""
    guard = path.with_name(path.name + ".break")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - guard.stat().st_mtime > GUARD_STALE_S:
                guard.unlink()
        return False
    try:
        now = read_lock(path)
        if now is not None and (now.get("token"), now["inode"]) == (seen.get("token"), seen["inode"]) and stale(now):
            path.unlink()
        return True
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)


def take(path: str | Path, run: str, me: dict | None = None, attempts: int = 50) -> RunLock | dict:
    """Lock the run `run` at `path` for this process. Returns a RunLock, or the record of the live
    holder that has the lock. A stale lock is taken over, and the RunLock's `took_over` says from
    whom and why."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me, took_over = me or whoami(), None
    for _ in range(attempts):
        record = me | {"run": run, "since": timestamp(), "token": uuid.uuid4().hex}
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(path)
            if holder is None:  # released meanwhile: try again
                continue
            why = stale(holder)
            if why is None and "token" not in holder:  # caught between its creation and its write: read again
                time.sleep(0.05)
                continue
            if why is None:
                return holder
            if _break(path, holder):
                took_over = holder | {"why": why}
            else:
                time.sleep(0.1)  # another job is breaking it
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        return RunLock(path, record, took_over)
    return read_lock(path) or {"why": f"the lock kept changing hands over {attempts} attempts"}


def held_here(path: str | Path) -> bool:
    """Whether this process holds the lock at `path` (a cluster job that is training its run)."""
    return Path(path).absolute() in _HELD


def hold(path: str | Path, run: str) -> RunLock | None:
    """Take the lock of `run` at `path` for a run about to train: the RunLock to release when it
    ends, or None where this process holds the lock already (a cluster job training its run).
    Raises RunBusy when a live process elsewhere holds it."""
    if held_here(path):
        return None
    got = take(path, run)
    if not isinstance(got, RunLock):
        raise RunBusy(run, got)
    return got
