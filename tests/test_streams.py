"""Runs trained side by side (qnets.streams.fit_together) are exactly their lone runs."""
import json
import time

import pytest
import torch

from qnets.streams import fit_together
from qnets.train import Config, checkpoint_path, fit, result_path, run_name
from conftest import untimed




def mixed(out, **kw):
    """Runs of different networks and depths, seeds, initialisations and ReLinear settings."""
    common = dict(dataset="synthetic", n_train=100, n_test=50, batch_size=50, epochs=2, lr=0.05, device="cpu",
                  schedule="cosine", out_dir=str(out)) | kw
    return [Config(**common, depth=8, neuron="conventional", seed=0),
            Config(**common, depth=8, neuron="quadratic", seed=1, gamma_g=1e-3, gamma_b=None, alpha_b=1e-3),
            Config(**common, depth=14, neuron="compact", seed=2)]


def same_weights(a: Config, b: Config) -> bool:
    x, y = (torch.load(checkpoint_path(c), weights_only=True) for c in (a, b))
    return (x["epoch"] == y["epoch"] and all(torch.equal(x["model"][k], y["model"][k]) for k in y["model"])
            and all(torch.equal(p["momentum_buffer"], q["momentum_buffer"])
                    for p, q in zip(x["optimizer"]["state"].values(), y["optimizer"]["state"].values())))


@pytest.mark.slow
def test_runs_together_are_their_lone_runs_bit_for_bit(tmp_path):
    together = fit_together(mixed(tmp_path / "together"), verbose=False)
    for c, r in zip(mixed(tmp_path / "together"), together):
        lone_config = c.replace(out_dir=str(tmp_path / "lone"))
        lone = fit(lone_config, verbose=False)
        assert r["status"] == lone["status"] == "completed" and r["name"] == lone["name"]
        assert untimed(r["history"]) == untimed(lone["history"])
        assert r["final_test_acc"] == lone["final_test_acc"]
        assert same_weights(c, lone_config)
        assert set(r) - set(lone) == {"together"} and r["together"]["k"] == 3
        assert json.loads(result_path(c).read_text()) == r


@pytest.mark.slow
def test_a_diverging_run_collapses_alone_and_the_others_are_untouched(tmp_path):
    configs = mixed(tmp_path / "together", epochs=3, schedule="constant")
    configs[1] = configs[1].replace(lr=1e4, init="naive", gamma_g=None, alpha_b=0.0)
    results = fit_together(configs, verbose=False)
    assert results[1]["status"] == "collapsed" and results[1]["epochs_run"] < 3
    for j in (0, 2):
        lone_config = configs[j].replace(out_dir=str(tmp_path / "lone"))
        lone = fit(lone_config, verbose=False)
        assert results[j]["status"] == "completed" and untimed(results[j]["history"]) == untimed(lone["history"])
        assert same_weights(configs[j], lone_config)


@pytest.mark.slow
def test_a_deadline_stops_every_run_checkpointed_and_they_resume_exactly(tmp_path):
    """Stopped by a deadline, each run keeps its own checkpoint; trained again (together or alone),
    each ends exactly where an uninterrupted run ends."""
    cut = mixed(tmp_path / "cut", epochs=3)
    first = fit_together(cut, verbose=False, deadline=time.monotonic() + 0.01)  # each trains one epoch, then stops
    assert {r["status"] for r in first} == {"partial"}
    assert all(checkpoint_path(c).exists() and not result_path(c).exists() for c in cut)
    assert all(r["epochs_run"] == torch.load(checkpoint_path(c), weights_only=False)["epoch"] + 1
               for r, c in zip(first, cut))
    resumed = fit_together(cut[:2], verbose=False) + [fit(cut[2], verbose=False)]
    straight = [fit(c, verbose=False) for c in mixed(tmp_path / "straight", epochs=3)]
    for r, s, a, b in zip(resumed, straight, cut, mixed(tmp_path / "straight", epochs=3)):
        assert r["status"] == "completed" and untimed(r["history"]) == untimed(s["history"])
        assert same_weights(a, b)


def test_stored_runs_are_reused_and_bad_input_is_refused(tmp_path):
    configs = mixed(tmp_path, epochs=1)
    stored = fit(configs[0], verbose=False)
    results = fit_together(configs[:2], verbose=False)
    assert results[0] == stored and results[1]["status"] == "completed"
    assert "together" not in results[1]  # it trained alone: nothing shared its time
    with pytest.raises(ValueError, match="listed twice"):
        fit_together([configs[0], configs[0]], verbose=False)
    with pytest.raises(ValueError, match="different devices"):
        fit_together([configs[0], configs[1].replace(device="cuda")], verbose=False)
    with pytest.raises(ValueError, match="2 labels for 1 runs"):
        fit_together(configs[:1], verbose=False, labels=["a", "b"])
    with pytest.raises(TypeError, match="Config"):
        fit_together([configs[0].to_dict()], verbose=False)


@pytest.mark.slow
def test_results_trains_any_runs_side_by_side_in_plan_order(tmp_path, monkeypatch, capsys):
    """`results --pack 4`: four runs at a time, of any networks, in plan order; each that ends
    makes room for the next; one summary line per run as it ends."""
    from qnets import experiments, runner, streams
    monkeypatch.chdir(tmp_path)
    calls = []
    real = streams.fit_together
    monkeypatch.setattr(runner, "fit_together", lambda cs, **kw: calls.append([c.neuron for c in cs]) or real(cs, **kw))
    selection = "02:conventional,02:naive"  # two networks, three seeds each, in the plan's order
    assert runner.pack_groups(experiments.plan("smoke", selection), 4) == [
        ["02:conventional", "02:naive", "02:conventional#1", "02:naive#1"], ["02:conventional#2", "02:naive#2"]]
    out = runner.train_plan("smoke", selection, verbose=False, pack=4)
    assert calls == [["conventional", "quadratic"] * 2]  # the last two took the place of runs that ended
    assert all(r["status"] in ("completed", "collapsed") for r in out.values())
    assert [r["together"]["k"] for r in out.values()] == [4] * 6
    printed = capsys.readouterr().out
    assert "beside 3 other runs" in printed and "--pack 4 on a CPU: the runs take turns" in printed
    assert len([line for line in printed.splitlines() if line.startswith("[")]) == 6
    again = runner.train_plan("smoke", selection, verbose=False, pack=4)  # all stored: nothing trains
    assert again == out and len(calls) == 1
    with pytest.raises(ValueError, match="pack must be a positive integer, got 0"):
        runner.pack_groups(experiments.plan("smoke", selection), 0)


@pytest.mark.slow
def test_a_run_that_ends_makes_room_for_the_next_one(tmp_path):
    """`refill` is asked for another run whenever one ends and sees the runs still training; a
    run it names with a stored result is returned as stored and it is asked again. Every run,
    refilled ones included, is its lone run."""
    first, second, third = mixed(tmp_path / "together")
    stored = fit(first.replace(seed=7), verbose=False)
    queue, asked = [(first.replace(seed=7), "stored"), (third, "third")], []

    def refill(live):
        asked.append([c.neuron for c in live])
        return queue.pop(0) if queue else None
    results = fit_together([first, second], verbose=False, refill=refill)
    assert fit_together([first], verbose=False, refill=lambda live: None) == [results[0]]  # stored, nothing else
    assert [r["name"] for r in results] == [run_name(c) for c in (first, second, first.replace(seed=7), third)]
    assert results[2] == stored and "together" not in results[2]
    assert asked[0] in (["quadratic"], ["conventional"]) and len(asked) == 4  # 2 ends + 1 stored + the last end
    for c, r in zip((first, second, third), (results[0], results[1], results[3])):
        lone_config = c.replace(out_dir=str(tmp_path / "lone"))
        lone = fit(lone_config, verbose=False)
        assert r["status"] == "completed" and untimed(r["history"]) == untimed(lone["history"])
        assert same_weights(c, lone_config) and r["together"] == {"k": 2}


def test_a_stored_run_leaves_its_place_to_the_next_one(tmp_path):
    first, second, _ = mixed(tmp_path, epochs=1)
    stored = fit(first, verbose=False)
    queue = [(second, "second")]
    ends = []
    results = fit_together([first], verbose=False, refill=lambda live: queue.pop(0) if queue else None,
                           on_end=lambda c, label, r: ends.append((label, r["status"])))
    assert results[0] == stored and results[1]["status"] == "completed" and not queue
    assert ends == [(None, "completed"), ("second", "completed")]


@pytest.mark.slow
def test_kill_and_resume_of_runs_side_by_side_equals_uninterrupted_runs(tmp_path):
    """A child training three runs side by side is killed (SIGKILL) after a checkpoint; training
    them again resumes each from its own checkpoint and ends where uninterrupted lone runs end."""
    from conftest import kill_after_checkpoint
    killed = mixed(tmp_path / "killed", epochs=3)
    code = ("from qnets.train import Config\nfrom qnets.streams import fit_together\n"
            f"fit_together([Config(**d) for d in {[c.to_dict() for c in killed]!r}], verbose=False)\n")
    kill_after_checkpoint(code, checkpoint_path(killed[-1]))
    assert not any(result_path(c).exists() for c in killed)
    resumed = fit_together(killed, verbose=False)
    straight = mixed(tmp_path / "straight", epochs=3)
    for r, a, b in zip(resumed, killed, straight):
        lone = fit(b, verbose=False)
        assert r["status"] == "completed" and untimed(r["history"]) == untimed(lone["history"])
        assert same_weights(a, b)
