"""Imports run one way: asgi → protocol → engine → compiled_kernels (observability a sink,
configs read by all), and the engine's core bookkeeping needs no torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("asgi", "protocol", "engine", "compiled_kernels", "observability", "configs")
# package -> the packages of ours it must not import
FORBIDDEN = {
    "compiled_kernels": ("asgi", "protocol", "engine", "observability", "configs"),
    "engine": ("asgi", "protocol"),
    "protocol": ("asgi",),
    "observability": ("asgi", "protocol", "engine", "compiled_kernels"),
}
TORCH_FREE = ("engine/scheduler.py", "engine/block_manager.py", "engine/sequence.py")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports count too)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(package: str) -> None:
    wrong = {
        f"{path.relative_to(REPO)} imports {module}"
        for path in (REPO / package).rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN[package]
    }
    assert not wrong, sorted(wrong)


def module_file(module: str) -> Path | None:
    """Our source file for a dotted module name (None: not ours)."""
    path = REPO.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@pytest.mark.parametrize("file", TORCH_FREE)
def test_the_engine_core_imports_no_torch_even_indirectly(file: str) -> None:
    seen: set[Path] = set()
    pending = [REPO / file]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path):
            assert module.split(".")[0] != "torch", f"{path.relative_to(REPO)} imports {module}"
            found = module_file(module) if module.split(".")[0] in OURS else None
            if found is not None:
                pending.append(found)
