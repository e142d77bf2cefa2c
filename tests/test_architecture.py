"""The layering docs/ARCHITECTURE.md promises: one-way imports, no cycles, nothing pointing outside the repository."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "models", "data")
ENTRY_SCRIPTS = ("train.py", "evaluate.py", "predict.py", "export.py")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (functions included: a lazy import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_models_and_data_never_import_app_and_models_never_import_data(graph):
    wrong = [(module, target) for module, targets in graph.items() for target in targets
             if (module.startswith(("models", "data")) and target.startswith("app"))
             or (module.startswith("models") and target.startswith("data"))
             or (module.startswith("data") and target.startswith("models"))]
    assert not wrong, wrong


def _parent_packages(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycles(graph):
    # Importing a submodule runs its parent packages' __init__ first: that edge is Python's, not a design choice.
    edges = {m: {t for t in targets if t not in _parent_packages(m)} for m, targets in graph.items()}
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, cycles


def test_nothing_refers_to_documents_outside_the_repository():
    pattern = re.compile(r"\bDESIGN\b|\.\./shared")
    files = [p for package in (*PACKAGES, "bench", "tests", "docs") for p in (ROOT / package).rglob("*")
             if p.suffix in (".py", ".md") and ".venv" not in p.parts and p != Path(__file__)]
    files += [ROOT / name for name in (*ENTRY_SCRIPTS, "README.md", "BENCHMARKS.md") if (ROOT / name).is_file()]
    offenders = [str(p.relative_to(ROOT)) for p in files if pattern.search(p.read_text(encoding="utf-8"))]
    assert not offenders, offenders


def test_architecture_notes_name_only_files_that_exist():
    notes = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:app|models|data|bench|tests)/[\w/]*\.py)(?:::\w+)?`", notes))
    assert named, "the notes should point at modules"
    missing = sorted(path for path in named if not (ROOT / path).is_file())
    assert not missing, missing


def test_converted_weights_live_under_the_same_cache_root_as_everything_else(monkeypatch, tmp_path):
    from data.cache import cache_dir
    from models.weights.cache import converted_weights_dir

    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path / "explicit"))
    assert converted_weights_dir() == cache_dir() / "weights"
    monkeypatch.delenv("METATUNE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert converted_weights_dir() == cache_dir() / "weights" == tmp_path / "xdg" / "metatune" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert converted_weights_dir() == cache_dir() / "weights"
    # '~/x' quoted (no shell expanded it) made a folder named '~' in the current one; an empty XDG_CACHE_HOME is unset.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert converted_weights_dir() == cache_dir() / "weights" == tmp_path / "home" / ".cache" / "metatune" / "weights"
    monkeypatch.setenv("METATUNE_CACHE_DIR", "~/x")
    assert converted_weights_dir() == cache_dir() / "weights" == tmp_path / "home" / "x" / "weights"
