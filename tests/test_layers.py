"""The package's imports flow one way: no module imports from a layer above its own, sibling
packages of one layer do not import each other, and there are no import cycles. Imports
inside functions count too (read from the source, not from what happens to be loaded)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aqa_pipeline"

# lowest first; a module may import from its own package and from lower layers only
LAYERS = [
    {"aqa_pipeline", "errors", "config", "provenance", "plugins", "synthetic"},
    {"datasets", "features", "results", "launch"},
    {"extract"},
    {"train"},
    {"evaluate"},
    {"cli"},
]


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (at any depth of its code)."""
    mods = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            edges[name] |= {n for n in names if n in mods and n != name}
    return edges


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if stage(module) in names)


def test_every_module_has_a_layer():
    for module in modules():
        assert any(stage(module) in names for names in LAYERS), f"{module}: add it to LAYERS"


def test_nothing_imports_upwards_or_sideways():
    wrong = []
    for a, targets in import_graph().items():
        for b in targets:
            if stage(a) == stage(b) or layer(b) < layer(a):
                continue
            kind = "upwards" if layer(b) > layer(a) else "sideways"
            if layer(b) == 0 and layer(a) == 0:
                continue  # the base modules (errors, config, provenance) use each other
            wrong.append(f"{a} -> {b} ({kind})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles():
    edges = import_graph()
    state: dict[str, int] = {}  # 1 on the path, 2 done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node], path = 1, [*path, node]
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, path)
        state[node] = 2

    for module in sorted(modules()):
        if module not in state:
            visit(module, [])
    assert not cycles, "\n".join(cycles)


def test_the_graph_sees_imports_inside_functions():
    """The checker itself: a function-level import is an edge (so the tests above can fail)."""
    edges = import_graph()
    # cli/__init__.py imports its command modules inside _register()
    assert "aqa_pipeline.cli.train" in edges["aqa_pipeline.cli"]
    assert layer("aqa_pipeline.cli.train") > layer("aqa_pipeline.train.runner")


def test_plugin_packages_import_every_module(tmp_path, monkeypatch):
    """A new backbone, head or adapter is one new file: import_all imports it."""
    import sys

    from aqa_pipeline.plugins import import_all

    pkg = tmp_path / "myplugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from aqa_pipeline.plugins import import_all\nFOUND = import_all(__name__, __path__)\n"
    )
    (pkg / "new_head.py").write_text("LOADED = True\n")
    (pkg / "_private.py").write_text("raise RuntimeError('not a plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import myplugins  # noqa: F401

    assert myplugins.FOUND == ["new_head"] and sys.modules["myplugins.new_head"].LOADED
    assert import_all("aqa_pipeline.train.heads", [str(PACKAGE / "train" / "heads")])
