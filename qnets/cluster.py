"""A plan on a cluster: each run (or pack of runs) is one submitit job, and every job writes
into the same results store.

`submit` sends the runs of a plan that have no stored result as jobs through submitit: to
Slurm where a controller answers, otherwise as local processes (submitit's LocalExecutor). A job
(`TrainJob`) trains its runs with `runner.train_group` into `<out_dir>/runs/`, so it leaves
what `make results` would leave. Many jobs on many nodes can share one store:

- A job trains a run only while it holds the run's lock, `<out_dir>/cluster/locks/<name>.lock`.
  The lock is created with O_EXCL on the shared filesystem and records who holds it (host, pid,
  job id, log) and since when. A job that finds a run locked by a live holder leaves the run to
  that holder. In a pack, every run has its own lock.
- While a job holds a lock, it sets the lock's mtime to now every HEARTBEAT_S seconds. A lock is
  **stale** when that mtime is more than STALE_AFTER_S seconds old (the holder died, or its node
  did), or at once when the holder ran on this host and its process is gone. The next job to
  find a stale lock takes it over. A holder that finds its lock taken over (it was suspended for
  longer than STALE_AFTER_S) stops training.
- A job killed mid-run leaves the run's checkpoint, and the run resumes from it when the job is
  sent again, as `fit` always does. When Slurm preempts a job or it reaches its time limit,
  submitit calls `TrainJob.checkpoint` and requeues the job, which then resumes the same way.
- When a run raises, the job records why in `<out_dir>/cluster/failed/<name>.json`, with the job
  and its log, and the job then fails.

`status` reports each run of a plan as done, running (by whom, since when), failed (why, and
the log), partial, waiting (for trained weights) or to do.

    python -m qnets results --preset paper --runs all --executor submitit --partition gpu --time 8:00:00
    python -m qnets results --preset paper --runs all --status
"""
from __future__ import annotations

import contextlib
import getpass
import io
import json
import os
import re
import shutil
import socket
import time
import traceback
import warnings
from pathlib import Path

from . import locks, runner
from .runner import failure_path
from .locks import HEARTBEAT_S, STALE_AFTER_S, RunLock, describe_holder as _holder, read_lock, stale
from .train import (Config, StoreError, checkpoint_epoch, checkpoint_path, load_result, lock_path, result_path,
                    run_name, waiting_for)
from .utils import atomic_json, timestamp

__all__ = ["HEARTBEAT_S", "STALE_AFTER_S", "INSTALL", "MissingSubmitit", "RunLock", "TrainJob", "take", "read_lock",
           "stale", "lock_path", "failure_path", "jobs_dir", "options", "make_executor", "submit", "wait"]

INSTALL = 'pip install -e ".[cluster]"'


class MissingSubmitit(RuntimeError):
    """submitit, an optional dependency, is not installed."""


class LockLost(RuntimeError):
    """Another job took over a lock this job held: the run is being trained there."""


def _submitit():
    try:
        import submitit
    except ImportError:
        raise MissingSubmitit(f"--executor submitit needs the submitit package; install it with {INSTALL}") from None
    return submitit


def cluster_dir(out_dir: str | Path) -> Path:
    """Where the cluster keeps its state (not committed): locks/, failed/, and jobs/ (submitit's files and logs)."""
    return Path(out_dir) / "cluster"


def jobs_dir(out_dir: str | Path) -> Path:
    return cluster_dir(out_dir) / "jobs"


def whoami() -> dict:
    """This process as a lock holder: host and pid, plus the submitit job id and log when in a job."""
    me = locks.whoami()
    if os.environ.get("SUBMITIT_FOLDER"):  # set by submitit in the process that runs a job
        env = _submitit().JobEnvironment()
        me |= {"job_id": env.job_id, "log": str(env.paths.stdout)}
    return me


def take(config: Config, me: dict | None = None, attempts: int = 50) -> RunLock | dict:
    """Lock `config`'s run for this process (locks.take at the run's lock path)."""
    return locks.take(lock_path(config), run_name(config), me or whoami(), attempts)


# ----------------------------------------------------------------------------- jobs

class TrainJob:
    """One job: train `runs` (label -> Config: one run, or runs that may share packs of up to
    `pack`) into their store, each only while this job holds its lock. Returns one outcome per
    run (see `describe`). It is picklable, so submitit can send it, and it has `checkpoint`, so
    submitit requeues it after preemption or a time-out."""

    def __init__(self, runs: dict[str, Config], root: str | Path, pack: int = 1, force: bool = False,
                 verbose: bool = True):
        self.runs, self.root, self.pack, self.force, self.verbose = dict(runs), str(root), pack, force, verbose
        self.cleared: set[str] = set()  # forced runs whose old result and checkpoint are gone already

    def checkpoint(self, *args, **kwargs):
        """Called by submitit before a requeue. It requeues this job as it is; each unfinished run
        then resumes from its checkpoint."""
        return _submitit().helpers.DelayedSubmission(self, *args, **kwargs)

    def __call__(self) -> list[dict]:
        here = os.getcwd()
        os.chdir(self.root)  # out_dir and data_root are relative to where the plan was submitted
        me, outcomes, locks = whoami(), {}, {}
        try:
            for label, config in self.runs.items():
                got = take(config, me)
                if isinstance(got, RunLock):
                    locks[label] = got
                else:
                    outcomes[label] = self._outcome(label, me, "held", holder=got)
                    print(describe(outcomes[label]), flush=True)
            self._train({label: self.runs[label] for label in locks}, locks, me, outcomes)
        except KeyboardInterrupt:
            lost = [f"{lock.record['run']}: {lock.lost}" for lock in locks.values() if lock.lost]
            if lost:
                raise LockLost("; ".join(lost) + "; this job stopped and left those runs to their new holders") \
                    from None
            raise
        finally:
            for lock in locks.values():
                lock.release()
            os.chdir(here)
        failed = [o for o in outcomes.values() if o["outcome"] == "failed"]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(self.runs)} runs failed: "
                               + "; ".join(f"{o['label']}: {o['error']}" for o in failed))
        return [outcomes[label] for label in self.runs]

    def _outcome(self, label: str, me: dict, outcome: str, **more) -> dict:
        config = self.runs[label]
        return {"label": label, "name": run_name(config), "outcome": outcome, "result": str(result_path(config)),
                "job_id": me["job_id"], "host": me["host"], "log": me["log"]} | more

    def _train(self, runs: dict[str, Config], locks: dict[str, RunLock], me: dict, outcomes: dict) -> None:
        for label, config in runs.items():
            if self.force and label not in self.cleared:  # train again from scratch, once (not after a requeue)
                result_path(config).unlink(missing_ok=True)
                checkpoint_path(config).unlink(missing_ok=True)
                self.cleared.add(label)
        stored = [label for label, c in runs.items() if result_path(c).exists()]
        fresh = {label: c for label, c in runs.items() if label not in stored}
        groups = [[label] for label in stored] + runner.pack_groups(fresh, self.pack)
        for group in groups:
            configs = [runs[label] for label in group]
            resumed = {label: checkpoint_epoch(checkpoint_path(runs[label])) for label in group}
            t0 = time.time()
            try:
                before = load_result(configs[0]) if group[0] in stored else None
                results = runner.train_group(configs, verbose=self.verbose)
            except Exception as e:
                why = f"{type(e).__name__}: {e}"
                for label in group:
                    atomic_json(me | {"run": run_name(runs[label]), "label": label, "error": why, "time": timestamp(),
                                      "traceback": traceback.format_exc()}, failure_path(runs[label]))
                    outcomes[label] = self._outcome(label, me, "failed", error=why)
                    print(describe(outcomes[label]), flush=True)
                continue
            for label, r in zip(group, results):
                failure_path(runs[label]).unlink(missing_ok=True)
                took_over = locks[label].took_over
                trained = before is None or r != before
                outcomes[label] = self._outcome(
                    label, me, "trained" if trained else "stored",
                    status=r["status"], final_test_acc=r["final_test_acc"], device=r["device"],
                    seconds=time.time() - t0, pack=len(group) if len(group) > 1 else None,
                    resumed_at=resumed[label] + 1 if trained and resumed[label] is not None else None,
                    took_over=None if took_over is None else {k: took_over.get(k) for k in
                                                              ("job_id", "host", "pid", "since", "why")})
                print(describe(outcomes[label]), flush=True)


def describe(o: dict) -> str:
    """One line for an outcome of TrainJob (or of a job that ended without reporting one)."""
    log = f"; log {o['log']}" if o.get("log") else ""
    if o["outcome"] == "held":
        return f"{o['label']:24s} held      by {_holder(o['holder'])}: left to it{log}"
    if o["outcome"] == "failed":
        return f"{o['label']:24s} failed    {o['error']}{log}"
    if o["outcome"] == "waiting":
        return (f"{o['label']:24s} waiting   for the trained weights of {o['for']}: send the plan again once that "
                "run is done")
    acc = o["final_test_acc"]
    how = f"trained in {o['seconds']:.0f} s" if o["outcome"] == "trained" else o["outcome"]  # or stored, done
    if o.get("pack"):
        how += f" in a pack of {o['pack']}"
    if o.get("resumed_at"):
        how += f", resumed at epoch {o['resumed_at']}"
    if o.get("took_over"):
        how += f", after {_holder(o['took_over'])} ({o['took_over']['why']})"
    where = f"job {o['job_id']}" + (f" on {o['host']}" if o.get("host") else "") if o.get("job_id") else o["host"]
    return (f"{o['label']:24s} {o['status']:9s} test acc {acc if acc is None else f'{acc:.4f}'}  "
            f"({how}; {o['device']}, {where}) -> {o['result']}{log}")


# ----------------------------------------------------------------------------- submitting

DEFAULT_TIME = "4:00:00"
OPTIONS = {  # the Slurm options, from flags or a JSON file (--slurm-config), and their types
    "cluster": str, "partition": str, "account": str, "gpus": int, "cpus": int, "mem_gb": (int, float),
    "time": (str, int), "max_jobs": int, "signal_delay_s": int, "extra": dict}


def minutes(time_limit: str | int) -> int:
    """A Slurm time limit in minutes, from a number of minutes, H:MM:SS or D-H:MM:SS (seconds round up)."""
    m = re.fullmatch(r"(\d+)|(?:(\d+)-)?(\d+):(\d\d):(\d\d)", str(time_limit).strip())
    if m is None:
        raise ValueError(f"time limit {time_limit!r}: give minutes, H:MM:SS or D-H:MM:SS")
    plain, days, hours, mins, secs = m.groups()
    if not plain and (int(mins) > 59 or int(secs) > 59):
        raise ValueError(f"time limit {time_limit!r}: minutes and seconds must be 00-59")
    total = int(plain) if plain else (int(days or 0) * 24 + int(hours)) * 60 + int(mins) + (int(secs) > 0)
    if total < 1:
        raise ValueError(f"time limit {time_limit!r} is under a minute")
    return total


def options(path: str | Path | None = None, **flags) -> dict:
    """The Slurm options: those of the JSON file at `path` (keys as in OPTIONS), overridden by
    `flags` that are not None. `cluster` is auto (Slurm where a controller answers, else local processes),
    slurm or local; `extra` holds further sbatch options (e.g. {"qos": "high"})."""
    chosen = {}
    if path:
        try:
            chosen = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"--slurm-config {path}: cannot be read as JSON ({e})") from None
        if not isinstance(chosen, dict) or set(chosen) - set(OPTIONS):
            raise ValueError(f"--slurm-config {path}: unknown keys {sorted(set(chosen) - set(OPTIONS))}; "
                             f"known: {sorted(OPTIONS)}")
    chosen |= {k: v for k, v in flags.items() if v is not None}
    for key, value in chosen.items():
        if not isinstance(value, OPTIONS[key]) or isinstance(value, bool):
            raise ValueError(f"Slurm option {key} = {value!r} has the wrong type")
    for key, least in (("gpus", 0), ("cpus", 1), ("mem_gb", 0), ("max_jobs", 1), ("signal_delay_s", 1)):
        if key in chosen and not (chosen[key] >= least and (key != "mem_gb" or chosen[key] > 0)):
            raise ValueError(f"Slurm option {key} = {chosen[key]!r}: give " +
                             ("a positive number of GB" if key == "mem_gb" else f"a whole number >= {least}"))
    for name, value in chosen.get("extra", {}).items():
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", name) or not isinstance(value, (str, int, float)) \
                or isinstance(value, bool) or any(c in str(value) for c in "\n\r"):
            raise ValueError(f"Slurm option extra: {name!r} = {value!r}: give sbatch option names (letters, "
                             "digits, - and _) with a string or number each")
    if chosen.get("cluster", "auto") not in ("auto", "slurm", "local"):
        raise ValueError(f"cluster must be auto, slurm or local, got {chosen['cluster']!r}")
    minutes(chosen.get("time", DEFAULT_TIME))
    return chosen


def slurm_answers(timeout: float = 10.0) -> str | None:
    """None where a Slurm controller answers (`scontrol ping`), else why not, in a few words."""
    import subprocess
    if shutil.which("scontrol") is None:
        return "no scontrol on the PATH"
    try:
        p = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"scontrol ping failed ({type(e).__name__})"
    if p.returncode != 0 or " is UP" not in p.stdout:
        return f"no Slurm controller answers (scontrol ping: {(p.stdout + p.stderr).strip().splitlines()[-1:]})"
    return None


def accounting_off(timeout: float = 10.0) -> bool:
    """Whether the Slurm cluster keeps no accounting (no slurmdbd: `sacct` knows no job)."""
    import subprocess
    try:
        p = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return bool(re.search(r"^AccountingStorageType\s*=\s*accounting_storage/none", p.stdout, re.M))


def _follow_with_squeue() -> None:
    """Make submitit follow Slurm jobs with squeue, which answers without accounting, rather than
    sacct, which then fails on every poll (submitit warns each time and cannot see a job that was
    cancelled). Finished jobs stay in squeue for the cluster's MinJobAge; a job that left it before
    a poll saw it end counts as ended ("GONE"), and its outcome is then read from its files."""
    slurm = _submitit().slurm.slurm

    class SqueueWatcher(slurm.SlurmInfoWatcher):
        def _make_command(self):
            # all of this user's jobs: asking for ids instead fails outright (and so never updates)
            # once one of them has left the queue, or with more than one id given as `-j a -j b`
            return ["squeue", f"--user={getpass.getuser()}", "--states=all", "--format=%i|%T|%N"] \
                if self._registered - self._finished else None

        def read_info(self, string):
            lines = (string.decode() if isinstance(string, bytes) else string).splitlines()
            info = super().read_info("\n".join(["JobID|State|NodeList", *lines[1:]]))
            gone = {"JobID": "", "State": "GONE", "NodeList": ""}
            return info | {j: gone | {"JobID": j} for j in self._registered - self._finished if j not in info}
    if type(slurm.SlurmJob.watcher).__name__ != "SqueueWatcher":  # once a process
        slurm.SlurmJob.watcher = SqueueWatcher(delay_s=60)


def executor_parameters(chosen: dict) -> dict:
    """submitit.AutoExecutor.update_parameters arguments for the options `chosen` (see options)."""
    p = {"name": "qnets", "timeout_min": minutes(chosen.get("time", DEFAULT_TIME)),
         "gpus_per_node": chosen.get("gpus", 1), "tasks_per_node": 1, "stderr_to_stdout": True,
         "cpus_per_task": chosen.get("cpus"), "mem_gb": chosen.get("mem_gb"),
         "slurm_partition": chosen.get("partition"), "slurm_account": chosen.get("account"),
         "slurm_array_parallelism": chosen.get("max_jobs"), "slurm_additional_parameters": chosen.get("extra"),
         "slurm_signal_delay_s": chosen.get("signal_delay_s")}  # how long before its limit a job checkpoints
    return {k: v for k, v in p.items() if v is not None}


def make_executor(folder: str | Path, chosen: dict):
    """A submitit executor for the options `chosen`: Slurm, or local processes (see options)."""
    submitit = _submitit()
    cluster = chosen.get("cluster", "auto")
    if cluster == "auto":  # Slurm only where a controller answers, not wherever srun is installed
        why = slurm_answers() if shutil.which("srun") else "no srun on the PATH"
        if why is not None and shutil.which("srun"):
            warnings.warn(f"--cluster auto: srun is installed but {why}; running the jobs as local processes")
        cluster = "local" if why else "slurm"
    elif cluster == "slurm" and (why := slurm_answers()) is not None:
        raise ValueError(f"--cluster slurm: {why}; start Slurm, or use --cluster local")
    if cluster == "slurm" and accounting_off():
        _follow_with_squeue()
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(**executor_parameters(chosen))
    return executor


def submit(configs: dict[str, Config], chosen: dict | None = None, pack: int = 1, force: bool = False,
           verbose: bool = True, executor=None) -> dict:
    """Send the runs of `configs` as jobs: one per run, or per pack with `pack` > 1
    (runner.pack_groups). A run with a stored result is not sent (unless `force`), and
    neither is a run that another job holds or one whose trained start is missing (waiting).
    Returns {"jobs": [(job, labels)], "skipped": {label: outcome}, "executor": its name, "folder":
    where the logs are}."""
    if len({c.out_dir for c in configs.values()}) > 1:
        raise ValueError("submit: the runs of one submission must share one out_dir")
    out_dir = next(iter(configs.values())).out_dir
    folder = jobs_dir(out_dir).resolve() / "%j"
    executor = executor or make_executor(folder, chosen or {})
    skipped, todo = {}, {}
    me = {"job_id": None, "host": socket.gethostname(), "log": None}
    for label, config in configs.items():
        holder = read_lock(lock_path(config))
        base = {"label": label, "name": run_name(config), "result": str(result_path(config))} | me
        if result_path(config).exists() and not force:
            r = load_result(config)
            skipped[label] = base | {"outcome": "stored", "status": r["status"], "device": r["device"],
                                     "final_test_acc": r["final_test_acc"]}
        elif holder is not None and stale(holder) is None:
            skipped[label] = base | {"outcome": "held", "holder": holder, "log": holder.get("log")}
        elif why := waiting_for(config):  # the trained weights it starts from are not there yet
            skipped[label] = base | {"outcome": "waiting", "for": why}
        else:
            todo[label] = config
    groups = runner.pack_groups(todo, pack, force) if pack > 1 else [[label] for label in todo]
    root, jobs = Path.cwd(), []
    if groups:
        try:  # (sbatch's refusal is printed by submitit too: kept for the one-line error below)
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():  # one Slurm job array
                jobs = [(executor.submit(TrainJob({label: todo[label] for label in group}, root, pack, force,
                                                  verbose)), group) for group in groups]
        except _submitit().core.utils.FailedJobError as e:  # sbatch said no (a partition, an account, a limit)
            said = [ln.removeprefix("sbatch: error: ") for ln in str(e).splitlines() if "error" in ln]
            raise ValueError(f"Slurm refused the jobs: {'; '.join(said) or str(e).strip()}") from None
    return {"jobs": jobs, "skipped": skipped, "executor": getattr(executor, "cluster", type(executor).__name__),
            "folder": str(folder.parent)}


def _unreported(labels: list[str], configs: dict[str, Config], job, error: Exception) -> list[dict]:
    """Outcomes of the runs of a job that failed without returning any: done where the result
    is stored, failed with the reason its failure record gives where this job left one, else
    failed with the job's own error."""
    out = []
    last = str(error).strip().splitlines()[-1:] or [type(error).__name__]
    for label in labels:
        config = configs[label]
        base = {"label": label, "name": run_name(config), "result": str(result_path(config)), "job_id": job.job_id,
                "host": None, "log": str(job.paths.stdout)}
        record = json.loads(failure_path(config).read_text()) if failure_path(config).exists() else None
        try:
            r = load_result(config)
        except StoreError as e:
            out.append(base | {"outcome": "failed", "error": str(e)})
            continue
        if r is not None:
            out.append(base | {"outcome": "done", "status": r["status"], "final_test_acc": r["final_test_acc"],
                               "device": r["device"], "host": None})
        elif record is not None and str(record.get("job_id")) == str(job.job_id):
            out.append(base | {"outcome": "failed", "error": record["error"]})
        else:
            out.append(base | {"outcome": "failed", "error": f"the job ended without finishing it ({last[0]})"})
    return out


def wait(submission: dict, configs: dict[str, Config], poll_s: float = 10.0, print_=print) -> list[dict]:
    """Wait for the jobs of `submission`; print one line per run as its job ends (and first the
    runs that were not sent), with the job's log. Returns every run's outcome."""
    submitit = _submitit()
    outcomes = list(submission["skipped"].values())
    total = len(configs)

    def show(o):
        print_(f"[{len(outcomes)}/{total}] {describe(o)}", flush=True)
    for i, o in enumerate(list(outcomes)):
        print_(f"[{i + 1}/{total}] {describe(o)}", flush=True)
    by_id = {job.job_id: labels for job, labels in submission["jobs"]}
    for job in submitit.helpers.as_completed([job for job, _ in submission["jobs"]], poll_frequency=poll_s):
        try:
            done = job.result()
        except Exception as e:
            done = _unreported(by_id[job.job_id], configs, job, e)
        for o in done:
            o["log"] = o.get("log") or str(job.paths.stdout)
            outcomes.append(o)
            show(o)
    return outcomes


# ----------------------------------------------------------------------------- status
