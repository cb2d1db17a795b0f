"""The campaign: budgeted calls, collected in between as across GPU windows, end where one
uninterrupted call ends; what comes back respects the GPU machine's limits."""
import json
import shutil
import sys
from pathlib import Path

import pytest

from qnets import campaign, experiments, window
from qnets.collect import collect
from qnets.__main__ import main
from qnets.config import parent
from qnets.train import checkpoint_path, epoch_seconds, fit, load_result, read_result, result_path, weights_path
from conftest import ROOT, kill_after_checkpoint, untimed

SCOPE = dict(preset="smoke", only=4, epochs=3, eval_every=1)  # four small runs of three epochs


def fresh_machine():
    """What a new GPU machine has: the committed tree, no local checkpoints."""
    shutil.rmtree("results/checkpoints", ignore_errors=True)


def check_output(folder: Path):
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert len(files) <= campaign.MAX_FILES
    assert all(p.stat().st_size <= campaign.MAX_FILE_BYTES for p in files)
    assert sum(p.stat().st_size for p in files) <= campaign.MAX_BYTES
    assert all(p.parent == folder for p in files)  # nothing deeper than the folder itself


def test_the_plan_follows_the_issue_priorities():
    keys = [k for k, _ in campaign.plan("paper")]
    assert keys[:4] == ["02:conventional", "02:relinear-sg", "03:compact", "02:naive"]
    assert keys[4:8] == ["02:conventional#1", "02:relinear-sg#1", "03:compact#1", "02:naive#1"]
    deep = [k for k in keys[12:27]]
    assert deep[:5] == ["04:conventional", "04:relinear", "04:relinear-rezero", "04:compact", "03:compact-authors"]
    assert keys[27:29] == ["02:relinear-sw-l2", "02:relinear-sw-l1"]
    configs = [c for _, c in campaign.plan("paper")]
    assert len(configs) == len(set(configs)) and all(c.epochs in (200, 99) for c in configs)
    assert {c.depth for c in configs[12:27]} == {56}


def test_the_cpu_plan_starts_with_the_calibration_then_the_resnet8_core_on_all_of_cifar10():
    planned = campaign.plan("cpu")
    keys = [k for k, _ in planned]
    core = ["02:conventional", "02:relinear-sg", "02:gamma=0", "02:naive", "03:compact", "02:relinear-sw-l2",
            "02:relinear-sw-l1", "02:gamma=lr"]
    assert keys[:24] == core + [f"{k}#1" for k in core] + [f"{k}#2" for k in core]
    configs = [c for _, c in planned]
    assert len(configs) == len(set(configs))
    assert all(c.n_train is None and c.n_test is None and c.epochs == 15 and c.schedule == "cosine" for c in configs)
    assert {c.depth for c in configs[:33]} == {8}
    # then the naive network at a tenth of the rate (all three seeds), the runs from the trained conventional
    # networks, the sweep, the depth pilot
    assert keys[24:27] == ["02:naive-lr/10", "02:naive-lr/10#1", "02:naive-lr/10#2"]
    assert configs[24] == configs[3].replace(lr=configs[3].lr / 10) and configs[3].init == "naive"
    assert [k.split("#")[0] for k in keys[27:33]] == ["02:relinear-from-conventional", "02:conventional-trained-on"] * 3
    assert [parent(c) for c in configs[27:33]] == [configs[0], configs[0], configs[8], configs[8], configs[16],
                                                     configs[16]]  # each seed's own conventional network
    assert configs[27].replace(init="relinear", init_from="") == configs[1]  # relinear-sg's settings
    assert keys[33].startswith("05:") and keys[-1].startswith("06:")  # (notebook 06's: tests/test_designs.py)
    assert [k for k in keys if k.startswith("04:")] == keys[keys.index("04:conventional"):][:15]
    assert "05:gamma=lr" not in keys  # the same run as 02:gamma=lr, planned once
    assert {c.depth for k, c in planned if k.startswith("04:")} == {20}
    sweep = [k for k in keys if k.startswith("05:") and "#" not in k]  # one seed of every value first
    assert keys.index(sweep[-1]) < min(keys.index(k) for k in keys if k.startswith("05:") and k.endswith("#1"))
    # the calibration pair is stored under the names of the plan's first two runs
    assert [load_result(c)["final_test_acc"] for c in configs[:2]] == [0.7913, 0.7974]


def test_cpu_status_counts_cpu_hours_spent_and_left():
    rows = campaign.status("cpu")
    done = [r for r in rows if r["state"] == "done"]
    assert done and all(r["gpu_minutes"] == 0.0 for r in done)
    hours = sum(read_result(result_path(c))["wall_time"] for k, c in campaign.plan("cpu")
                if load_result(c) is not None) / 3600
    last = campaign.status_text("cpu").splitlines()[-1]
    assert last.startswith(f"{len(done)} done") and f"of {len(rows)} runs;" in last
    assert f"{hours:.1f} CPU-hours spent" in last and "GPU" not in last
    # left: the epochs still to train (a partial run's last ones only) at the stored runs' pace, the
    # pricing tests/test_train.py checks against designed times
    configs = dict(campaign.plan("cpu"))
    todo = [(configs[r["label"]], r["epochs"] - r["done"]) for r in rows if r["state"] != "done"]
    if not todo:
        assert last.endswith("nothing left")
        return
    seconds, _ = experiments.training_cost([c for c, _ in todo], False, Path(todo[0][0].out_dir) / "runs",
                                           epochs_left=[n for _, n in todo])
    assert seconds > 0 and f"about {seconds / 3600:.1f} CPU-hours left" in last


@pytest.mark.slow
def test_a_window_stopped_by_sigterm_keeps_its_finished_epochs_and_resumes_exactly(tmp_path):
    """SIGTERM (what `make cpu-window-stop` sends) ends a window cleanly: it writes out what it
    finished and the runs in flight at their last checkpoint, and the next window resumes them."""
    scope = dict(preset="smoke", only=1, epochs=8, eval_every=1)
    code = (f"from qnets import window; s = window.run(600, 'out', verbose=False, **{scope!r}); "
            "print(s['stopped_because'])")
    first = campaign.plan(**scope)[0][1]
    straight_dir, stopped = tmp_path / "straight", tmp_path / "stopped"
    for d in (straight_dir, stopped):
        d.mkdir()
    assert kill_after_checkpoint(code, stopped / checkpoint_path(first), epoch=2, sig=15, cwd=stopped) == 0
    summary = json.loads((stopped / "out" / "summary.json").read_text())
    assert summary["stopped_because"].startswith("stopped by SIGTERM")
    assert summary["finished"] == [] and summary["partial"] == [result_path(first).stem]
    check_output(stopped / "out")
    import os
    cwd = os.getcwd()
    try:
        os.chdir(stopped)
        fresh_machine()
        assert collect("out")["partial"] == [result_path(first).stem]
        assert campaign.status(**scope)[0]["state"] == "partial"
        assert window.run(600, "out2", verbose=False, **scope)["stopped_because"] == "the plan is done"
        resumed = read_result(result_path(first))
        os.chdir(straight_dir)
        window.run(600, "out", verbose=False, **scope)
        straight = read_result(result_path(first))
    finally:
        os.chdir(cwd)
    assert untimed(resumed["history"]) == untimed(straight["history"])


def test_the_cpu_window_script_refuses_to_run_without_data(tmp_path):
    import subprocess
    p = subprocess.run(["bash", str(ROOT / "scripts/cpu-window.sh"), "10m"], capture_output=True, text=True,
                       cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 2 and "make data" in p.stderr
    assert not (tmp_path / "results").exists()


def test_make_cpu_window_says_why_a_window_would_not_start(tmp_path):
    """The window runs in the background: when its script refuses at once (here: no data), `make
    cpu-window` prints the reason and fails, rather than announcing a window that is not running."""
    import subprocess
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copy(ROOT / "scripts/cpu-window.sh", tmp_path / "scripts")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / ".venv/bin").mkdir(parents=True)
    (tmp_path / ".venv/bin/python").symlink_to(sys.executable)
    (tmp_path / ".venv/.installed").touch()  # newer than pyproject.toml: make installs nothing
    p = subprocess.run(["make", "cpu-window", "BUDGET=10m"], capture_output=True, text=True, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin"})
    assert p.returncode != 0 and "run 'make data'" in p.stderr and "started (pid" not in p.stdout
    assert not (tmp_path / "results/campaign/cpu-window.pid").exists()


@pytest.mark.slow
def test_budgeted_calls_collected_in_between_equal_one_uninterrupted_call(tmp_path, monkeypatch):
    monkeypatch.delenv("QNETS_CIFAR10", raising=False)
    straight_dir = tmp_path / "straight"
    straight_dir.mkdir()
    monkeypatch.chdir(straight_dir)
    summary = window.run(600, straight_dir / "out", verbose=False, **SCOPE)
    assert summary["stopped_because"] == "the plan is done" and len(summary["finished"]) == 4
    planned = dict(campaign.plan(**SCOPE))
    straight = {key: read_result(result_path(c)) for key, c in planned.items()}

    windows = tmp_path / "windows"
    windows.mkdir()
    monkeypatch.chdir(windows)
    # windows too short for these runs' measured epochs would start nothing (tested below); here each
    # window must start at least one epoch, so that the budget cuts runs in flight again and again
    monkeypatch.setattr(window, "_first_epoch_seconds", lambda *args: 0.0)
    calls = 0
    seen_partial = False
    while calls < 40:
        fresh_machine()
        out = tmp_path / f"window-{calls}"
        summary = window.run(1.0, out, verbose=False, **SCOPE)
        check_output(out)
        calls += 1
        taken = collect(out)  # back on the CPU machine, after every window
        seen_partial |= bool(taken["partial"])
        rows = campaign.status(**SCOPE)
        for row in rows:  # status agrees with what is on disk at every point
            config = planned[row["label"]]
            assert (row["state"] == "done") == (load_result(config) is not None)
            if row["state"] == "partial":
                assert 0 < row["done"] < 3 and campaign._partial_path(config).exists()
        assert campaign.status_file(list(planned.items()), SCOPE["preset"]).read_text().startswith("run")
        if summary["stopped_because"] == "the plan is done":
            break
    assert calls > 2 and seen_partial, "the budget never cut a run: the test proves nothing"
    assert not any(campaign._partial_path(c).exists() for c in planned.values())  # no partial state left
    for key, s in straight.items():
        r = read_result(result_path(planned[key]))
        assert untimed(r["history"]) == untimed(s["history"]) and r["final_test_acc"] == s["final_test_acc"]


def test_a_budget_too_small_to_start_says_why(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(window.FIRST_EPOCH_OVERHEAD_S, "cpu", 30.0)  # as if compiling took 30 s
    summary = window.run(5, tmp_path / "out", verbose=False, **SCOPE)
    assert summary["finished"] == [] and summary["partial"] == []
    assert "needs about 30 s for its first epoch" in summary["stopped_because"]
    check_output(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["stopped_because"] == summary["stopped_because"]


def test_a_window_passes_over_runs_whose_trained_weights_are_not_here(tmp_path, monkeypatch):
    """A run that starts from a conventional run's weights waits while they are missing (its parent
    stored before runs kept weights, say): the window trains what can start and says why it stopped."""
    monkeypatch.chdir(tmp_path)
    (k0, conv), (k1, other) = campaign.plan(**SCOPE)[:2]
    child = other.replace(init="conventional", init_from="same-recipe")
    assert parent(child) == conv
    fit(conv, verbose=False)
    weights_path(conv).unlink()  # a parent stored without its weights, and no final checkpoint either
    checkpoint_path(conv).unlink()
    monkeypatch.setattr(window, "plan", lambda *a, **k: [("02:child", child), (k0, conv), (k1, other)])
    summary = window.run(600, tmp_path / "out", verbose=False, **SCOPE)
    assert summary["finished"] == [campaign.run_name(other)] and summary["partial"] == []
    assert summary["stopped_because"] == ("the runs left start from trained weights not here yet (first: "
                                          f"{campaign.run_name(conv)})")
    assert load_result(child) is None and not checkpoint_path(child).exists()


@pytest.mark.slow
def test_a_group_shrinks_to_runs_that_can_finish_a_first_epoch(tmp_path, monkeypatch):
    """Each network not yet compiled in the window adds its compilation to the group's first epoch;
    the group keeps the runs whose first epoch ends before the deadline."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(window.FIRST_EPOCH_OVERHEAD_S, "cpu", 10.0)  # as if each network took 10 s to compile
    summary = window.run(25, tmp_path / "out", pack=3, verbose=False, **SCOPE)  # 22.5 s to the deadline
    first = summary["log"][0]
    started = [k for k in first["runs"] if k not in first.get("refilled", [])]
    assert started == ["02:conventional", "02:relinear-sg"]  # three networks would be 30 s
    check_output(tmp_path / "out")


@pytest.mark.slow
def test_runs_on_streams_go_in_plan_order_as_far_as_their_partial_state_fits(tmp_path, monkeypatch):
    """Any runs share a GPU on streams, in plan order; a group is cut where the checkpoints of
    its fresh runs, should the budget cut them, would no longer fit in what travels."""
    monkeypatch.chdir(tmp_path)
    planned = campaign.plan(**SCOPE)
    conventional, quadratic, compact = (campaign._checkpoint_bytes(c) for _, c in planned[:3])
    monkeypatch.setattr(window, "PARTIAL_BUDGET", quadratic + max(conventional, compact))  # room for two
    summary = window.run(600, tmp_path / "out", pack=3, verbose=False, **SCOPE)
    assert summary["stopped_because"] == "the plan is done"
    assert [entry["runs"] for entry in summary["log"]] == [["02:conventional", "02:relinear-sg"],
                                                            ["03:compact", "02:naive"]]
    assert all(r["together"]["k"] == 2 for r in map(load_result, (c for _, c in planned)))
    rows = campaign.status(**SCOPE)  # a run's share of the GPU: half its wall and epoch time
    for row, (_, c) in zip(rows, planned):
        r = load_result(c)
        assert row["shared"] == 2 and row["epoch_s"] == pytest.approx(epoch_seconds(r["history"]) / 2)
        assert row["gpu_minutes"] == 0.0  # a CPU's minutes are not GPU-minutes
    assert "min shared by 2 runs, cpu)" in campaign.status_text(**SCOPE)


@pytest.mark.slow
def test_on_streams_a_run_that_ends_makes_room_for_the_next_and_results_are_the_lone_ones(tmp_path, monkeypatch):
    results = {}
    for pack in (2, 1):
        (tmp_path / str(pack)).mkdir()
        monkeypatch.chdir(tmp_path / str(pack))
        summary = window.run(600, tmp_path / str(pack) / "out", pack=pack, verbose=False, **SCOPE)
        assert summary["stopped_because"] == "the plan is done"
        results[pack] = {key: load_result(c) for key, c in campaign.plan(**SCOPE)}
        if pack == 2:  # one group: two runs, and each that ended made room for the next in plan order
            (entry,) = summary["log"]
            assert entry["runs"] == ["02:conventional", "02:relinear-sg", "03:compact", "02:naive"]
            assert entry["refilled"] == ["03:compact", "02:naive"]
    for key, r in results[2].items():
        assert untimed(r["history"]) == untimed(results[1][key]["history"]) and r["together"]["k"] == 2, key


@pytest.mark.slow
def test_a_failing_group_costs_its_own_work_not_the_window(tmp_path, monkeypatch):
    """Runs that fail together are trained alone for the rest of the window; a lone run that
    fails ends the window, which still writes what it finished."""
    monkeypatch.chdir(tmp_path)
    real = window.train_group

    def flaky(configs, **kw):
        if len(configs) > 1:
            raise RuntimeError("CUDA error: out of memory")
        if configs[0].neuron == "compact":
            raise RuntimeError("broken")
        return real(configs, **kw)
    monkeypatch.setattr(window, "train_group", flaky)
    with pytest.warns(UserWarning, match="trains the rest alone"):
        summary = window.run(600, tmp_path / "out", pack=3, verbose=False, **SCOPE)
    log = summary["log"]
    assert log[0]["runs"] == ["02:conventional", "02:relinear-sg", "03:compact"]
    assert log[0]["failed"] == "RuntimeError: CUDA error: out of memory"
    assert [entry["runs"] for entry in log[1:]] == [["02:conventional"], ["02:relinear-sg"], ["03:compact"]]
    assert summary["stopped_because"] == "03:compact failed: RuntimeError: broken"
    assert len(summary["finished"]) == 2 and summary["partial"] == []
    check_output(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["log"] == log


def test_partial_state_is_capped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(window, "PARTIAL_BUDGET", 1000)  # no checkpoint fits
    summary = window.run(60, tmp_path / "out", verbose=False, **SCOPE)
    assert summary["finished"] == [] and "MiB of partial state" in summary["stopped_because"]


def test_campaign_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope = ["--preset", "smoke", "--only", "2"]
    assert main(["campaign", "run", "--budget", "600", "--out", str(tmp_path / "o"), "--quiet"] + scope) == 0
    assert "finished 2 runs" in capsys.readouterr().out
    assert main(["campaign", "collect", str(tmp_path / "o")]) == 0
    assert "collected 2 results" in capsys.readouterr().out
    assert main(["campaign", "status"] + scope) == 0
    assert "2 done, 0 to do of 2 runs;" in capsys.readouterr().out
    assert main(["campaign", "run", "--budget", "0"] + scope + ["--out", "x"]) == 2
    assert "--budget must be a positive number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        main(["campaign", "run", "--budget", "an hour"] + scope + ["--out", "x"])
    assert bad.value.code == 2 and "expected a duration such as 480 (seconds), 90m, 5h" in capsys.readouterr().err
    assert main(["campaign", "run", "--budget", "1h30m", "--out", str(tmp_path / "o"), "--quiet"] + scope) == 0
    assert "the plan is done" in capsys.readouterr().out
    assert main(["campaign", "collect", str(tmp_path)]) == 2
    assert "not the output of `qnets campaign run`" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_stops_between_epochs_at_its_deadline_and_resumes_exactly(tmp_path):
    import time

    from qnets.train import Config, fit
    config = Config(depth=8, dataset="synthetic", n_train=200, n_test=100, batch_size=50, epochs=4,
                    checkpoint_every=10, out_dir=str(tmp_path / "a"))
    first = fit(config, verbose=False, deadline=time.monotonic() + 1e-3)  # one epoch, then out of time
    assert first["status"] == "partial" and first["epochs_run"] == 1
    assert checkpoint_path(config).exists()  # checkpointed at the stop, though checkpoint_every is 10
    done = fit(config, verbose=False)
    straight = fit(config.replace(out_dir=str(tmp_path / "b")), verbose=False)
    assert untimed(done["history"]) == untimed(straight["history"])


@pytest.mark.parametrize("name", ["scripts/gpu-window.sh"])
def test_the_gpu_window_script_refuses_to_run_without_the_archive(tmp_path, name):
    import subprocess
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run(["bash", str(root / name), str(tmp_path / "out")], capture_output=True, text=True,
                       cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "QNETS_CIFAR10": str(tmp_path / "none.tar.xz")})
    assert p.returncode == 2 and "make gpu-prepare" in p.stderr


def test_experiments_give_the_paper_preset_its_extra_runs():
    assert "compact-authors" in experiments.labelled_configs("03", "paper") and "compact-authors" not in experiments.labelled_configs("03", "quick")
    authors = experiments.labelled_configs("03", "paper")["compact-authors"]
    assert (authors.depth, authors.epochs, authors.schedule, authors.gamma_b) == (56, 99, "constant", 0.0)
    assert experiments.labelled_configs("04", "paper")["compact"].depth == 56


@pytest.mark.parametrize("finished", [["resnet8-quadratic-0123456789ab"], []])
def test_the_cpu_window_script_collects_then_renders_what_it_finished(tmp_path, finished):
    """The script's own steps, with a stand-in for python that records each call: the window, its
    collection and status, then (only when it finished a run) the notebooks and READMEs re-rendered."""
    import subprocess
    import sys
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar10-uint8.pt").write_bytes(b"")
    stub = tmp_path / "python"
    stub.write_text(f"""#!/bin/bash
if [ "$1" = -c ]; then exec {sys.executable} "$@"; fi
echo "$*" >> calls.log
if [ "$4" = run ]; then mkdir -p results/campaign/cpu-window
    echo '{json.dumps({"finished": finished})}' > results/campaign/cpu-window/summary.json; fi
""")
    stub.chmod(0o755)
    p = subprocess.run(["bash", str(ROOT / "scripts/cpu-window.sh"), "1m"], capture_output=True, text=True,
                       cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHON": str(stub)})
    assert p.returncode == 0, p.stderr
    calls = [line.split()[:3] for line in (tmp_path / "calls.log").read_text().splitlines()]
    steps = [["-m", "qnets", "campaign"]] * 3 + ([["-m", "qnets", "notebooks"], ["-m", "qnets", "readme"]]
                                                  if finished else [])
    assert calls == steps
    assert "commit results/, notebooks/, figures/ and the READMEs" in p.stdout
