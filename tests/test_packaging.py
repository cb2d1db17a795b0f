"""environment.yml (conda) must install what pyproject.toml declares."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"])
    for extra in ("notebooks", "test", "lab", "cluster"):
        declared |= set(project["optional-dependencies"][extra])
    env = (ROOT / "environment.yml").read_text()
    pip_lines = re.findall(r"^\s+- (?!pip$)(\S.*)$", env.split("- pip:", 1)[1], re.M)
    listed = {line for line in pip_lines if not line.startswith("-e")}
    assert listed == declared
    assert re.search(r"^\s+- python=3\.11$", env, re.M)
    assert any(line.startswith("-e") and "notebooks,test,lab,cluster" in line for line in pip_lines)


def test_licence_and_citation_agree_with_the_project():
    import yaml
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["version"] == project["version"] and cff["license"] == "MIT"
    import qnets
    assert qnets.__version__ == project["version"]
    assert cff["repository-code"] == project["urls"]["Repository"]
    paper = cff["preferred-citation"]
    readme = (ROOT / "README.md").read_text()
    assert f"doi     = {{{paper['doi']}}}" in readme and paper["doi"] == "10.1109/TNNLS.2023.3331380"
    assert [a["family-names"] for a in paper["authors"]] == ["Fan", "Li", "Wang", "Lai", "Wang"]
    assert "arXiv:2110.06081" in {i["value"] for i in paper["identifiers"]}
