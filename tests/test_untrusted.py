"""Files read back may come from someone else: checkpoints, results and campaign folders. Nothing in
them runs, nothing is written outside the project's results folder, and a bad folder changes nothing."""
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
from qnets.train import (Config, StoreError, checkpoint_epoch, checkpoint_path, fit, load_checkpoint_file, read_result,
                         result_path)

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
        campaign._write_out(home / "out", [done], [cut], {
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
    taken = campaign.collect("out")
    assert len(taken["results"]) == 1 and len(taken["partial"]) == 1 and taken["kept"] == []


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
        campaign.collect("out")
    assert not target.exists() and stored_files(here) == before


@pytest.mark.parametrize("out_dir", ["/tmp/qnets-elsewhere", "../../../../tmp/qnets-elsewhere"])
def test_a_summary_cannot_send_results_outside_the_project(here, out_dir):
    summary = json.loads((here / "out" / "summary.json").read_text())
    summary["overrides"]["out_dir"] = out_dir
    (here / "out" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="outside this project's results folder"):
        campaign.collect("out")
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
        campaign.collect("out")


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
        campaign.collect("out")
    assert not (here / "results").exists() and not (here.parent / name).exists()


def test_a_compressed_bomb_is_refused_before_it_expands(here):
    bomb = lzma.compress(b"\0" * (64 * 2**20), preset=9)  # 64 MiB of zeros in a few KiB
    (here / "out" / "results.tar").write_bytes(bomb)
    with pytest.raises(ValueError, match="not an uncompressed tar"):
        campaign.collect("out")


def test_a_truncated_tar_collects_nothing(here):
    tar_path = here / "out" / "results.tar"
    tar_path.write_bytes(tar_path.read_bytes()[:700])  # inside the first member
    with pytest.raises(ValueError, match="cut short|incomplete|not an uncompressed tar"):
        campaign.collect("out")
    assert not (here / "results").exists()


def test_a_member_dropped_from_a_tar_is_noticed(here):
    retar(here / "out" / "results.tar", [])  # a valid tar, but the summary lists one result
    with pytest.raises(ValueError, match="the summary lists 1: the folder is incomplete"):
        campaign.collect("out")
    assert not (here / "results").exists()


def test_collect_is_all_or_nothing(here):
    """A valid result first and a broken checkpoint second: the result is not written either."""
    (name, data), = members(here / "out" / "partial-0.tar")
    retar(here / "out" / "partial-0.tar", [(name, data[:1000])])
    with pytest.raises(ValueError, match="not a usable qnets checkpoint"):
        campaign.collect("out")
    assert not (here / "results" / "runs").exists()


def test_an_older_window_does_not_roll_partial_state_back(here):
    config = campaign.plan(**SCOPE)[1][1]
    newer = campaign.collect("out")  # epoch 1 of 2 stored as partial
    assert newer["partial"] == [campaign.run_name(config)]
    partial = campaign._partial_path(config)
    ckpt = torch.load(partial, weights_only=True)
    epoch = ckpt["epoch"]
    # the state here advances (as another window would), then the old folder is collected again
    ckpt["epoch"], ckpt["history"] = epoch + 1, ckpt["history"] + [dict(ckpt["history"][-1], epoch=epoch + 1)]
    torch.save(ckpt, partial)
    again = campaign.collect("out")
    assert again["partial"] == [] and "older than the" in again["kept"][0]
    assert checkpoint_epoch(partial) == epoch + 1


def test_a_stored_result_is_not_replaced_by_a_window(here):
    campaign.collect("out")
    config = campaign.plan(**SCOPE)[0][1]
    stored = result_path(config).read_bytes()
    r = json.loads(stored)
    r["wall_time"] += 1.0  # another, valid result of the same run
    (name, _), = members(here / "out" / "results.tar")
    retar(here / "out" / "results.tar", [(name, json.dumps(r).encode())])
    taken = campaign.collect("out")
    assert result_path(config).read_bytes() == stored and "another result is already stored" in taken["kept"][0]


def small_result(tmp_path) -> tuple[dict, Path]:
    config = Config(depth=8, dataset="synthetic", n_train=100, n_test=50, batch_size=50, epochs=2,
                    out_dir=str(tmp_path / "s"))
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
def test_a_result_that_disagrees_with_itself_is_refused_by_name(tmp_path, change, message):
    r, path = small_result(tmp_path)
    path.write_text(json.dumps(change(r)))
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
