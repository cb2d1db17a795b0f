"""The results store: lasting names, data identity, provenance, bad files, strict JSON."""
import dataclasses
import os
import time
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from qnets import data as D
from qnets.__main__ import main
from qnets.train import (Config, StoreError, _f, checkpoint_path, config_hash, fit, read_result, result_path,
                         run_name)

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "results").glob("*/*.json"))
RUNS = [p for p in COMMITTED if p.parent.name == "runs"]  # (checks/ and stopped/: kept as written, not read)


def small(tmp_path, **kw):
    return Config(**(dict(depth=8, dataset="synthetic", n_train=100, n_test=50, batch_size=50, epochs=2,
                          out_dir=str(tmp_path / "results")) | kw))


def strict_json(text):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------- names

def test_every_committed_result_keeps_its_name_when_config_grows_a_defaulted_field():
    grown = dataclasses.make_dataclass("Grown", [("new_knob", float, _f(0.25, "a later addition"))],
                                       bases=(Config,), frozen=True)
    assert RUNS
    for path in RUNS:
        stored = json.loads(path.read_text())
        assert run_name(Config(**stored["config"])) == path.stem
        assert config_hash(grown(**stored["config"])) == stored["hash"]
        assert config_hash(grown(**stored["config"], new_knob=0.5)) != stored["hash"]  # a real change renames


def test_runtime_fields_never_change_a_name():
    c = Config()
    for change in (dict(device="cpu"), dict(device="cuda"), dict(compile="off"), dict(cuda_graphs="on"),
                   dict(channels_last="off"), dict(checkpoint_every=7), dict(out_dir="elsewhere"),
                   dict(data_root="/data")):
        assert config_hash(c.replace(**change)) == config_hash(c), change
    for change in (dict(seed=1), dict(gamma_g=1e-4), dict(precision="fp32"), dict(epochs=3)):
        assert config_hash(c.replace(**change)) != config_hash(c), change


def test_a_result_is_found_from_any_device(tmp_path, monkeypatch):
    first = fit(small(tmp_path), verbose=False)
    monkeypatch.setattr("qnets.train.Trainer", lambda *a, **k: pytest.fail("trained again"))
    assert fit(small(tmp_path, device="cpu", compile="off"), verbose=False) == first


def test_resume_ignores_runtime_changes(tmp_path):
    config = small(tmp_path, epochs=3, checkpoint_every=1)
    first = fit(config.replace(epochs=3), verbose=False)
    ckpt = torch.load(checkpoint_path(config), weights_only=False)
    # pretend the run stopped after its second epoch, then resume with other runtime settings
    ckpt["epoch"], ckpt["history"] = 1, ckpt["history"][:2]
    torch.save(ckpt, checkpoint_path(config))
    result_path(config).unlink()
    resumed = fit(config.replace(checkpoint_every=5, compile="off", device="cpu"), verbose=False)
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2]
    assert resumed["history"][:2] == first["history"][:2]  # kept from the checkpoint, not retrained


# ----------------------------------------------------------------------------- data identity

def cache_root(tmp_path, name, seed):
    root = tmp_path / name
    root.mkdir()
    D._write_cache(root / D.CACHE_NAME, D.synthetic_cifar10(200, 100, seed=seed), origin=None)
    return root


def test_a_result_trained_on_other_data_is_not_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("QNETS_CIFAR10", raising=False)  # a named source would win over both caches
    a, b = cache_root(tmp_path, "a", 0), cache_root(tmp_path, "b", 1)
    config = small(tmp_path, dataset="cifar10", data_root=str(a), epochs=1)
    first = fit(config, verbose=False)
    used = lambda root: D.fingerprint(D.take(D.load_cifar10(root), 100, 50, seed=0))  # noqa: E731
    assert first["data_fingerprint"] == used(a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit(config, verbose=False) == first  # same data: reused, silently
    with pytest.warns(UserWarning, match="trained on other data"):
        second = fit(config.replace(data_root=str(b)), verbose=False)
    assert second["data_fingerprint"] == used(b) != first["data_fingerprint"]


def test_rendering_stored_results_needs_no_data(tmp_path, monkeypatch):
    from qnets import experiments, report
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(D, "load_cifar10", lambda *a, **k: pytest.fail("loaded data to render"))
    configs = experiments.labelled_configs("02", "gpu-short")
    results = experiments.results(configs, train_missing=False)  # only seed 0, of some labels, is stored at gpu-short
    stored = {label for label, rs in results.items() if rs}
    assert {"conventional", "relinear-sg"} <= stored <= set(configs)
    assert all(len(results[label]) == 1 and results[label][0]["data_fingerprint"] for label in stored)
    assert "data" in report.markdown_table("02", "gpu-short").splitlines()[0]


# ----------------------------------------------------------------------------- provenance

def test_new_results_record_the_commit_that_made_them(tmp_path):
    r = fit(small(tmp_path, epochs=1), verbose=False)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        pytest.skip("not a git checkout")
    assert r["provenance"]["git_commit"] == head.stdout.strip()
    assert isinstance(r["provenance"]["git_dirty"], bool)
    assert r["versions"]["torch"] == torch.__version__


# ----------------------------------------------------------------------------- bad files

def one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_truncated_result_gives_one_line_naming_the_file(tmp_path, capsys):
    config = small(tmp_path, epochs=1)
    fit(config, verbose=False)
    path = result_path(config)
    path.write_text(path.read_text()[:200])
    argv = ["train", "--depth", "8", "--dataset", "synthetic", "--n-train", "100", "--n-test", "50",
            "--batch-size", "50", "--epochs", "1", "--out-dir", config.out_dir, "--quiet"]
    err = one_line_error(capsys, argv)
    assert str(path) in err and "broken JSON" in err and "--force" in err
    assert main(argv + ["--force"]) == 0
    read_result(path)


@pytest.mark.parametrize("field,value,message", [
    ("status", "exploded", "'status' is 'exploded'"),
    ("final_test_acc", float("nan"), "'final_test_acc' is None for a completed run"),
    ("final_test_acc", 1.5, "'final_test_acc' is 1.5"),
    ("epochs_run", 9, "'epochs_run' is 9"),
])
def test_a_result_with_a_bad_field_is_refused_by_name(tmp_path, field, value, message):
    config = small(tmp_path, epochs=1)
    r = fit(config, verbose=False)
    path = result_path(config)
    path.write_text(json.dumps(r | {field: value}))
    with pytest.raises(StoreError, match=message.replace("(", r"\(")) as err:
        read_result(path)
    assert str(path) in str(err.value)


def test_a_truncated_checkpoint_is_moved_aside_and_the_run_restarts(tmp_path):
    config = small(tmp_path, epochs=2)
    fit(config, verbose=False)
    ckpt = checkpoint_path(config)
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    result_path(config).unlink()
    with pytest.warns(UserWarning, match="cannot be read.*starts from epoch 0"):
        r = fit(config, verbose=False)
    assert r["status"] == "completed" and [h["epoch"] for h in r["history"]] == [0, 1]
    assert len(list(ckpt.parent.glob(f"{ckpt.name}.unusable-*"))) == 1  # kept


def test_only_temporary_files_whose_writer_is_gone_are_removed(tmp_path):
    """A killed writer's temporary files go when the run starts; a live writer's stay (another
    process may be writing that checkpoint now), and so does a recent file of another host."""
    import socket
    import sys
    config = small(tmp_path, epochs=1)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = socket.gethostname()
    kept, removed = [], []
    for path in (result_path(config), checkpoint_path(config)):
        path.parent.mkdir(parents=True, exist_ok=True)
        for writer, fate in ((f"{host}-{gone}", removed), (f"{host}-{os.getpid()}", kept), ("node9-77", kept),
                             ("abc", kept), ("node9-78", removed)):
            tmp = path.parent / f".{path.name}.{writer}.x1y2z3.tmp"
            tmp.write_bytes(b"half")
            fate.append(tmp)
        old = time.time() - 2 * 3600  # another host's file untouched for two hours: its writer is gone
        os.utime(removed[-1], (old, old))
    fit(config, verbose=False)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in removed)


def test_an_unwritable_output_folder_is_refused_before_training(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr("qnets.train.load_data", lambda c: pytest.fail("loaded data before checking the folder"))
    err = one_line_error(capsys, ["train", "--depth", "8", "--dataset", "synthetic", "--out-dir",
                                  str(blocker / "sub"), "--quiet"])
    assert "Config.out_dir: cannot write into" in err


def test_results_force_trains_again(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["results", "--preset", "smoke", "--runs", "02:conventional", "--quiet"]
    assert main(argv) == 0 and "trained in" in capsys.readouterr().out
    assert main(argv) == 0 and "stored" in capsys.readouterr().out
    assert main(argv + ["--force"]) == 0 and "trained in" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["train", "--lr", "1e308"], "Config.lr must be a number from 0.0 to 1e+06"),
    (["train", "--out-dir", ""], "Config.out_dir must be a folder name"),
    (["results", "--preset", "smoke", "--runs", ",,,"], "no runs named in ',,,'"),
    (["bench", "--data", "bogus"], "--data must be auto, cifar10 or synthetic"),
    (["bench", "--paths", "warp"], "--paths: unknown ['warp']"),
    (["bench", "--rounds", "0"], "--rounds must be at least 1, got 0"),
    (["bench", "--check", "--check-test", "5"], "--check-test must be at least 10, got 5"),
])
def test_bad_command_lines_get_one_line(capsys, argv, message):
    assert message in one_line_error(capsys, argv)


def test_output_into_a_reader_that_stopped_is_not_an_error():
    """`qnets campaign status | head`: once the reader has gone, the command stops without a word."""
    read, write = os.pipe()
    os.close(read)  # a reader that has already stopped: every write fails with EPIPE
    try:
        p = subprocess.run([sys.executable, "-m", "qnets", "presets"], stdout=write, stderr=subprocess.PIPE,
                           text=True, timeout=120)
    finally:
        os.close(write)
    assert (p.returncode, p.stderr) == (141, ""), p.stderr


def test_a_wrong_init_from_file_gets_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    err = one_line_error(capsys, ["train", "--depth", "8", "--dataset", "synthetic", "--init", "conventional",
                                  "--init-from", str(junk), "--out-dir", str(tmp_path), "--quiet"])
    assert f"Config.init_from: {junk} is not the checkpoint of a conventional ResNet-8" in err


# ----------------------------------------------------------------------------- strict JSON

@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_results_are_strict_json(path):
    strict_json(path.read_text())
    if path in RUNS:
        read_result(path)


def test_a_collapsed_run_is_written_as_strict_json(tmp_path):
    config = small(tmp_path, init="naive", gamma_g=None, gamma_b=None, lr=1e4, epochs=4, schedule="constant")
    r = fit(config, verbose=False)
    assert r["status"] == "collapsed"
    stored = strict_json(result_path(config).read_text())
    assert stored["final_test_acc"] is None


def test_every_stored_result_is_found_under_its_name():
    """Moving code must never rename a run: each committed result is read back by the store's checks
    and its config, rebuilt, has exactly the file's name."""
    from qnets.train import run_name
    paths = sorted((Path(__file__).resolve().parents[1] / "results" / "runs").glob("*.json"))
    assert len(paths) > 50
    for path in paths:
        r = read_result(path)
        config = Config(**{k: v for k, v in r["config"].items() if k in Config.__dataclass_fields__})
        assert run_name(config) == path.stem, path.name
