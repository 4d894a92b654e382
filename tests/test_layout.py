"""The layout: one folder per stage, no import cycles, a torch-free bundle side, small modules.

Imports are read from the source (function-level ones included), so a lazy import cannot hide a
cycle; importing ``a.b.c`` counts as importing the packages ``a.b`` too, as Python does.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "subnet_export"
STAGE_FOLDERS = {"space", "supernet", "plain", "export", "parity", "recalibrate", "bundle",
                 "sweeps", "variants"}
#: drop-in namespaces for another framework's API: their __init__ re-exports by design
FRONT_ENDS = {"nni"}
#: Python modules of the package that must run without torch (the edge side and what it reads).
TORCH_FREE = ("bundle", "parity.rule", "parity.report", "parity.comparison", "parity.record",
              "export.graph", "runtime", "npz", "errors", "version", "signature", "options",
              "console", "variants.stats", "variants.run", "variants.convert",
              "variants.sensitivity", "variants.build", "variants.ort_format")
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(package modules imported by ``name``, top-level outside packages imported)."""
    path, is_pkg = MODULES[name]
    inside, outside = set(), set()
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            root = ".".join(base[:len(base) - node.level + 1] if node.level else [])
            module = ".".join(p for p in (root, node.module or "") if p)
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module
                       for a in node.names]
        else:
            continue
        for target in targets:
            if not target.startswith("subnet_export"):
                outside.add(target.split(".")[0])
                continue
            while target not in MODULES:
                target = target.rsplit(".", 1)[0]
            parts = target.split(".")
            inside.update(".".join(parts[:k]) for k in range(2, len(parts) + 1))
            if target == "subnet_export":
                inside.add(target)
    inside.discard(name)
    return {m for m in inside if not name.startswith(m + ".")} | (
        {"subnet_export"} & inside), outside


GRAPH = {name: _imports(name) for name in MODULES}


def test_one_folder_per_stage():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == STAGE_FOLDERS | FRONT_ENDS
    for folder in folders:  # a folder says what it holds; a stage's imports nothing itself
        init = (PACKAGE / folder / "__init__.py").read_text(encoding="utf-8")
        tree = ast.parse(init)
        assert ast.get_docstring(tree), folder
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert folder in FRONT_ENDS or not imports, folder


def test_no_module_imports_the_package_root():
    back_doors = sorted(m for m, (inside, _) in GRAPH.items()
                        if "subnet_export" in inside and m != "subnet_export")
    assert back_doors == []


def test_no_import_cycles():
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        seen[name] = 1
        stack.append(name)
        for dep in sorted(GRAPH[name][0] - {"subnet_export"}):
            if seen.get(dep) == 1:
                pytest.fail(f"import cycle: {' -> '.join(stack[stack.index(dep):] + [dep])}")
            if dep not in seen:
                visit(dep)
        stack.pop()
        seen[name] = 2

    for name in sorted(MODULES):
        if name not in seen:
            visit(name)


@pytest.mark.parametrize("root", TORCH_FREE)
def test_the_edge_side_never_reaches_torch(root):
    full = f"subnet_export.{root}"
    todo = [m for m in MODULES if m == full or m.startswith(full + ".")]
    reached: set[str] = set()
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        inside, outside = GRAPH[name]
        assert "torch" not in outside, f"{name} imports torch"
        todo += sorted(inside - {"subnet_export"})


def test_the_edge_side_imports_without_torch():
    names = [m for m in MODULES if any(m == f"subnet_export.{r}" or
                                       m.startswith(f"subnet_export.{r}.") for r in TORCH_FREE)]
    code = ("import sys, importlib\n"
            f"for name in {sorted(names)!r}: importlib.import_module(name)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _function_lines(tree: ast.AST, lines: list[str]) -> dict[str, int]:
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0]
            doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            start = first.end_lineno if doc else first.lineno - 1
            code = [ln for ln in lines[start:node.end_lineno]
                    if ln.strip() and not ln.strip().startswith("#")]
            out[node.name] = len(code)
    return out


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_stay_small(name):
    path, _ = MODULES[name]
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{name}: {len(lines)} lines; split it by concept"
    long = {f: n for f, n in _function_lines(ast.parse(text), lines).items()
            if n > MAX_FUNCTION_LINES}
    assert not long, f"{name}: functions over {MAX_FUNCTION_LINES} lines of code: {long}"
