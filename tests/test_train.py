import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from qnets.train import Config, checkpoint_path, config_hash, fit, lr_factor, result_path
from conftest import untimed

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_COPY = ROOT.parent / "shared/data/cifar10/cifar10-jpeg.tar.xz"


def synthetic(tmp_path, **kw):
    base = dict(depth=8, dataset="synthetic", n_train=500, n_test=200, batch_size=50, epochs=2, lr=0.05,
                out_dir=str(tmp_path), schedule="cosine")
    return Config(**(base | kw))


def tiny(tmp_path, **kw):
    """A run for tests of what is stored and read back, not of what is learnt: two steps an epoch."""
    return synthetic(tmp_path, **{"n_train": 100, "n_test": 50} | kw)


@pytest.mark.slow
def test_quadratic_relinear_learns_synthetic(tmp_path):
    r = fit(synthetic(tmp_path, n_train=1000), verbose=False)
    assert r["status"] == "completed" and r["epochs_run"] == 2
    assert r["final_test_acc"] >= 0.5, r["history"]
    assert r["history"][-1]["train_loss"] < r["history"][0]["train_loss"]
    # ReLinear with gamma = 1e-5 moves the quadratic terms off zero, but only a little.
    assert 0 < r["history"][-1]["quadratic"]["w_g"] < 0.05
    saved = json.loads(result_path(synthetic(tmp_path, n_train=1000)).read_text())
    assert saved["final_test_acc"] == r["final_test_acc"] and saved["params"] == 223_418
    assert saved["versions"]["torch"] == torch.__version__ and saved["data"].startswith("synthetic")


def real_cifar10_source():
    source = os.environ.get("QNETS_CIFAR10") or (str(OFFLINE_COPY) if OFFLINE_COPY.exists() else None)
    if source is None and not (ROOT / "data/cifar10-uint8.pt").exists():
        pytest.skip("no real CIFAR-10 reachable (set QNETS_CIFAR10)")
    return source


@pytest.mark.slow
def test_quadratic_resnet_learns_real_cifar10(tmp_path, monkeypatch):
    source = real_cifar10_source()
    if source:
        monkeypatch.setenv("QNETS_CIFAR10", source)
    config = Config(depth=8, neuron="quadratic", n_train=1500, n_test=1000, epochs=4, batch_size=64, eval_every=4,
                    schedule="cosine", lr=0.05, out_dir=str(tmp_path), data_root=str(ROOT / "data"))  # 35.0%
    r = fit(config, verbose=False)
    assert r["status"] == "completed"
    assert r["final_test_acc"] >= 0.30, [h["test_acc"] for h in r["history"]]


def test_stored_result_is_returned_without_training(tmp_path, monkeypatch):
    config = tiny(tmp_path, epochs=1)
    first = fit(config, verbose=False)
    monkeypatch.setattr("qnets.train.build_model", lambda c: pytest.fail("retrained a stored config"))
    assert fit(config, verbose=False) == first
    monkeypatch.undo()
    assert fit(config, force=True, verbose=False)["finished"] >= first["finished"]


@pytest.mark.slow
def test_same_config_gives_same_result(tmp_path):
    small = dict(n_train=200, n_test=100)
    a = fit(synthetic(tmp_path / "a", **small), verbose=False)
    b = fit(synthetic(tmp_path / "b", **small), verbose=False)
    assert untimed(a["history"]) == untimed(b["history"])
    c = fit(synthetic(tmp_path / "c", seed=1, **small), verbose=False)
    assert untimed(c["history"]) != untimed(a["history"])


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(tmp_path):
    """A real interruption: a child process is killed (SIGKILL) after its second checkpoint;
    running the same config again resumes, and weights and history equal an uninterrupted run."""
    kw = dict(epochs=4, n_train=400, n_test=100, neuron="quadratic", init="naive", gamma_g=None, gamma_b=None)
    killed = synthetic(tmp_path / "killed", **kw)
    code = (f"from qnets.train import Config, fit\nfit(Config(**{killed.to_dict()!r}), verbose=False)\n")
    from conftest import kill_after_checkpoint
    ckpt = checkpoint_path(killed)
    kill_after_checkpoint(code, ckpt)
    interrupted_at = torch.load(ckpt, weights_only=False)["epoch"]
    assert 1 <= interrupted_at < 3 and not result_path(killed).exists()
    resumed = fit(killed, verbose=False)
    straight_cfg = synthetic(tmp_path / "straight", **kw)
    straight = fit(straight_cfg, verbose=False)
    assert config_hash(killed) == config_hash(straight_cfg)
    assert untimed(resumed["history"]) == untimed(straight["history"])
    a = torch.load(checkpoint_path(killed), weights_only=False)["model"]
    b = torch.load(checkpoint_path(straight_cfg), weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_divergent_run_is_reported_ascollapse_reason(tmp_path):
    config = tiny(tmp_path, init="naive", gamma_g=None, gamma_b=None, lr=1e4, momentum=0.9, epochs=5,
                  schedule="constant")
    r = fit(config, verbose=False)
    assert r["status"] == "collapsed" and r["epochs_run"] < 5
    assert "non-finite" in r["collapse_reason"] or "chance" in r["collapse_reason"]
    assert r["final_test_acc"] is None and result_path(config).exists()


def test_lr_schedules():
    step = Config(epochs=200)
    assert [lr_factor(step, e * 10, 10) for e in (0, 99, 100, 149, 150, 199)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_factor(Config(epochs=8), 4 * 10, 10) == pytest.approx(0.1)  # scaled: steps at 4 and 6
    cos = Config(epochs=10, schedule="cosine")
    assert lr_factor(cos, 0, 10) == 1 and lr_factor(cos, 50, 10) == pytest.approx(0.5)
    warm = Config(epochs=10, warmup_epochs=1)
    assert lr_factor(warm, 0, 10) == pytest.approx(0.1) and lr_factor(warm, 9, 10) == 1


@pytest.mark.parametrize("field,value", [
    ("depth", 21), ("neuron", "cubic"), ("gamma_g", -1.0), ("alpha_b", float("nan")), ("lr", 0.0),
    ("batch_size", 0), ("schedule", "linear"), ("device", "tpu"), ("precision", "fp8"), ("n_train", 5),
    ("init", "conventional"), ("normalize", "mnist"), ("rezero", "yes"), ("eval_every", 0),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"Config.{'init_from' if field == 'init' else field}"):
        Config(**{field: value})


def test_hash_ignores_speed_and_bookkeeping_fields():
    a = Config()
    assert config_hash(a) == config_hash(a.replace(out_dir="x", compile="off", checkpoint_every=7))
    assert config_hash(a) != config_hash(a.replace(gamma_g=1e-4))


def test_conventional_initialisation_from_checkpoint(tmp_path):
    conv = fit(synthetic(tmp_path, neuron="conventional", gamma_g=None, gamma_b=None), verbose=False)
    ckpt = checkpoint_path(synthetic(tmp_path, neuron="conventional", gamma_g=None, gamma_b=None))
    quad = synthetic(tmp_path, init="conventional", init_from=str(ckpt), epochs=1, lr=1e-9, momentum=0.0)
    r = fit(quad, verbose=False)
    # With a vanishing learning rate the quadratic network predicts what the trained
    # conventional one predicts (BN statistics aside): far above a fresh network.
    assert r["history"][0]["test_acc"] >= conv["final_test_acc"] - 0.15
    missing = synthetic(tmp_path, init="conventional", init_from=str(tmp_path / "none.pt"))
    with pytest.raises(FileNotFoundError, match="init_from"):
        fit(missing, verbose=False)


def test_a_run_starts_from_the_trained_conventional_network_of_its_recipe_and_seed(tmp_path):
    from qnets.config import SAME_RECIPE, parent, run_name
    from qnets.runner import run_state
    from qnets.train import build_model, weights_path
    conv = tiny(tmp_path, neuron="conventional", gamma_g=None, gamma_b=None, epochs=1)
    child = tiny(tmp_path, init="conventional", init_from=SAME_RECIPE, gamma_g=1e-3, gamma_b=1e-3, epochs=1)
    on = conv.replace(init="conventional", init_from=SAME_RECIPE)
    assert parent(child) == conv and parent(on) == conv and parent(conv) is None
    with pytest.raises(FileNotFoundError, match=f"the weights of {run_name(conv)} .* train that run first"):
        fit(child, verbose=False)
    assert run_state(child) | {"for": run_name(conv)} == run_state(child) and run_state(child)["state"] == "waiting"
    r = fit(conv, verbose=False)  # a finished conventional run leaves its weights where later runs start
    kept = torch.load(weights_path(conv), weights_only=True)
    assert kept["run"] == run_name(conv) and kept["data_fingerprint"] == r["data_fingerprint"]
    assert kept["final_test_acc"] == r["final_test_acc"]
    assert run_state(child)["state"] == "to do"
    trained = build_model(conv)
    trained.load_state_dict(kept["model"])
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():  # both start as the trained network computes (the quadratic terms at ReLinear's start)
        want = trained.eval()(x)
        assert torch.allclose(build_model(child).eval()(x), want, atol=1e-5)
        assert torch.equal(build_model(on).eval()(x), want)
    assert fit(child, verbose=False)["status"] == "completed" and fit(on, verbose=False)["status"] == "completed"
    assert not weights_path(on).exists()  # trained on from weights: no run starts from it, so none are kept
    # only the parent's final checkpoint here: the weights are taken from it
    weights_path(conv).unlink()
    assert build_model(on).state_dict()["fc.weight"].equal(kept["model"]["fc.weight"]) and weights_path(conv).exists()


def test_trained_weights_are_read_as_untrusted_and_must_match_the_data(tmp_path):
    from qnets.config import SAME_RECIPE
    from qnets.train import build_model, weights_path
    conv = synthetic(tmp_path, neuron="conventional", gamma_g=None, gamma_b=None, epochs=1)
    child = synthetic(tmp_path, init="conventional", init_from=SAME_RECIPE, epochs=1)
    fit(conv, verbose=False)
    good = torch.load(weights_path(conv), weights_only=True)
    with pytest.raises(ValueError, match="trained on other data"):
        build_model(child, fingerprint="f" * 16)
    target = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (target,))
    bad_shape = good | {"model": good["model"] | {"fc.weight": torch.zeros(3, 64)}}
    not_finite = good | {"model": good["model"] | {"fc.weight": torch.full_like(good["model"]["fc.weight"], float("nan"))}}
    padded = good | {"padding": torch.zeros(2**20)}  # 4 MiB more than a ResNet-8's weights and momentum
    for tampered, what in ((bad_shape, "fc.weight differs"), (not_finite, "fc.weight is not finite"),
                           (padded, "[0-9.]+ MiB, more than such a file holds"),
                           (good | {"run": "resnet8-conventional-000000000000"}, "not the weights of resnet8-"),
                           ({"model": Boom()}, "UnpicklingError")):
        torch.save(tampered, weights_path(conv))
        with pytest.raises(ValueError, match=f"is not the checkpoint of a conventional ResNet-8 \\({what}"):
            build_model(child)
    assert not target.exists()


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "qnets", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_cli_trains_and_reports(tmp_path):
    p = run_cli("train", "--depth", "8", "--dataset", "synthetic", "--n-train", "200", "--n-test", "100",
                "--epochs", "1", "--batch-size", "50", "--gamma-g", "lr", "--out-dir", str(tmp_path), "--quiet")
    assert p.returncode == 0, p.stderr
    assert "completed: final test accuracy" in p.stdout and str(tmp_path) in p.stdout
    [written] = (tmp_path / "runs").glob("*.json")
    assert json.loads(written.read_text())["config"]["gamma_g"] is None


@pytest.mark.parametrize("args,fragment", [
    (("train", "--bogus"), "unrecognized arguments: --bogus"),
    (("train", "--lr", "abc"), "invalid float value"),
    (("train", "--depth", "21"), "Config.depth must be"),
    (("train", "--rezero", "maybe"), "expected true or false"),
])
def test_cli_rejects_bad_input_in_one_line(args, fragment, capsys, tmp_path, monkeypatch):
    """`python -m qnets` is `main` (test_cli_trains_and_reports runs it as a process): a bad flag
    stops the parser, a bad value the run's Config, both with status 2 and one line."""
    from qnets.__main__ import main
    monkeypatch.chdir(tmp_path)  # (were a bad value let through, nothing trains into the project)
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_help_documents_every_field(capsys):
    from qnets.__main__ import main
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    for field in Config.__dataclass_fields__:
        assert f"--{field.replace('_', '-')}" in out


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="the allocator setting is glibc's")
@pytest.mark.slow
def test_cpu_allocator_stops_the_page_fault_churn():
    """Freeing and re-allocating a few 8 MiB tensors per step (what a CPU training step does)
    should reuse memory, not fault every page in again from the kernel."""
    code = textwrap.dedent("""
        import resource, sys, torch
        from qnets.utils import tune_cpu_allocator
        if sys.argv[1] == "tuned":
            print(tune_cpu_allocator(), file=sys.stderr)
        faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        def step():
            xs = [torch.ones(2 << 20) for _ in range(4)]  # four 8 MiB tensors, written, then freed
            del xs
        step()
        before = faults()
        for _ in range(10):
            step()
        print((faults() - before) / 10 / (4 * 2048))  # faulted pages per step / pages written
    """)
    # Only the tuned allocator is measured: glibc's default varies from run to run here (from about
    # a quarter to nearly every page faulted again each step), so it cannot be asserted.
    p = subprocess.run([sys.executable, "-c", code, "tuned"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "glibc: mmap threshold 32 MiB" in p.stderr
    assert float(p.stdout) < 0.4, p.stdout


@pytest.mark.slow
def test_each_network_compiles_once_and_every_trainer_stays_compiled(monkeypatch):
    """Dynamo keeps at most 8 compiled variants of a function by default, then silently runs it
    eagerly; six networks, each in training and evaluation mode, are 12, and each must compile.
    A second trainer of a network already compiled (a pack's K runs, a campaign's next run of a
    kind) reuses the code without compiling, and computes with its own weights."""
    from torch._dynamo.utils import counters

    from qnets.models import resnet
    from qnets.train import Trainer
    compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compile(model, backend="eager", **kw))
    torch.compiler.reset()
    x = torch.randn(2, 3, 32, 32)

    def outputs(trainer):  # in training and evaluation mode, leaving the BatchNorm statistics as they were
        state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.model.train()
        train = trainer.net(x)
        trainer.model.eval()
        out = train, trainer.net(x)
        trainer.model.load_state_dict(state)
        return out
    for depth in (8, 14):
        for neuron in ("conventional", "quadratic", "compact"):
            config = Config(depth=depth, neuron=neuron, dataset="synthetic", device="cpu", compile="on")
            first = Trainer(config, resnet(depth, neuron), torch.device("cpu"), steps_per_epoch=1)
            before = counters["stats"]["unique_graphs"]
            outputs(first)
            assert counters["stats"]["unique_graphs"] == before + 2, (depth, neuron)
            second = Trainer(config, resnet(depth, neuron), torch.device("cpu"), steps_per_epoch=1)
            with torch.no_grad():
                for p in second.model.parameters():
                    p.mul_(0.5)
            got = outputs(second)
            assert counters["stats"]["unique_graphs"] == before + 2, (depth, neuron)  # nothing compiled
            second.net = second.model  # the same network, uncompiled
            for a, b in zip(got, outputs(second)):
                assert torch.allclose(a, b, atol=1e-5), (depth, neuron)
    for depth, neuron in ((8, "conventional"), (8, "quadratic")):  # the first networks are still compiled
        config = Config(depth=depth, neuron=neuron, dataset="synthetic", device="cpu", compile="on")
        before = counters["stats"]["unique_graphs"]
        outputs(Trainer(config, resnet(depth, neuron), torch.device("cpu"), steps_per_epoch=1))
        assert counters["stats"]["unique_graphs"] == before


def test_a_test_set_overflow_is_recorded_and_training_goes_on(tmp_path, monkeypatch):
    """In evaluation mode two test images give infinite logits (as a deep quadratic network can):
    the run completes, each evaluation records them, and they count as wrong."""
    import qnets.train as T
    real = T.resnet

    def overflowing(*args, **kw):
        model = real(*args, **kw)

        def hook(module, inputs, out):
            if module.training:
                return out
            out = out.clone()
            out[:2] = float("inf")
            return out
        model.register_forward_hook(hook)
        return model
    monkeypatch.setattr(T, "resnet", overflowing)
    r = fit(tiny(tmp_path, epochs=2), verbose=False)
    assert r["status"] == "completed" and r["collapse_rule"] == 2
    for h in r["history"]:
        assert h["test_nonfinite"] == 2 and 0 < h["test_max_logit"] < float("inf")
        assert h["test_loss"] is not None and h["test_acc"] <= 48 / 50


def test_the_collapse_rule_reads_training_only():
    from qnets.train import collapse_reason
    h = lambda e, loss, acc, test_loss=1.0: {"epoch": e, "train_loss": loss, "train_acc": acc,  # noqa: E731
                                             "test_loss": test_loss, "test_acc": 0.5}
    assert collapse_reason([h(0, 1.5, 0.4, test_loss=float("nan"))]) is None  # test overflow: not a collapse
    assert "non-finite training loss" in collapse_reason([h(0, 1.5, 0.4), h(1, float("nan"), 0.1)])
    assert collapse_reason([h(0, None, 0.1)]) is not None  # stored JSON has null for NaN
    assert "fell back to chance" in collapse_reason([h(0, 1.5, 0.25), h(1, 2.3, 0.11)])
    assert collapse_reason([h(0, 2.3, 0.15), h(1, 2.3, 0.11)]) is None  # never rose above chance + 0.1


def test_progress_bar_counts_images_within_an_epoch_and_shows_the_label(tmp_path, capsys):
    from qnets.train import Lane, load_data
    config = Config(dataset="synthetic", n_train=200, n_test=100, epochs=2, batch_size=50, depth=8,
                    out_dir=str(tmp_path))
    fit(config, verbose=True, label="02:naive seed 0")
    err = capsys.readouterr().err
    assert "02:naive seed 0" in err and "400/400" in err and "img/s" in err and "epoch 2/2" in err
    # the bar moves once per step (4 steps of 50 images here), not once per epoch
    lane = Lane(config.replace(out_dir=str(tmp_path / "again")), load_data(config), torch.device("cpu"), verbose=True)
    seen = []
    while lane.advance() and len(seen) < 5:
        seen.append(lane.bar.n)
    lane.close()
    assert seen == [50, 100, 150, 200, 250]


def test_a_run_is_priced_by_its_training_images_and_the_test_images_it_scores(tmp_path):
    """Training and testing are timed apart, so a short run on few images that scores the whole test
    set often prices a long run on all images right (one rate per image over both priced the long
    run here 60% too high, and the quick preset's runs priced the cpu plan's ResNet-8 runs at 1.6x)."""
    import json

    from qnets import experiments
    base = dict(dataset="synthetic", n_train=100, n_test=50, epochs=4, eval_every=2, batch_size=50, depth=8,
                out_dir=str(tmp_path))
    path = result_path(Config(**base))
    fit(Config(**base), verbose=False)
    r = json.loads(path.read_text())
    for h in r["history"]:  # designed times: 1 ms per training image, 4 ms per test image scored
        h["train_time"], h["images_per_s"] = 0.1, 1000.0
        h["epoch_time"] = 0.1 + (0.2 if h["test_acc"] is not None else 0.0)
    path.write_text(json.dumps(r))
    assert experiments.pace(False, tmp_path / "runs") == {(8, "quadratic"): pytest.approx((1e-3, 4e-3))}
    for h in r["history"][2:]:  # epochs that shared the CPU with other work took twice as long
        h["train_time"], h["images_per_s"] = 0.2, 500.0
        h["epoch_time"] = 0.2 + (0.4 if h["test_acc"] is not None else 0.0)
    path.write_text(json.dumps(r))
    assert experiments.pace(False, tmp_path / "runs") == {(8, "quadratic"): pytest.approx((1e-3, 4e-3))}
    long = Config(**base | dict(n_train=5000, n_test=1000, epochs=15, eval_every=5, seed=1))
    seconds, _ = experiments.training_cost([long], False, tmp_path / "runs")
    assert seconds == pytest.approx(5000 * 15 * 1e-3 + 1000 * 3 * 4e-3)  # 75 s training, 12 s scoring 3 times
    # the last 5 epochs left: scored once, at the end
    assert experiments.training_cost([long], False, tmp_path / "runs", epochs_left=[5])[0] == \
        pytest.approx(5000 * 5 * 1e-3 + 1000 * 4e-3)


def test_missing_runs_are_announced_with_their_cost_instead_of_trained(tmp_path, capsys, monkeypatch):
    from qnets import experiments
    base = dict(dataset="synthetic", n_train=200, n_test=100, epochs=2, batch_size=50, depth=8, out_dir=str(tmp_path))
    fit(Config(**base), verbose=False)  # one stored run measures this CPU
    missing = Config(**base | {"seed": 7, "epochs": 4})
    out = experiments.results({"x": missing}, train_missing=False, n_seeds=1)
    assert out == {"x": []} and not result_path(missing).exists()
    said = capsys.readouterr().out
    assert "1 run(s) of this preset are not in results/" in said and "train_missing = True" in said
    seconds, basis = experiments.training_cost([missing], on_gpu=False, folder=tmp_path / "runs")
    assert basis == "timed on a CPU: resnet8-quadratic" and seconds > 0
    others = [missing.replace(depth=20), missing.replace(neuron="compact"),
              missing.replace(neuron="power", init="naive")]
    _, basis = experiments.training_cost([missing] + others, on_gpu=False, folder=tmp_path / "runs")
    assert basis == ("timed on a CPU: resnet8-quadratic; resnet20-quadratic, resnet8-compact, resnet8-power "
                     "scaled from resnet8-quadratic")
    assert experiments.training_cost([missing], on_gpu=True, folder=tmp_path / "runs") is None
    # a plan's status prices what is left at the pace of the runs stored beside it (here tmp_path/runs),
    # wherever the command runs
    from qnets import runner
    monkeypatch.chdir(tmp_path / "runs")
    assert runner.status_text({"x": missing}, cpu=True).endswith("CPU-hours left (timed on a CPU: resnet8-quadratic)")


def test_cli_converters_follow_the_annotation():
    import dataclasses
    from qnets.__main__ import _field_type

    @dataclasses.dataclass
    class Fields:
        name: "str | None" = None
        rate: "float | None" = None
        count: "int | None" = None
        flag: "bool" = False
        table: "dict" = None

    f = {x.name: x for x in dataclasses.fields(Fields)}
    assert _field_type(f["name"])("none") is None and _field_type(f["name"])("abc") == "abc"
    assert _field_type(f["rate"])("lr") is None and _field_type(f["rate"])("0.5") == 0.5
    assert _field_type(f["count"])("all") is None and _field_type(f["flag"])("on") is True
    with pytest.raises(TypeError, match="Config.table: no command-line converter"):
        _field_type(f["table"])


def steps_of(config: Config, steps: int = 3) -> dict:
    """The weights after `steps` training steps of `config` on fixed batches, from one initialisation."""
    from qnets.train import Trainer, build_model
    torch.manual_seed(0)
    trainer = Trainer(config, build_model(config), torch.device("cpu"), steps_per_epoch=steps)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
        trainer.train_step(x, torch.randint(0, 10, (16,), generator=g))
    return {k: v.clone() for k, v in trainer.model.state_dict().items()} | {"notes": trainer.notes}


@pytest.mark.slow
@pytest.mark.parametrize("neuron", ["quadratic", "compact"])
def test_a_compiled_cpu_step_trains_as_the_eager_step(neuron):
    """torch.compile on the CPU fuses element-wise work; the training it gives is the eager one to
    float32 rounding (the quadratic terms at the full rate, so every kind of parameter moves)."""
    config = Config(depth=8, neuron=neuron, device="cpu", gamma_g=0.1, gamma_b=0.1, lr=0.1)
    compiled, eager = steps_of(config.replace(compile="on")), steps_of(config.replace(compile="off"))
    assert not any("eager fallback" in n for n in compiled.pop("notes"))
    eager.pop("notes")
    start = steps_of(config.replace(compile="off"), steps=0)
    # Each tensor's update the same to 5% of its size: rounding, amplified over 3 steps at these rates,
    # measured at 1e-3 to 4e-3 of most tensors' updates with two threads; a bias of g, whose gradient
    # sums over every position with cancellation, reaches 1.6e-2 with one thread. A step that skipped
    # or mis-scaled a kind of parameter would miss by the whole update.
    for k, v in eager.items():
        if v.is_floating_point():
            update, difference = (v - start[k]).norm(), (compiled[k] - v).norm()
            assert difference <= 5e-2 * update + 1e-6, (k, float(difference), float(update))
    assert any((eager[k] - start[k]).abs().max() > 1e-3 for k in eager if k.endswith("weight_b"))


def test_auto_compiles_long_cpu_runs_only():
    from qnets.train import CPU_COMPILE_MIN_STEPS, Trainer, build_model
    config = Config(depth=8, device="cpu", epochs=10)
    short = Trainer(config, build_model(config), torch.device("cpu"), steps_per_epoch=CPU_COMPILE_MIN_STEPS // 10 - 1)
    long = Trainer(config, build_model(config), torch.device("cpu"), steps_per_epoch=CPU_COMPILE_MIN_STEPS // 10)
    assert not short.compiled and long.compiled and long.net is not long.model
    off = Trainer(config.replace(compile="off"), build_model(config), torch.device("cpu"), steps_per_epoch=10**4)
    assert not off.compiled


def test_a_step_that_cannot_compile_is_undone_and_trained_eagerly(monkeypatch):
    """Where compiling fails (no C++ compiler, say) the first step runs again eagerly, from the same
    weights and BatchNorm statistics: the run is the eager run, and it says what happened."""
    def broken_compile(model, **kw):
        def forward(x):
            model(x)  # the forward pass runs (BatchNorm statistics move), then compiling fails
            raise RuntimeError("no C++ compiler")
        return forward
    config = Config(depth=8, neuron="quadratic", device="cpu", compile="on")
    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(UserWarning, match="training eagerly: no C\\+\\+ compiler"):
        fallen = steps_of(config)
    notes = fallen.pop("notes")
    assert any("eager fallback: RuntimeError: no C++ compiler" in n for n in notes)
    eager = steps_of(config.replace(compile="off"))
    eager.pop("notes")
    assert all(torch.equal(fallen[k], v) for k, v in eager.items())
