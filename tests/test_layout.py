"""The layout the architecture issue asks for, kept: no module over 500 lines, no function over
80, and no import circle among the modules or among the packages (``ardbench.train``,
``ardbench.eval``, ...). Module-level imports count, those under ``TYPE_CHECKING`` included (a
circle of types is still a circle: one module cannot be read without the other); imports
inside functions, which run late by design, do not, and neither does the root package's lazy
facade (``ardbench/__init__.py`` names the API for type checkers only)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "ardbench"
MAX_LINES = 500
MAX_FUNCTION_LINES = 80


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in ROOT.rglob("*.py")}


def _imports(name: str, path: Path) -> set[str]:
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if name == "ardbench" and isinstance(node, ast.If):
                continue  # the root's lazy facade: `if TYPE_CHECKING: from .api import ...`
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("ardbench"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if mod.startswith("ardbench"):
                    for alias in node.names:
                        sub = f"{mod}.{alias.name}"
                        out.add(sub if sub in MODULES else mod)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return {m for m in out if m in MODULES and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                found.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def _graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = {n: _imports(n, p) for n, p in MODULES.items()}
    packages: dict[str, set[str]] = {}
    for n, deps in modules.items():
        for d in deps:
            a, b = ".".join(n.split(".")[:2]), ".".join(d.split(".")[:2])
            if a != b and "ardbench" not in (a, b):
                packages.setdefault(a, set()).add(b)
    return modules, packages


def test_no_import_circle():
    modules, packages = _graphs()
    assert _cycles(modules) == []
    assert _cycles(packages) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_500_lines():
    long = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in MODULES.items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def test_a_type_only_import_is_a_circle_too(tmp_path):
    a = tmp_path / "ardbench" / "x" / "a.py"
    a.parent.mkdir(parents=True)
    a.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n")
    assert _imports("ardbench.x.a", a) == set()  # b is not a package module: ignored ...
    MODULES["ardbench.x.b"] = a  # ... until it is one
    try:
        assert _imports("ardbench.x.a", a) == {"ardbench.x.b"}
    finally:
        del MODULES["ardbench.x.b"]


def _functions() -> dict[str, int]:
    """Every function and method of the package, by qualified name, with its length in lines."""
    out: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qual = f"{prefix}.{child.name}"
                out[qual] = max(out.get(qual, 0), child.end_lineno - child.lineno + 1)
                walk(child, qual)
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}.{child.name}")

    for name, path in MODULES.items():
        walk(ast.parse(path.read_text(encoding="utf-8")), name)
    return out


def test_no_function_over_80_lines():
    lengths = _functions()
    long = {q: n for q, n in lengths.items() if n > MAX_FUNCTION_LINES}
    assert long == {}, f"split these into named helpers (at most {MAX_FUNCTION_LINES} lines)"


# ------------------------------------------------------------------ the tests' own layout

TESTS = Path(__file__).resolve().parent
# test_<package>_<subject>.py, by what the file tests (tests/README.md, "Layout")
TEST_PREFIXES = (
    "test_methods_",
    "test_protocols_",
    "test_eval",
    "test_results_",
    "test_train_",
    "test_models",
    "test_safety_",
    "test_workflow_",
)
# the user-facing tools, one file each, named after the tool
TEST_NAMES = {
    "test_analyze",
    "test_api",
    "test_attacks",
    "test_cli",
    "test_data",
    "test_doctor",
    "test_layout",
    "test_plot_labels",
    "test_plots",
    "test_readme_walkthrough",
    "test_registry",
    "test_site",
    "test_site_browser",
    "test_slurm",
    "test_submission",
    "test_sweep",
}


def _imported_test_modules(source: str) -> set[str]:
    """The ``test_*`` modules a test file imports, anywhere in it (inside functions too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return {name for name in out if name.split(".")[-1].startswith("test_")}


def test_no_test_module_imports_another():
    found = {
        p.name: sorted(_imported_test_modules(p.read_text()))
        for p in sorted(TESTS.glob("*.py"))
        if _imported_test_modules(p.read_text())
    }
    assert not found, f"move what they share into a helper module (no test_ prefix): {found}"


def test_the_import_check_finds_one():
    source = "import pytest\n\ndef f():\n    import test_x\n\nfrom test_y import z\n"
    assert _imported_test_modules(source) == {"test_x", "test_y"}


def test_test_files_are_named_after_what_they_test():
    names = {p.stem for p in TESTS.glob("test_*.py")}
    odd = sorted(n for n in names - TEST_NAMES if not n.startswith(TEST_PREFIXES))
    assert not odd, f"name these test_<package>_<subject>.py (tests/README.md, Layout): {odd}"
    assert TEST_NAMES <= names, f"listed but missing: {sorted(TEST_NAMES - names)}"
