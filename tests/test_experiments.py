import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qnets import experiments, plots, runner
from qnets.notebooks import setup
from qnets.train import Config, result_path
from conftest import stored_result

ROOT = Path(__file__).resolve().parents[1]


def test_every_notebook_has_runs_at_every_preset():
    for preset in experiments.PRESETS:
        assert experiments.labelled_configs("01", preset) == {}
        for nb in ("02", "03", "04", "05"):
            configs = experiments.labelled_configs(nb, preset)
            assert "conventional" in configs and all(isinstance(c, Config) for c in configs.values())


def test_paper_preset_is_the_authors_recipe():
    c = experiments.labelled_configs("02", "paper")
    assert c["relinear-sg"].epochs == 200 and c["relinear-sg"].batch_size == 128 and c["relinear-sg"].lr == 0.1
    assert c["relinear-sg"].schedule == "step" and c["relinear-sg"].gamma_g == 1e-5 and c["naive"].init == "naive"
    assert c["naive"].gamma_g is None and experiments.labelled_configs("04", "paper")["relinear-rezero"].depth == 56


def test_shared_runs_are_the_same_config():
    """02's ReLinear run is 03's quadratic and 05's gamma=1e-5, so it is trained once."""
    for preset in ("quick", "paper"):
        sg = experiments.labelled_configs("02", preset)["relinear-sg"]
        assert experiments.labelled_configs("03", preset)["quadratic"] == sg == experiments.labelled_configs("05", preset)["gamma=1e-05"]


def test_plan_selection_and_errors():
    all_quick = experiments.plan("quick")
    assert len(all_quick) == len(set(all_quick.values()))  # deduplicated
    naive = experiments.plan("paper", "02:naive")
    assert list(naive) == ["02:naive", "02:naive#1", "02:naive#2"]  # every label runs with three seeds
    assert [c.seed for c in naive.values()] == [0, 1, 2]
    both = experiments.plan("paper", "02,03")
    assert len(both) == 3 * 7  # 03 shares two of its four labels with 02
    assert [k for k in both if "#" not in k] == list(both)[:7]  # every label's first seed comes first
    with pytest.raises(ValueError, match="no run 'nope'"):
        experiments.plan("paper", "02:nope")
    with pytest.raises(ValueError, match="unknown preset"):
        experiments.labelled_configs("02", "huge")
    with pytest.raises(ValueError, match="unknown Config field"):
        experiments.labelled_configs("02", "quick", epochz=3)


def test_committed_preset_prefers_the_largest_complete_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert experiments.committed_preset("03") == "quick"
    def store(config):
        result_path(config).parent.mkdir(parents=True, exist_ok=True)
        result_path(config).write_text(json.dumps(stored_result(config)))
    for config in experiments.labelled_configs("03", "gpu-short").values():
        store(config)
    assert experiments.committed_preset("03") == "quick"  # one seed of three is not complete
    for config in experiments.labelled_configs("03", "gpu-short").values():
        for seeded in experiments.seeds(config)[1:]:
            store(seeded)
    assert experiments.committed_preset("03") == "gpu-short"
    assert experiments.committed_preset("04") == "quick"


def test_a_notebook_is_read_at_a_preset_once_its_core_is_stored(tmp_path, monkeypatch):
    """At a preset with a plan of its own, a notebook is read there once every seed of its runs in the
    plan's first group is stored; a notebook with no run in that group once the first seed of each of
    its runs is."""
    monkeypatch.chdir(tmp_path)
    core = experiments._core("cpu")
    labels = {nb: {s: label for label, c in experiments.labelled_configs(nb, "cpu").items()
                   for s in experiments.seeds(c)} for nb in ("02", "04", "05")}
    assert {labels["02"][c] for c in core if c in labels["02"]} >= {"conventional", "relinear-sg", "gamma=0", "naive"}
    assert not set(core) & set(labels["04"]) and "naive-lr/10" not in {labels["02"].get(c) for c in core}
    for config in core[:-1]:
        result_path(config).parent.mkdir(parents=True, exist_ok=True)
        result_path(config).write_text(json.dumps(stored_result(config)))
    assert experiments.committed_preset("02") == "quick"  # one seed of the core is missing
    result_path(core[-1]).write_text(json.dumps(stored_result(core[-1])))
    assert experiments.committed_preset("02") == experiments.committed_preset("05") == "cpu"
    assert experiments.committed_preset("04") == experiments.committed_preset() == "quick"
    firsts = list(experiments.labelled_configs("04", "cpu").values())
    for config in firsts[:-1]:
        result_path(config).write_text(json.dumps(stored_result(config)))
    assert experiments.committed_preset("04") == "quick"  # one label's first seed is missing
    result_path(firsts[-1]).write_text(json.dumps(stored_result(firsts[-1])))
    assert experiments.committed_preset("04") == experiments.committed_preset() == "cpu"  # other seeds to come


def test_train_plan_prints_a_line_per_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = runner.train_plan("smoke", "02:conventional,02:relinear-sg", verbose=False)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(out) == len(lines) == 6  # two labels, three seeds each
    assert all("completed" in l and "trained in" in l for l in lines) and "02:relinear-sg#2" in lines[-1]
    runner.train_plan("smoke", "02:conventional", verbose=False)
    assert "stored" in capsys.readouterr().out


def test_train_plan_reports_each_runs_own_time(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    clock = [1000.0]

    def took_100_s(label, config, force, verbose):
        clock[0] += 100
        return {"status": "completed", "final_test_acc": 0.5, "device": "cpu"}, False
    monkeypatch.setattr(runner, "_locked_fit", took_100_s)
    monkeypatch.setattr(runner.time, "time", lambda: clock[0])
    runner.train_plan("smoke", "02:conventional", verbose=False)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("(trained in 100s, cpu)" in line for line in lines)


def test_train_plan_passes_over_a_run_whose_trained_start_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    conv = experiments.plan("smoke", "02:conventional")["02:conventional"]
    child = conv.replace(neuron="quadratic", init="conventional", init_from="same-recipe")
    monkeypatch.setattr(runner, "plan", lambda *a: {"child": child, "02:conventional": conv})
    out = runner.train_plan("smoke", verbose=False)
    lines = capsys.readouterr().out.strip().splitlines()
    assert list(out) == ["02:conventional"] and "waiting   for the trained weights of resnet8-conventional-" in lines[0]
    out = runner.train_plan("smoke", verbose=False)  # its parent is trained now: the run starts from it
    assert out["child"]["status"] == "completed" and "trained in" in capsys.readouterr().out.splitlines()[0]
    (tmp_path / "packed").mkdir()
    monkeypatch.chdir(tmp_path / "packed")  # side by side, the same: it waits, the rest trains
    out = runner.train_plan("smoke", verbose=False, pack=2)
    assert list(out) == ["02:conventional"] and "child                    waiting   for the trained weights" in \
        capsys.readouterr().out


def test_the_auto_preset_is_read_from_the_project_whatever_the_notebook_folder(monkeypatch):
    """A kernel starts in notebooks/ (JupyterLab, papermill --cwd): `preset = "auto"` must still find
    the stored results of the project, as `make figures` does when it names the preset it runs."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    expected = experiments.committed_preset("03")
    monkeypatch.chdir(root / "notebooks")
    ns = {"preset": "auto"}
    setup(ns, "03", preset=tuple(experiments.PRESETS))
    assert ns["preset"] == expected and Path.cwd() == root


def test_setup_checks_values_and_resolves_the_auto_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok = {"preset": "quick", "overrides": {}, "PRESETS": {}, "json": json}
    assert setup(dict(ok), "02", preset=("quick", "paper"), overrides=dict) == {"preset": "quick", "overrides": {}}
    with pytest.raises(ValueError, match="preset='huge' is not allowed"):
        setup(ok | {"preset": "huge"}, "02", preset=("quick",), overrides=dict)
    monkeypatch.setattr("qnets.notebooks.committed_preset", lambda nb: {"02": "cpu", "03": "quick"}[nb])
    ns = ok | {"preset": "auto"}  # the Parameters cell's default: what make figures shows
    assert setup(ns, "02", preset=("quick", "cpu"), overrides=dict)["preset"] == "cpu" and ns["preset"] == "cpu"
    assert setup(ok | {"preset": "auto"}, "03", preset=("quick", "cpu"), overrides=dict)["preset"] == "quick"


def test_setup_runs_again_after_the_notebook_defined_its_variables(tmp_path, monkeypatch):
    """Re-running the setup cell (or Run All twice) with the notebook's own variables defined."""
    monkeypatch.chdir(tmp_path)
    ns = {"preset": "quick", "overrides": {}, "train_missing": True}
    rules = dict(preset=("quick",), overrides=dict, train_missing=bool)
    first = setup(ns, "02", **rules)
    ns |= {"configs": {}, "results": {}, "params": first, "table": "..."}
    assert setup(ns, "02", **rules) == first


@pytest.mark.parametrize("colab, expected", [(False, True), (True, False)])
def test_train_missing_defaults_to_false_on_colab(tmp_path, monkeypatch, colab, expected):
    import sys
    import types
    monkeypatch.chdir(tmp_path)
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    ns = {"preset": "quick", "train_missing": None}
    assert setup(ns, "02", preset=("quick",), train_missing=bool)["train_missing"] is expected
    assert ns["train_missing"] is expected
    ns = {"preset": "quick", "train_missing": True}  # what the user sets is kept, on Colab too
    assert setup(ns, "02", preset=("quick",), train_missing=bool)["train_missing"] is True


@pytest.mark.parametrize("committed, expected", [("quick", True), ("cpu", False)])
def test_preset_auto_above_quick_reads_and_never_trains(monkeypatch, committed, expected):
    """preset auto reads the committed preset: above quick its runs still to come are its campaign's (hours
    each), so they are left out unless asked for; at quick (the fallback) missing runs train as before."""
    import sys
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr("qnets.notebooks.committed_preset", lambda nb: committed)
    ns = {"preset": "auto", "train_missing": None}
    assert setup(ns, "02", preset=("quick", "cpu"), train_missing=bool) == {"preset": committed,
                                                                           "train_missing": expected}
    ns = {"preset": "auto", "train_missing": True}
    assert setup(ns, "02", preset=("quick", "cpu"), train_missing=bool)["train_missing"] is True
    ns = {"preset": "cpu", "train_missing": None}  # a preset named by hand: its missing runs train
    assert setup(ns, "02", preset=("quick", "cpu"), train_missing=bool)["train_missing"] is True


@pytest.mark.slow
def test_table_figures_and_sweep_from_seeded_results(tmp_path):
    base = dict(depth=8, dataset="synthetic", n_train=200, n_test=100, epochs=1, batch_size=50,
                out_dir=str(tmp_path))
    configs = {"conventional": Config(neuron="conventional", **base),
               "gamma=0.0": Config(gamma_g=0.0, gamma_b=0.0, **base),
               "gamma=lr": Config(gamma_g=None, gamma_b=None, **base)}
    results = experiments.results(configs, verbose=False)
    assert [[r["config"]["seed"] for r in rs] for rs in results.values()] == [[0, 1, 2]] * 3
    lines = plots.table(results, baseline="conventional").splitlines()
    assert len(lines) == 6 and "conventional" in lines[2] and "[" in lines[3]  # a paired interval
    assert "paired by seed" in lines[5]
    accs = [100 * r["final_test_acc"] for r in results["gamma=lr"]]
    assert f"{sum(accs) / 3:.2f} ±" in lines[4] and all(f"{a:.2f}" in lines[4] for a in accs)
    assert plots.collapse_count(results) == "0 of 9 runs collapsed"
    import matplotlib
    matplotlib.use("Agg")
    ax = plots.sweep({k: v for k, v in results.items() if k.startswith("gamma")}, "gamma",
                     baseline=results["conventional"])
    # x: how far the terms moved (γ = 0: not at all, drawn at the left edge), each point named by its γ
    assert [t.get_text() for t in ax.texts] == ["0", "lr"]
    (x0, _), (x1, _) = (t.xy for t in ax.texts)
    from qnets.claims import RATIO_FLOOR, ratio
    assert x0 < RATIO_FLOOR and x1 == ratio(results["gamma=lr"]) > 0
    for draw in (plots.finals, plots.curves, plots.scatter):
        draw(results | {"naive": []}, ax=matplotlib.pyplot.subplots()[1])
    ax = plots.finals(results | {"naive": []}, ax=matplotlib.pyplot.subplots()[1])
    assert [t.get_text() for t in ax.texts] == ["not run yet"]  # a label still to come keeps its column
    assert plots.colour("naive") == plots.colour("naive") != plots.colour("conventional")
    assert "gamma_g=0.0, gamma_b=0.0" in plots.describe(configs) and "(the recipe)" in plots.describe(configs)
    assert "gamma_g=lr (no shrinking)" in plots.describe(configs)
    matplotlib.pyplot.close("all")


@pytest.mark.slow
def test_bench_cli_writes_a_report(tmp_path):
    # (the nocompile path: the fast path without compiling, which tests/test_train.py covers)
    p = subprocess.run([sys.executable, "-m", "qnets", "bench", "--depths", "8", "--neurons", "quadratic",
                        "--paths", "reference,nocompile", "--steps", "1", "--rounds", "2", "--warmup", "1",
                        "--batch-size", "32",
                        "--workers", "0", "--data", "synthetic", "--profile", "--profile-steps", "1",
                        "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / "cpu.json").read_text())
    rows = {r["path"]: r for r in report["rows"]}
    assert set(rows) == {"reference", "nocompile"} and rows["nocompile"]["speedup"] > 0
    fast = rows["nocompile"]
    assert fast["rounds"] == 2 and fast["fast_path"]["channels_last"]
    assert not fast["fast_path"]["compile"] and fast["fast_path"]["graphs_compiled"] == 0
    assert fast["images_per_s"] == pytest.approx(32_000 / fast["ms_per_step"])
    assert "2 interleaved rounds of 1 timed steps" in p.stdout
    # The profile accounts for the step by kind of work; convolutions dominate a ResNet step.
    prof = fast["profile"]
    assert "profile" not in rows["reference"] and prof["measured"] == "CPU operators"
    # (shares and busy/wall ratios depend on the machine's load, so only their form is checked)
    assert sum(k["share"] for k in prof["kinds"].values()) == pytest.approx(1.0)
    assert prof["kinds"]["convolution"]["share"] > 0 and prof["busy_ms_per_step"] > 0
    top = [t["ms_per_step"] for t in prof["top"]]
    assert top == sorted(top, reverse=True) and all(t["calls_per_step"] > 0 for t in prof["top"])
    assert prof["top"][0]["name"].startswith("aten::") and "resnet8-quadratic: fast path" in p.stdout
    assert fast["flops_per_image"] == rows["reference"]["flops_per_image"] > 1e8
    assert "resnet8-quadratic" in p.stdout and "x ref" in p.stdout


def test_bench_pack_times_runs_side_by_side_and_keeps_every_row(tmp_path):
    """`bench --pack` (what scripts/gpu-measure.sh runs on a card) end to end on the CPU, where the
    runs simply take turns: one row per K, written as measured, rendered as the README's table."""
    from qnets import packbench
    from qnets.__main__ import main
    argv = ["bench", "--pack", "1,2", "--pack-compile", "off", "--pack-lone", "off",
            "--depths", "8", "--neurons", "quadratic", "--data", "synthetic", "--steps", "1", "--warmup", "0",
            "--batch-size", "8", "--out", str(tmp_path)]
    assert main(argv) == 0
    report = json.loads((tmp_path / "cpu-packing.json").read_text())
    assert report["kind"] == "packing" and [r["k"] for r in report["rows"]] == [1, 2]
    assert all(r["images_per_s"] > 0 and r["mechanism"] == "streams" and not r["compile"] for r in report["rows"])
    table = packbench.markdown(report)
    assert table.count("| ResNet-8 quadratic | streams |") == 2
    assert main(argv[:2] + ["0,2"] + argv[3:]) == 2  # K = 0: one line, nothing measured


def test_bench_names_the_device_it_ran_on(monkeypatch):
    from qnets.timing import device_name
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert device_name(torch.device("cuda")) == "NVIDIA H200"
    assert device_name(torch.device("cpu")).startswith("cpu (") and "threads)" in device_name(torch.device("cpu"))


@pytest.mark.parametrize("rounds", [1, 3])
def test_bench_measure_takes_turns_and_reports_the_median_round(monkeypatch, rounds):
    """Several rounds interleave the paths (a drifting machine slows them alike) and each path's
    time per step is its median round; one round builds, times and frees one path at a time."""
    from qnets import timing
    events = []

    def fake(name, seconds):
        class Timed(timing._Timed):
            def __init__(self, *args):
                events.append(("build", name))
                self.rounds = iter(seconds)

            def train(self, n):
                events.append(("train", name, n))
                return n * next(self.rounds)

            def evaluate(self):
                events.append(("evaluate", name))
                return 0.5, 1000

        return Timed

    monkeypatch.setattr(timing, "TIMERS", {"reference": fake("reference", [9, 2, 4, 3]),
                                           "fast": fake("fast", [9, 1, 7, 2])})
    rows = timing.measure(20, "quadratic", ["reference", "fast"], None, torch.device("cpu"), None,
                         warmup=1, steps=2, rounds=rounds)
    trains = [e[1] for e in events if e[0] == "train"]
    if rounds == 1:
        assert events == [("build", "reference"), ("train", "reference", 1), ("train", "reference", 2),
                          ("evaluate", "reference"), ("build", "fast"), ("train", "fast", 1),
                          ("train", "fast", 2), ("evaluate", "fast")]
        assert rows["reference"]["ms_per_step"] == pytest.approx(2000) and rows["fast"]["ms_per_step"] == 1000
    else:
        assert trains == ["reference", "fast"] + ["reference", "fast"] * 3  # warm-ups, then turns
        assert rows["reference"]["ms_per_step"] == pytest.approx(3000)  # median of 2, 4, 3 s per step
        assert rows["fast"]["ms_per_step"] == pytest.approx(2000)  # median of 1, 7, 2
    assert rows["fast"]["eval_s"] == pytest.approx(5.0)  # 0.5 s per 1,000 images, scaled to 10,000


def test_flops_per_image_counts_three_convolutions_per_quadratic_layer():
    from qnets.timing import flops_per_image
    conv, quad, compact = (flops_per_image(8, n) for n in ("conventional", "quadratic", "compact"))
    # Stem and classifier are shared; every block convolution is tripled (doubled for compact).
    blocks = (quad - conv) / 2
    assert compact == pytest.approx(conv + blocks)
    # Conventional ResNet-8 forward: stem 3→16 plus blocks 16·16, 16→32·32 (stride 2), 32·32, ...
    macs = 32 * 32 * (3 * 16 * 9 + 2 * 16 * 16 * 9) + 16 * 16 * (16 * 32 * 9 + 32 * 32 * 9) \
        + 8 * 8 * (32 * 64 * 9 + 64 * 64 * 9) + 64 * 10
    assert conv == pytest.approx(3 * 2 * macs, rel=0.02)  # forward + backward ≈ 3 forwards


@pytest.mark.parametrize("name,kind", [
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "convolution"),
    ("sm90_xmma_wgrad_implicit_gemm_indexed_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "convolution"),
    ("void cudnn::bn_fw_tr_1C11_kernel_NCHW<__nv_bfloat16, float, int, 512, true, 1, true>", "batch norm"),
    ("triton_red_fused__native_batch_norm_legit_functional_relu_3", "batch norm"),
    ("void at::native::multi_tensor_apply_kernel<at::native::FusedSgdMathFunctor<float, 2>>", "optimizer"),
    ("triton_poi_fused_add_addcmul_mul_7", "compiled element-wise"),
    ("Memcpy DtoD (Device -> Device)", "memory copy"),
    ("aten::mkldnn_convolution", "convolution"), ("aten::native_batch_norm_backward", "batch norm"),
    ("aten::mul", "other element-wise and rest")])
def test_profile_kinds(name, kind):
    from qnets.timing import kind_of
    assert kind_of(name) == kind


def test_figures_are_written_only_where_asked(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from qnets.notebooks import save_figure
    monkeypatch.chdir(tmp_path)
    fig = plt.figure()
    assert save_figure(fig, "02_x", None) is None and not list(tmp_path.rglob("*.png"))  # exploring: nothing
    assert save_figure(fig, "02_x", tmp_path / "staging") == tmp_path / "staging" / "02_x.png"
    assert sorted(p.name for p in (tmp_path / "staging").iterdir()) == ["02_x.pdf", "02_x.png"]
    plt.close(fig)


def _narrow_sweep_like():
    """A figure built like notebook 05's (three log panels sharing an axis, annotated points, one
    legend outside below, a heading) but narrower: saving moves this one's constrained layout."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(9, 5), layout="constrained", sharey=True)
    for i, ax in enumerate(axes):
        ax.plot([1e-4, 1e-2, 1], [78, 82, 81], "o-", label=f"series {i}")
        ax.annotate("0.01", (1e-2, 82), textcoords="offset points", xytext=(5, 5), fontsize=7)
        ax.set(xscale="log", title="γ_g = γ_b", xlabel="max(‖w_g‖, ‖w_b‖)/‖w_r‖ at the end (median)")
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("preset cpu · ResNet-8 · 3 seeds per run · bars and bands: 95% CI of the mean over seeds",
                 fontsize=10)
    return fig


@pytest.mark.slow  # draws each figure three times
def test_a_notebook_renders_a_figure_alike_whether_or_not_it_saves_it(tmp_path):
    """Saving a figure can move its constrained layout by fractions of a pixel before the notebook
    shows it: a JupyterLab re-run (which saves nothing) showed notebook 05's sweep with its text
    shifted from what make figures committed, until `save_figure` rendered it the same way either way.
    Here notebook 05's figure from the stored cpu runs, and a narrower one built like it whose layout
    saving does move (so that the test has teeth whatever the stored runs draw), each as a notebook
    shows it (its inline PNG)."""
    import io

    import matplotlib.pyplot as plt

    from qnets.notebooks import save_figure
    configs = experiments.labelled_configs("05", "cpu")
    results = experiments.results(configs, train_missing=False, verbose=False)

    def shown(fig):
        out = io.BytesIO()
        fig.canvas.print_figure(out, format="png", bbox_inches="tight", dpi=72)
        plt.close(fig)
        return out.getvalue()

    def views(make):
        untouched, explored, published = shown(make()), make(), make()
        assert save_figure(explored, "05_x", None) is None
        save_figure(published, "05_x", tmp_path)
        return untouched, shown(explored), shown(published)
    _, explored, published = views(lambda: plots.sweep_figure(results, "cpu"))
    assert explored == published
    untouched, explored, published = views(_narrow_sweep_like)
    assert explored == published != untouched  # != : saving does move this one


def test_make_figures_publishes_a_notebooks_figures_only_after_it_succeeds(tmp_path, monkeypatch):
    """`notebooks --execute` with a fake papermill: a notebook that fails leaves figures/ as it was;
    one that succeeds replaces its figures (stale ones go); another preset than the committed one
    leaves figures/ alone."""
    from qnets import notebooks
    root = tmp_path / "repo"
    (root / "qnets").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    figures = root / "figures"
    figures.mkdir()
    for name in ("02_old.png", "02_curves.png", "03_keep.png"):
        (figures / name).write_text("committed")
    nb = root / "notebooks" / "02_demo.ipynb"
    nb.parent.mkdir()
    nb.write_text("{}")
    monkeypatch.chdir(root)
    outcome = {}

    def fake_execute(notebook, preset, output, extra=None):
        staging = Path(extra["figures"])
        preset = "gpu-short" if preset == "auto" else preset  # the Parameters cell resolves auto
        (staging / "02_curves.png").write_text(f"new {preset}")
        Path(output).write_text('{"half": "written"}')  # papermill writes as it goes
        if outcome.get("fail"):
            raise RuntimeError("cell 7 failed")
        Path(output).write_text(f'{{"ran": "{preset}"}}')
    monkeypatch.setattr(notebooks, "execute", fake_execute)
    monkeypatch.setattr(notebooks, "strip_volatile", lambda path: None)
    monkeypatch.setattr("qnets.notebooks.committed_preset", lambda nb=None: "gpu-short")
    args = lambda preset: argparse.Namespace(execute=True, check=False, preset=preset, notebooks=[str(nb)])  # noqa

    outcome["fail"] = True
    with pytest.raises(RuntimeError):
        notebooks.main(args("auto"))
    assert {p.name: p.read_text() for p in figures.iterdir()} == {
        "02_old.png": "committed", "02_curves.png": "committed", "03_keep.png": "committed"}
    # a failed (or killed) run leaves the notebook as it was and nothing beside it for make figures
    assert [p.name for p in nb.parent.iterdir()] == ["02_demo.ipynb"] and nb.read_text() == "{}"
    outcome["fail"] = False
    notebooks.main(args("quick"))  # not the committed preset: figures/ untouched
    assert (figures / "02_curves.png").read_text() == "committed"
    notebooks.main(args("auto"))
    assert {p.name: p.read_text() for p in figures.iterdir()} == {"02_curves.png": "new gpu-short",
                                                                  "03_keep.png": "committed"}
    assert nb.read_text() == '{"ran": "gpu-short"}' and [p.name for p in nb.parent.iterdir()] == ["02_demo.ipynb"]


def test_schedule_steps_where_the_readme_says():
    from qnets.train import lr_factor
    short = Config(epochs=50)
    steps = [e for e in range(1, 50) if lr_factor(short, e * 10, 10) < lr_factor(short, (e - 1) * 10, 10)]
    assert steps == [25, 38]
    assert "steps at 25/38" in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_bench_check_runs_on_synthetic_data_at_the_batch_size_asked(tmp_path):
    p = subprocess.run([sys.executable, "-m", "qnets", "bench", "--paths", "", "--check", "--check-epochs", "1",
                        "--check-train", "200", "--check-test", "200", "--batch-size", "50", "--workers", "0",
                        "--data", "synthetic", "--depths", "8",
                        "--neurons", "quadratic", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                       timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    check = json.loads((tmp_path / "cpu.json").read_text())["check"]
    assert check["n_train"] == 200 and check["n_test"] == 200 and check["batch_size"] == 50
    assert 0 <= check["fast"] <= 1 and 0 <= check["reference"] <= 1


def test_tables_keep_their_columns_for_long_labels():
    """The cpu preset's labels run to 26 characters: the label column widens, every row stays aligned."""
    configs = experiments.labelled_configs("02", "cpu")
    results = {label: [stored_result(c, 0.7)] for label, c in configs.items() if label != "naive-lr/10"}
    results["naive-lr/10"] = []
    lines = plots.table(results, baseline="conventional").splitlines()
    at = lines[0].index("network")
    rows = [line for line in lines[2:] if "ResNet-8" in line]
    assert len(rows) == len(configs) - 1 and all(line.index("ResNet-8") == at for line in rows)
    assert any(line.startswith("naive-lr/10 ") and line.endswith("(no results)") for line in lines)
    described = plots.describe(configs).splitlines()[1:]
    starts = {line.index("(the recipe)") if "(the recipe)" in line else line.index("neuron=") if "neuron=" in line
              else line.index("init=") for line in described}
    assert len(starts) == 1  # every label's differences start in one column
