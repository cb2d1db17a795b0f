"""Files read back may come from someone else: checkpoints, results and campaign folders. Nothing in
them runs, nothing is written outside the project's results folder, and a bad folder changes nothing."""
import contextlib
import io
import json
import lzma
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from qnets import campaign
from qnets import window as windows
from qnets.collect import collect
from qnets.train import (Config, StoreError, checkpoint_epoch, checkpoint_path, fit, load_checkpoint_file, read_result,
                         result_path, weights_path)

SCOPE = dict(preset="smoke", only=2, epochs=2, eval_every=1)


class Boom:
    """A pickle that creates a file when it is loaded: what a hostile checkpoint would carry."""
    target = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def hostile_checkpoint(path: Path, target: Path) -> None:
    Boom.target = str(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "payload": Boom()}, path)


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    """A real window's folder: one finished run, one cut short (partial)."""
    home = tmp_path_factory.mktemp("window")
    cwd = os.getcwd()
    os.chdir(home)
    try:
        (_, done), (_, cut) = campaign.plan(**SCOPE)
        fit(done, verbose=False)
        assert fit(cut, verbose=False, deadline=0.0)["status"] == "partial"  # one epoch, then out of time
        overrides = {k: v for k, v in SCOPE.items() if k != "preset"}
        windows._write_out(home / "out", [done], [cut], {
            "finished": [campaign.run_name(done)], "partial": [campaign.run_name(cut)], "device": "cpu",
            "stopped_because": "the budget is spent"}, "smoke", overrides)
    finally:
        os.chdir(cwd)
    return home / "out"


@pytest.fixture
def here(tmp_path, monkeypatch, window):
    """A fresh project folder with a copy of the window's folder in it."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(window, tmp_path / "out")
    return tmp_path


def stored_files(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and "out" not in p.parts}


def retar(path: Path, members: list[tuple[str, bytes]], **info) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            for k, v in info.items():
                setattr(ti, k, v)
            tar.addfile(ti, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


def members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_the_untouched_window_collects(here):
    taken = collect("out")
    assert len(taken["results"]) == 1 and len(taken["partial"]) == 1 and taken["kept"] == []


def test_trained_weights_travel_checked(here):
    """The finished conventional run's weights (where later runs start) come back with its result; a
    tampered or stray member stops the collection before anything is written."""
    done = campaign.plan(**SCOPE)[0][1]
    (name, data), = members(here / "out" / "weights.tar")
    assert name == f"{campaign.run_name(done)}.pt"
    broken = io.BytesIO()
    state = torch.load(io.BytesIO(data), weights_only=True)
    torch.save(state | {"model": {k: v.float() * float("nan") for k, v in state["model"].items()}}, broken)
    for tampered, message in (([(name, broken.getvalue())], "is not finite"),
                              ([(name, data), ("resnet8-conventional-000000000000.pt", data)],
                               "not a run the window finished")):
        retar(here / "out" / "weights.tar", tampered)
        with pytest.raises(ValueError, match=message):
            collect("out")
        assert not (here / "results").exists()
    retar(here / "out" / "weights.tar", [(name, data)])
    assert collect("out")["weights"] == [campaign.run_name(done)]
    assert (here / weights_path(done)).read_bytes() == data and weights_path(done).parts[0] == "results"
    weights_path(done).write_bytes(b"kept")  # weights already here are never replaced by a window's
    assert collect("out")["weights"] == [] and weights_path(done).read_bytes() == b"kept"


def test_a_checkpoint_that_would_run_code_is_refused_everywhere(here):
    target = here / "pwned"
    config = campaign.plan(**SCOPE)[1][1]
    hostile_checkpoint(checkpoint_path(config), target)
    assert checkpoint_epoch(checkpoint_path(config)) is None
    with pytest.raises(StoreError, match="not a usable qnets checkpoint"):
        load_checkpoint_file(checkpoint_path(config))
    with pytest.warns(UserWarning, match="cannot be read.*starts from epoch 0"):
        r = fit(config, verbose=False)
    assert r["status"] == "completed" and not target.exists()
    # the same file inside a window's folder stops the collection before anything is written
    name = checkpoint_path(config).name
    evil = here / "evil.pt"
    hostile_checkpoint(evil, target)
    retar(here / "out" / "partial-0.tar", [(name, evil.read_bytes())])
    before = stored_files(here)
    with pytest.raises(ValueError, match="not a usable qnets checkpoint"):
        collect("out")
    assert not target.exists() and stored_files(here) == before


@pytest.mark.parametrize("out_dir", ["/tmp/qnets-elsewhere", "../../../../tmp/qnets-elsewhere"])
def test_a_summary_cannot_send_results_outside_the_project(here, out_dir):
    summary = json.loads((here / "out" / "summary.json").read_text())
    summary["overrides"]["out_dir"] = out_dir
    (here / "out" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="outside this project's results folder"):
        collect("out")
    assert not Path("/tmp/qnets-elsewhere").exists() and not (here / "results").exists()


@pytest.mark.parametrize("summary, message", [
    ({"overrides": {}, "finished": [], "partial": []}, "preset is None"),
    ({"preset": "smoke", "overrides": {"only": "abc"}, "finished": [], "partial": []}, "only is 'abc'"),
    ({"preset": "smoke", "overrides": {"only": 0}, "finished": [], "partial": []}, "only is 0"),
    ({"preset": "smoke", "overrides": {"rm -rf": 1}, "finished": [], "partial": []}, "are not Config fields"),
    ({"preset": "smoke", "overrides": {}, "finished": "x", "partial": []}, "finished is not a list"),
    ([1, 2], "not a JSON object"),
])
def test_a_bad_summary_is_one_line(here, summary, message):
    (here / "out" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=message):
        collect("out")


@pytest.mark.parametrize("kind", ["traversal", "symlink", "directory", "fifo", "hidden"])
def test_special_tar_members_are_refused(here, kind):
    tar_path = here / "out" / "results.tar"
    (name, data), = members(tar_path)
    if kind == "traversal":
        retar(tar_path, [(f"../../{name}", data)])
    elif kind == "hidden":
        retar(tar_path, [(f".{name}", data)])
    else:
        retar(tar_path, [(name, b"")], type={"symlink": tarfile.SYMTYPE, "directory": tarfile.DIRTYPE,
                                            "fifo": tarfile.FIFOTYPE}[kind], linkname="/etc/passwd")
    with pytest.raises(ValueError, match="not a bare|not a regular file"):
        collect("out")
    assert not (here / "results").exists() and not (here.parent / name).exists()


def test_a_compressed_bomb_is_refused_before_it_expands(here):
    bomb = lzma.compress(b"\0" * (64 * 2**20), preset=9)  # 64 MiB of zeros in a few KiB
    (here / "out" / "results.tar").write_bytes(bomb)
    with pytest.raises(ValueError, match="not an uncompressed tar"):
        collect("out")


def test_a_truncated_tar_collects_nothing(here):
    tar_path = here / "out" / "results.tar"
    tar_path.write_bytes(tar_path.read_bytes()[:700])  # inside the first member
    with pytest.raises(ValueError, match="cut short|incomplete|not an uncompressed tar"):
        collect("out")
    assert not (here / "results").exists()


def test_a_member_dropped_from_a_tar_is_noticed(here):
    retar(here / "out" / "results.tar", [])  # a valid tar, but the summary lists one result
    with pytest.raises(ValueError, match="the summary lists 1: the folder is incomplete"):
        collect("out")
    assert not (here / "results").exists()


def test_collect_is_all_or_nothing(here):
    """A valid result first and a broken checkpoint second: the result is not written either."""
    (name, data), = members(here / "out" / "partial-0.tar")
    retar(here / "out" / "partial-0.tar", [(name, data[:1000])])
    with pytest.raises(ValueError, match="not a usable qnets checkpoint"):
        collect("out")
    assert not (here / "results" / "runs").exists()


def test_an_older_window_does_not_roll_partial_state_back(here):
    config = campaign.plan(**SCOPE)[1][1]
    newer = collect("out")  # epoch 1 of 2 stored as partial
    assert newer["partial"] == [campaign.run_name(config)]
    partial = campaign._partial_path(config)
    ckpt = torch.load(partial, weights_only=True)
    epoch = ckpt["epoch"]
    # the state here advances (as another window would), then the old folder is collected again
    ckpt["epoch"], ckpt["history"] = epoch + 1, ckpt["history"] + [dict(ckpt["history"][-1], epoch=epoch + 1)]
    torch.save(ckpt, partial)
    again = collect("out")
    assert again["partial"] == [] and "older than the" in again["kept"][0]
    assert checkpoint_epoch(partial) == epoch + 1


def test_a_stored_result_is_not_replaced_by_a_window(here):
    collect("out")
    config = campaign.plan(**SCOPE)[0][1]
    stored = result_path(config).read_bytes()
    r = json.loads(stored)
    r["wall_time"] += 1.0  # another, valid result of the same run
    (name, _), = members(here / "out" / "results.tar")
    retar(here / "out" / "results.tar", [(name, json.dumps(r).encode())])
    taken = collect("out")
    assert result_path(config).read_bytes() == stored and "another result is already stored" in taken["kept"][0]


@pytest.fixture(scope="module")
def trained_result(tmp_path_factory) -> tuple[dict, Path]:
    """One small run, trained once for the tests that alter its result."""
    config = Config(depth=8, dataset="synthetic", n_train=100, n_test=50, batch_size=50, epochs=2,
                    out_dir=str(tmp_path_factory.mktemp("trained") / "s"))
    return fit(config, verbose=False), result_path(config)


@pytest.mark.parametrize("change, message", [
    (lambda r: r | {"final_test_acc": 0.99}, "'final_test_acc' is 0.99 but the history's last evaluation"),
    (lambda r: r | {"best_test_acc": 0.999}, "'best_test_acc' is 0.999"),
    (lambda r: r | {"wall_time": -5}, "'wall_time' is -5"),
    (lambda r: {k: v for k, v in r.items() if k != "device"}, "'device' is missing"),
    (lambda r: r | {"params": "many"}, "'params' is 'many'"),
    (lambda r: r | {"history": [dict(h, epoch=7) for h in r["history"]]}, "holds epoch 7 at position 0"),
    (lambda r: r | {"history": [dict(h, train_acc=3.0) for h in r["history"]]}, "train_acc is 3.0"),
    (lambda r: r | {"history": [dict(h, epoch_time=-1) for h in r["history"]]}, "epoch_time is -1"),
    (lambda r: r | {"status": "collapsed", "final_test_acc": None}, "collapsed but the history shows no breakdown"),
    (lambda r: r | {"history": r["history"][:1], "epochs_run": 1}, "for a completed run of 2 epochs"),
])
def test_a_result_that_disagrees_with_itself_is_refused_by_name(tmp_path, trained_result, change, message):
    r, stored = trained_result
    path = tmp_path / stored.name  # the run's own file name, holding an altered result
    assert read_result(stored) == r  # as written, it reads back
    path.write_text(json.dumps(change(json.loads(json.dumps(r)))))
    with pytest.raises(StoreError, match=message.replace("(", r"\(")) as err:
        read_result(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_a_checkpoint_of_other_data_is_not_resumed(tmp_path):
    """A finished run asked to train on other data trains from epoch 0, not from its final checkpoint."""
    config = Config(depth=8, dataset="synthetic", n_train=100, n_test=50, batch_size=50, epochs=2,
                    out_dir=str(tmp_path / "s"))
    fit(config, verbose=False)
    other = fit(config.replace(n_test=60, out_dir=str(tmp_path / "fresh")), verbose=False)  # other data
    # the stored result and the final checkpoint are of the 50 test images; train again on 60
    import qnets.train as T
    original = T.load_data

    def other_data(c, read=None):
        return original(c.replace(n_test=60), read)
    T.load_data = other_data
    try:
        with pytest.warns(UserWarning) as caught:
            again = fit(config, verbose=False)
    finally:
        T.load_data = original
    texts = " ".join(str(w.message) for w in caught)
    assert "trained on other data" in texts and "starts from epoch 0" in texts
    assert [h["train_loss"] for h in again["history"]] == [h["train_loss"] for h in other["history"]]


# ----------------------------------------------------------------------------- full disks, read-only stores

def small_config(tmp_path, **kw) -> Config:
    return Config(**dict(depth=8, dataset="synthetic", n_train=100, n_test=50, batch_size=50, epochs=2,
                         out_dir=str(tmp_path / "s")) | kw)


def test_a_full_disk_at_a_checkpoint_stops_in_one_line_and_keeps_the_last_one(tmp_path, monkeypatch, capsys):
    """The second epoch's checkpoint finds the disk full: the command says where and how much, the
    first epoch's checkpoint is intact, and the same command later resumes from it."""
    from qnets.__main__ import main
    import qnets.utils as U
    config = small_config(tmp_path, epochs=3)
    real = U.os.fsync
    writes = {"n": 0}

    def fsync(fd):
        if "checkpoints" in os.readlink(f"/proc/self/fd/{fd}"):
            writes["n"] += 1
            if writes["n"] == 2:
                raise OSError(28, "No space left on device")
        return real(fd)
    monkeypatch.setattr(U.os, "fsync", fsync)
    argv = ["train", "--depth", "8", "--dataset", "synthetic", "--n-train", "100", "--n-test", "50",
            "--batch-size", "50", "--epochs", "3", "--out-dir", config.out_dir, "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"no space left in {Path(config.out_dir) / 'checkpoints'}" in err and "MiB needed" in err
    assert checkpoint_epoch(checkpoint_path(config)) == 0
    assert not list(Path(config.out_dir).rglob("*.tmp"))
    monkeypatch.setattr(U.os, "fsync", real)
    assert main(argv) == 0 and read_result(result_path(config))["epochs_run"] == 3


def test_a_finished_run_writes_its_result_before_its_final_checkpoint(tmp_path, monkeypatch):
    import qnets.train as T
    config = small_config(tmp_path)
    real = T.Run.checkpoint

    def full_at_the_end(run, epoch):
        if epoch == config.epochs - 1:
            raise T.DiskFull(checkpoint_path(config), 1 << 20)
        return real(run, epoch)
    monkeypatch.setattr(T.Run, "checkpoint", full_at_the_end)
    with pytest.warns(UserWarning, match="result stored, trained weights or final checkpoint not: no space left"):
        r = fit(config, verbose=False)
    assert r["status"] == "completed" and read_result(result_path(config))["epochs_run"] == 2
    conventional = config.replace(neuron="conventional", gamma_g=None, gamma_b=None)  # its weights do not fit either

    def no_room(c, *a):
        raise T.DiskFull(weights_path(c), 1 << 20)
    monkeypatch.setattr(T, "write_weights", no_room)
    with pytest.warns(UserWarning, match="result stored, trained weights or final checkpoint not: no space left"):
        assert fit(conventional, verbose=False)["status"] == "completed"
    assert read_result(result_path(conventional))["epochs_run"] == 2 and not weights_path(conventional).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_a_really_full_filesystem(tmp_path, capsys):
    """The same on a real 256 KiB filesystem (tmpfs): not even the first checkpoint fits."""
    import subprocess
    from qnets.__main__ import main
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        argv = ["train", "--depth", "8", "--dataset", "synthetic", "--n-train", "100", "--n-test", "50",
                "--batch-size", "50", "--epochs", "2", "--out-dir", str(disk / "s"), "--quiet"]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "no space left in" in err and "MiB needed" in err
        assert not list(disk.rglob("*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_store_is_one_line(tmp_path, capsys):
    from qnets.__main__ import main
    store = tmp_path / "s"
    store.mkdir()
    store.chmod(0o555)
    argv = ["train", "--depth", "8", "--dataset", "synthetic", "--epochs", "1", "--out-dir", str(store), "--quiet"]
    assert main(argv) == 2
    assert "cannot write into" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad values

@pytest.mark.parametrize("argv, fragment", [
    (["train", "--momentum", "2"], "Config.momentum must be below 1"),
    (["results", "--preset", "smoke", "--runs", "01"], "notebook 01 trains no CIFAR runs"),
    (["results", "--preset", "smoke", "--runs", "7"], "no notebook '7'"),
    (["results", "--preset", "smoke", "--pack", "0"], "argument --pack: '0' is not a whole number >= 1"),
    (["results", "--preset", "smoke", "--pack", "-3"], "argument --pack: '-3' is not a whole number >= 1"),
    (["campaign", "status", "--preset", "smoke", "--only", "-1"], "argument --only: '-1' is not a whole number"),
    (["campaign", "run", "--preset", "smoke", "--only", "0", "--out", "o"], "argument --only: '0' is not a whole"),
    (["results", "--preset", "smoke", "--executor", "submitit", "--cpus", "-4"], "cpus = -4: give a whole number >= 1"),
    (["results", "--preset", "smoke", "--executor", "submitit", "--gpus", "-1"], "gpus = -1: give a whole number >= 0"),
    (["results", "--preset", "smoke", "--executor", "submitit", "--max-jobs", "-2"], "max_jobs = -2"),
    (["results", "--preset", "smoke", "--executor", "submitit", "--time", "1:99:99"], "must be 00-59"),
    (["results", "--preset", "smoke", "--executor", "submitit", "--slurm-config", "{mem}"], "mem_gb = -1"),
    (["results", "--preset", "smoke", "--executor", "submitit", "--slurm-config", "{list}"], "extra: 'qos' = ['a']"),
    (["results", "--preset", "smoke", "--executor", "submitit", "--slurm-config", "{space}"], "extra: 'q os'"),
])
def test_a_bad_value_is_one_line(tmp_path, monkeypatch, capsys, argv, fragment):
    from qnets.__main__ import main
    monkeypatch.chdir(tmp_path)
    files = {"{mem}": {"mem_gb": -1}, "{list}": {"extra": {"qos": ["a"]}}, "{space}": {"extra": {"q os": "x"}}}
    for key, content in files.items():
        (tmp_path / key).write_text(json.dumps(content))
    with pytest.raises(SystemExit) if "argument" in fragment else contextlib.nullcontext():
        code = main(argv)
        assert code == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()  # nothing trained or written


def test_cluster_auto_uses_slurm_only_where_a_controller_answers(tmp_path, monkeypatch):
    """srun on the PATH with no controller behind it: auto runs local processes and says why."""
    from qnets import cluster
    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, script in (("srun", "exit 1"), ("scontrol", "echo 'slurm_load_ctl_conf error: Unable to contact' >&2; exit 1")):
        (bin_dir / tool).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert "no Slurm controller answers" in cluster.slurm_answers()
    with pytest.warns(UserWarning, match="srun is installed but no Slurm controller answers"):
        executor = cluster.make_executor(tmp_path / "jobs", {"cluster": "auto"})
    assert executor.cluster == "local"
    with pytest.raises(ValueError, match="--cluster slurm: no Slurm controller answers"):
        cluster.make_executor(tmp_path / "jobs", {"cluster": "slurm"})
