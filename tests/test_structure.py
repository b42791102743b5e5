"""The package's shape: imports run one way along the data flow, no import cycle, and goodsam modules
are imported inside functions only to defer a heavy dependency (the CLI's start-up, the SAM packages)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first: a unit may import only from units of a lower layer (or from itself).
LAYERS = [
    {"errors", "classes"},
    {"fileio", "devices", "fastops", "profiling"},
    {"imageio", "assets"},
    {"panorama", "visualize", "native"},
    {"sam", "segmenters"},            # SAM masks + TA logits
    {"model_format"},                 # an exported model's folder (save / load)
    {"dar", "inference"},             # DAR (eq. 1-3); running a model on images
    {"mka", "export", "predict"},     # MKA (eq. 4-9); ONNX export; predictions on folders
    {"evaluation"},
    {"train"},
    {"experiments", "demo"},
    {"commands", "cli"},
]
# Function-local imports that defer something heavy: the commands (typer starts without torch), the lazy
# API in goodsam/__init__, and the SAM packages (segment_anything / mobile_sam) behind sam.registry.
DEFERRED_OK_IMPORTERS = ("goodsam.commands", "goodsam.cli", "goodsam")
DEFERRED_OK_TARGETS = ("goodsam.sam.registry", "goodsam.sam.fast_amg", "goodsam.sam.reference")


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted((SRC / "goodsam").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = ast.parse(path.read_text())
    return out


def _targets(node: ast.AST, modules: dict) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "goodsam":
        names = [f"{node.module}.{alias.name}" for alias in node.names]
        return [n if n in modules else node.module for n in names]  # `from goodsam import assets`
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "goodsam"]
    return []


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    pytest.fail(f"goodsam.{unit} is in no layer of tests/test_structure.py: place it")


def _imports(tree: ast.Module, modules: dict) -> list[tuple[str, bool]]:
    """(target module, inside a function?) for every goodsam import."""
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local.update(id(sub) for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom)))
    return [(target, id(node) in local) for node in ast.walk(tree) for target in _targets(node, modules)]


def test_imports_run_down_the_data_flow() -> None:
    modules = _modules()
    wrong = []
    for name, tree in modules.items():
        if name == "goodsam":
            continue
        for target, _ in _imports(tree, modules):
            source_unit, target_unit = _unit(name), _unit(target)
            if target_unit and source_unit != target_unit and _layer(target_unit) >= _layer(source_unit):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: {t if t in modules else t.rsplit(".", 1)[0] for t, _ in _imports(tree, modules)} - {name}
             for name, tree in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == "goodsam" or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_function_local_imports_only_defer_heavy_dependencies() -> None:
    modules = _modules()
    wrong = [f"{name}: {target}" for name, tree in modules.items()
             for target, local in _imports(tree, modules)
             if local and not (name in DEFERRED_OK_IMPORTERS or name.startswith(DEFERRED_OK_IMPORTERS[:2])
                               or target.startswith(DEFERRED_OK_TARGETS))]
    assert not wrong, "function-local goodsam imports with nothing heavy to defer:\n" + "\n".join(wrong)
