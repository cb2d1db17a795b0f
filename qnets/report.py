"""The results as Markdown for README.md and results/README.md: each notebook's table and verdicts
at a preset, the campaign's progress, and the marked blocks they fill (`render_readme`, run by
`make readme`; tests keep the files equal to what these compute)."""
from __future__ import annotations

import re
from pathlib import Path

from . import claims, designs, expressivity, mlps
from .campaign import status
from .claims import accuracies, difference, ratio
from .experiments import NOTEBOOKS, SEEDS, labelled_configs, results, seeds
from .stats import summary
from .train import Config, load_result
from .utils import fill_blocks

__all__ = ["markdown_table", "claims_markdown", "paper_markdown", "render_readme", "BF16_NOTE"]


def _outcome(r: dict) -> str:
    return f"{100 * r['final_test_acc']:.2f}" if r["status"] == "completed" else f"collapsed in epoch {r['epochs_run']}"


def markdown_table(notebook: str, preset: str, baseline: str = "conventional") -> str:
    """The stored results of one notebook's labels at `preset`, one row per label over its seeds
    (mean ± sd of the final test accuracy, a collapsed seed counted at its last test accuracy as the
    claims count it, each seed's outcome, and the difference to `baseline`: paired by seed or Welch's
    95% interval), then one line per dataset they came from. Notebook 01's table is
    `qnets.expressivity.markdown_table` of its stored results. For the README; a test keeps the
    README's tables equal to this."""
    if str(notebook)[:2] == "01":
        return expressivity.markdown_table(_stored(mlps, preset, "01"))
    if _mlp_designs(notebook, preset):
        return designs.markdown_table(_stored(designs, preset, "06"))
    rows = ["| run | network | params | seeds | test accuracy (%) | per seed | max(‖w_g‖, ‖w_b‖)/‖w_r‖ | "
            "vs conventional (95% CI) | data | result files |", "|---|---|---:|---:|---:|---|---:|---:|---|---|"]
    sources, plain_bf16 = {}, False
    labelled = {label: [r for r in (load_result(c) for c in seeds(config)) if r is not None]
                for label, config in labelled_configs(notebook, preset).items()}
    for label, rs in labelled.items():
        if not rs:
            continue
        c = Config(**rs[0]["config"])
        s = summary(accuracies(rs))
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
    if str(notebook)[:2] == "01":
        return claims.markdown(expressivity.verdicts(_stored(mlps, preset, "01")), evidence)
    if _mlp_designs(notebook, preset):
        return claims.markdown(designs.verdicts(_stored(designs, preset, "06")), evidence)
    stored = results(labelled_configs(notebook, preset), train_missing=False, verbose=False)
    return claims.markdown(claims.verdicts(notebook, stored), evidence)


def _stored(module, preset: str, notebook: str) -> dict:
    """Notebook 01's (`qnets.mlps`) or 06's (`qnets.designs`) stored MLP results at `preset`
    (nothing is trained)."""
    stored = module.results(preset, train_missing=False, verbose=False)
    if stored is None:
        raise FileNotFoundError(f"{module.result_path(preset)} is missing or was made with another spec: "
                                f"run notebook {notebook} with preset {preset}")
    return stored


def _mlp_designs(notebook: str, preset: str) -> bool:
    """Notebook 06's tables at a preset below cpu are its MLPs' (`qnets.designs`): its CIFAR part
    has runs at cpu and above only (those of notebooks 02 and 03 aside)."""
    return str(notebook)[:2] == "06" and preset in ("smoke", "quick")


def paper_markdown() -> str:
    """Where the reproduction stands: the campaign's progress (`qnets.campaign`), then, for each of
    notebooks 02-06 with a result of its own at the `paper` preset, its table and verdicts. For the README's
    `<!-- paper -->` block, kept equal to it by a test; it grows with every GPU window."""
    rows = status("paper")
    done = [r for r in rows if r["state"] == "done"]
    partial = [r for r in rows if r["state"] == "partial"]
    minutes = sum(r["gpu_minutes"] for r in done)
    out = [f"{len(done)} of the campaign's {len(rows)} runs are done ({minutes:.0f} GPU-minutes) and {len(partial)} "
           "partial; `python -m qnets campaign status` lists them (also in `results/campaign/status.txt`)."]
    shown = set()
    for notebook in NOTEBOOKS[1:]:  # each with a result of its own (not only runs an earlier one shares)
        runs = {c for config in labelled_configs(notebook, "paper").values() for c in seeds(config)}
        if any(load_result(c) is not None for c in runs - shown):
            out += ["", f"Notebook {notebook}:", "", markdown_table(notebook, "paper"), "",
                    claims_markdown(notebook, "paper")]
        shown |= runs
    return "\n".join(out)


def render_readme(path: str | Path = "README.md") -> bool:
    """Regenerate the marked blocks of a README from the stored results: each `<!-- table NN preset -->`
    by markdown_table, each `<!-- claims NN preset -->` by claims_markdown (`<!-- verdicts NN preset -->`:
    the same without the evidence), the block between
    `<!-- paper -->` and `<!-- /paper -->` by paper_markdown. Returns whether the file changed."""
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
