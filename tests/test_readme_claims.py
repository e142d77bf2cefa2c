"""What README.md and docs/ARCHITECTURE.md say about the code stays true: options, paths, modules, set-up.

Each test reads the documents as text and compares them with the parsers, the file tree or the registry,
so a renamed option, module or Makefile target fails here instead of leaving the manual wrong.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARCHITECTURE = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")


def _parsers():
    import evaluate
    import export
    import predict
    from app.config_cli import build_parser

    return {"train.py": build_parser(), "evaluate.py": evaluate.build_parser(), "predict.py": predict.build_parser(),
            "export.py": export.build_parser()}


def _flags(parser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")} - {"--help"}


def test_every_command_line_option_is_documented_in_the_readme():
    # A --no-X form of an on/off option counts when its other form is documented (--no-augment, --augment).
    documented = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README))
    missing = {}
    for script, parser in _parsers().items():
        undocumented = [flag for flag in _flags(parser) if flag not in documented
                        and flag.replace("--no-", "--") not in documented and "--no-" + flag[2:] not in documented]
        if undocumented:
            missing[script] = sorted(undocumented)
    assert not missing, missing


def test_the_commands_synopsis_names_only_options_that_exist():
    block = README.split("## Commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    parsers = _parsers()
    wrong = []
    for line in block.replace("\\\n", " ").splitlines():
        script = next((name for name in parsers if f" {name} " in f" {line} "), None)
        if script is None:
            continue
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line.split("#")[0]):
            if flag not in _flags(parsers[script]):
                wrong.append((script, flag))
    assert not wrong, wrong


def test_train_help_never_contradicts_a_default_its_text_states():
    # "--sequence-length ... (default: 128). (default: None)": argparse appended the None of a default decided at
    # run time after the text that says what it is.
    from app.config_cli import build_parser

    text = re.sub(r"\s+", " ", build_parser().format_help())
    assert "(default: 128)." in text
    contradicted = re.findall(r"default[^()]*\)\.? \(default: None\)", text, flags=re.IGNORECASE)
    assert not contradicted, contradicted


def _named_paths(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w./-])((?:app|data|models|tests|configs|bench|docs)/[\w./-]*\.(?:py|yaml|md|sh))",
                          text))


@pytest.mark.parametrize("name, text", [("README.md", README), ("docs/ARCHITECTURE.md", ARCHITECTURE)])
def test_every_file_the_documents_name_exists(name, text):
    missing = sorted(path for path in _named_paths(text) if "*" not in path and not (ROOT / path).is_file())
    assert not missing, (name, missing)


def _defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


@pytest.mark.parametrize("name, text", [("README.md", README), ("docs/ARCHITECTURE.md", ARCHITECTURE)])
def test_every_function_the_documents_point_at_exists(name, text):
    # `data/pipeline.without_autotune_thread`, `app/cli.py::run_safely`: the module and the name in it.
    references = re.findall(r"`((?:app|data|models)/[\w/]+?)(?:\.py::|\.)([A-Za-z_]\w*)`", text)
    assert references
    missing = sorted(f"{module}.{symbol}" for module, symbol in references if symbol != "py"
                     and symbol not in _defined_names(ROOT / f"{module}.py"))
    assert not missing, (name, missing)


def test_every_top_level_module_is_on_the_architecture_map():
    named = _named_paths(ARCHITECTURE) | set(re.findall(r"`((?:app|data|models)/[\w*]+\.py)`", ARCHITECTURE))
    patterns = [re.compile(re.escape(path).replace(r"\*", r"\w*") + "$") for path in named if "*" in path]
    modules = [f"{package}/{path.name}" for package in ("app", "data", "models")
               for path in sorted((ROOT / package).glob("*.py")) if path.name != "__init__.py"]
    missing = [module for module in modules if module not in named and not any(p.match(module) for p in patterns)]
    assert not missing, missing
    subpackages = [f"models/{path.name}/" for path in (ROOT / "models").iterdir()
                   if (path / "__init__.py").is_file()]
    assert all(f"`{package}`" in ARCHITECTURE for package in subpackages), subpackages


def test_the_backbone_table_lists_every_registered_backbone():
    from models.backbones import list_backbones

    table = README.split("## Backbones", 1)[1].split("\n\n- ", 1)[0]
    missing = [spec.name for spec in list_backbones() if f"| `{spec.name}`" not in table]
    assert not missing, missing


def test_the_two_set_up_commands_are_the_makefile_targets_ci_runs():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick_start and "make test" in quick_start
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.MULTILINE))
    assert {"demo", "test", "test-fast", "install"} <= targets
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, flags=re.MULTILINE), "CI runs the README's test command"
    # make demo trains and evaluates on the bundled sample, which must be there.
    demo_data = re.search(r"^DEMO_DATA := (\S+)$", makefile, flags=re.MULTILINE).group(1)
    assert demo_data in quick_start or "bundled" in quick_start
    assert (ROOT / demo_data / "train").is_dir() and (ROOT / demo_data / "test").is_dir()
    demo = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "train.py $(DEMO_DATA)" in demo and "evaluate.py $(DEMO_RUN) $(DEMO_DATA)" in demo


def test_the_readme_names_every_heading_of_train_help():
    from app.config_cli import OPTION_GROUPS

    sentence = re.sub(r"\s+", " ", README.split("`train.py --help` groups them:", 1)[1].split(")", 1)[0])
    headings = [title.split(" (")[0] for title in OPTION_GROUPS]
    assert [h for h in headings if h not in sentence] == []
