"""Helpers shared by the test modules."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# Tests run two at a time (`pytest -n 2`): each worker, and every process it starts (notebook
# kernels, jobs), takes its share of the cores, and OpenMP threads that wait sleep instead of
# spinning, so that the workers do not fight over the same cores.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402  (after the thread settings, which torch reads once)

ROOT = Path(__file__).resolve().parents[1]


TIMING = ("epoch_time", "train_time", "images_per_s")  # history fields that measure time, not training


def untimed(history: list[dict]) -> list[dict]:
    """A run's history without its timings: what two runs of one config must share exactly."""
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def stored_result(config, acc: float = 0.5) -> dict:
    """A completed result of `config` that agrees with itself, as the store would hold it, without
    training (for tests of what reads the store)."""
    from qnets.train import run_name
    history = [{"epoch": e, "train_loss": 1.0, "train_acc": acc, "test_acc": acc, "epoch_time": 1.0}
               for e in range(config.epochs)]
    return {"name": run_name(config), "config": config.to_dict(), "status": "completed", "history": history,
            "epochs_run": config.epochs, "final_test_acc": acc, "best_test_acc": acc, "device": "cpu",
            "wall_time": 1.0, "params": 1}


def kill_after_checkpoint(code: str, checkpoint: Path, epoch: int = 1, timeout: float = 300,
                          sig: int = signal.SIGKILL, cwd: Path = ROOT) -> int:
    """Run `code` in a child Python and send it `sig` (SIGKILL) as soon as `checkpoint` records
    `epoch` (0-based) or later; fail if the child finished first. Returns the child's exit code."""
    child = subprocess.Popen([sys.executable, "-c", code], cwd=cwd)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and child.poll() is None:
            try:
                if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["epoch"] >= epoch:
                    break
            except (EOFError, RuntimeError):  # caught between write and rename: look again
                pass
            time.sleep(0.05)
        assert child.poll() is None, "the run finished before it could be interrupted"
        child.send_signal(sig)
    finally:
        code = child.wait(timeout=timeout)
    return code


def until(predicate, timeout: float = 120, what: str = "the condition", poll: float = 0.02):
    """predicate()'s first true value, polled until `timeout` seconds have passed (then the test fails)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}")
