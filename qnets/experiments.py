"""The paper's experiments as lists of `Config`s, one list per notebook, at each preset.

A notebook asks `labelled_configs("02", preset)` for its configs and trains them through
`qnets.train.fit`, which returns stored results instead of retraining. `make results` trains the
same lists without notebooks (`qnets.runner.train_plan`), e.g. on a GPU machine.
"""
from __future__ import annotations

import json
from statistics import median_high
from dataclasses import dataclass, field
from pathlib import Path

from .data import CIFAR10_TEST_IMAGES, CIFAR10_TRAIN_IMAGES
from .config import SAME_RECIPE
from .layers import DESIGNS
from .models import NEURONS
from .train import Config, capabilities, evaluates, fit, load_result, read_result, resolve_device

__all__ = ["PRESETS", "PRESET_HELP", "NOTEBOOKS", "labelled_configs", "seeds", "committed_preset", "plan", "results"]

# Every preset is the authors' recipe (SGD, lr 0.1, momentum 0.9, weight decay 1e-4, batch 128,
# crop + flip) on fewer images, epochs and layers; "deep" is the depth of notebook 04.
PRESETS: dict[str, dict] = {
    "smoke": {"base": dict(dataset="synthetic", n_train=100, n_test=50, epochs=1, batch_size=50, depth=8,
                           out_dir="results/smoke"), "deep": 8},
    "quick": {"base": dict(n_train=3000, n_test=None, epochs=6, depth=8, schedule="cosine", eval_every=2), "deep": 14},
    # All of CIFAR-10 on 2 CPU cores: the recipe compressed to 15 epochs (1 of warm-up, then cosine to 0),
    # its length fixed by a calibration run of the conventional ResNet-8 (results/runs/, 79.13%).
    "cpu": {"base": dict(epochs=15, depth=8, schedule="cosine", warmup_epochs=1.0, eval_every=5), "deep": 20},
    "gpu-short": {"base": dict(epochs=50, depth=20, checkpoint_every=10), "deep": 56},
    "paper": {"base": dict(epochs=200, depth=20, checkpoint_every=10), "deep": 56},
}
PRESET_HELP = {
    "smoke": "synthetic data, 100 images, 1 epoch, ResNet-8: minutes at most per notebook on a CPU (CI)",
    "quick": "3,000 CIFAR-10 training images, 6 epochs (cosine), scored on all 10,000 test images, ResNet-8/14, "
             "3 seeds: 60 runs on 2 CPU cores; shows trends, not the paper's numbers",
    "cpu": "all of CIFAR-10, 15 epochs (1 warm-up, then cosine), ResNet-8 (notebook 04: ResNet-20), rates sized "
           "to the run, 3 seeds: about 25 minutes a quadratic ResNet-8 run on 2 CPU cores",
    "gpu-short": "full CIFAR-10, the authors' recipe shortened to 50 epochs (steps at 25/38), ResNet-20/56, GPU",
    "paper": "full CIFAR-10, the authors' recipe: 200 epochs, batch 128, lr x0.1 at 100/150, ResNet-20/56, GPU",
}
ORDER = ("paper", "gpu-short", "cpu", "quick", "smoke")  # largest first
CPU_PRESETS = ("smoke", "quick", "cpu")  # presets whose runs train on a CPU: status counts CPU-hours
NOTEBOOKS = ("01", "02", "03", "04", "05", "06")

SEEDS = 3  # every experiment label runs with seeds 0, 1, 2 at every preset

# Each preset's plan: groups of (notebook, label[, seeds]), in priority order; within a group every
# label's first seed comes before any label's second (seeds: which of them, default all). A preset
# without a plan of its own follows the paper's.
PLANS = {
    "paper": [
        # 1. ResNet-20: conventional, quadratic + ReLinear (γ = 1e-5), compact + ReLinear, naive
        [("02", "conventional"), ("02", "relinear-sg"), ("03", "compact"), ("02", "naive")],
        # 2. ResNet-56: conventional, quadratic + ReLinear (γ = 1e-3), + ReZero, compact (ours, the authors')
        [("04", "conventional"), ("04", "relinear"), ("04", "relinear-rezero"), ("04", "compact"),
         ("03", "compact-authors")],
        # 3. the ResNet-20 shrunken-weight runs, then the notebook-05 sweep
        [("02", "relinear-sw-l2"), ("02", "relinear-sw-l1"), ("05", "*")],
    ],
    "cpu": [
        # 1. the calibration pair, then the ResNet-8 core of notebooks 02 and 03
        [("02", "conventional"), ("02", "relinear-sg"), ("02", "gamma=0"), ("02", "naive"), ("03", "compact"),
         ("02", "relinear-sw-l2"), ("02", "relinear-sw-l1"), ("02", "gamma=lr")],
        # 2. the naive network at a tenth of the base rate: smaller steps everywhere, against ReLinear's
        [("02", "naive-lr/10")],
        # 3. from the trained conventional networks of group 1: ReLinear against the same network trained on
        [("02", "relinear-from-conventional"), ("02", "conventional-trained-on")],
        # 4. the notebook-05 sweep, one seed of every value first
        [("05", "*")],
        # 5. notebook 06: one seed of every quadratic neuron design the ResNets take
        [("06", "*", range(1))],
        # 6. the depth pilot: ResNet-20 conventional and ReLinear, each with and without ReZero, and naive
        # (with conventional and ReLinear: notebook 02's trio at depth)
        [("04", "*")],
        # 7. the other seeds of notebook 06
        [("06", "*", range(1, 3))],
    ],
}

GAMMA = 1e-5  # the authors' shrunken rate for the full quadratic ResNet-20
GAMMA_DEEP = 1e-3  # and for (ReZero) ResNet-56
SWEEPS = {  # notebook 05: each regulariser alone (None = the base learning rate: no shrinking)
    "gamma": (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, None),
    "alpha": (1e-4, 1e-3, 1e-2, 1e-1),
    "beta": (1e-6, 1e-5, 1e-4, 1e-3),
}
QUICK_SWEEPS = {"gamma": (0.0, 1e-5, 1e-4, 1e-3, 1e-2, None), "alpha": SWEEPS["alpha"], "beta": SWEEPS["beta"]}


@dataclass(frozen=True)
class Rates:
    """The ReLinear rates and penalties of a preset: gamma (shrunken gradients), gamma_deep (notebook
    04's deeper networks), alpha and beta (notebook 02's shrunken-weight runs) and the notebook-05 sweeps."""
    gamma: float = GAMMA
    gamma_deep: float = GAMMA_DEEP
    alpha: float = 1e-3
    beta: float = 1e-5
    sweeps: dict = field(default_factory=lambda: SWEEPS)


# Rates are not portable across run lengths: the authors' gamma = 1e-5 was set for 200 epochs (about
# 41,000 units of accumulated learning rate); the cpu preset accumulates about 310. There gamma = 1e-3
# moved ||w_g||/||w_r|| to 0.045 (the calibration run), and the grids are spaced so the measured ratio
# runs from about 1e-3 (gamma = 1e-4, alpha = 1, beta = 1e-2) to the unconstrained network (gamma = lr,
# alpha = 1e-3, beta = 1e-5); the core's shrunken-weight runs take the middle of theirs.
RATES = {
    "smoke": Rates(sweeps={"gamma": (0.0, GAMMA, None), "alpha": (1e-4, 1e-1), "beta": (1e-6, 1e-3)}),  # fewer values
    "quick": Rates(sweeps=QUICK_SWEEPS),
    "cpu": Rates(gamma=1e-3, gamma_deep=1e-3, alpha=1e-1, beta=1e-3,
                 sweeps={"gamma": (0.0, 1e-4, 1e-3, 1e-2, None), "alpha": (1e-3, 1e-2, 1e-1, 1.0),
                         "beta": (1e-5, 1e-4, 1e-3, 1e-2)}),
    "gpu-short": Rates(),
    "paper": Rates(),
}


CAVEATS = {
    "smoke": "Preset smoke: synthetic images, one epoch. It checks that the code runs and says nothing about the "
             "paper's claims.",
    "quick": "Preset quick: small ResNets on a subset of CIFAR-10 for a few epochs on a CPU. Verdicts here are about "
             "these small, short runs; they show trends, not the paper's numbers, and a claim not resolved here may "
             "be resolved at the paper's recipe.",
    "cpu": "Preset cpu: all of CIFAR-10 for 15 epochs on a CPU, ResNet-8 (notebook 04: ResNet-20), with the rates "
           "sized to this length. Verdicts are about these networks and this schedule, not the paper's 200 epochs; the "
           "CIFAR-10 copy used for the committed results is JPEG-compressed, which costs about 3 points.",
    "gpu-short": "Preset gpu-short: the authors' recipe cut to 50 of its 200 epochs; accuracies sit below the "
                 "200-epoch ones.",
    "paper": "Preset paper: the authors' recipe (200 epochs). The CIFAR-10 copy used for the committed results is "
             "JPEG-compressed, which costs about 3 points (87.7-88.1% for the conventional ResNet-20 late in this "
             "recipe, against 91.25% published): compare the networks with each other.",
}


def caveat(preset: str) -> str:
    """What results at `preset` cannot say (printed at the end of each notebook)."""
    _check_preset(preset)
    return CAVEATS[preset]


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {tuple(PRESETS)}")


def _notebook02(preset: str, base: Config, quad: Config, conventional: Config, naive: Config,
                rates: Rates) -> dict[str, Config]:
    """Notebook 02's labels: conventional, naive, ReLinear (shrunken gradients, shrunken weights) and
    the controls of the quick and cpu presets."""
    out = {
        "conventional": conventional,
        "naive": naive,
        "relinear-sg": quad,
        "relinear-sw-l2": quad.replace(gamma_g=None, gamma_b=None, alpha_g=rates.alpha, alpha_b=rates.alpha),
        "relinear-sw-l1": quad.replace(gamma_g=None, gamma_b=None, beta_g=rates.beta, beta_b=rates.beta),
    }
    if preset == "cpu":  # the paired control: the quadratic terms frozen at their start (the conventional function)
        out = {"conventional": conventional, "gamma=0": quad.replace(gamma_g=0.0, gamma_b=0.0)} | out
    if preset in ("quick", "cpu"):  # ReLinear's start with the quadratic terms at the full rate, no penalty:
        # what the penalties must hold back (the same run as notebook 05's gamma=lr)
        out["gamma=lr"] = quad.replace(gamma_g=None, gamma_b=None)
    if preset == "cpu":  # the naive network with every step smaller, not only the quadratic terms' steps
        out["naive-lr/10"] = naive.replace(lr=base.lr / 10)
        # the paper's other start: the trained conventional network of the same seed made quadratic, against
        # that network trained on for as many epochs (what the quadratic terms add beyond more training)
        trained = dict(init="conventional", init_from=SAME_RECIPE)
        out |= {"relinear-from-conventional": quad.replace(**trained),
                "conventional-trained-on": conventional.replace(**trained)}
    return out


def labelled_configs(notebook: str, preset: str, **overrides) -> dict[str, Config]:
    """Labelled configs of one notebook's experiment at `preset`; `overrides` replace any
    Config field in every run (e.g. epochs=2)."""
    _check_preset(preset)
    known = set(Config.__dataclass_fields__)
    if set(overrides) - known:
        raise ValueError(f"unknown Config field(s) in overrides: {sorted(set(overrides) - known)}")
    notebook = str(notebook)[:2]
    p, rates = PRESETS[preset], RATES[preset]
    base = Config(**(p["base"] | overrides))
    quad = base.replace(neuron="quadratic", gamma_g=rates.gamma, gamma_b=rates.gamma)
    conventional = base.replace(neuron="conventional", gamma_g=None, gamma_b=None)
    naive = quad.replace(init="naive", gamma_g=None, gamma_b=None)  # random g and b, at the full rate
    if notebook == "01":
        return {}  # notebook 01 trains small MLPs, stored apart: qnets.expressivity
    if notebook == "02":
        return _notebook02(preset, base, quad, conventional, naive, rates)
    if notebook == "03":
        out = {"conventional": conventional, "quadratic": quad, "compact": quad.replace(neuron="compact")}
        if preset == "paper":  # the authors' compact script as it runs: ResNet-56, 99 epochs, w_b frozen at 0,
            # and milestones (100, 150) never reached: a constant rate
            out["compact-authors"] = quad.replace(neuron="compact", depth=overrides.get("depth", 56), epochs=99,
                                                  schedule="constant", gamma_b=0.0)
        return out
    if notebook == "04":
        deep = dict(depth=overrides.get("depth", p["deep"]))
        out = {
            "conventional": conventional.replace(**deep),
            "relinear": quad.replace(gamma_g=rates.gamma_deep, gamma_b=rates.gamma_deep, **deep),
            "relinear-rezero": quad.replace(gamma_g=rates.gamma_deep, gamma_b=rates.gamma_deep, rezero=True, **deep),
        }
        if preset == "cpu":  # ReZero on the conventional network too: what ReZero does apart from the quadratic
            # terms; and the naive network, which with conventional and relinear makes notebook 02's trio at depth
            out = {"conventional": out["conventional"], "conventional-rezero": out["conventional"].replace(rezero=True),
                   "relinear": out["relinear"], "relinear-rezero": out["relinear-rezero"],
                   "naive": naive.replace(**deep)}
        if preset == "paper":  # the compact ResNet-56 with ReLinear, beside the authors' configuration (03)
            out["compact"] = quad.replace(neuron="compact", gamma_g=rates.gamma_deep, gamma_b=rates.gamma_deep, **deep)
        return out
    if notebook == "05":
        sweeps = rates.sweeps
        out = {"conventional": conventional}
        for g in sweeps["gamma"]:
            out[f"gamma={g if g is not None else 'lr'}"] = quad.replace(gamma_g=g, gamma_b=g)
        for a in sweeps["alpha"]:
            out[f"alpha={a}"] = quad.replace(gamma_g=None, gamma_b=None, alpha_g=a, alpha_b=a)
        for b in sweeps["beta"]:
            out[f"beta={b}"] = quad.replace(gamma_g=None, gamma_b=None, beta_g=b, beta_b=b)
        return out
    if notebook == "06":  # every quadratic neuron design the ResNets take, with ReLinear where it can start
        out = {"conventional": conventional, "quadratic": quad}
        for design in NEURONS[1:]:
            out.setdefault(design, quad.replace(neuron=design) if DESIGNS[design]["start"]
                           else naive.replace(neuron=design))
        return out
    raise ValueError(f"unknown notebook {notebook!r}; choose one of {NOTEBOOKS}")


def seeds(config: Config, n: int = SEEDS) -> list[Config]:
    """The `n` seeds of one experiment label: `config` with seeds config.seed, +1, ..., +n-1."""
    return [config.replace(seed=config.seed + i) for i in range(n)]


def results(configs: dict[str, Config], train_missing: bool = True, verbose: bool = True,
            n_seeds: int = SEEDS) -> dict[str, list[dict]]:
    """label -> the results of its `n_seeds` seeds, in seed order: stored results are read as they
    are (no data needed: each says which data it came from), missing ones trained (or left out
    when not `train_missing`). `fit` itself reuses a stored result only for the same data."""
    out, missing = {}, []
    for label, config in configs.items():
        out[label] = []
        for c in seeds(config, n_seeds):
            stored = load_result(c)
            if stored is not None:
                out[label].append(stored)
            elif train_missing:
                out[label].append(fit(c, verbose=verbose, label=f"{label} seed {c.seed}"))
            else:
                missing.append(c)
    if missing and verbose:
        print(missing_message(missing, missing[0].device))
    return out


def shared(result: dict) -> int:
    """How many runs shared the device with the run of `result` (itself included)."""
    return (result.get("together") or result.get("pack") or {}).get("k") or 1


def _run_pace(result: dict) -> tuple[float, float | None] | None:
    """(seconds per training image, seconds per test image scored) of a stored run, from its
    epochs after the first (which holds compilation): training from each epoch's training time,
    testing from what the epochs that scored the test set took beyond their training. The fastest
    epoch of each: other work on the machine only ever slows an epoch, so the fastest is the run's
    cost on a device of its own (a window's runs shared the CPU with other work at times and took
    up to twice as long then)."""
    history = result.get("history", [])[1:]
    train = [1 / h["images_per_s"] for h in history if h.get("images_per_s")]
    if not train:
        return None
    n_test = result["config"].get("n_test") or CIFAR10_TEST_IMAGES
    test = [(h["epoch_time"] - h["train_time"]) / n_test for h in history
            if h.get("test_acc") is not None and h.get("epoch_time") and h.get("train_time")]
    return min(train), min(test) if test else None


def pace(on_gpu: bool, folder: str | Path = "results/runs") -> dict[tuple, tuple[float, float]]:
    """(seconds per training image, seconds per test image scored) of each network (depth, neuron)
    on a GPU, or with `on_gpu` False a CPU: the medians over the stored runs on that kind of device
    (a run trained beside k − 1 others counts 1/k), else the lone fast path of the bench reports
    beside `folder` (results/bench beside results/runs). Kept apart, the two price a run of any
    size: a run on 3,000 images that scores all 10,000 test images every other epoch spends most
    of its time testing, a run on all 50,000 little."""
    measured: dict[tuple, list[tuple[float, float | None]]] = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            r = read_result(path)
        except ValueError:
            continue
        run = _run_pace(r)
        if run is not None and (r.get("device", "cpu") != "cpu") == on_gpu:
            k = shared(r)
            measured.setdefault((r["config"]["depth"], r["config"]["neuron"]), []).append(
                (run[0] / k, None if run[1] is None else run[1] / k))
    rate = {}
    for key, runs in measured.items():
        tests = [t for _, t in runs if t is not None]
        rate[key] = (median_high([t for t, _ in runs]), median_high(tests) if tests else 0.0)
    for path in sorted((Path(folder).parent / "bench").glob("*.json")):
        try:
            report = json.loads(path.read_text())
            rows = [row for row in report["rows"] if row.get("path") == "fast" and row.get("ms_per_step")
                    and row.get("eval_s") is not None]
            if report.get("kind") != "packing" and str(report.get("device", "")).startswith("cpu") != on_gpu:
                for row in rows:
                    rate.setdefault((int(row["depth"]), str(row["neuron"])), (
                        float(row["ms_per_step"]) / 1000 / int(row["batch_size"]),
                        float(row["eval_s"]) / CIFAR10_TEST_IMAGES))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError):
            continue  # a bench report that is not one is no estimate
    return rate


def training_cost(configs: list[Config], on_gpu: bool, folder: str | Path = "results/runs",
                  epochs_left: list[int] | None = None) -> tuple[float, str] | None:
    """Seconds to train `configs` (or the `epochs_left` of each, the last ones) on a CPU or a GPU at
    the `pace` measured on that kind of device: the same network where one was timed, else the
    nearest, scaled by depth; its training images every epoch and its test images in each epoch that
    scores them. Returns (seconds, what the estimate rests on), or None when nothing was timed."""
    rate = pace(on_gpu, folder)
    if not rate:
        return None
    total, basis = 0.0, {}
    for c, epochs in zip(configs, epochs_left or [c.epochs for c in configs]):
        near = min(rate, key=lambda k: (k[1] != c.neuron, abs(k[0] - c.depth)))  # the same network, else scaled
        basis.setdefault(f"resnet{near[0]}-{near[1]}", set()).add(f"resnet{c.depth}-{c.neuron}")
        train_s, test_s = rate[near]
        scored = sum(evaluates(c, e) for e in range(c.epochs - epochs, c.epochs))
        total += c.depth / near[0] * (train_s * (c.n_train or CIFAR10_TRAIN_IMAGES) * epochs
                                      + test_s * (c.n_test or CIFAR10_TEST_IMAGES) * scored)
    timed = sorted(n for n, nets in basis.items() if n in nets)
    scaled = [f"{', '.join(sorted(nets - {n}))} scaled from {n}" for n, nets in sorted(basis.items()) if nets - {n}]
    parts = ([", ".join(timed)] if timed else []) + scaled
    return total, f"timed on a {'GPU' if on_gpu else 'CPU'}: {'; '.join(parts)}"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} hours" if seconds >= 5400 else f"{max(seconds / 60, 1):.0f} minutes"


def missing_message(missing: list[Config], device: str = "auto") -> str:
    """What a notebook says when runs are missing and not trained: how many, and what training them
    would cost on the runtime attached."""
    caps = capabilities(resolve_device(device))
    cost = training_cost(missing, caps["cuda"], Path(missing[0].out_dir) / "runs")
    where = caps["device"]
    slower = "; older or smaller cards are slower" if caps["cuda"] else ""
    est = (f"about {_duration(cost[0])} on this {where} ({cost[1]}{slower})"
           if cost else f"an unknown time on this {where} (no comparable run is stored)")
    return (f"{len(missing)} run(s) of this preset are not in results/ and were left out; training them would take "
            f"{est}. Set train_missing = True in the Parameters cell to train them.")


def committed_preset(notebook: str | None = None) -> str:
    """The largest preset at which `notebook` (every notebook when None) is read from stored results:
    every seed of its runs stored or, at a preset with a plan of its own (`PLANS`), every seed of
    those of its runs in the plan's first group, its core, and for a notebook with no run in the core
    the first seed of each of its runs (the plan trains one seed of every run first; the runs still
    to come are then left out, and the notebook says so); "quick" when there is none (its missing
    runs are then trained)."""
    books = NOTEBOOKS if notebook is None else (str(notebook)[:2],)
    for preset in ORDER[:-1]:
        core, needed = set(_core(preset)), []
        for firsts in (set(labelled_configs(nb, preset).values()) for nb in books):
            runs = {s for c in firsts for s in seeds(c)}
            if runs:
                needed.append((runs & core) or (firsts if core else runs))
        if needed and all(load_result(c) is not None for runs in needed for c in runs):
            return preset
    return "quick"


def _core(preset: str) -> list[Config]:
    """Every seed of the runs in the first group of `preset`'s own plan (none without one)."""
    runs = {nb: labelled_configs(nb, preset) for nb in NOTEBOOKS[1:]}
    return [s for nb, label in PLANS.get(preset, [[]])[0] if label in runs[nb] for s in seeds(runs[nb][label])]


def plan(preset: str, selection: str = "all", n_seeds: int = SEEDS) -> dict[str, Config]:
    """The configs named by `selection`: "all", or comma-separated notebook numbers ("02,05")
    and/or labels ("02:naive"), each with its seeds (keys "02:naive", "02:naive#1", ...),
    deduplicated by config, in order: seed 0 of every label first, then seed 1, ..."""
    _check_preset(preset)
    chosen, seen = {}, set()
    items = [s.strip() for s in str(selection).split(",") if s.strip()]
    if not items:
        raise ValueError(f"no runs named in {selection!r}: give notebook numbers (02,05), labels (02:naive) or all")
    picked = []
    for item in items:
        nb, _, label = item.partition(":")
        books = NOTEBOOKS if nb == "all" else (nb[:2],)
        if nb != "all" and nb[:2] not in NOTEBOOKS:
            raise ValueError(f"no notebook {nb!r}; name notebooks {NOTEBOOKS[1]}-{NOTEBOOKS[-1]} "
                             "(or labels such as 02:naive)")
        if nb[:2] == "01":
            raise ValueError("notebook 01 trains no CIFAR runs (its small networks train in the notebook, "
                             f"python -m qnets notebooks --execute 01); name notebooks {NOTEBOOKS[1]}-{NOTEBOOKS[-1]}")
        for book in books:
            labelled = labelled_configs(book, preset)
            if label and label not in labelled:
                raise ValueError(f"notebook {book} has no run {label!r}; its runs: {list(labelled)}")
            picked += [(f"{book}:{name}", config) for name, config in labelled.items() if not label or name == label]
    for i in range(n_seeds):  # every label's first seed before any label's second
        for key, config in picked:
            c = seeds(config, n_seeds)[i]
            if c not in seen:
                seen.add(c)
                chosen[key if i == 0 else f"{key}#{i}"] = c
    return chosen
