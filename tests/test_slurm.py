"""The cluster executor against a real Slurm: a one-node cluster on this machine
(`scripts/slurm-local.sh up`, which CI runs before the tests). Skipped, with the reason, where no
Slurm controller answers."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import until
from qnets import cluster, experiments, runner
from qnets.train import Config, checkpoint_epoch, checkpoint_path, fit, load_result

ROOT = Path(__file__).resolve().parents[1]


def _not_local() -> str | None:
    """Why these tests cannot run here, or None: they submit, cancel and requeue jobs, so only on
    the one-node cluster of scripts/slurm-local.sh, never on a shared one."""
    if (why := cluster.slurm_answers(timeout=5)) is not None:
        return f"no Slurm here ({why})"
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    if not re.search(r"^ClusterName\s*=\s*qnets-local$", config, re.M):
        return "the Slurm that answers is not the one-node cluster of scripts/slurm-local.sh"
    return None


NOT_UP = _not_local()
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.skipif(
    NOT_UP is not None, reason=f"{NOT_UP}; as root: eval \"$(scripts/slurm-local.sh up)\"")]
SLURM = {"cluster": "slurm", "partition": "debug", "gpus": 0, "cpus": 1, "time": 10}


@pytest.fixture(autouse=True)
def jobs_cleared_and_node_kept(monkeypatch):
    """Cancel what a test left queued or running, and fail it if the node was drained meanwhile
    (after making it usable again), so that one test's leftovers never stall the next."""
    sent = []
    submit = cluster.submit

    def recording(*a, **k):
        out = submit(*a, **k)
        sent.extend(job.job_id for job, _ in out["jobs"])
        return out
    monkeypatch.setattr(cluster, "submit", recording)
    yield
    if sent:
        subprocess.run(["scancel", *sent], capture_output=True)
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N|%T|%E"], capture_output=True, text=True).stdout
    for line in nodes.splitlines():
        node, state, reason = line.split("|", 2)
        if re.search("drain|down|fail", state):
            subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], capture_output=True)
            pytest.fail(f"the node {node} was {state} during the test: {reason}")


def _same_training(a: dict, b: dict) -> bool:
    keep = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "quadratic")
    return a["final_test_acc"] == b["final_test_acc"] and \
        [{k: h.get(k) for k in keep} for h in a["history"]] == [{k: h.get(k) for k in keep} for h in b["history"]]


def _squeue(job_id: str) -> str:
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%T", "-j", job_id], capture_output=True, text=True)
    return out.stdout.strip()


def _slow_run(out_dir: Path) -> Config:
    """A run of about a third of a second an epoch, ten seconds in all: long enough to be stopped
    between its checkpoints."""
    return Config(depth=8, neuron="conventional", dataset="synthetic", n_train=600, n_test=100, epochs=30,
                  batch_size=50, out_dir=str(out_dir))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The slow run trained here, in one go: what every interrupted job must end with."""
    return fit(_slow_run(tmp_path_factory.mktemp("here")), verbose=False)


def _quiet(*a, **k):
    pass


def test_a_plan_on_slurm_stores_what_training_here_stores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = experiments.labelled_configs("03", "smoke", out_dir=str(tmp_path / "slurm"))
    plan = {f"{label}#{i}": c for label, base in configs.items() for i, c in enumerate(experiments.seeds(base))}
    submission = cluster.submit(plan, SLURM, verbose=False)
    assert submission["executor"] == "slurm" and len(submission["jobs"]) == len(plan) == 9
    outcomes = cluster.wait(submission, plan, poll_s=1.0, print_=_quiet)
    assert sorted(o["outcome"] for o in outcomes) == ["trained"] * 9
    array = submission["jobs"][0][0].job_id.split("_")[0]
    assert all(o["job_id"].split("_")[0] == array for o in outcomes)  # one job array
    for label, config in plan.items():  # the same run trained here, in this process
        here = fit(config.replace(out_dir=str(tmp_path / "here")), verbose=False)
        assert _same_training(load_result(config), here), label


def test_a_cancelled_job_keeps_its_checkpoint_and_the_run_resumes_to_the_same_result(tmp_path, monkeypatch,
                                                                                      uninterrupted):
    monkeypatch.chdir(tmp_path)
    config = _slow_run(tmp_path / "slurm")
    submission = cluster.submit({"run": config}, SLURM, verbose=False)
    job = submission["jobs"][0][0]
    until(lambda: (checkpoint_epoch(checkpoint_path(config)) or -1) >= 0, what="a first checkpoint")
    status = runner.status_text({"run": config}, cpu=True)
    assert f"job {job.job_id}" in status, status  # --status names the Slurm job that holds the run
    subprocess.run(["scancel", job.job_id], check=True)
    until(lambda: _squeue(job.job_id) in ("CANCELLED", ""), what="the cancellation", poll=0.25)
    assert load_result(config) is None and checkpoint_epoch(checkpoint_path(config)) is not None
    again = cluster.submit({"run": config}, SLURM, verbose=False)
    (o,) = cluster.wait(again, {"run": config}, poll_s=1.0, print_=_quiet)
    assert o["outcome"] == "trained" and o["resumed_at"] >= 2, o
    assert _same_training(load_result(config), uninterrupted)


def test_a_requeued_job_resumes_from_its_checkpoint(tmp_path, monkeypatch, uninterrupted):
    """`scontrol requeue` is what preemption does: the job is stopped and queued again."""
    monkeypatch.chdir(tmp_path)
    config = _slow_run(tmp_path / "slurm")
    submission = cluster.submit({"run": config}, SLURM, verbose=False)
    job = submission["jobs"][0][0]
    until(lambda: (checkpoint_epoch(checkpoint_path(config)) or -1) >= 0, what="a first checkpoint")
    subprocess.run(["scontrol", "requeue", job.job_id], check=True)
    (o,) = cluster.wait(submission, {"run": config}, poll_s=1.0, print_=_quiet)
    assert o["outcome"] == "trained" and o["resumed_at"] >= 2, o
    assert _same_training(load_result(config), uninterrupted)


def _restarts(job_id: str) -> int:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    return int(m.group(1)) if (m := re.search(r"Restarts=(\d+)", out)) else 0


def _run_time_s(job_id: str) -> int:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    days, h, m, s = re.search(r"RunTime=(?:(\d+)-)?(\d+):(\d+):(\d+)", out).groups()
    return ((int(days or 0) * 24 + int(h)) * 60 + int(m)) * 60 + int(s)


@pytest.mark.timeout(480)  # (about 70 s of training, more on a loaded machine)
def test_a_job_that_reaches_its_time_limit_is_requeued_and_finishes(tmp_path, monkeypatch):
    """Slurm warns a job `signal_delay_s` before its time limit (SIGUSR2); submitit then saves the
    job and requeues it, and the run resumes from its last checkpoint. The job starts with room to
    spare (10 minutes, warned 150 s before the end); once its first checkpoint is written (however
    long a loaded machine took to start it), its limit is cut to 60-120 s away (Slurm keeps limits in
    whole minutes), inside the warning's reach, so that the warning comes at Slurm's next check of
    time limits (every 30 s), well before this run of about 70 s can end. Once requeued, the limit
    is raised again so that the job finishes however loaded the machine is."""
    monkeypatch.chdir(tmp_path)
    config = _slow_run(tmp_path / "slurm").replace(epochs=200)
    submission = cluster.submit({"run": config}, SLURM | {"signal_delay_s": 150}, verbose=False)
    job = submission["jobs"][0][0]
    until(lambda: (checkpoint_epoch(checkpoint_path(config)) or -1) >= 0, timeout=200, what="a first checkpoint",
          poll=0.25)
    limit = -(-_run_time_s(job.job_id) // 60) + 1
    subprocess.run(["scontrol", "update", f"JobId={job.job_id}", f"TimeLimit={limit}"], check=True)
    until(lambda: _restarts(job.job_id) >= 1, timeout=200, what="the requeue at the time limit", poll=0.5)
    subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "TimeLimit=10"], check=True)
    (o,) = cluster.wait(submission, {"run": config}, poll_s=1.0, print_=_quiet)
    assert o["outcome"] == "trained" and o["resumed_at"] >= 1, o  # from a checkpoint written before the limit
    assert "this job is timed-out" in Path(o["log"]).read_text()
    assert [h["epoch"] for h in load_result(config)["history"]] == list(range(200))


def test_one_process_follows_the_jobs_of_several_submissions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = list(experiments.labelled_configs("03", "smoke", out_dir=str(tmp_path / "slurm")).values())[:2]
    first = cluster.submit({"a": a}, SLURM, verbose=False)
    second = cluster.submit({"b": b}, SLURM, verbose=False)
    (ob,) = cluster.wait(second, {"b": b}, poll_s=1.0, print_=_quiet)  # while the first job is still known
    (oa,) = cluster.wait(first, {"a": a}, poll_s=1.0, print_=_quiet)
    assert oa["outcome"] == ob["outcome"] == "trained", (oa, ob)


def test_two_submissions_of_one_plan_train_each_run_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = experiments.labelled_configs("03", "smoke", out_dir=str(tmp_path / "slurm"))
    plan = {label: c for label, c in base.items()}
    first = cluster.submit(plan, SLURM, verbose=False)
    second = cluster.submit(plan, SLURM, verbose=False)  # before any of the first's jobs has started
    outcomes = [o for s in (first, second) for o in cluster.wait(s, plan, poll_s=1.0, print_=_quiet)]
    for label in plan:
        mine = sorted(o["outcome"] for o in outcomes if o["label"] == label)
        assert mine.count("trained") == 1 and set(mine) <= {"trained", "held", "stored"}, (label, mine)


def test_a_run_that_fails_in_its_job_is_listed_failed_with_the_jobs_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")  # the job fails reading the weights it starts from
    config = Config(depth=8, dataset="synthetic", n_train=100, n_test=50, epochs=1, batch_size=50,
                    init="conventional", init_from=str(tmp_path / "broken.pt"), out_dir=str(tmp_path / "slurm"))
    submission = cluster.submit({"run": config}, SLURM, verbose=False)
    (o,) = cluster.wait(submission, {"run": config}, poll_s=1.0, print_=_quiet)
    job = submission["jobs"][0][0]
    assert o["outcome"] == "failed" and o["job_id"] == job.job_id and Path(o["log"]).is_file(), o
    status = runner.status_text({"run": config}, cpu=True)
    assert "failed" in status and o["log"] in status, status


def test_a_bad_slurm_option_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "qnets", "results", "--preset", "smoke", "--runs", "03", "--executor",
                        "submitit", "--cluster", "slurm", "--partition", "no-such-partition", "--gpus", "0"],
                       capture_output=True, text=True, cwd=tmp_path,
                       env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("qnets results: error: Slurm refused the jobs: invalid partition"), p.stderr
