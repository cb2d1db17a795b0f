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
    Parameters cell (preset "auto" for 02-06), with no injected-parameters cell to override it."""
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


def _as_lab_saves_it(path: Path) -> dict:
    """The committed notebook as JupyterLab sends it to be saved after Run All, twice, in one
    kernel: new cell ids, counts continuing, view state in metadata, a stream in two chunks, a
    progress bar's widget view, widget state and Lab's own kernel name."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(nb.cells):
        cell.id = uuid.uuid4().hex[:8]
        cell.metadata |= {"scrolled": True, "collapsed": False, "execution": {"iopub.status.idle": f"2026-{i}"}}
        if cell.cell_type == "code" and cell.execution_count:
            cell.execution_count += len(code)
    streams = [c for c in code if c.outputs and c.outputs[0].get("output_type") == "stream"]
    first = streams[0].outputs[0]
    half = len(first.text) // 2
    streams[0].outputs[:1] = [nbformat.v4.new_output("stream", name=first.name, text=first.text[:half]),
                              nbformat.v4.new_output("stream", name=first.name, text=first.text[half:])]
    code[-1].outputs.append(nbformat.v4.new_output("display_data", data={
        notebooks.WIDGET_VIEW: {"model_id": "abc", "version_major": 2, "version_minor": 0}, "text/plain": "  0%|"}))
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.metadata["kernelspec"]["display_name"] = "Python 3 (ipykernel)"
    return json.loads(nbformat.writes(nb))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_lab_saves_a_rerun_notebook_as_committed(path):
    model = {"type": "notebook", "content": _as_lab_saves_it(path)}
    assert nbformat.writes(nbformat.from_dict(model["content"])) != path.read_text()  # the test has teeth
    notebooks.lab_pre_save(model=model, path=f"notebooks/{path.name}", contents_manager=None)
    assert nbformat.writes(nbformat.from_dict(model["content"])) + "\n" == path.read_text()


def test_lab_leaves_notebooks_elsewhere_and_other_files_as_they_are():
    content = _as_lab_saves_it(NOTEBOOKS[1])
    for model, where in [({"type": "notebook", "content": content}, "scratch/mine.ipynb"),
                         ({"type": "file", "content": "x = 1"}, "notebooks/notes.py")]:
        before = json.dumps(model)
        notebooks.lab_pre_save(model=model, path=where)
        assert json.dumps(model) == before


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


class _Colab:
    """A Colab runtime for the Colab cell: google.colab importable, Drive mounted or not, qnets
    installed or not (pip's install flips it), commands recorded rather than run (a clone makes its
    folder, unless under /content, which is only recorded; `git pull` may bring a new commit or fail)."""

    def __init__(self, monkeypatch, drive=False, installed=False, pull="same"):
        self.calls, self.moves, self.installed, self.pull, self.head = [], [], installed, pull, "aaa"
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
        monkeypatch.setattr(subprocess, "check_call", self.check_call)
        monkeypatch.setattr(subprocess, "run", self.run)
        import importlib.metadata
        monkeypatch.setattr(importlib.metadata, "distributions",
                            lambda: [types.SimpleNamespace(metadata={"Name": "qnets"})] if self.installed else [])
        real_isdir = os.path.isdir
        monkeypatch.setattr(os.path, "isdir", lambda p: drive if p == "/content/drive/MyDrive" else real_isdir(p))
        monkeypatch.setattr(os, "chdir", self.moves.append)
        monkeypatch.setattr(sys, "path", list(sys.path))

    def check_call(self, cmd, *a, **kw):
        self.calls.append(cmd)
        if cmd[:2] == ["git", "clone"] and not cmd[-1].startswith("/content"):
            Path(cmd[-1]).mkdir(parents=True)
        if "pip" in cmd:
            self.installed = True

    def run(self, cmd, *a, **kw):
        self.calls.append(cmd)
        if "pull" in cmd and self.pull == "new":
            self.head = "bbb"
        failed = "pull" in cmd and self.pull == "fails"
        return subprocess.CompletedProcess(cmd, int(failed), self.head if "rev-parse" in cmd else "",
                                           "fatal: unable to access the repository" if failed else "")

    def cell(self):
        exec(compile(_colab_cell(NOTEBOOKS[0]), "colab-cell", "exec"), {})
        calls, self.calls, moves, self.moves[:] = self.calls, [], list(self.moves), []
        return calls, moves


def _commands(calls):
    return [" ".join(c[c.index("-C") + 2:] if "-C" in c else c[:2]) for c in calls]


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = str(tmp_path / "qnets")
    monkeypatch.setenv("QNETS_HOME", home)
    return home


def test_colab_cell_on_a_fresh_runtime_clones_installs_and_moves_into_the_clone(monkeypatch, home, capsys):
    colab = _Colab(monkeypatch)
    calls, moves = colab.cell()
    assert calls == [["git", "clone", "-q", "--depth", "1", notebooks.repository(ROOT), home],
                     [sys.executable, "-m", "pip", "install", "-q", "-e", home]]
    assert moves == [home] and sys.path[0] == home
    assert "lost when the runtime disconnects" in capsys.readouterr().out
    calls, moves = colab.cell()  # the same kernel again: nothing to clone, install or update
    assert calls == [] and moves == [home] and sys.path.count(home) == 1


def test_colab_cell_after_restart_session_updates_the_clone_and_moves_into_it(monkeypatch, home, capsys):
    """After "Restart session" qnets is installed and the kernel sits in /content, above the clone,
    whose folder would pass for the package; the cell must still move into the clone."""
    Path(home).mkdir()
    monkeypatch.delitem(sys.modules, "qnets")  # a new kernel has not imported it (the cell does not)
    calls, moves = _Colab(monkeypatch, installed=True).cell()
    assert _commands(calls) == ["rev-parse HEAD", "pull -q --ff-only", "rev-parse HEAD"]  # no clone, no install
    assert moves == [home] and sys.path[0] == home


def test_colab_cell_installs_again_when_the_update_brings_new_code(monkeypatch, home):
    Path(home).mkdir()
    monkeypatch.delitem(sys.modules, "qnets")
    calls, _ = _Colab(monkeypatch, installed=True, pull="new").cell()
    assert _commands(calls) == ["rev-parse HEAD", "pull -q --ff-only", "rev-parse HEAD", f"{sys.executable} -m"]


def test_colab_cell_uses_a_clone_it_cannot_update_and_says_how(monkeypatch, home, capsys):
    Path(home).mkdir()
    monkeypatch.delitem(sys.modules, "qnets")
    calls, moves = _Colab(monkeypatch, installed=False, pull="fails").cell()  # a new runtime, offline
    out = capsys.readouterr().out
    assert f"{home} was not updated (fatal: unable to access the repository)" in out
    assert f"!git -C {home} pull" in out
    assert _commands(calls)[-1] == f"{sys.executable} -m" and moves == [home]  # installed from the clone as it is


@pytest.mark.parametrize("drive, where", [(True, "/content/drive/MyDrive/qnets"), (False, "/content/qnets")])
def test_colab_cell_keeps_results_on_drive_when_mounted(monkeypatch, capsys, drive, where):
    monkeypatch.delenv("QNETS_HOME", raising=False)
    calls, moves = _Colab(monkeypatch, drive=drive).cell()
    assert calls[0][-1] == where and moves == [where]
    assert ("kept on Google Drive" in capsys.readouterr().out) is drive


@pytest.mark.slow  # a fresh interpreter
def test_after_restart_session_the_notebook_imports_the_package_not_the_clone_folder(tmp_path):
    """The real import system, in a fresh interpreter: the kernel's folder holds the clone (here a
    link to this repository), whose folder shadows the installed package as a namespace package
    until the cell moves into the clone."""
    (tmp_path / "qnets").symlink_to(ROOT)
    script = f"""
import importlib.util, json, subprocess, sys, types
sys.modules["google.colab"] = types.ModuleType("google.colab")
shadowed = importlib.util.find_spec("qnets").origin is None  # the clone's folder, as a namespace package
importlib.invalidate_caches()
subprocess.run = lambda cmd, *a, **k: subprocess.CompletedProcess(cmd, 0, "", "")  # no network here
subprocess.check_call = lambda cmd, *a, **k: sys.exit(f"ran {{cmd}}")
exec({_colab_cell(NOTEBOOKS[0])!r})
from qnets.data import CIFAR10_TRAIN_IMAGES
import qnets
print(json.dumps([shadowed, qnets.__file__]))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("QNETS_HOME", "PYTHONPATH")}
    env["QNETS_HOME"] = str(tmp_path / "qnets")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    shadowed, origin = json.loads(out.stdout.strip().splitlines()[-1])
    assert shadowed, "the test no longer reproduces a clone folder that shadows the package"
    assert Path(origin) == tmp_path / "qnets" / "qnets" / "__init__.py"


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


@pytest.mark.slow
def test_jupyterlab_saves_notebooks_through_the_projects_hook(lab):
    """`make lab` loads the project's Jupyter config: a notebook saved in notebooks/ is written as
    committed notebooks are."""
    base, token = lab
    name = f"notebooks/lab-save-check-{uuid.uuid4().hex[:8]}.ipynb"
    body = json.dumps({"type": "notebook", "format": "json", "content": _as_lab_saves_it(NOTEBOOKS[1])}).encode()
    req = urllib.request.Request(f"{base}/api/contents/{name}", data=body, method="PUT",
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=30).close()
        assert (ROOT / name).read_text() == NOTEBOOKS[1].read_text()
    finally:
        (ROOT / name).unlink(missing_ok=True)
