"""Plans on a cluster (qnets.cluster): run locks and their recovery, jobs through submitit's
LocalExecutor on the smoke preset (concurrent, killed, preempted), failures and the status list."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from qnets import cluster, experiments, locks, runner
from qnets.__main__ import main
from qnets.train import checkpoint_epoch, checkpoint_path, fit, read_result, result_path
from conftest import until, untimed

needs_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                    reason="submitit is not installed (pip install -e '.[cluster]')")
LOCAL = {"cluster": "local", "time": 5}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Jobs and in-process runs alike on one thread: several jobs at once on a small machine do
    not fight over its cores, and a job's run can equal one trained here (CPU results depend on
    the thread count)."""
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the jobs' processes
    yield
    torch.set_num_threads(threads)
    if omp is None:
        del os.environ["OMP_NUM_THREADS"]
    else:
        os.environ["OMP_NUM_THREADS"] = omp


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the smoke preset writes into results/smoke/ of the current folder
    monkeypatch.delenv("QNETS_CIFAR10", raising=False)


def smoke(**changes):
    """The smoke preset's three conventional runs (seeds 0-2), with `changes`."""
    return {label: c.replace(**changes) for label, c in experiments.plan("smoke", "02:conventional").items()}



def holder_pid(config):
    """The pid in the run's lock, once the lock has been written."""
    return until(lambda: (cluster.read_lock(cluster.lock_path(config)) or {}).get("pid"), what="the run's lock")


def send(runs, **kw):
    """Submit one TrainJob of `runs` to submitit's LocalExecutor."""
    executor = cluster.make_executor(cluster.jobs_dir("results/smoke").resolve() / "%j", LOCAL)
    return executor.submit(cluster.TrainJob(runs, os.getcwd(), verbose=False, **kw))


def other_holder(config, host="node7", age=0.0, **fields):
    """Write the lock of `config` as another job would have, its heartbeat `age` seconds ago."""
    path = cluster.lock_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": 4321, "job_id": "777", "since": "2030-01-01T09:00:00+0000",
                                "log": "/logs/777_0_log.out", "token": "theirs"} | fields))
    os.utime(path, (time.time() - age, time.time() - age))


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ----------------------------------------------------------------------------- locks

def test_a_run_lock_is_exclusive_and_says_who_holds_it():
    config = smoke()["02:conventional"]
    lock = cluster.take(config)
    assert isinstance(lock, cluster.RunLock)
    try:
        held = cluster.take(config)  # the holder (this process) is alive: refused, with its record
        assert not isinstance(held, cluster.RunLock)
        assert held["token"] == lock.record["token"] and held["pid"] == os.getpid() and held["since"]
    finally:
        lock.release()
    assert not cluster.lock_path(config).exists()
    again = cluster.take(config)
    assert isinstance(again, cluster.RunLock)
    again.release()


@pytest.mark.parametrize("case,taken,why", [
    ("dead process on this host", True, "is gone"),
    ("silent holder elsewhere", True, "no heartbeat for"),
    ("live holder elsewhere", False, None),
    ("half-written, fresh", False, None),  # read again for a while, then left to its writer
    ("half-written, silent", True, "no heartbeat for"),
])
def test_a_stale_lock_is_taken_over_and_a_live_one_is_not(case, taken, why):
    import socket
    config = smoke()["02:conventional"]
    silent = cluster.STALE_AFTER_S + 30
    if case == "dead process on this host":
        other_holder(config, host=socket.gethostname(), pid=dead_pid())
    elif case.startswith("half-written"):
        cluster.lock_path(config).parent.mkdir(parents=True)
        cluster.lock_path(config).write_text("")
        os.utime(cluster.lock_path(config), (time.time() - silent,) * 2 if "silent" in case else None)
    else:
        other_holder(config, age=silent if "silent" in case else 10)
    got = cluster.take(config, attempts=5)
    assert isinstance(got, cluster.RunLock) == taken
    if taken:
        assert why in got.took_over["why"]
        assert json.loads(cluster.lock_path(config).read_text())["token"] == got.record["token"]
        got.release()
    else:
        assert cluster.lock_path(config).exists() and got.get("token") in ("theirs", None)


def test_of_many_jobs_racing_for_one_stale_lock_exactly_one_takes_it():
    config = smoke()["02:conventional"]
    other_holder(config, age=cluster.STALE_AFTER_S + 30)
    start, got = threading.Barrier(8), []

    def race():
        start.wait()
        got.append(cluster.take(config))
    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [g for g in got if isinstance(g, cluster.RunLock)]
    try:
        assert len(winners) == 1 and len(got) == 8
        assert all(g["token"] == winners[0].record["token"] for g in got if g is not winners[0])
    finally:
        for lock in winners:
            lock.release()


def test_the_heartbeat_keeps_a_lock_fresh_and_a_holder_taken_over_stops(monkeypatch):
    monkeypatch.setattr(locks, "HEARTBEAT_S", 0.05)
    config = smoke()["02:conventional"]
    lock = cluster.take(config)
    path = cluster.lock_path(config)
    os.utime(path, (time.time() - 1000,) * 2)
    until(lambda: time.time() - path.stat().st_mtime < 5, timeout=5, what="a heartbeat")
    other_holder(config, host="node9", job_id="888")  # as if node9 had found it stale and taken it over
    with pytest.raises(KeyboardInterrupt):
        until(lambda: False, timeout=5, what="the holder to stop")
    assert "taken over by job 888 on node9" in lock.lost
    lock.release()
    assert json.loads(path.read_text())["token"] == "theirs"  # the new holder's lock is left alone


def test_a_local_plan_leaves_a_run_that_another_process_trains_to_it(capsys):
    """The local executor takes the same lock as a job: a run held by a live process elsewhere is
    left to it (said in one line), the others train; once the holder is gone, the run trains."""
    runs = smoke()
    held = runs["02:conventional"]
    other_holder(held)  # a live job on node7
    runner.train_plan("smoke", "02:conventional", verbose=False)
    lines = capsys.readouterr().out.splitlines()
    assert sum("trained in" in line for line in lines) == 2
    assert any("02:conventional " in line and "busy" in line and "job 777 on node7" in line for line in lines)
    assert not result_path(held).exists()
    other_holder(held, age=cluster.STALE_AFTER_S + 30)  # it fell silent
    runner.train_plan("smoke", "02:conventional", verbose=False)
    assert result_path(held).exists() and "02:conventional " in capsys.readouterr().out


@pytest.mark.slow
def test_two_local_processes_on_one_plan_train_each_run_once():
    command = [sys.executable, "-m", "qnets", "results", "--preset", "smoke", "--runs",
               "02:conventional,02:relinear-sg", "--quiet"]
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
                for _ in range(2)]
    outputs = [child.communicate(timeout=600)[0] for child in children]
    assert all(child.returncode == 0 for child in children), outputs
    trained = [line.split()[1] for out in outputs for line in out.splitlines() if "trained in" in line]
    assert sorted(trained) == sorted(smoke()) + sorted(experiments.plan("smoke", "02:relinear-sg")), outputs
    assert all(result_path(c).exists() for c in experiments.plan("smoke", "02:conventional,02:relinear-sg").values())


def test_a_campaign_window_goes_on_past_a_run_another_process_trains():
    from qnets import campaign, window
    (_, held), (_, other) = campaign.plan("smoke", 2)
    other_holder(held)
    summary = window.run(60, "out", preset="smoke", only=2, verbose=False)
    assert summary["finished"] == [campaign.run_name(other)] and not result_path(held).exists()
    assert any("job 777 on node7" in entry.get("busy", "") for entry in summary["log"])
    assert summary["stopped_because"] == "the rest of the plan is being trained by other processes"


# ----------------------------------------------------------------------------- failures and status

def test_a_failing_run_is_recorded_with_why_and_log_and_the_job_goes_on(tmp_path, monkeypatch):
    from qnets.models import resnet
    weights = tmp_path / "conventional.pt"
    weights.write_text("not a checkpoint")
    runs = smoke()
    runs["02:conventional"] = runs["02:conventional"].replace(neuron="quadratic", init="conventional",
                                                              init_from=str(weights))
    bad = runs["02:conventional"]
    monkeypatch.setattr(cluster, "whoami", lambda: {"host": "node3", "pid": os.getpid(), "job_id": "4242",
                                                    "log": "/logs/4242_0_log.out"})
    with pytest.raises(RuntimeError, match="1 of 3 runs failed: 02:conventional: ValueError: Config.init_from"):
        cluster.TrainJob(runs, os.getcwd(), verbose=False)()
    record = json.loads(cluster.failure_path(bad).read_text())
    assert record["job_id"] == "4242" and record["log"] == "/logs/4242_0_log.out" and "Traceback" in record["traceback"]
    assert all(result_path(runs[k]).exists() for k in ("02:conventional#1", "02:conventional#2"))
    assert not list(Path("results/smoke/cluster/locks").glob("*.lock"))  # every lock released
    rows = {r["label"]: r for r in runner.status(runs)}
    assert [rows[k]["state"] for k in runs] == ["failed", "done", "done"]
    assert "is not the checkpoint of a conventional ResNet-8" in rows["02:conventional"]["error"]
    text = runner.status_text(runs, cpu=False)
    assert "job 4242 on node3" in text and "log /logs/4242_0_log.out" in text
    # the cause mended (the weights it starts from now exist), the same run trains and its record goes
    torch.save({"model": resnet(8, "conventional").state_dict()}, weights)
    fixed = cluster.TrainJob({"02:conventional": bad}, os.getcwd(), verbose=False)()
    assert fixed[0]["outcome"] == "trained" and not cluster.failure_path(bad).exists()
    assert runner.status({"02:conventional": bad})[0]["state"] == "done"


def test_status_lists_done_running_failed_and_to_do(capsys):
    import socket
    runs = smoke()
    labels = list(runs)
    fit(runs[labels[0]], verbose=False)
    other_holder(runs[labels[1]], age=12)
    path = result_path(runs[labels[2]])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{broken")
    assert main(["results", "--preset", "smoke", "--runs", "02:conventional", "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_label = {line.split()[0]: line for line in lines[1:-2]}
    acc = read_result(result_path(runs[labels[0]]))["final_test_acc"]
    assert by_label[labels[0]].split()[1] == "done" and f"{100 * acc:.2f}% (" in by_label[labels[0]]
    assert "running" in by_label[labels[1]]
    assert "job 777 on node7 since 2030-01-01T09:00:00+0000" in by_label[labels[1]]
    assert "log /logs/777_0_log.out" in by_label[labels[1]]
    assert "failed" in by_label[labels[2]] and "broken JSON" in by_label[labels[2]]
    assert lines[-1].startswith("1 done, 1 running, 1 failed, 0 to do of 3 runs; ")
    # a holder that died: the run is to do, from the epochs its checkpoint holds
    path.unlink()
    other_holder(runs[labels[2]], host=socket.gethostname(), pid=dead_pid())
    row = runner.status({labels[2]: runs[labels[2]]})[0]
    assert row["state"] == "to do" and "is gone" in row["stale"]["why"]


def test_force_trains_a_stored_run_again_once_even_across_a_requeue():
    label, config = next(iter(smoke().items()))
    first = fit(config, verbose=False)
    job = cluster.TrainJob({label: config}, os.getcwd(), force=True, verbose=False)
    assert job()[0]["outcome"] == "trained"
    again = read_result(result_path(config))
    assert again["history"][0]["epoch_time"] != first["history"][0]["epoch_time"]
    assert job()[0]["outcome"] == "stored"  # the same job requeued: its forced run is not thrown away again
    assert read_result(result_path(config)) == again


class Recorder:
    """Stands in for a submitit executor: keeps what it is given."""
    cluster = "recorder"

    def __init__(self):
        self.sent = []

    def batch(self):
        import contextlib
        return contextlib.nullcontext()

    def submit(self, job):
        self.sent.append(job)
        return job


def test_submit_sends_neither_stored_runs_nor_runs_another_job_holds():
    runs = smoke()
    labels = list(runs)
    fit(runs[labels[0]], verbose=False)
    other_holder(runs[labels[1]], age=12)
    recorder = Recorder()
    submission = cluster.submit(runs, executor=recorder)
    assert [list(job.runs) for job in recorder.sent] == [labels[2:]]
    assert submission["skipped"][labels[0]]["outcome"] == "stored"
    assert submission["skipped"][labels[1]]["holder"]["job_id"] == "777"
    assert "held      by job 777 on node7" in cluster.describe(submission["skipped"][labels[1]])
    other_holder(runs[labels[1]], age=cluster.STALE_AFTER_S + 30)  # its holder fell silent: sent again
    recorder = Recorder()
    cluster.submit(runs, executor=recorder, pack=2)
    assert [list(job.runs) for job in recorder.sent] == [labels[1:]] and recorder.sent[0].pack == 2


def test_submit_holds_back_runs_whose_trained_start_is_missing():
    """A run that starts from its conventional run's weights is not sent before they exist (a job
    beside the parent's would fail): it waits, and is sent once they are there."""
    runs = smoke()
    labels = list(runs)
    child = runs[labels[0]].replace(neuron="quadratic", init="conventional", init_from="same-recipe")
    recorder = Recorder()
    submission = cluster.submit({"child": child} | runs, executor=recorder)
    assert [list(job.runs) for job in recorder.sent] == [[label] for label in labels]
    assert submission["skipped"]["child"]["outcome"] == "waiting"
    assert cluster.describe(submission["skipped"]["child"]).startswith(
        f"child                    waiting   for the trained weights of {cluster.run_name(runs[labels[0]])}")
    fit(runs[labels[0]], verbose=False)
    recorder = Recorder()
    cluster.submit({"child": child}, executor=recorder)
    assert [list(job.runs) for job in recorder.sent] == [["child"]]


def test_without_submitit_the_command_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    assert main(["results", "--preset", "smoke", "--runs", "02:conventional", "--executor", "submitit"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install -e ".[cluster]"' in err


def test_slurm_options_from_a_file_and_flags(tmp_path):
    path = tmp_path / "slurm.json"
    path.write_text(json.dumps({"partition": "gpu", "time": "8:00:00", "account": "lab", "extra": {"qos": "high"}}))
    chosen = cluster.options(path, partition="a100", gpus=None)
    assert chosen == {"partition": "a100", "time": "8:00:00", "account": "lab", "extra": {"qos": "high"}}
    assert cluster.executor_parameters(chosen) == {
        "name": "qnets", "timeout_min": 480, "gpus_per_node": 1, "tasks_per_node": 1, "stderr_to_stdout": True,
        "slurm_partition": "a100", "slurm_account": "lab", "slurm_additional_parameters": {"qos": "high"}}
    path.write_text(json.dumps({"partition": "gpu", "walltime": 5}))
    with pytest.raises(ValueError, match=r"unknown keys \['walltime'\]"):
        cluster.options(path)
    with pytest.raises(ValueError, match="give minutes, H:MM:SS or D-H:MM:SS"):
        cluster.options(None, time="1:30")
    path.write_text(json.dumps({"signal_delay_s": 110}))  # warned 110 s before the limit: saved and requeued
    assert cluster.executor_parameters(cluster.options(path))["slurm_signal_delay_s"] == 110
    with pytest.raises(ValueError, match="signal_delay_s = 0"):
        cluster.options(None, signal_delay_s=0)


@needs_submitit
def test_slurm_options_become_sbatch_lines(tmp_path, monkeypatch):
    import submitit
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # as if srun were here
    monkeypatch.setattr(cluster, "slurm_answers", lambda: None)  # and a controller answered
    chosen = cluster.options(None, partition="gpu", account="lab", time="1-02:00:00", gpus=2, cpus=8, max_jobs=4,
                             extra={"qos": "high"}, cluster="slurm")
    text = cluster.make_executor(tmp_path / "%j", chosen)._executor._make_submission_file_text("true", "uid")
    for line in ("--partition=gpu", "--account=lab", "--time=1560", "--gpus-per-node=2", "--cpus-per-task=8",
                 "--qos=high", "--job-name=qnets"):
        assert f"#SBATCH {line}\n" in text, line


# ----------------------------------------------------------------------------- jobs (submitit's LocalExecutor)

@pytest.mark.slow
@needs_submitit
def test_a_plan_across_concurrent_jobs_writes_each_result_once():
    """The plan goes out as two jobs (a pack of two and a lone run); the same runs are sent
    again at once, as a second submission would: every run is trained by exactly one job."""
    runs = smoke()
    submission = cluster.submit(runs, LOCAL, pack=2, verbose=False)
    assert [labels for _, labels in submission["jobs"]] == [list(runs)[:2], list(runs)[2:]]
    again = [send({label: runs[label] for label in labels}, pack=2) for _, labels in submission["jobs"]]
    jobs = [job for job, _ in submission["jobs"]] + again
    outcomes = [o for job in jobs for o in job.result()]
    for label in runs:
        mine = sorted(o["outcome"] for o in outcomes if o["label"] == label)
        assert mine.count("trained") == 1 and set(mine) <= {"trained", "held", "stored"}, (label, mine)
        read_result(result_path(runs[label]))
    trained = [o for o in outcomes if o["outcome"] == "trained"]
    assert {o["job_id"] for o in trained} <= {job.job_id for job in jobs}
    for o in trained:  # each run's line is in the log of the job that trained it
        assert o["label"] in Path(o["log"]).read_text()
    assert not list(Path("results/smoke/cluster/locks").glob("*.lock"))


@pytest.mark.slow
@needs_submitit
def test_two_jobs_given_the_same_run_do_not_both_train_it():
    """Job A holds run X (stopped with SIGSTOP, so that it cannot finish meanwhile); job B is
    given X and Y as a pack: it trains Y alone and leaves X to A, which then finishes it."""
    runs = smoke(epochs=2)
    x, y = list(runs)[:2]
    a = send({x: runs[x]})
    pid = holder_pid(runs[x])
    os.kill(pid, signal.SIGSTOP)
    try:
        b = send({x: runs[x], y: runs[y]}, pack=2).result()
        assert not result_path(runs[x]).exists()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert [o["outcome"] for o in b] == ["held", "trained"]
    assert b[0]["holder"]["job_id"] == a.job_id and b[0]["holder"]["pid"] == pid
    assert b[1]["pack"] is None  # the pack shrank to the run B could lock
    done = a.result()
    assert done[0]["outcome"] == "trained" and done[0]["resumed_at"] is None
    assert read_result(result_path(runs[x]))["epochs_run"] == 2


@pytest.mark.slow
@needs_submitit
def test_a_failed_job_is_reported_run_by_run_with_its_log(tmp_path):
    """A job of two runs, one of which raises: the job fails, and the report says which run
    failed and why, that the other is done, and where the job's log is."""
    weights = tmp_path / "conventional.pt"
    weights.write_text("not a checkpoint")
    runs = smoke()
    runs["02:conventional"] = runs["02:conventional"].replace(neuron="quadratic", init="conventional",
                                                              init_from=str(weights))
    labels = list(runs)[:2]
    job = send({label: runs[label] for label in labels})
    lines = []
    outcomes = cluster.wait({"jobs": [(job, labels)], "skipped": {}}, runs, poll_s=0.2, print_=lambda *a, **k:
                            lines.append(a[0]))
    assert [o["outcome"] for o in outcomes] == ["failed", "done"]
    log = str(job.paths.stdout)
    assert "ValueError: Config.init_from" in outcomes[0]["error"] and all(o["log"] == log for o in outcomes)
    assert lines[0].startswith("[1/3] 02:conventional ") and "failed" in lines[0] and lines[0].endswith(f"log {log}")
    assert "completed" in lines[1] and "(done; cpu" in lines[1]
    assert "1 of 2 runs failed" in Path(log).read_text()  # the traceback is in the log


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The smoke run used by the interruption tests, trained in one go elsewhere."""
    config = smoke(epochs=6, n_train=400)["02:conventional"]
    return fit(config.replace(out_dir=str(tmp_path_factory.mktemp("straight"))), verbose=False)


def wait_for_epoch(config, job, epoch=1):
    until(lambda: (checkpoint_epoch(checkpoint_path(config)) or -1) >= epoch or job.done(),
          what=f"epoch {epoch} in the checkpoint")
    assert not result_path(config).exists(), "the run finished before it could be interrupted"


@pytest.mark.slow
@needs_submitit
def test_a_job_killed_mid_run_and_sent_again_resumes_to_the_uninterrupted_result(uninterrupted):
    config = smoke(epochs=6, n_train=400)["02:conventional"]
    killed = send({"02:conventional": config})
    pid = holder_pid(config)
    wait_for_epoch(config, killed)
    os.kill(pid, signal.SIGKILL)
    until(killed.done, what="the killed job to end")
    saved = torch.load(checkpoint_path(config), weights_only=False)
    assert 1 <= saved["epoch"] < 5 and not result_path(config).exists()
    row = runner.status({"02:conventional": config})[0]
    assert row["state"] == "partial" and row["done"] == saved["epoch"] + 1 and "is gone" in row["stale"]["why"]

    again = send({"02:conventional": config}).result()[0]
    assert again["outcome"] == "trained" and again["resumed_at"] == saved["epoch"] + 1
    assert again["took_over"]["job_id"] == killed.job_id and "is gone" in again["took_over"]["why"]
    r = read_result(result_path(config))
    assert r["history"][:saved["epoch"] + 1] == saved["history"]  # kept from the checkpoint, timings and all
    assert untimed(r["history"]) == untimed(uninterrupted["history"])
    assert r["final_test_acc"] == uninterrupted["final_test_acc"]


@pytest.mark.slow
@needs_submitit
def test_a_preempted_job_is_requeued_and_resumes_from_its_checkpoint(uninterrupted):
    """Slurm signals a job it preempts or that reaches its time limit (USR2); submitit then calls
    TrainJob.checkpoint and requeues the job, which resumes the run."""
    config = smoke(epochs=6, n_train=400)["02:conventional"]
    job = send({"02:conventional": config})
    pid = holder_pid(config)
    wait_for_epoch(config, job)
    os.kill(pid, signal.SIGUSR2)
    o = job.result()[0]
    assert "Requeued job" in Path(o["log"]).read_text()
    assert o["outcome"] == "trained" and o["resumed_at"] >= 2 and o["took_over"] is None  # the lock was released
    r = read_result(result_path(config))
    assert untimed(r["history"]) == untimed(uninterrupted["history"])


@pytest.mark.slow
@needs_submitit
def test_results_executor_submitit_from_the_command_line(tmp_path, capsys):
    (tmp_path / "local.json").write_text(json.dumps(LOCAL))
    argv = ["results", "--preset", "smoke", "--runs", "02:conventional", "--executor", "submitit",
            "--slurm-config", "local.json", "--pack", "3", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("submitted 1 jobs (3 runs) to submitit's local executor; 0 runs not sent")
    assert len([line for line in out if "completed" in line and "in a pack of 3" in line]) == 3
    assert all("log " in line for line in out[1:4])
    assert out[-1] == "3 runs done, 0 left to the jobs that hold them, 0 failed"
    assert main(argv) == 0  # everything is stored: nothing is sent
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("submitted 0 jobs (0 runs)") and sum("stored" in line for line in out) == 3
    assert main(["results", "--preset", "smoke", "--runs", "02:conventional", "--status"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("3 done, 0 to do of 3 runs; ")


@needs_submitit
def test_without_accounting_jobs_are_followed_in_one_squeue_call_and_a_job_that_left_the_queue_has_ended(
        monkeypatch):
    """squeue refuses `-j a -j b` and fails on an id that has left the queue: then no state would
    ever update and waiting on the jobs would never end."""
    slurm = importlib.import_module("submitit.slurm.slurm")
    monkeypatch.setattr(slurm.SlurmJob, "watcher", slurm.SlurmInfoWatcher(delay_s=60))
    cluster._follow_with_squeue()
    watcher = slurm.SlurmJob.watcher
    for job_id in ("5", "7_0", "7_1", "7_2", "9"):
        watcher.register_job(job_id)
    command = watcher._make_command()
    assert command[0] == "squeue" and "-j" not in command and not any(a.startswith("--jobs") for a in command)
    info = watcher.read_info("JOBID|STATE|NODELIST\n5|COMPLETED|vm\n7_[1-2]|PENDING|\n7_0|RUNNING|vm\n")
    assert {j: i["State"] for j, i in info.items() if j in watcher._registered} == \
        {"5": "COMPLETED", "7_0": "RUNNING", "7_1": "PENDING", "7_2": "PENDING", "9": "GONE"}
    watcher._info_dict.update(info)
    assert [watcher.is_done(j, mode="cache") for j in ("5", "7_0", "7_1", "9")] == [True, False, False, True]
