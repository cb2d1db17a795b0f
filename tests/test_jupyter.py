"""The notebooks as users meet them: re-run in one kernel, served by JupyterLab, opened on Colab."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

from qnets import notebooks, train

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _code_cells(nb):
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _with_preset(nb, preset):
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = re.sub(r'^preset = "[^"]*"', f'preset = "{preset}"', cell.source, flags=re.M)
    return nb


def _checked_outputs(nb) -> list[str]:
    """The text outputs of the cells nbval compares (# NBVAL_CHECK_OUTPUT)."""
    return ["".join(o.get("text", "") for o in c.outputs if o.get("output_type") == "stream")
            for c in nb.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_cell_runs_twice_in_one_kernel_to_the_committed_outputs(path, monkeypatch, tmp_path):
    """Run All, then Run All again in the same kernel (what a user does when re-running cells), as
    committed, on the committed results: no cell may fail the second time (e.g. the setup cell
    mistaking the notebook's own variables for misspelt parameters), and the checked outputs
    (# NBVAL_CHECK_OUTPUT: tables and verdicts) are the committed ones, as nbval would check."""
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=notebooks.KERNEL, timeout=900,
                            resources={"metadata": {"path": str(path.parent)}})
    # notebook 01 draws 1,215 networks per pass: one pass here; its smoke run below trains in place
    passes = 1 if path.name.startswith("01") else 2
    with client.setup_kernel():
        for _ in range(passes):
            for index, cell in _code_cells(nb):
                client.execute_cell(cell, index)  # raises CellExecutionError on an error
    assert _checked_outputs(nb) == _checked_outputs(nbformat.read(path, as_version=4))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_notebook_trains_at_the_smoke_preset(path, tmp_path, monkeypatch):
    """With papermill, as `make figures` runs it, at the smoke preset: synthetic data, every run of
    the notebook trained (into a results folder of its own), every cell run."""
    out = tmp_path / path.name
    # each notebook's runs in a store of its own, so that notebooks run side by side share no run
    extra = {"figures": str(tmp_path / "figures")}  # figures/ changes only through make figures
    extra |= {} if path.name.startswith("01") else {"overrides": {"out_dir": str(tmp_path / "results")}}
    notebooks.execute(path, "smoke", out, extra)
    executed = nbformat.read(out, as_version=4)  # (papermill raises on any failing cell)
    assert executed.metadata["papermill"]["parameters"]["preset"] == "smoke"
    assert not any(o.get("output_type") == "error" for c in executed.cells for o in c.get("outputs", []))


def test_committed_notebooks_have_no_hidden_parameter_override():
    """The Parameters cell is the one place a user edits: a committed notebook ran on its own
    Parameters cell (preset "auto" for 02-05), with no injected-parameters cell to override it."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        tags = [t for c in nb.cells for t in c.metadata.get("tags", [])]
        assert "injected-parameters" not in tags and tags.count("parameters") == 1, path.name
        assert nb.metadata.get("papermill", {}).get("parameters") == {}, path.name
        source = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert ("figures = None" in source) and (path.name.startswith("01") or 'preset = "auto"' in source), path.name


def test_the_staging_folder_is_not_committed_and_another_preset_stays_visible():
    """What make figures commits: papermill's injected cell dropped when it held only the staging
    folder; with another preset (make figures PRESET=quick) injected again without the folder."""
    def executed(values):
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                               "display_name": "Python 3"}})
        params = nbformat.v4.new_code_cell('preset = "auto"\nfigures = None')
        params.metadata["tags"] = ["parameters"]
        injected = nbformat.v4.new_code_cell("# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items()))
        injected.metadata["tags"] = ["injected-parameters"]
        nb.cells = [params, injected, nbformat.v4.new_code_cell("print(preset)")]
        for n, c in enumerate(nb.cells, 1):
            c.execution_count = n
        nb.metadata["papermill"] = {"parameters": values}
        return notebooks._without_staging(nb)
    nb = executed({"figures": "/tmp/staging"})
    assert [c.source for c in nb.cells] == ['preset = "auto"\nfigures = None', "print(preset)"]
    assert [c.execution_count for c in nb.cells] == [1, 2] and nb.metadata["papermill"]["parameters"] == {}
    nb = executed({"preset": "quick", "figures": "/tmp/staging"})
    injected = [c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "quick" in injected[0] and "staging" not in injected[0]


def test_one_kernel_named_alike_everywhere():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^KERNEL := {notebooks.KERNEL}$", makefile, re.M)
    assert re.search(rf"^KERNEL_NAME := {re.escape(notebooks.KERNEL_NAME)}$", makefile, re.M)
    assert makefile.count("ipykernel install") == 1
    for path in NOTEBOOKS:
        spec = nbformat.read(path, as_version=4).metadata["kernelspec"]
        assert (spec["name"], spec["display_name"]) == (notebooks.KERNEL, notebooks.KERNEL_NAME), path.name
    assert f"“{notebooks.KERNEL_NAME}”" in (ROOT / "README.md").read_text()


# ----------------------------------------------------------------------------- JupyterLab, for real

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str, data: dict | None = None):
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
                                 method="GET" if data is None else "POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _execute(ws, session: str, code: str, timeout: float = 300) -> tuple[str, list[str]]:
    """Send one execute_request over the kernel's websocket; returns (status, stream texts + errors)."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({"header": {"msg_id": msg_id, "username": "test", "session": session, "msg_type":
                                   "execute_request", "version": "5.3", "date": ""},
                        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                        "content": {"code": code, "silent": False, "store_history": True,
                                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    texts, status, idle, end = [], None, False, time.monotonic() + timeout
    while time.monotonic() < end:  # the reply (shell) and the last output (iopub) come in either order
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["header"]["msg_type"], msg["content"]
        if kind == "stream":
            texts.append(content["text"])
        elif kind == "error":
            texts.append(f"{content['ename']}: {content['evalue']}")
        elif kind == "execute_reply":
            status = content["status"]
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
        if idle and status is not None:
            return status, texts
    raise TimeoutError(f"no reply within {timeout} s to {code[:80]!r}")


@pytest.fixture
def lab():
    """`make lab` started headless on a free port: (base url, token). Stopped afterwards."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    port, token = _free_port(), uuid.uuid4().hex
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS=--no-browser --port={port} --ServerApp.token={token} "
                                                   "--ServerApp.port_retries=0"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                _get(f"{base}/api/status", token)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"make lab exited: {proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.25)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        yield base, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_jupyterlab_serves_the_repository_and_runs_a_notebook(lab):
    import websocket
    base, token = lab
    specs = _get(f"{base}/api/kernelspecs", token)
    assert {name: s["spec"]["display_name"] for name, s in specs["kernelspecs"].items()} == {
        notebooks.KERNEL: notebooks.KERNEL_NAME}  # one kernel, the one the notebooks name
    root = {item["name"] for item in _get(f"{base}/api/contents", token)["content"]}
    assert {"README.md", "notebooks", "results", "figures"} <= root  # the repository, not only notebooks/
    path = "notebooks/02_full_quadratic.ipynb"
    session = _get(f"{base}/api/sessions", token, {"path": path, "type": "notebook", "name": "",
                                                   "kernel": {"name": notebooks.KERNEL}})
    ws = websocket.create_connection(f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/api/kernels/"
                                     f"{session['kernel']['id']}/channels?token={token}", timeout=300)
    try:
        nb = nbformat.read(ROOT / path, as_version=4)
        outputs = []
        for _, cell in _code_cells(nb):
            status, texts = _execute(ws, session["id"], cell.source)
            assert status == "ok", f"{cell.source[:200]!r} failed in JupyterLab's kernel: {texts}"
            if "NBVAL_CHECK_OUTPUT" in cell.source:
                outputs.append("".join(texts))
        assert outputs == _checked_outputs(nb)  # the same tables as the committed notebook
        status, texts = _execute(ws, session["id"], "import os, sys; print(os.getcwd()); print(sys.prefix)")
        cwd, prefix = "".join(texts).splitlines()
        assert Path(cwd) == ROOT and Path(prefix) == Path(sys.prefix)  # the project's environment
    finally:
        ws.close()


# ----------------------------------------------------------------------------- Colab, simulated

def _colab_cell(path: Path) -> str:
    cells = [c for c in nbformat.read(path, as_version=4).cells if notebooks.COLAB_TAG in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged {notebooks.COLAB_TAG!r}"
    return cells[0].source


def test_every_notebook_has_the_same_colab_cell_with_the_project_address():
    cells = {_colab_cell(p) for p in NOTEBOOKS}
    assert len(cells) == 1
    assert f'REPOSITORY = "{notebooks.repository(ROOT)}"' in cells.pop()


def _run_colab_cell(monkeypatch, tmp_path, drive: bool):
    """Execute the Colab cell as on Colab: google.colab importable, qnets not installed, commands
    recorded (a clone makes its folder, unless it is under /content, which is only recorded)."""
    calls, moves = [], []

    def check_call(cmd, *a, **kw):
        calls.append(cmd)
        if cmd[:2] == ["git", "clone"] and not cmd[-1].startswith("/content"):
            Path(cmd[-1]).mkdir(parents=True)

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "check_call", check_call)
    import importlib.util
    real_find_spec, real_isdir = importlib.util.find_spec, os.path.isdir
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "qnets" else real_find_spec(name, *a))
    monkeypatch.setattr(os.path, "isdir", lambda p: drive if p == "/content/drive/MyDrive" else real_isdir(p))
    monkeypatch.setattr(os, "chdir", moves.append)
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(_colab_cell(NOTEBOOKS[0]), "colab-cell", "exec"), {})
    return calls, moves


def test_colab_cell_clones_installs_and_moves_into_the_clone(monkeypatch, tmp_path, capsys):
    home = str(tmp_path / "qnets")
    monkeypatch.setenv("QNETS_HOME", home)
    calls, moves = _run_colab_cell(monkeypatch, tmp_path, drive=False)
    assert calls == [["git", "clone", "-q", "--depth", "1", notebooks.repository(ROOT), home],
                     [sys.executable, "-m", "pip", "install", "-q", "-e", home]]
    assert moves == [home] and sys.path[0] == home
    assert "lost when the runtime disconnects" in capsys.readouterr().out
    calls, _ = _run_colab_cell(monkeypatch, tmp_path, drive=False)  # run again: no second clone
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", "-e", home]]


@pytest.mark.parametrize("drive, home", [(True, "/content/drive/MyDrive/qnets"), (False, "/content/qnets")])
def test_colab_cell_keeps_results_on_drive_when_mounted(monkeypatch, tmp_path, capsys, drive, home):
    monkeypatch.delenv("QNETS_HOME", raising=False)
    calls, moves = _run_colab_cell(monkeypatch, tmp_path, drive=drive)
    assert calls[0][-1] == home and moves == [home]
    assert ("kept on Google Drive" in capsys.readouterr().out) is drive


def test_elsewhere_the_colab_cell_does_nothing(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "check_call", lambda *a, **k: pytest.fail("ran a command outside Colab"))
    monkeypatch.chdir(tmp_path)
    exec(compile(_colab_cell(NOTEBOOKS[0]), "colab-cell", "exec"), {})
    assert Path.cwd() == tmp_path


def test_repository_address_is_written_in_one_place(tmp_path):
    """pyproject.toml names the repository; README badges and the notebooks' Colab cell follow it
    (`python -m qnets readme`), so a fork edits one line."""
    assert notebooks.sync_repository(_copy_of_repo(tmp_path / "same")) == []  # everything already agrees
    fork = _copy_of_repo(tmp_path / "fork")
    toml = fork / "pyproject.toml"
    toml.write_text(toml.read_text().replace(notebooks.repository(ROOT), "https://github.com/someone/qnets-fork"))
    changed = {p.name for p in notebooks.sync_repository(fork)}
    assert changed == {"README.md", "CITATION.cff", *(p.name for p in NOTEBOOKS)}
    assert "colab.research.google.com/github/someone/qnets-fork/blob/main/notebooks/02" in (fork / "README.md").read_text()
    assert 'REPOSITORY = "https://github.com/someone/qnets-fork"' in _colab_cell(fork / "notebooks" / NOTEBOOKS[0].name)
    assert notebooks.sync_repository(fork) == []


def _copy_of_repo(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "CITATION.cff"):
        shutil.copy(ROOT / name, dest / name)
    (dest / "qnets").mkdir()
    shutil.copytree(ROOT / "notebooks", dest / "notebooks", ignore=shutil.ignore_patterns(".*"))
    return dest


# ----------------------------------------------------------------------------- the runtime check

@pytest.mark.parametrize("capability, bf16", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_bf16_and_compile_only_on_cards_that_compute_bf16_natively(monkeypatch, capability, bf16):
    import torch
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a card")
    caps = train.capabilities(torch.device("cuda"))
    assert (caps["bf16"], caps["compile"], caps["cuda_graphs"]) == (bf16, bf16, True)


def test_the_cpu_runtime_is_described_as_what_it_can_do():
    import torch
    caps = train.capabilities(torch.device("cpu"))
    assert not (caps["bf16"] or caps["cuda_graphs"]) and caps["compile"] == "long runs"
    if not torch.cuda.is_available():
        line = train.describe_runtime()
        assert line.startswith("runtime: CPU") and "torch.compile for runs of 2,000+ steps" in line
