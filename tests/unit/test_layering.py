"""Imports run one way: the tools (shared.devtools) on top, the services below them, the shared library at the
bottom. Checked twice: by importing the library in a fresh interpreter, and by reading every import statement
(lazy ones inside functions included) of every module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "services")
TOOLS = "shared.devtools"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules this one imports, anywhere in its body."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            owner = target
            while owner and owner not in known:
                owner = owner.rpartition(".")[0]
            if owner and owner != name:
                found.add(owner)
    return found


def _library() -> list[str]:
    return [m for m in _modules() if m.startswith("shared") and not m.startswith(TOOLS)]


def test_the_library_imports_no_service_and_no_tool_when_loaded() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {_library()!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'services' or m.startswith(('services.', 'shared.devtools')))\n"
        "print('\\n'.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the shared library pulled in: {out.stdout}"


def test_no_library_module_names_a_service_or_a_tool_even_lazily() -> None:
    modules = _modules()
    known = set(modules)
    offenders = {
        name: sorted(t for t in _imports_of(name, modules[name], known) if t.startswith(("services", TOOLS)))
        for name in _library()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_service_imports_the_tools() -> None:
    modules = _modules()
    known = set(modules)
    offenders = {
        name: sorted(t for t in _imports_of(name, path, known) if t.startswith(TOOLS))
        for name, path in modules.items()
        if name.startswith("services")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_two_modules_import_each_other() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports_of(name, path, known) for name, path in modules.items()}
    mutual = sorted(
        (a, b)
        for a, targets in graph.items()
        for b in targets
        if a < b and a in graph.get(b, set()) and not (a == _parent(b) or b == _parent(a))
    )
    assert mutual == []


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def test_the_checker_sees_an_import_cycle() -> None:
    """The graph reader itself: a lazy import inside a function counts."""
    known = {"shared.a", "shared.b"}
    tree = REPO / "tests" / "unit" / "_layering_probe.py"
    try:
        tree.write_text("def f():\n    from shared.b import thing\n", encoding="utf-8")
        assert _imports_of("shared.a", tree, known) == {"shared.b"}
    finally:
        tree.unlink()
