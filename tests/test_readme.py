"""README.md and results/README.md must stay true: their tables and verdicts are the stored results,
their links and badges resolve, and the README stays a front door."""
import json
import re
import tomllib
from pathlib import Path

import pytest

from qnets import bench, experiments, report

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RESULTS = (ROOT / "results" / "README.md").read_text()
REPO = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
BOTH = {"README.md": README, "results/README.md": RESULTS}


def markers(kind):
    return [(name, *m) for name, text in BOTH.items() for m in re.findall(rf"<!-- {kind} (\d\d) ([\w-]+) -->", text)]


@pytest.mark.parametrize("where, notebook, preset", markers("table"))
def test_results_tables_are_the_stored_results(where, notebook, preset):
    block = BOTH[where].split(f"<!-- table {notebook} {preset} -->\n", 1)[1]
    assert block.startswith(report.markdown_table(notebook, preset) + "\n")


@pytest.mark.parametrize("where, notebook, preset", markers("claims") + markers("verdicts"))
def test_verdicts_are_computed_from_the_stored_results(where, notebook, preset):
    kind = "claims" if f"<!-- claims {notebook} {preset} -->" in BOTH[where] else "verdicts"
    block = BOTH[where].split(f"<!-- {kind} {notebook} {preset} -->\n", 1)[1]
    assert block.startswith(report.claims_markdown(notebook, preset, evidence=kind == "claims") + "\n")


def test_the_readme_is_a_front_door_and_the_results_readme_holds_the_tables():
    assert len(README.encode()) <= 15 * 1024, "README.md over 15 KB: move details to docs/ or results/README.md"
    assert markers("verdicts")  # the front door shows the verdicts; the tables and evidence live in results/
    assert all(where == "results/README.md" for where, *_ in markers("table") + markers("claims"))
    for link in re.findall(r"\]\(((?:docs|results|data|figures|notebooks)/[^)#]+)\)", README):
        assert (ROOT / link).exists(), link
    for link in re.findall(r"\]\((\.\./[^)#]+)\)", RESULTS):
        assert (ROOT / "results" / link).resolve().exists(), link


def test_every_quoted_run_is_committed():
    names = re.findall(r"`(resnet\d+-[a-z-]+-[0-9a-f]{12})`", RESULTS)
    assert names, "results/README.md quotes no results"
    for name in names:
        assert (ROOT / "results" / "runs" / f"{name}.json").exists(), name


@pytest.mark.parametrize("path", sorted((ROOT / "results" / "bench").glob("*.json")), ids=lambda p: p.name)
def test_bench_tables_are_the_stored_reports(path):
    """Every stored report has its table in results/bench/README.md, between markers that
    `make readme` regenerates (a new report needs its marker and a word on what it shows)."""
    block = f"<!-- bench {path.name} -->\n{bench.markdown(json.loads(path.read_text()))}\n<!-- /bench -->"
    assert block in (ROOT / "results" / "bench" / "README.md").read_text()


def test_bench_tables_are_regenerated_from_their_reports(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    report = json.loads((ROOT / "results" / "bench" / "nvidia-h200-packing.json").read_text())
    (folder / "gpu-packing.json").write_text(json.dumps(report))
    readme = folder / "README.md"
    readme.write_text("Before.\n\n<!-- bench gpu-packing.json -->\nan old table\n<!-- /bench -->\n\nAfter.\n")
    assert bench.render_tables(readme) is True
    assert readme.read_text() == (f"Before.\n\n<!-- bench gpu-packing.json -->\n{bench.markdown(report)}\n"
                                  "<!-- /bench -->\n\nAfter.\n")
    assert bench.render_tables(readme) is False


def test_notebook_links_badges_and_colab_cells_use_one_repository_url():
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(notebooks) == 6
    slug = REPO.removeprefix("https://github.com/")
    for nb in notebooks:
        assert f"](notebooks/{nb.name})" in README
        assert f"colab.research.google.com/github/{slug}/blob/main/notebooks/{nb.name}" in README
        text = nb.read_text()
        assert f'REPOSITORY = \\"{REPO}\\"' in text and f"github/{slug}/blob/main/notebooks/{nb.name}" in text


def test_the_paper_block_is_the_campaigns_progress():
    block = RESULTS.split("<!-- paper -->\n", 1)[1].split("<!-- /paper -->", 1)[0]
    assert block == report.paper_markdown() + "\n"


def test_the_paper_block_shows_each_notebook_with_a_result(monkeypatch):
    rows = [{"state": "done", "gpu_minutes": 4.0}, {"state": "done", "gpu_minutes": 0.0}, {"state": "partial"},
            {"state": "to do"}]
    monkeypatch.setattr(report, "status", lambda preset: rows)
    first = experiments.seeds(experiments.labelled_configs("03", "paper")["compact"])[2]
    monkeypatch.setattr(report, "load_result", lambda c: {} if c == first else None)
    monkeypatch.setattr(report, "markdown_table", lambda nb, preset: f"<table {nb} {preset}>")
    monkeypatch.setattr(report, "claims_markdown", lambda nb, preset, evidence=True: f"<claims {nb} {preset}>")
    text = report.paper_markdown()
    assert text.startswith("2 of the campaign's 4 runs are done (4 GPU-minutes) and 1 partial;")
    assert text.endswith("\n\nNotebook 03:\n\n<table 03 paper>\n\n<claims 03 paper>")
    assert "Notebook 02" not in text  # notebook 02 has no compact run
    assert "Notebook 06" not in text  # its compact run is notebook 03's: nothing of its own


NOTEBOOK_TEXTS = {f"notebooks/{p.name}": p.read_text() for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))}
READING = r"<!-- reading (\d\d) ([\w-]+): (\d+) runs -->"
READINGS = [(where, nb, preset, int(n)) for where, text in (BOTH | NOTEBOOK_TEXTS).items()
            for nb, preset, n in re.findall(READING, text)]


@pytest.mark.parametrize("where, notebook, preset, written_for", READINGS)
def test_each_written_reading_is_of_the_runs_stored_now(where, notebook, preset, written_for):
    """Prose that reads a table (marked `<!-- reading NN preset: N runs -->`) was written for the runs then
    stored: once more are committed it must be read again, or its sentences may no longer follow."""
    configs = experiments.labelled_configs(notebook, preset)
    stored = sum(map(len, experiments.results(configs, train_missing=False, verbose=False).values()))
    assert stored == written_for, (f"{where}: the reading of notebook {notebook} at {preset} was written for "
                                   f"{written_for} runs and {stored} are stored now: read the tables again, "
                                   "rewrite it and set its count")


def test_every_written_reading_is_marked():
    unmarked = [where for where, text in NOTEBOOK_TEXTS.items()
                if "What the committed" in text and not re.search(READING, text)]
    paragraphs = [p for p in RESULTS.split("\n\n") if p.startswith("Read from the table")]
    assert not unmarked and not paragraphs, unmarked + paragraphs[:1]
    assert READINGS
