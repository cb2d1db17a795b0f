"""Packed runs (qnets.packed) are their lone runs: same batches, same arithmetic, isolated."""
import json
import subprocess
import sys

import pytest
import torch

from qnets.data import DeviceLoader, synthetic_cifar10
from qnets.packed import PackedLoader, PackedResNet, PackedTrainer, pack_key
from qnets.train import Config, Trainer, build_model, load_data
from conftest import untimed

CPU = torch.device("cpu")
F64 = torch.float64


def base(**kw):
    return Config(**(dict(depth=8, dataset="synthetic", n_train=200, n_test=100, batch_size=20, epochs=2,
                          device="cpu", schedule="cosine") | kw))


def differing_runs(**arch):
    """Three runs of one architecture that differ in seed (so in data, order and augmentation),
    initialisation, ReLinear rates and penalties."""
    return [base(seed=0, **arch),
            base(seed=1, gamma_g=1e-2, gamma_b=None, alpha_g=1e-3, **arch),
            base(seed=2, gamma_g=None, gamma_b=1e-3, beta_b=1e-4, init="naive", **arch)]


def lone_steps(config, steps):
    model = build_model(config).to(F64)
    data = load_data(config)
    loader = DeviceLoader(data.train, config.batch_size, train=True, seed=config.seed, dtype=F64, channels_last=True)
    trainer = Trainer(config, model, CPU, len(loader))
    for i, (x, y) in zip(range(steps), loader.epoch(0)):
        trainer.set_lr(i)
        trainer.train_step(x, y)
    return model, trainer


def packed_steps(configs, steps, poison=None):
    packed = PackedResNet.from_models([build_model(c).to(F64) for c in configs])
    if poison is not None:  # run `poison`'s stem weights become NaN
        with torch.no_grad():
            packed.conv1.weight.view(len(configs), -1)[poison] = float("nan")
    loader = PackedLoader([load_data(c).train for c in configs], configs[0].batch_size,
                          seeds=[c.seed for c in configs], train=True, dtype=F64, channels_last=True)
    trainer = PackedTrainer(configs, packed, CPU, len(loader))
    for i, (x, y) in zip(range(steps), loader.epoch(0)):
        trainer.set_lr(i)
        trainer.train_step(x, y)
    return packed, trainer


def assert_same_state(packed_state, lone_state):
    for name, v in lone_state.items():
        p = packed_state[name]
        if not v.is_floating_point():
            assert torch.equal(p, v), name
            continue
        # float64 rounding: grouped and lone convolutions sum in different orders
        assert (p - v).abs().max() <= 1e-12 + 1e-9 * v.abs().max(), name


@pytest.mark.parametrize("arch", [dict(neuron="quadratic"), dict(neuron="compact", rezero=True),
                                  dict(neuron="quadratic", shortcut="B", rezero=True), dict(neuron="conventional")],
                         ids=["quadratic", "compact-rezero", "quadratic-B-rezero", "conventional"])
@pytest.mark.slow
def test_packed_steps_equal_lone_steps(arch):
    configs = differing_runs(**arch)
    packed, pt = packed_steps(configs, 5)
    for k, config in enumerate(configs):
        model, trainer = lone_steps(config, 5)
        assert_same_state(packed.lone_state(k), model.state_dict())
        assert pt.loss_sum[k].item() == pytest.approx(trainer.loss_sum.item(), rel=1e-9)
        assert pt.correct[k].item() == trainer.correct.item()
        # momentum buffers are the lone optimiser's, parameter by parameter
        for name, p in model.named_parameters():
            buf = trainer.opt.state[p]["momentum_buffer"]
            assert (pt.opt.momentum_buffer(name, k) - buf).abs().max() <= 1e-12 + 1e-9 * buf.abs().max(), name


def test_pack_and_unpack_are_exact_and_the_packed_forward_is_each_lone_forward():
    configs = differing_runs(neuron="quadratic", rezero=True)
    models = [build_model(c).to(F64).eval() for c in configs]
    packed = PackedResNet.from_models(models).eval()
    x = torch.randn(4, 3, 32, 32, dtype=F64, generator=torch.Generator().manual_seed(0))
    xs = [x * (k + 1) for k in range(3)]
    out = packed(torch.cat(xs, 1))
    assert out.shape == (4, 3, 10)
    for k, m in enumerate(models):
        for name, v in m.state_dict().items():
            assert torch.equal(packed.lone_state(k)[name], v), name
        assert torch.allclose(out[:, k], m(xs[k]), rtol=1e-10, atol=1e-10)
        assert torch.equal(packed.lone_model(k).state_dict()["fc.weight"], m.fc.weight)


def test_only_one_architecture_packs():
    with pytest.raises(ValueError, match="one architecture"):
        PackedResNet.from_models([build_model(base(neuron="quadratic")), build_model(base(neuron="compact"))])
    assert pack_key(base(seed=3, gamma_g=0.1, alpha_b=1.0)) == pack_key(base())
    assert pack_key(base(epochs=3)) != pack_key(base())


def test_each_packed_run_sees_its_lone_batches():
    a, b = synthetic_cifar10(60, 10, seed=0).train, synthetic_cifar10(60, 10, seed=1).train
    packed = PackedLoader([a, b, a], 16, seeds=[0, 1, 2], train=True)
    lone = [DeviceLoader(s, 16, train=True, seed=seed) for s, seed in ((a, 0), (b, 1), (a, 2))]
    for epoch in (0, 3):
        batches = list(packed.epoch(epoch))
        assert len(batches) == len(lone[0]) == 3
        for k, loader in enumerate(lone):
            for (x, y), (lx, ly) in zip(batches, loader.epoch(epoch)):
                assert torch.equal(x[:, 3 * k:3 * k + 3], lx) and torch.equal(y[:, k], ly)
    assert packed.images.shape[0] == 120  # a is stored once


@pytest.mark.slow
def test_a_nonfinite_run_leaves_the_others_untouched():
    configs = differing_runs(neuron="quadratic")
    clean, _ = packed_steps(configs, 4)
    poisoned, trainer = packed_steps(configs, 4, poison=1)
    assert not torch.isfinite(trainer.loss_sum[1])
    for k in (0, 2):
        assert torch.isfinite(trainer.loss_sum[k])
        for name, v in clean.lone_state(k).items():
            assert torch.equal(poisoned.lone_state(k)[name], v), name


@pytest.mark.slow
def test_bench_pack_mode_writes_a_report(tmp_path):
    p = subprocess.run([sys.executable, "-m", "qnets", "bench", "--pack", "1,2", "--mechanisms", "grouped,streams",
                        "--depths", "8", "--neurons", "quadratic", "--data", "synthetic", "--steps", "1",
                        "--warmup", "1", "--pack-compile", "off", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / "cpu-packing.json").read_text())
    assert report["kind"] == "packing"
    assert [(r["mechanism"], r["k"]) for r in report["rows"]] == [("grouped", 1), ("grouped", 2), ("streams", 1),
                                                                  ("streams", 2)]
    assert all(r["images_per_s"] > 0 for r in report["rows"])
    assert report["lone"][0]["images_per_s"] > 0
    from qnets import bench
    table = bench.markdown(report)
    assert "| ResNet-8 quadratic | grouped | off | NHWC | fp32 | 2 |" in table
    assert "| ResNet-8 quadratic | streams | off | NHWC | fp32 | 2 |" in table
    bad = subprocess.run([sys.executable, "-m", "qnets", "bench", "--pack", "2", "--mechanisms", "fused",
                          "--depths", "8", "--data", "synthetic"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "--mechanisms: unknown ['fused']" in bad.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- packed fit

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]



def fit_configs(out, **kw):
    common = dict(depth=8, dataset="synthetic", n_train=300, n_test=100, batch_size=50, epochs=2, lr=0.05,
                  device="cpu", schedule="cosine", out_dir=str(out)) | kw
    return [Config(**common, seed=0, neuron="quadratic"),
            Config(**common, seed=1, neuron="quadratic", gamma_g=1e-3, gamma_b=None, alpha_b=1e-3),
            Config(**common, seed=2, neuron="quadratic", init="naive", gamma_g=None, gamma_b=None)]


@pytest.mark.slow
def test_a_packed_fit_stores_what_lone_fits_store(tmp_path):
    from qnets.packed import fit_packed
    from qnets.train import fit, result_path
    packed = fit_packed(fit_configs(tmp_path / "packed"), verbose=False)
    for config, r in zip(fit_configs(tmp_path / "lone"), packed):
        lone = fit(config, verbose=False)
        assert r["name"] == lone["name"] and r["status"] == lone["status"] == "completed"
        assert set(r) - set(lone) == {"pack"} and r["pack"]["k"] == 3
        assert json.loads(result_path(config.replace(out_dir=str(tmp_path / "packed"))).read_text()) == r
        # float32: grouped and lone convolutions round differently, so trajectories agree closely, not exactly
        for a, b in zip(r["history"], lone["history"]):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
            assert a["lr"] == b["lr"] and a["quadratic"] == pytest.approx(b["quadratic"], rel=1e-2, abs=1e-6)
        assert abs(r["final_test_acc"] - lone["final_test_acc"]) <= 0.03


@pytest.mark.slow
def test_a_diverging_run_collapses_alone(tmp_path):
    from qnets.packed import fit_packed
    configs = fit_configs(tmp_path, epochs=3, schedule="constant")
    configs[1] = configs[1].replace(lr=1e4, init="naive", gamma_g=None, alpha_b=0.0)
    results = fit_packed(configs, verbose=False)
    assert results[1]["status"] == "collapsed" and results[1]["epochs_run"] < 3
    for j in (0, 2):
        assert results[j]["status"] == "completed" and results[j]["epochs_run"] == 3
        assert all(h["train_loss"] < 3 for h in results[j]["history"])


@pytest.mark.slow
def test_kill_and_resume_of_a_pack_equals_an_uninterrupted_pack(tmp_path):
    """A child training a pack of three is killed (SIGKILL) after a checkpoint; `results`-style
    training again resumes each run from its own checkpoint and ends where an uninterrupted
    pack ends: the same histories and weights."""
    from conftest import kill_after_checkpoint

    from qnets.packed import fit_packed
    from qnets.train import checkpoint_path, result_path
    killed = fit_configs(tmp_path / "killed", epochs=4, n_train=400)
    code = ("from qnets.train import Config\nfrom qnets.packed import fit_packed\n"
            f"fit_packed([Config(**d) for d in {[c.to_dict() for c in killed]!r}], verbose=False)\n")
    kill_after_checkpoint(code, checkpoint_path(killed[-1]))
    epochs = {torch.load(checkpoint_path(c), weights_only=False)["epoch"] for c in killed}
    assert len(epochs) == 1 and 1 <= epochs.pop() < 3
    assert not any(result_path(c).exists() for c in killed)
    resumed = fit_packed(killed, verbose=False)
    straight_cfgs = fit_configs(tmp_path / "straight", epochs=4, n_train=400)
    straight = fit_packed(straight_cfgs, verbose=False)
    for r, s, a_cfg, b_cfg in zip(resumed, straight, killed, straight_cfgs):
        assert r["name"] == s["name"] and untimed(r["history"]) == untimed(s["history"])
        a = torch.load(checkpoint_path(a_cfg), weights_only=False)
        b = torch.load(checkpoint_path(b_cfg), weights_only=False)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
        # the checkpoint is a lone one: a lone run could resume from it
        assert a["optimizer"]["state"] and a["config"] == a_cfg.to_dict()


@pytest.mark.slow
def test_results_packs_runs_that_can_share_a_network(tmp_path, monkeypatch, capsys):
    from qnets import experiments, packed
    monkeypatch.chdir(tmp_path)
    packs = []
    real = packed.fit_packed
    monkeypatch.setattr(packed, "fit_packed", lambda cs, **kw: packs.append(len(cs)) or real(cs, **kw))
    selection = "02:naive,02:relinear-sg,02:relinear-sw-l2,02:conventional"
    out = experiments.train_plan("smoke", selection, verbose=False, pack=4, packing="grouped")
    # three quadratic ResNet-8 labels and a conventional one, three seeds each: the nine quadratic
    # runs go in packs of 4 and 4 and one trains alone; the conventional runs are a pack of their own
    assert sorted(packs) == [3, 4, 4] and len(out) == 12
    assert all(r["status"] in ("completed", "collapsed") for r in out.values())
    lone = [label for label, r in out.items() if r.get("pack") is None]
    assert len(lone) == 1 and out[lone[0]]["config"]["neuron"] == "quadratic"
    assert "in a pack of 4" in capsys.readouterr().out
    assert experiments.pack_groups(experiments.plan("smoke", selection), 4) == []  # everything is stored now


@pytest.mark.slow
def test_bench_learning_check_compares_packed_and_lone_runs(tmp_path):
    p = subprocess.run([sys.executable, "-m", "qnets", "bench", "--pack", "1", "--mechanisms", "grouped",
                        "--depths", "8", "--neurons", "quadratic", "--data", "synthetic", "--steps", "1",
                        "--warmup", "1", "--pack-compile", "off", "--pack-lone", "off", "--pack-check", "1",
                        "--check-train", "200", "--batch-size", "50", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    check = json.loads((tmp_path / "cpu-packing.json").read_text())["learning_check"]
    assert check["k"] == 4 and len(check["packed"]) == len(check["lone"]) == 4
    # on a CPU in float32 a packed run and its lone run round differently, and agree closely
    assert all(abs(a - b) <= 3 for a, b in zip(check["packed"], check["lone"]))
    assert check["agree"] is True and "learning check" in p.stdout
