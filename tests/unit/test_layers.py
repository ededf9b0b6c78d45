"""The package's layers: each imports only from layers below it, and no module imports itself in a circle.

Imports inside functions count too: a late import still ties two modules together.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"rlsys": ROOT / "rlsys", "rlsys.actors": ROOT / "actors", "rlsys.launchers": ROOT / "launchers"}

# bottom to top; a module may import its own part and the parts of lower layers (README, "Architecture")
LAYERS = [
    {"errors"},
    {"watchdog"},
    {"config", "configs", "user_code", "logging"},
    {"algorithms", "models"},
    {"data", "rewards"},
    {"envs"},
    {"engine"},
    {"actors"},
    {"roles", "rollouts"},
    {"loop"},
    {"trainers", "curation"},
    {"launchers"},
    {"__main__"},
]
LEVEL = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join([package, *parts]).removesuffix(".__init__")
            if package == "rlsys" and parts[0] in ("actors", "launchers"):
                continue
            found[name] = path
    return found


def imported(path: Path, name: str) -> set[str]:
    """The rlsys modules a module imports (`from a.b import c` counts as a.b.c when that is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(name.split(".")[: -node.level] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in out if m == "rlsys" or m.startswith("rlsys.")}


def part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def test_every_part_has_a_layer():
    assert {part(m) for m in modules()} - {"__init__"} <= set(LEVEL)


def test_no_module_imports_from_a_layer_above_or_beside_its_own():
    found = modules()
    wrong = []
    for name, path in found.items():
        for target in imported(path, name) & set(found):
            mine, theirs = part(name), part(target)
            if mine != theirs and theirs != "__init__" and LEVEL[theirs] >= LEVEL[mine]:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    found = modules()
    graph = {name: imported(path, name) & set(found) - {name} for name, path in found.items()}
    # a package imports its own modules through __init__; that is not a cycle of the modules themselves
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [node, nxt]) if nxt in trail else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_two_modules_share_a_name():
    names = [name.rsplit(".", 1)[-1] for name, path in modules().items() if path.stem not in ("__init__", "__main__")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
