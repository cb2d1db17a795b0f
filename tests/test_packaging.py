"""environment.yml (conda) must install what pyproject.toml declares."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"])
    for extra in ("notebooks", "test", "cluster"):
        declared |= set(project["optional-dependencies"][extra])
    env = (ROOT / "environment.yml").read_text()
    pip_lines = re.findall(r"^\s+- (?!pip$)(\S.*)$", env.split("- pip:", 1)[1], re.M)
    listed = {line for line in pip_lines if not line.startswith("-e")}
    assert listed == declared
    assert re.search(r"^\s+- python=3\.11$", env, re.M)
    assert any(line.startswith("-e") and "notebooks,test,cluster" in line for line in pip_lines)
