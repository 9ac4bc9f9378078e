"""The package's shape: no import cycles between its modules (imports inside functions count:
they only hide a cycle until run time), and no two modules with one name outside `cli/`."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import hellolondon

PACKAGE = Path(hellolondon.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets.add(base)
            targets.update(f"{base}.{a.name}" for a in node.names)
    resolved = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    known = _modules()
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_module_names_are_unique_outside_cli():
    names = Counter(
        name.rpartition(".")[2]
        for name in _modules()
        if ".cli." not in name and not name.endswith(".cli") and name != "hellolondon"
    )
    assert [n for n, count in names.items() if count > 1] == []


# Each folder in the data flow has one module that knows its file names; the others ask it.
OWNERS = {
    "corpus/layout.py": ("manifest.json", "documents.jsonl", "clean_log.jsonl", "report.json"),
    "prepare.py": ("train.bin", "val.bin", "meta.json"),
    "rundir.py": (
        "metrics.jsonl",
        "events.jsonl",
        "summary.json",
        "samples.txt",
        "tracking.json",
        "checkpoints",
    ),
    "train/checkpoint.py": ("state.json",),
}


def test_folder_layouts_are_named_only_by_their_owner():
    owner_of = {name: owner for owner, names in OWNERS.items() for name in names}
    leaks = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = node.value if isinstance(node, ast.Constant) else None
            if isinstance(name, str) and name in owner_of and owner_of[name] != module:
                leaks.append(f"{module}:{node.lineno} names {name!r} ({owner_of[name]}'s)")
    assert leaks == []
