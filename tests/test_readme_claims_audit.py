"""README.md as a contract, checked against what the code does (an audit as a new user following it).

The synopsis' defaults and choices against the parsers, the numbers the README states against the constants that
decide them, the finetune recipe table, `--list-backbones`, `--check`'s report, and what a run, `evaluate.py` and
`predict.py --json` / `--jsonl` write against the README's descriptions of those files.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from colour_folders import write_colour_folder

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FLAT = re.sub(r"\s+", " ", README)  # sentences wrap anywhere in the Markdown source
OPTION = r"(?<![\w-])(--[a-z][a-z0-9-]*)"


def _parsers():
    import evaluate
    import export
    import predict
    from app.config_cli import build_parser

    return {"train.py": build_parser(), "evaluate.py": evaluate.build_parser(), "predict.py": predict.build_parser(),
            "export.py": export.build_parser()}


def _synopsis_lines() -> list[str]:
    """The Commands block and the few-shot one, each command on one line (continuations joined)."""
    commands = README.split("## Commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    fewshot = README.split("### Few-shot evaluation", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*|\n\s+(?=\[)", " ", commands + "\n" + fewshot)
    return [line.split("  #")[0] for line in joined.splitlines()]


def _run_time_default(script: str, flag: str):
    """What a default the parser leaves to run time (None, or hidden until given) resolves to, as --help says it."""
    import evaluate
    from models.backbones import get_backbone

    if script == "train.py" and flag == "--image-size":
        return get_backbone("efficientnet_lite0").default_size  # the default image backbone's, "224 x 224 by default"
    if script == "train.py" and flag == "--sequence-length":
        return 128  # --help: "(default: 128)"
    if script == "evaluate.py":
        return evaluate.FEWSHOT_DEFAULTS.get(flag[2:])
    return None


def test_every_default_and_choice_in_the_synopsis_is_the_parsers():
    wrong = []
    for line in _synopsis_lines():
        script = next((name for name in _parsers() if f" {name} " in f" {line} "), None)
        if script is None:
            continue
        actions = {flag: action for action in _parsers()[script]._actions for flag in action.option_strings}
        for flag, value in re.findall(r"\[" + OPTION + r" ([^\s\]]+)", line):  # [--flag DEFAULT]; bare ones are examples
            action = actions.get(flag)
            if action is None or value.startswith("-") and value != "-" or re.search(r"[A-Z]", value):
                continue  # a placeholder (RUN_DIR, LR, N|all) or the next flag: nothing to compare
            default = action.default if isinstance(action.default, (int, float, str)) else None
            if default is None or default == "==SUPPRESS==":
                default = _run_time_default(script, flag)
            listed = value.split("|")
            if len(listed) > 1:
                if action.choices is not None and not set(listed) <= set(map(str, action.choices)):
                    wrong.append((script, flag, listed, "not the parser's choices", list(action.choices)))
                if str(default) in listed and listed[0] != str(default):
                    wrong.append((script, flag, listed, "default not listed first", default))
            elif re.fullmatch(r"[\d.e+-]+", value):
                if default is None or float(value) != float(default):
                    wrong.append((script, flag, value, "default", default))
            elif value != str(default):
                wrong.append((script, flag, value, "default", default))
    assert not wrong, wrong


def test_every_choice_list_in_help_is_the_one_in_the_readme():
    # An option whose choices the README spells out (`--resize stretch|pad|crop`) lists all of them, nowhere fewer,
    # so a choice added to the code shows up here until the manual has it.
    spelled = {}
    for line in _synopsis_lines():
        for flag, value in re.findall(OPTION + r" ([a-z0-9_+-]+(?:\|[a-z0-9_+-]+)+)", line):
            spelled.setdefault(flag, set()).update(value.split("|"))
    missing = {}
    for script, parser in _parsers().items():
        for action in parser._actions:
            for flag in action.option_strings:
                if action.choices and flag in spelled and set(map(str, action.choices)) - spelled[flag]:
                    missing[f"{script} {flag}"] = sorted(set(map(str, action.choices)) - spelled[flag])
    assert not missing, missing


def _constants():
    from app import cli, config, distribution, episodic_evaluation, explanations, exporting, metrics, prediction
    from app import cpu_devices, run_dir, worker_rendezvous
    from data import meta_pools, scan, text

    return [
        (r"a `--batch-size` above (\d+) in any command", cli.MAX_BATCH_SIZE),
        (r"a `--bootstrap` above (\d+)", metrics.MAX_BOOTSTRAP_RESAMPLES),
        (r"`--episodes` \(1 to (\d+):", episodic_evaluation.MAX_EPISODES),
        (r"`--inner-steps` above (\d+)", config.MAX_INNER_STEPS),
        (r"`--meta-batch-size` above (\d+)", config.MAX_META_BATCH_SIZE),
        (r"`--hidden-units` or `--embedding-units` above (\d+)", config.MAX_LAYER_UNITS),
        (r"every whole-number option at most (\d+)", config.MAX_COUNT),
        (r"the seed up to (\d+)", config.MAX_SEED),
        (r"a whole number from 0 to (\d+), 2\*\*32 - 1", config.MAX_SEED),
        (r"not a whole number from 1 to (\d+) in plain digits", cpu_devices.MAX_CPU_DEVICES),
        (r"`METATUNE_WORKERS_WAIT_S` seconds \(default (\d+)", worker_rendezvous.DEFAULT_WAIT_S),
        (r"logging every (\d+) s whom it waits for", worker_rendezvous.PROGRESS_EVERY_S),
        (r"The heartbeat timeout is (\d+) minutes", distribution.HEARTBEAT_TIMEOUT_S / 60),
        (r"over (\d+) bytes or beginning with `.tmp-`", run_dir.REPORT_NAME_MAX_BYTES),
        (r"(\d+) files at a time as they are predicted", prediction.CHUNK_INPUTS),
        (r"The images are explained (\d+) at a time", explanations.OVERLAY_GROUP),
        (r"balanced over classes \(files that can no longer be read are left out, with a warning\), and needs at "
         r"least (\d+)", exporting.MIN_REPRESENTATIVE_FILES),
        (r"`--representative-files` \(default (\d+)\)", exporting.DEFAULT_REPRESENTATIVE_FILES),
        (r"`ece` \((\d+) bins\)", metrics.ECE_BINS),
        (r"a warning each for the first (\d+), one line counting the rest", scan.MAX_SKIP_WARNINGS),
        (r"name up to (\d+) skipped files", scan.MAX_SKIP_WARNINGS),
        (r"fewer than (\d+) training files per class remain", config.REFIT_AUTO_BELOW_PER_CLASS),
        (r"With fewer than (\d+) × `--ways` classes", meta_pools.CLASSIC_LAYOUT_WAYS_MULTIPLE),
        (r"a text over (\d+) KiB is noted", text.MAX_TEXT_BYTES / 1024),
        (r"images, (\d+)\+ training files per class \(median\)", config.WHOLE_BACKBONE_MIN_PER_CLASS),
    ]


def test_the_numbers_the_readme_states_are_the_codes():
    wrong = []
    for pattern, constant in _constants():
        found = re.findall(pattern, FLAT)
        assert found, f"README no longer says: {pattern}"  # reworded: move the check along with the sentence
        wrong += [(pattern, value, constant) for value in found if float(value) != float(constant)]
    assert not wrong, wrong


def test_the_finetune_recipe_table_is_the_codes():
    from app.config import FINETUNE_RECIPES

    table = README.split("| option | images, ", 1)[1].split("\n\n", 1)[0]  # indented under its bullet
    rows = {m.group(1): (m.group(2).strip(), m.group(3).strip()) for m in
            re.finditer(r"^\s*\| `--([a-z-]+)` \| ([^|]+) \| ([^|]+) \|$", table, flags=re.MULTILINE)}
    assert set(rows) == {key.replace("_", "-") for key in FINETUNE_RECIPES["image"]}
    for column, recipe in ((0, FINETUNE_RECIPES["image"]), (1, FINETUNE_RECIPES["image_small"])):
        assert FINETUNE_RECIPES["text"] == FINETUNE_RECIPES["image_small"]  # one column: "fewer images; text"
        for key, value in recipe.items():
            shown = rows[key.replace("_", "-")][column].split(" ")[0].strip("`")
            assert (shown == value) if isinstance(value, str) else float(shown) == float(value), (key, shown, value)


def test_list_backbones_has_every_kind_of_row_the_readme_table_has(monkeypatch):
    # The README's table ends with a keras-hub preset, a folder path and a run directory; --list-backbones left the
    # last out, though --backbone RUN_DIR is how one source run serves many targets.
    from app import backbone_list

    monkeypatch.setattr(backbone_list, "list_backbones", lambda: [])  # the registry's rows: the test above's
    table = backbone_list.backbone_table()
    assert "a run directory | the run's" in README
    for row in ("<keras-hub preset>", "<folder path>", "<run directory>"):
        assert any(line.startswith(row) for line in table.splitlines()), (row, table)


def test_check_never_points_at_a_data_report_it_does_not_write(tmp_path, monkeypatch, capsys):
    # `train.py DATA_DIR --check` printed "(every file is listed in data_report.json)" and "... and N more (all in
    # data_report.json)", but the data doctor alone has no run directory and writes no such file.
    import train
    from data.scan import MAX_SKIP_WARNINGS

    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path / "cache"))
    data = write_colour_folder(tmp_path / "data", per_class=3)
    from PIL import Image

    Image.new("L", (8, 8), 128).save(data / "red" / "grey.png")  # converted to RGB: listed as converted
    for i in range(25):  # more than the report lists: "... and N more"
        (data / "blue" / f"empty{i}.png").write_bytes(b"")
    assert 25 > MAX_SKIP_WARNINGS
    monkeypatch.chdir(tmp_path)
    assert train.main([str(data), "--check"]) == 0
    out = capsys.readouterr().out
    assert "more (" in out and "Converted when loaded" in out
    mentions = re.findall(r".{0,12}data_report\.json", out)
    assert mentions and all("a run's data_report.json" in m for m in mentions), mentions
    assert not list(tmp_path.rglob("data_report.json"))


def test_the_tensorboard_command_train_prints_runs_without_an_activated_environment(tmp_path, monkeypatch):
    # The README runs `.venv/bin/python train.py`; the last line said `tensorboard --logdir ...`, which is "command
    # not found" unless the environment is activated. It names the environment's own tensorboard then.
    from app import cli

    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "tensorboard").write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    assert cli.tensorboard_command() == str(venv_bin / "tensorboard")
    monkeypatch.setattr(cli.shutil, "which", lambda name: "/usr/bin/" + name)
    assert cli.tensorboard_command() == "tensorboard"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import train

    root = tmp_path_factory.mktemp("readme_run")
    data = write_colour_folder(root / "colours", per_class=8)
    run = root / "run"
    args = [str(data), "--backbone", "tiny_image", "--epochs", "2", "--output", str(run), "--no-cache-features"]
    assert train.main(args) == 0
    return data, run


def _run_directory_tree() -> dict[str, str]:
    tree = README.split("## The run directory", 1)[1].split("```", 2)[1]
    return {m.group(1): m.group(2) for m in re.finditer(r"^  (\S+)\s+(.*)$", tree, flags=re.MULTILINE)}


def test_every_file_a_run_writes_is_in_the_readmes_tree_and_back(tiny_run):
    _, run = tiny_run
    tree = _run_directory_tree()
    written = {p.name + ("/" if p.is_dir() else "") for p in run.iterdir()} - {".lock"}  # .lock: README, Errors
    undocumented = sorted(name for name in written if name not in tree)
    assert not undocumented, undocumented
    # What every run writes (not "meta strategies only", "with --meta-data", "only while training", "written by").
    always = {name for name, text in tree.items()
              if not re.search(r"only|^with |^written by", text)}
    assert not sorted(always - written), sorted(always - written)
    metadata = json.loads((run / "metadata.json").read_text())
    for key in ("class_names", "modality", "input_spec", "backbone", "strategy", "metrics", "refit", "versions",
                "manifest_sha256", "seed", "created", "class_digest"):
        assert key in metadata, key
    assert "wall_time_s" in metadata["metrics"]


def test_evaluate_writes_the_files_and_keys_the_readme_lists(tiny_run):
    import evaluate

    data, run = tiny_run
    assert evaluate.main([str(run), str(data), "--name", "readme", "--bootstrap", "20"]) == 0
    folder = run / "eval" / "readme"
    listed = re.findall(r"[\w.]+\.(?:json|md|png|csv)", _run_directory_tree()["eval/<name>/"])
    always = [name for name in listed if name not in ("explanations.png", "label_issues.png")]  # "image runs ... when"
    assert [name for name in always if not (folder / name).is_file()] == []
    metrics = json.loads((folder / "metrics.json").read_text())
    section = FLAT.split("`metrics.json` has ", 1)[1].split("`report.md` adds", 1)[0]
    keys = {k for k in re.findall(r"`([a-z_0-9]+)`", section) if k not in ("jq", "null", "k")} - {"bootstrap"}
    assert keys and not sorted(keys - set(metrics)), sorted(keys - set(metrics))
    assert set(next(iter(metrics["per_class"].values()))) == {"precision", "recall", "f1", "support"}
    assert (run / "logs" / "eval_readme").is_dir()  # "logs/ ... eval_<name>/ from evaluate.py"


def test_predict_json_and_jsonl_have_the_shape_the_readme_gives(tiny_run, capsys):
    import predict

    data, run = tiny_run
    files = [str(next((data / "red").iterdir())), str(data / "missing.png")]
    assert predict.main([str(run), *files, "--json", "--top-k", "2"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {"predictions", "skipped"}
    (entry,) = document["predictions"]
    assert {"file", "top", "unknown", "unknown_score"} <= set(entry) and len(entry["top"]) == 2
    assert all(set(top) == {"class", "probability"} for top in entry["top"])
    assert [s["file"] for s in document["skipped"]] == [files[1]]

    assert predict.main([str(run), *files, "--jsonl", "--top-k", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert set(lines[0]) == {"file", "skipped"} and lines[0]["file"] == files[1]  # skipped files first
    assert {key: value for key, value in lines[1].items()} == entry  # then the --json entries, one per line
