"""The project's shape, measured: no import cycles, small modules and functions, benchmarks apart from the
product, Streamlit's internals behind one adapter, docs of bounded size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nvp_core", "train", "app", "bench")
MODULE_LINES = {"nvp_core": 320, "train": 400, "app": 400}
FUNCTION_LINES = 100
DOC_CHARS = {"README.md": 10_000, "models/README.md": 6_000, "bench/README.md": 15_000}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules ``name`` imports anywhere in its body (lazy imports count)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _package_inits(known: set[str]) -> set[str]:
    return {m for m in known if "." not in m}


def test_no_import_cycles_between_the_projects_modules():
    mods = _modules()
    known = set(mods)
    # A package's __init__ re-exporting its modules is not a cycle of ideas; edges into a package root count
    # as edges into the module that defines the name, which the walk resolves through the import line itself.
    graph = {m: {t for t in _imports(m, p, known) if not (t in _package_inits(known) and m.startswith(t + "."))}
             for m, p in mods.items()}  # fmt: skip
    assert _cycles(graph) == []


@pytest.mark.parametrize("pkg", ["app", "nvp_core", "train"])
def test_modules_are_small(pkg):
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / pkg).rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MODULE_LINES[pkg]}  # fmt: skip
    assert big == {}


def test_no_function_over_a_screenful():
    long = {}
    for pkg in MODULE_LINES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    n = (node.end_lineno or node.lineno) - node.lineno + 1
                    if n > FUNCTION_LINES:
                        long[f"{path.relative_to(ROOT)}:{node.name}"] = n
    assert long == {}


def test_only_the_benchmarks_tests_import_bench():
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name.startswith("test_bench_"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n == "bench" or n.startswith("bench.") for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    for pkg in ("nvp_core", "train", "app"):
        for path in (ROOT / pkg).rglob("*.py"):
            if "bench" in {n.split(".")[0] for n in _imports_raw(path)}:
                offenders.append(str(path.relative_to(ROOT)))
    assert sorted(set(offenders)) == []


def _imports_raw(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module)
    return out


def test_streamlit_internals_live_in_one_app_module():
    users = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "app").rglob("*.py")
                   if any(m.startswith("streamlit.runtime") or m.startswith("streamlit.web") or ".elements." in m
                          for m in _imports_raw(p)))  # fmt: skip
    assert len(users) <= 1, users


@pytest.mark.parametrize(
    "doc",
    [
        "README.md",
        "models/README.md",
        "bench/README.md",
    ],
)
def test_docs_are_concise(doc):
    assert len((ROOT / doc).read_text()) <= DOC_CHARS[doc]


def test_bench_results_hold_at_most_30_committed_files():
    import subprocess

    files = subprocess.run(["git", "ls-files", "bench/results"], cwd=ROOT, capture_output=True, text=True).stdout
    if not files and not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    assert len(files.split()) <= 30
