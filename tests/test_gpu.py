"""The GPU fast path (torch.compile, one CUDA graph per step, bf16 autocast) against the eager
float32 step on the same batches. Skipped without CUDA; run wherever a GPU is available:
`python -m pytest tests/test_gpu.py` (or `-m gpu`). The same comparison runs on the CPU with bf16
autocast alone, so the harness itself is tested everywhere."""
import copy

import pytest
import torch

from qnets.train import Config, Trainer, build_model, capabilities, load_data, make_loaders

STEPS = 4  # training steps compared: enough for the rates, momentum and BN statistics to matter


def _trained(config: Config, model: torch.nn.Module, device: torch.device, loader) -> tuple[Trainer, float]:
    trainer = Trainer(config, model, device, len(loader))
    trainer.model.train()
    seen = 0
    for i, (x, y) in enumerate(loader.epoch(0)):
        trainer.set_lr(i)
        trainer.train_step(x, y)
        seen += y.shape[0]
    return trainer, trainer.loss_sum.item() / seen


def compare(device: str, **fast) -> dict:
    """Train the same initial network on the same batches twice, the eager fp32 way and with the
    `fast` settings; returns the two mean losses and how far the fast weights are from the eager
    ones relative to how far training moved them."""
    base = Config(depth=8, neuron="quadratic", dataset="synthetic", n_train=128 * STEPS, n_test=100, batch_size=128,
                  epochs=1, device=device, schedule="constant", lr=0.05)
    eager = base.replace(precision="fp32", compile="off", cuda_graphs="off")
    dev = torch.device(device)
    data = load_data(base)
    loader, _ = make_loaders(base, data, dev)
    torch.manual_seed(0)
    init = build_model(base)
    start = {k: v.detach().clone().float() for k, v in init.state_dict().items()}
    ref, ref_loss = _trained(eager, copy.deepcopy(init), dev, loader)
    quick, quick_loss = _trained(base.replace(**fast), copy.deepcopy(init), dev, loader)
    moved = diff = 0.0
    for name, p in ref.model.named_parameters():
        q = dict(quick.model.named_parameters())[name]
        moved += (p.detach().float().cpu() - start[name]).square().sum().item()
        diff += (q.detach().float().cpu() - p.detach().float().cpu()).square().sum().item()
    return {"eager_loss": ref_loss, "fast_loss": quick_loss, "relative_gap": (diff / moved) ** 0.5, "fast": quick}


@pytest.mark.slow
def test_bf16_autocast_step_follows_the_fp32_step_on_the_cpu():
    out = compare("cpu", precision="bf16")
    assert out["fast"].bf16 and not out["fast"].compiled
    assert out["fast_loss"] == pytest.approx(out["eager_loss"], rel=0.05)
    assert out["relative_gap"] < 0.2, out


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
def test_compiled_graphed_bf16_step_follows_the_eager_fp32_step():
    out = compare("cuda")  # every fast-path switch at "auto": what produced the GPU results
    caps = capabilities(torch.device("cuda"))
    trainer = out["fast"]
    assert trainer.use_graphs and trainer.graph is not None, trainer.notes  # no silent eager fallback
    assert (trainer.bf16, trainer.compiled) == (caps["bf16"], caps["compile"])
    assert trainer.precision == ("bf16-split" if caps["bf16"] else "fp32")  # a quadratic network: its small terms kept
    assert out["fast_loss"] == pytest.approx(out["eager_loss"], rel=0.05)
    assert out["relative_gap"] < 0.2, out


@pytest.mark.gpu
@gpu
def test_graphed_float32_steps_are_the_eager_steps():
    """Without bf16 and compilation, a captured step replayed is the eager step: its gradients
    (written into the graph's memory, never zeroed and added to) move the weights as eager
    ones do, up to cuDNN's choice of kernels."""
    out = compare("cuda", precision="fp32", compile="off", cuda_graphs="on")
    assert out["fast"].use_graphs and out["fast"].graph is not None, out["fast"].notes
    assert out["fast_loss"] == pytest.approx(out["eager_loss"], rel=1e-3)
    assert out["relative_gap"] < 1e-2, out


@pytest.mark.gpu
@gpu
def test_graph_replays_use_the_scheduled_rates():
    """A CUDA graph reads the learning rate from device memory: a rate changed between replays
    must take effect (a rate of 0 leaves the weights where they are)."""
    config = Config(depth=8, neuron="quadratic", dataset="synthetic", n_train=512, n_test=100, batch_size=128,
                    epochs=1, device="cuda", schedule="constant", lr=0.05, weight_decay=0.0)
    dev = torch.device("cuda")
    loader, _ = make_loaders(config, load_data(config), dev)
    trainer = Trainer(config, build_model(config), dev, len(loader))
    batches = list(loader.epoch(0))
    trainer.train_step(*batches[0])  # captures the graph, then replays
    for g in trainer.opt.param_groups:
        g["lr"].fill_(0.0)
    trainer._zero_momentum()
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step(*batches[1])
    torch.cuda.synchronize()
    assert all(torch.equal(a, p.detach()) for a, p in zip(before, trainer.model.parameters()))


@pytest.mark.gpu
@gpu
def test_runs_together_on_streams_follow_their_lone_runs(tmp_path):
    """Two runs of different networks on two CUDA streams, each compiled and graphed, train as
    they do alone (cuDNN may pick other kernels between processes, so closely, not bit for bit)."""
    from qnets.streams import fit_together
    from qnets.train import fit
    configs = [Config(depth=8, neuron=n, dataset="synthetic", n_train=1024, n_test=200, batch_size=128, epochs=2,
                      device="cuda", schedule="constant", lr=0.05, seed=s, out_dir=str(tmp_path / "together"))
               for s, n in enumerate(("quadratic", "conventional"))]
    together = fit_together(configs, verbose=False)
    for c, r in zip(configs, together):
        lone = fit(c.replace(out_dir=str(tmp_path / "lone")), verbose=False)
        assert r["status"] == lone["status"] == "completed" and r["together"]["k"] == 2
        compiled = capabilities(torch.device("cuda"))["compile"]
        assert r["fast_path"]["cuda_graphs"] and r["fast_path"]["compile"] == compiled
        for a, b in zip(r["history"], lone["history"]):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.02)


@pytest.mark.gpu
@gpu
def test_the_precision_policy_keeps_the_quadratic_contribution_on_the_gpu():
    """What `auto` trains a quadratic network in on this card (bf16-split, TF32 off for its float32
    convolutions) keeps a layer's quadratic contribution at ||w_g||/||w_r|| = 1e-3; plain bf16 does not."""
    from qnets import precision
    from qnets.layers import QuadraticConv2d
    config = Config(depth=8, neuron="quadratic", device="cuda")
    trainer = Trainer(config, build_model(config), torch.device("cuda"), 10)
    if not capabilities(torch.device("cuda"))["bf16"]:
        pytest.skip("this card has no native bf16: auto trains in fp32")
    assert trainer.precision == "bf16-split" and not torch.backends.cudnn.allow_tf32
    g = torch.Generator().manual_seed(0)
    layer = QuadraticConv2d(32, 32, 3, padding=1)
    precision.set_ratio(layer, 1e-3, g)
    x = torch.relu(torch.randn(8, 32, 16, 16, generator=g))
    layer, x = layer.cuda(), x.cuda()
    split = precision.contribution_error(layer, x, "bf16-split")
    plain = precision.contribution_error(layer, x, "bf16")
    assert split["corr"] >= 0.99 and split["rel_error"] <= 0.05, split
    assert plain["rel_error"] > 0.05, plain
