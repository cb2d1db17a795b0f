"""The package's layout: three layers whose imports point down, no import circle, no import hidden in a
function to dodge one, and modules and functions a reader can take in."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qnets"

# 1: the library a researcher imports; 2: the paper's reproduction; 3: running many (and the roof that
# renders everything). The command line (__main__) sits above all three.
LAYERS = {
    "utils": 1, "layers": 1, "models": 1, "relinear": 1, "sources": 1, "data": 1, "locks": 1, "config": 1,
    "store": 1, "fastpath": 1, "train": 1,
    "__init__": 1,
    "stats": 2, "claims": 2, "experiments": 2, "plots": 2, "expressivity": 2, "mlps": 2, "designs": 2, "neuron": 2, "targets": 2,
    "notebooks": 2,
    "precision": 2,
    "streams": 3, "runner": 3, "campaign": 3, "window": 3, "collect": 3, "cluster": 3, "timing": 3, "packbench": 3, "bench": 3, "report": 3,
    "__main__": 4,
}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(qnets module imported, whether the import sits inside a function) for every import in `path`."""
    tree = ast.parse(path.read_text())
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            targets = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qnets"):
            targets = [node.module.split(".")[1]] if "." in node.module else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("qnets.")]
        else:
            continue
        out += [(t, id(node) in local) for t in targets if t != "__version__"]
    return out


GRAPH = {p.stem: imports(p) for p in sorted(PACKAGE.glob("*.py"))}


def test_every_module_has_a_layer():
    assert set(GRAPH) == set(LAYERS), set(GRAPH) ^ set(LAYERS)


def test_imports_point_down_or_across():
    up = [f"{a} (layer {LAYERS[a]}) imports {b} (layer {LAYERS[b]})"
          for a, edges in GRAPH.items() for b, _ in edges if LAYERS[b] > LAYERS[a]]
    assert not up, up


def test_no_import_is_hidden_in_a_function():
    """Function-local imports of the package's own modules hide circles; only the command line defers
    its imports (so that `--help` answers at once)."""
    hidden = [f"{a} imports {b} inside a function" for a, edges in GRAPH.items() if a != "__main__"
              for b, local in edges if local]
    assert not hidden, hidden


def test_no_import_circle():
    state, circles = {}, []

    def visit(m, path):
        state[m] = "open"
        for b, _ in GRAPH[m]:
            if b == m:
                continue
            if state.get(b) == "open":
                circles.append(" -> ".join(path[path.index(b):] + [b]))
            elif b not in state:
                visit(b, path + [b])
        state[m] = "done"
    for m in GRAPH:
        if m not in state:
            visit(m, [m])
    assert not circles, circles


def _sizes():
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text()
        yield path.stem, sum(1 for line in text.splitlines() if line.strip()), [
            (node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


# Still over the limits, to be split (a module leaves this list when it fits; nothing joins it).
LONG_MODULES: set[str] = set()
LONG_FUNCTIONS: set[tuple[str, str]] = set()


def test_modules_and_functions_stay_small():
    """At most 400 non-blank lines a module and 60 lines a function (the listed ones are still to split)."""
    big = [f"{m}: {n} lines" for m, n, _ in _sizes() if n > 400 and m not in LONG_MODULES]
    long = [f"{m}.{f}: {n} lines" for m, _, fs in _sizes() for f, n in fs if n > 60 and (m, f) not in LONG_FUNCTIONS]
    assert not big and not long, big + long
    fitted = [m for m, n, _ in _sizes() if m in LONG_MODULES and n <= 400]
    short = [(m, f) for m, _, fs in _sizes() for f, n in fs if (m, f) in LONG_FUNCTIONS and n <= 60]
    assert not fitted and not short, f"{fitted + short} fit now: take them off the lists"
