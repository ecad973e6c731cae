"""The project files a stage script runs: its own imports, followed through the package and the stages' shared
modules.

The method registry (``ale_edit.methods``) imports a method's package by name when the settings ask for it: a
file that imports the registry runs the active method's package (``closure(script, method=...)``), or, when no
method is named, any of them.

``stages/params.py`` is not followed: it checks the whole params.yaml before any stage works, so what it imports
(the method registry, every method's options) decides whether a stage may run, never what the stage writes.
Making every stage depend on it would re-run the benchmark download when a method's code changes.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "ale_edit"


VALIDATION_ONLY = {"params"}


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    if len(parts) == 1 and (ROOT / "stages" / f"{parts[0]}.py").is_file():
        return None if parts[0] in VALIDATION_ONLY else ROOT / "stages" / f"{parts[0]}.py"
    if parts[0] != PACKAGE:
        return None
    path = ROOT.joinpath(*parts)
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _package_of(file: Path) -> str:
    rel = file.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    else:
        parts = parts[:-1]
    return ".".join(parts)


METHODS = ROOT / PACKAGE / "methods"


def method_packages(method: str | None = None) -> set[Path]:
    """The ``__init__.py`` of ``method``'s package, or of every method's package (``None``)."""
    if method is not None:
        return {METHODS / method / "__init__.py"}
    return set(METHODS.glob("*/__init__.py"))


def imports_of(file: Path, method: str | None = None) -> set[Path]:
    """Project files imported anywhere in ``file`` (top level or inside functions), with their packages'
    ``__init__.py`` (importing a submodule runs them). A file that imports the registry (``ale_edit.methods``)
    runs ``method``'s package, or any method's (``None``)."""
    tree = ast.parse(file.read_text(), str(file))
    found: set[Path] = set()
    package = _package_of(file) if file.is_relative_to(ROOT / PACKAGE) else ""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append(module)
            names += [f"{module}.{a.name}" for a in node.names]
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            target = _module_file(".".join(parts[:i]))
            if target is not None:
                found.add(target)
    if METHODS / "__init__.py" in found:
        found |= method_packages(method)
    return found


def closure(script: Path, method: str | None = None) -> set[Path]:
    """Every project file ``script`` runs with ``method`` active (``None``: any method), itself included."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        todo += [f for f in imports_of(file, method) if f not in seen]
    return seen
