"""The paper's experiments as lists of `Config`s, one list per notebook, at each preset.

A notebook asks `labelled_configs("02", preset)` for its configs and trains them through
`qnets.train.fit`, which returns stored results instead of retraining. `make results` trains the
same lists without notebooks (`train_plan`), e.g. on a GPU machine.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .data import CIFAR10_TRAIN_IMAGES
from . import locks
from .locks import RunBusy
from .streams import fit_together
from .train import Config, epoch_seconds, fit, load_result, lock_path, resolve_device, result_path, run_name
from .utils import fill_blocks

__all__ = ["PRESETS", "PRESET_HELP", "NOTEBOOKS", "labelled_configs", "committed_preset", "train_plan", "results"]

# Every preset is the authors' recipe (SGD, lr 0.1, momentum 0.9, weight decay 1e-4, batch 128,
# crop + flip) on fewer images, epochs and layers; "deep" is the depth of notebook 04.
PRESETS: dict[str, dict] = {
    "smoke": {"base": dict(dataset="synthetic", n_train=200, n_test=100, epochs=1, batch_size=50, depth=8,
                           out_dir="results/smoke"), "deep": 14},
    "quick": {"base": dict(n_train=3000, n_test=None, epochs=6, depth=8, schedule="cosine", eval_every=2), "deep": 14},
    # All of CIFAR-10 on 2 CPU cores: the recipe compressed to 15 epochs (1 of warm-up, then cosine to 0),
    # its length fixed by a calibration run of the conventional ResNet-8 (results/runs/, 79.13%).
    "cpu": {"base": dict(epochs=15, depth=8, schedule="cosine", warmup_epochs=1.0, eval_every=5), "deep": 20},
    "gpu-short": {"base": dict(epochs=50, depth=20, checkpoint_every=10), "deep": 56},
    "paper": {"base": dict(epochs=200, depth=20, checkpoint_every=10), "deep": 56},
}
PRESET_HELP = {
    "smoke": "synthetic data, 200 images, 1 epoch, ResNet-8: seconds per notebook on a CPU (CI)",
    "quick": "3,000 CIFAR-10 training images, 6 epochs (cosine), scored on all 10,000 test images, ResNet-8/14, "
             "3 seeds: 60 runs on 2 CPU cores; shows trends, not the paper's numbers",
    "cpu": "all of CIFAR-10, 15 epochs (1 warm-up, then cosine), ResNet-8 (notebook 04: ResNet-20), rates sized "
           "to the run, 3 seeds: about 45 minutes a quadratic run on 2 CPU cores",
    "gpu-short": "full CIFAR-10, the authors' recipe shortened to 50 epochs (steps at 25/38), ResNet-20/56, GPU",
    "paper": "full CIFAR-10, the authors' recipe: 200 epochs, batch 128, lr x0.1 at 100/150, ResNet-20/56, GPU",
}
ORDER = ("paper", "gpu-short", "cpu", "quick", "smoke")  # largest first
NOTEBOOKS = ("01", "02", "03", "04", "05")

SEEDS = 3  # every experiment label runs with seeds 0, 1, 2 at every preset
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
    "smoke": Rates(sweeps=QUICK_SWEEPS),
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
    if notebook == "01":
        return {}  # notebook 01 trains small MLPs, stored apart: qnets.expressivity
    if notebook == "02":
        out = {
            "conventional": conventional,
            "naive": quad.replace(init="naive", gamma_g=None, gamma_b=None),
            "relinear-sg": quad,
            "relinear-sw-l2": quad.replace(gamma_g=None, gamma_b=None, alpha_g=rates.alpha, alpha_b=rates.alpha),
            "relinear-sw-l1": quad.replace(gamma_g=None, gamma_b=None, beta_g=rates.beta, beta_b=rates.beta),
        }
        if preset == "cpu":  # the paired control: the quadratic terms frozen at their start (the conventional function)
            out = {"conventional": conventional, "gamma=0": quad.replace(gamma_g=0.0, gamma_b=0.0)} | out
        if preset in ("quick", "cpu"):  # ReLinear's start with the quadratic terms at the full rate, no penalty:
            # what the penalties must hold back (the same run as notebook 05's gamma=lr)
            out["gamma=lr"] = quad.replace(gamma_g=None, gamma_b=None)
        return out
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
        if preset == "cpu":  # ReZero on the conventional network too: what ReZero does apart from the quadratic terms
            out = {"conventional": out["conventional"], "conventional-rezero": out["conventional"].replace(rezero=True),
                   "relinear": out["relinear"], "relinear-rezero": out["relinear-rezero"]}
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


def _seconds_per_image(result: dict) -> float | None:
    """Measured wall time of one training image-epoch (its share of the test pass included):
    the run's epoch time (`train.epoch_seconds`) over the images of an epoch."""
    seconds, history = epoch_seconds(result.get("history", [])), result.get("history", [])
    if seconds is None or not history[-1].get("images_per_s"):
        return None
    return seconds / (history[-1]["images_per_s"] * history[-1]["train_time"])


def training_cost(configs: list[Config], on_gpu: bool, folder: str | Path = "results/runs") -> tuple[float, str] | None:
    """Seconds to train `configs` on a CPU or a GPU, estimated from stored runs on the same kind of
    device: the same network where one was measured, else any, scaled by depth. Returns (seconds,
    what the estimate rests on), or None when nothing comparable is stored."""
    from .train import read_result
    measured: dict[tuple, list[float]] = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            r = read_result(path)
        except ValueError:
            continue
        spi = _seconds_per_image(r)
        if spi is not None and (r.get("device", "cpu") != "cpu") == on_gpu:
            measured.setdefault((r["config"]["depth"], r["config"]["neuron"]), []).append(spi)
    if not measured:
        return None
    rate = {key: sorted(v)[len(v) // 2] for key, v in measured.items()}
    total, basis = 0.0, set()
    for c in configs:
        key = (c.depth, c.neuron)
        if key in rate:
            spi = rate[key]
        else:  # the nearest measured network, scaled by depth
            near = min(rate, key=lambda k: (k[1] != c.neuron, abs(k[0] - c.depth)))
            spi = rate[near] * c.depth / near[0]
            key = near
        basis.add(f"resnet{key[0]}-{key[1]}")
        total += spi * (c.n_train or CIFAR10_TRAIN_IMAGES) * c.epochs
    return total, f"measured on a {'GPU' if on_gpu else 'CPU'} for {', '.join(sorted(basis))}"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} hours" if seconds >= 5400 else f"{max(seconds / 60, 1):.0f} minutes"


def missing_message(missing: list[Config], device: str = "auto") -> str:
    """What a notebook says when runs are missing and not trained: how many, and what training them
    would cost on the runtime attached."""
    from .train import capabilities, resolve_device
    caps = capabilities(resolve_device(device))
    cost = training_cost(missing, caps["cuda"], Path(missing[0].out_dir) / "runs")
    where = caps["device"]
    slower = "; older or smaller cards are slower" if caps["cuda"] else ""
    est = (f"about {_duration(cost[0])} on this {where} ({cost[1]}{slower})"
           if cost else f"an unknown time on this {where} (no comparable run is stored)")
    return (f"{len(missing)} run(s) of this preset are not in results/ and were left out; training them would take "
            f"{est}. Set train_missing = True in the Parameters cell to train them.")


def committed_preset(notebook: str | None = None) -> str:
    """The largest preset whose results for `notebook` (every notebook when None), every seed,
    are all stored; "quick" when none is complete (its missing runs are then trained)."""
    books = NOTEBOOKS if notebook is None else (str(notebook)[:2],)
    for preset in ORDER[:-1]:
        configs = [s for nb in books for c in labelled_configs(nb, preset).values() for s in seeds(c)]
        if configs and all(load_result(c) is not None for c in configs):
            return preset
    return "quick"


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
            raise ValueError(f"no notebook {nb!r}; name notebooks 02-05 (or labels such as 02:naive)")
        if nb[:2] == "01":
            raise ValueError("notebook 01 trains no CIFAR runs (its small networks train in the notebook, "
                             "python -m qnets notebooks --execute 01); name notebooks 02-05")
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


def pack_groups(configs: dict[str, Config], pack: int, force: bool = False) -> list[list[str]]:
    """Labels of the configs still to train (all of them with `force`), in plan order, in groups of
    at most `pack` runs to train side by side (`qnets.streams`)."""
    if not isinstance(pack, int) or isinstance(pack, bool) or pack < 1:
        raise ValueError(f"pack must be a positive integer, got {pack!r}")
    todo = [label for label, c in configs.items() if force or not result_path(c).exists()]
    return [todo[i:i + pack] for i in range(0, len(todo), pack)]


def train_group(configs: list[Config], labels: list[str] | None = None, **kw) -> list[dict]:
    """Train runs that `pack_groups` put together and return their results in order: one run by
    `fit`, several side by side by `qnets.streams.fit_together` (also one run with a `refill`, so that
    runs that end make room for the next ones); `kw`: verbose, force, deadline, refill, on_end."""
    if len(configs) > 1 or kw.get("refill") is not None:
        return fit_together(configs, labels=labels, **kw)
    kw.pop("on_end", None)
    return [fit(configs[0], label=labels[0] if labels else None, **kw)]


def _how(r: dict) -> str:
    """How a run shared the GPU, for a summary line."""
    return f" beside {r['together']['k'] - 1} other runs" if r.get("together") else ""


def train_plan(preset: str, selection: str = "all", verbose: bool = True, pack: int = 1, force: bool = False,
               **runtime) -> dict:
    """Train the selected configs in order; each result is written as soon as it finishes, so an
    interruption loses only the runs in flight (which resume from their checkpoints). With `pack`
    > 1, up to `pack` runs train side by side (`qnets.streams`; a run that ends makes room for the
    next in plan order); results and names are those of lone runs. Prints one summary line per run.
    `runtime` overrides runtime fields (device, compile, ...); `force` trains every selected run again."""
    configs = {k: c.replace(**runtime) for k, c in plan(preset, selection).items()}
    stored = set() if force else {label for label, c in configs.items() if result_path(c).exists()}
    out, t0, began = {}, time.time(), {}  # began: when each run side by side started

    def report(label, r, found=None):
        if r is None:  # another process holds the run's lock (fit_together warned)
            print(f"[{len(out) + 1}/{len(configs)}] {label:24s} busy      another process is training it: left to it",
                  flush=True)
            return
        acc, start, path = r["final_test_acc"], began.get(label, t0), result_path(configs[label])
        if found is None:  # side by side: stored before the run started (here, or by another process)
            found = label in stored or (path.exists() and path.stat().st_mtime < start)
        how = "stored" if found else f"trained in {time.time() - start:.0f}s" + _how(r)
        print(f"[{len(out) + 1}/{len(configs)}] {label:24s} {r['status']:9s} "
              f"test acc {acc if acc is None else f'{acc:.4f}'}  ({how}, {r['device']}) -> "
              f"{result_path(configs[label])}", flush=True)
        out[label] = r

    todo = [label for label in configs if label not in stored]
    if pack > 1 and len(todo) > 1:  # K runs at a time; each that ends makes room for the next
        if all(resolve_device(c.device).type == "cpu" for c in configs.values()):
            print(f"--pack {pack} on a CPU: the runs take turns, no faster than one after another", flush=True)
        for label in (label for label in configs if label in stored):
            report(label, fit(configs[label], verbose=verbose, label=label))
        queue = todo[pack:]

        def refill(live):
            if not queue:
                return None
            began[queue[0]] = time.time()
            return configs[queue[0]], queue.pop(0)
        began |= {label: time.time() for label in todo[:pack]}
        results = train_group([configs[label] for label in todo[:pack]], labels=todo[:pack], refill=refill,
                              on_end=lambda c, label, r: report(label, r), verbose=verbose, force=force)
        for label, r in zip(todo, results):
            if r is None:
                report(label, None)
        return {label: out[label] for label in configs if label in out}
    for label, config in configs.items():
        try:  # decided under the run's lock: stored (perhaps by another process), or trained here
            lock = locks.hold(lock_path(config), run_name(config))
        except RunBusy as e:
            print(f"[{len(out) + 1}/{len(configs)}] {label:24s} busy      {e}", flush=True)
            continue
        try:
            before, t0 = None if force else load_result(config), time.time()
            r = fit(config, force=force, verbose=verbose, label=label)
        finally:
            if lock is not None:
                lock.release()
        report(label, r, found=before is not None and r == before)
    return {label: out[label] for label in configs if label in out}


def _outcome(r: dict) -> str:
    return {"completed": lambda: f"{100 * r['final_test_acc']:.2f}",
            "collapsed": lambda: f"collapsed in epoch {r['epochs_run']}",
            "stopped": lambda: f"stopped in epoch {r['epochs_run']} by the old rule (training healthy)"}[r["status"]]()


def markdown_table(notebook: str, preset: str, baseline: str = "conventional") -> str:
    """The stored results of one notebook's labels at `preset`, one row per label over its seeds
    (mean ± sd of the final test accuracy of the completed seeds, each seed's outcome, and the
    difference to `baseline` with Welch's 95% interval), then one line per dataset they came
    from. Notebook 01's table is `qnets.expressivity.markdown_table` of its stored results. For the
    README; a test keeps the README's tables equal to this."""
    from .claims import accuracy, difference, ratio
    from .stats import summary
    if str(notebook)[:2] == "01":
        from .expressivity import markdown_table as expressivity_table
        return expressivity_table(_stored_expressivity(preset))
    rows = ["| run | network | params | seeds | test accuracy (%) | per seed | max(‖w_g‖, ‖w_b‖)/‖w_r‖ | "
            "vs conventional (95% CI) | data | result files |", "|---|---|---:|---:|---:|---|---:|---:|---|---|"]
    sources, plain_bf16 = {}, False
    labelled = {label: [r for r in (load_result(c) for c in seeds(config)) if r is not None]
                for label, config in labelled_configs(notebook, preset).items()}
    for label, rs in labelled.items():
        if not rs:
            continue
        c = Config(**rs[0]["config"])
        s = summary([a for a in map(accuracy, rs) if a is not None])
        acc = "-" if s["n"] == 0 else f"{s['mean']:.2f}" + (f" ± {s['sd']:.2f}" if s["sd"] is not None else "")
        diff = "-"
        if label != baseline and labelled.get(baseline):
            w = difference(labelled, label, baseline)
            if w["low"] is not None:
                diff = f"{w['diff']:+.2f} [{w['low']:+.2f}, {w['high']:+.2f}]" + (
                    " paired" if w.get("paired") else "")
            elif w["diff"] is not None:
                diff = f"{w['diff']:+.2f} (no interval: one seed)"
        q = ratio(rs)
        data = sorted({(r.get("data_fingerprint") or "unknown")[:8] for r in rs})
        for r in rs:
            sources.setdefault((r.get("data_fingerprint") or "unknown")[:8], r.get("data", "not recorded"))
        net = f"ResNet-{c.depth} {c.neuron}" + (" + ReZero" if c.rezero else "")
        if c.neuron != "conventional" and any(_plain_bf16(r) for r in rs):
            net, plain_bf16 = net + " (bf16)", True
        names = "<br>".join(f"`{r['name']}`" for r in rs)
        per_seed = "; ".join(_outcome(r) for r in rs)
        rows.append(f"| {label} | {net} | {rs[0]['params']:,} | {len(rs)}/{SEEDS} | {acc} | {per_seed} | "
                    f"{'-' if q is None else f'{q:.2g}'} | {diff} | {', '.join(f'`{d}`' for d in data)} | {names} |")
    rows.append("")
    rows += [f"Data `{fp}`: {source}." for fp, source in sources.items()]
    if plain_bf16:
        rows.append(BF16_NOTE)
    return "\n".join(rows)


BF16_SAFE_RATIO = 0.1  # plain bf16 loses 1.6-2.1% of a layer's quadratic contribution here, most of it at 1e-3
BF16_NOTE = ("(bf16): trained in plain bf16 autocast with quadratic terms below 0.1 of the linear ones, where plain bf16 "
             "loses much of a layer's quadratic contribution (at 1e-3 its error exceeds the contribution itself; "
             "results/bench/README.md, \"Precision and the quadratic terms\"): these results do not test what the "
             "quadratic terms do. New runs of networks with quadratic layers train in bf16-split.")


def _plain_bf16(result: dict) -> bool:
    """Whether a stored result trained its quadratic layers in plain bf16 autocast while their terms were
    small enough for bf16 to round them away (final ‖w_g‖/‖w_r‖ and ‖w_b‖/‖w_r‖ below BF16_SAFE_RATIO)."""
    if (result.get("fast_path") or {}).get("precision") != "bf16" or not result.get("history"):
        return False
    q = result["history"][-1].get("quadratic") or {}
    return bool(q) and max(q.get("w_g", 0.0), q.get("w_b", 0.0)) < BF16_SAFE_RATIO


def claims_markdown(notebook: str, preset: str, evidence: bool = True) -> str:
    """The verdicts on the claims `notebook` tests, from the stored results at `preset` (nothing
    is trained), as a Markdown list (notebook 01's from `qnets.expressivity.verdicts`), with the
    evidence behind each or without; for the READMEs, kept equal to it by a test."""
    from . import claims
    if str(notebook)[:2] == "01":
        from .expressivity import verdicts as expressivity_verdicts
        return claims.markdown(expressivity_verdicts(_stored_expressivity(preset)), evidence)
    stored = results(labelled_configs(notebook, preset), train_missing=False, verbose=False)
    return claims.markdown(claims.verdicts(notebook, stored), evidence)


def _stored_expressivity(preset: str) -> dict:
    """Notebook 01's stored results at `preset` (nothing is trained)."""
    from . import expressivity
    stored = expressivity.results(preset, train_missing=False, verbose=False)
    if stored is None:
        raise FileNotFoundError(f"{expressivity.result_path(preset)} is missing or was made with another spec: "
                                f"run notebook 01 with preset {preset}")
    return stored


def paper_markdown() -> str:
    """Where the reproduction stands: the campaign's progress (`qnets.campaign`), then, for each of
    notebooks 02-05 with any result of the `paper` preset, its table and verdicts. For the README's
    `<!-- paper -->` block, kept equal to it by a test; it grows with every GPU window."""
    from .campaign import status
    rows = status("paper")
    done = [r for r in rows if r["state"] == "done"]
    partial = [r for r in rows if r["state"] == "partial"]
    minutes = sum(r["gpu_minutes"] for r in done)
    out = [f"{len(done)} of the campaign's {len(rows)} runs are done ({minutes:.0f} GPU-minutes) and {len(partial)} "
           "partial; `python -m qnets campaign status` lists them (also in `results/campaign/status.txt`)."]
    for notebook in ("02", "03", "04", "05"):
        if any(load_result(c) is not None for config in labelled_configs(notebook, "paper").values()
               for c in seeds(config)):
            out += ["", f"Notebook {notebook}:", "", markdown_table(notebook, "paper"), "",
                    claims_markdown(notebook, "paper")]
    return "\n".join(out)


def render_readme(path: str | Path = "README.md") -> bool:
    """Regenerate the marked blocks of a README from the stored results: each `<!-- table NN preset -->`
    by markdown_table, each `<!-- claims NN preset -->` by claims_markdown (`<!-- verdicts NN preset -->`:
    the same without the evidence), the block between
    `<!-- paper -->` and `<!-- /paper -->` by paper_markdown. Returns whether the file changed."""
    import re
    path = Path(path)
    lines = path.read_text().split("\n")
    out, i = [], 0
    while i < len(lines):
        out.append(lines[i])
        m = re.match(r"<!-- (table|claims|verdicts) (\d\d) ([\w-]+) -->$", lines[i])
        i += 1
        if not m:
            continue
        kind, notebook, preset = m.groups()
        if kind == "table":  # the table, a blank line, then its "Data ..." lines (and the bf16 note)
            while i < len(lines) and (lines[i].startswith(("|", "Data `", "(bf16): ")) or
                                      (lines[i] == "" and i + 1 < len(lines) and lines[i + 1].startswith("Data `"))):
                i += 1
            out += markdown_table(notebook, preset).split("\n")
        else:
            while i < len(lines) and lines[i].startswith("- **"):
                i += 1
            out += claims_markdown(notebook, preset, evidence=kind == "claims").split("\n")
    text = fill_blocks("\n".join(out), "paper", lambda _: paper_markdown())
    changed = text != path.read_text()
    if changed:
        path.write_text(text)
    return changed
