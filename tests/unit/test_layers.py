"""The package's modules in layers: each imports only from layers below its own, so there is
no import cycle and the REST shapes (contract.py) are made from plain models, never from the
objects that do the work."""

from __future__ import annotations

import ast
import pathlib

import jupyter_hpc_manager

PACKAGE = pathlib.Path(jupyter_hpc_manager.__file__).parent

# Lowest first. A module may import from any earlier layer, never from its own or a later one.
LAYERS = [
    {"errors"},
    {"slurm", "state", "cache", "wsinput"},
    {"validation"},
    {"config"},
    {"models", "channel_io"},
    {"login", "upstream"},
    {"ssh", "tunnel"},
    {"login_node", "ide", "kernels"},
    {"scheduler"},
    {"cluster", "contract"},
    {"sessions"},
    {"base"},
    {"api_handlers", "proxy"},
    {"app"},
    {"__init__"},
]


def imports(path: pathlib.Path) -> set[str]:
    """The package's own modules that a module imports at run time (imports for type checking
    alone are left out: they run nothing)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for b in node.body for n in ast.walk(b))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, ast.ImportFrom) or node.level != 1:
            continue
        if node.module:
            found.add(node.module.split(".")[0])
        else:
            found.update(alias.name for alias in node.names)
    return found


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    placed = set().union(*LAYERS)
    assert modules == placed, f"unplaced: {modules - placed}, gone: {placed - modules}"


def test_modules_import_only_from_lower_layers():
    layer_of = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    wrong = []
    for path in sorted(PACKAGE.glob("*.py")):
        me = layer_of[path.stem]
        for other in sorted(imports(path)):
            if layer_of[other] >= me:
                wrong.append(f"{path.stem} (layer {me}) imports {other} (layer "
                             f"{layer_of[other]})")
    assert wrong == []


def test_the_rest_shapes_come_from_models_only():
    assert imports(PACKAGE / "contract.py") <= {"slurm", "models", "config"}
    assert "contract" not in imports(PACKAGE / "cluster.py")
    assert "contract" not in imports(PACKAGE / "sessions.py")
