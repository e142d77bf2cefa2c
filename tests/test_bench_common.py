"""bench/common.py: the table helper, the main() skeleton (measure, re-render from JSON) and the worker
harness, on made-up sections (no benchmark is measured here); and every section built on the skeleton
re-renders its stored results into the section BENCHMARKS.md is assembled from."""

from __future__ import annotations

import importlib
import json
import re
import sys
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402


def test_markdown_table_aligns_columns_and_keeps_empty_cells():
    table = common.markdown_table(["name", "rate", "note"], [["a", 1.5, ""], ["b", "2,000", "x"]], align="lrc")
    assert table.splitlines() == ["| name | rate | note |", "|---|---:|:---:|", "| a | 1.5 | |", "| b | 2,000 | x |"]
    # Columns without a letter are left-aligned.
    assert common.markdown_table(["a", "b"], [], align="r").splitlines()[1] == "|---:|---|"


@pytest.mark.parametrize("rows, align, message", [([["only one"]], "", "1 cells for 2 columns"),
                                                   ([], "lrx", "more letters"), ([], "x", "l, r or c")])
def test_markdown_table_refuses_rows_and_alignments_that_do_not_fit(rows, align, message):
    with pytest.raises(ValueError, match=message):
        common.markdown_table(["a", "b"], rows, align=align)


def test_median_range():
    assert common.median_range([3.0, 1.0, 2000.0], 1) == "3.0 (1.0 – 2,000.0)"
    assert common.median_range([3.0, 1.0, 2000.0], 0, thousands=False) == "3 (1 – 2000)"


def _section(measured: list) -> common.Section:
    def measure(params, log):
        measured.append(params)
        log("measuring")
        return {"params": params, "rates": [params["n"] * 10.0, params["n"] * 20.0]}

    def render(results):
        return "## Made up\n\n" + common.markdown_table(
            ["command", "rate"], [[f"`{results['command']}`", common.median_range(results["rates"])]], align="lr")

    def params(args):
        if args.n < 1:
            raise common.UsageError("--n must be at least 1")
        return {"n": 1 if args.quick else args.n}

    return common.Section(script="bench_made_up.py", doc="A made-up section.", params=params, measure=measure,
                          render=render, add_arguments=lambda parser: parser.add_argument("--n", type=int, default=3))


def test_main_measures_stamps_and_writes_both_outputs(tmp_path, capsys):
    measured = []
    section = _section(measured)
    output, raw = tmp_path / "section.md", tmp_path / "raw.json"

    assert common.main(section, ["--quick", "--output", str(output), "--json", str(raw)]) == 0

    assert measured == [{"n": 1}]
    results = json.loads(raw.read_text())
    assert results["command"] == "python bench/bench_made_up.py --quick"
    assert results["machine"] == common.machine_summary(results["machine_info"])
    assert {"nproc", "cpu", "ram_gib", "kernel", "python", "tensorflow", "date"} <= set(results["machine_info"])
    assert results["wall_min"] >= 0
    assert output.read_text() == section.render(results) + "\n"
    assert "| `python bench/bench_made_up.py --quick` | 15.0 (10.0 – 20.0) |" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.json", "section.md"]  # no temporary left


def test_main_re_renders_stored_results_without_measuring(tmp_path):
    measured = []
    section = _section(measured)
    stored = {"command": "python bench/bench_made_up.py --n 5", "rates": [1.0, 2.0, 300.0]}
    (tmp_path / "raw.json").write_text(json.dumps(stored))

    assert common.main(section, ["--from-json", str(tmp_path / "raw.json"), "--output", str(tmp_path / "s.md")]) == 0

    assert measured == []
    assert (tmp_path / "s.md").read_text() == section.render(stored) + "\n"
    assert "| `python bench/bench_made_up.py --n 5` | 2.0 (1.0 – 300.0) |" in (tmp_path / "s.md").read_text()


@pytest.mark.parametrize("argv, message", [(["--n", "0"], "--n must be at least 1"),
                                           (["--from-json", "missing.json"], "cannot read results from missing.json")])
def test_main_reports_bad_options_in_one_line_with_exit_status_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        common.main(_section([]), argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_run_worker_measures_in_a_fresh_process_and_reports_failures(tmp_path):
    script = tmp_path / "bench_echo.py"
    script.write_text(textwrap.dedent(f"""
        import argparse, os, sys
        sys.path.insert(0, {str(BENCH)!r})
        import common

        def twice(params):
            if params["n"] < 0:
                raise ValueError("negative")
            return {{"twice": 2 * params["n"], "pid": os.getpid()}}

        WORKERS = {{"twice": twice}}
        parser = argparse.ArgumentParser()
        common.add_standard_arguments(parser, WORKERS)
        common.serve_worker(parser.parse_args(), WORKERS)
    """))

    result = common.run_worker(str(script), "twice", {"n": 21})

    assert result["twice"] == 42
    assert result["pid"] != __import__("os").getpid()
    assert result["peak_rss_mib"] > 0 and result["process_s"] > 0 and result["other_cores"] >= 0
    with pytest.raises(RuntimeError, match="negative"):
        common.run_worker(str(script), "twice", {"n": -1})


# The sections on the skeleton, and the name of their stored results in bench/results/.
SECTIONS = {"bench_pipeline": "pipeline", "bench_photos": "photos", "bench_compute": "compute",
            "bench_transfer": "transfer", "bench_episodic": "episodic", "bench_export": "export",
            "bench_carveout": "carveout", "bench_unknowns": "unknowns", "bench_unknown_scores": "unknownscores",
            "bench_text": "text", "bench_meta_transfer": "metatransfer", "bench_fewshot": "fewshot"}


@pytest.mark.parametrize("module, name", sorted(SECTIONS.items()))
def test_stored_results_re_render_to_the_published_section(module, name):
    results_dir = BENCH / "results"
    if not (results_dir / f"{name}.json").is_file():
        pytest.skip(f"bench/results/{name}.json is not there")
    section = importlib.import_module(module).SECTION
    stored = common.read_results(results_dir / f"{name}.json")
    # Whitespace aside: sections written before the table helper have some empty cells as "|  |".
    assert _words(section.render(stored)) == _words((results_dir / f"{name}.md").read_text())


def _words(text: str) -> list[str]:
    return text.split()


def test_carveout_add_to_keeps_the_other_settings_runs_and_names_both_commands(tmp_path):
    import argparse

    import bench_carveout

    earlier = {"command": "python bench/bench_carveout.py", "runs": [
        {"size": 5, "seed": 1, "setting": "0.2", "accuracy": 0.6}, {"size": 5, "seed": 1, "setting": "0", "accuracy": 0.5}]}
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    parser = argparse.ArgumentParser()
    common.add_standard_arguments(parser, bench_carveout.WORKERS)
    bench_carveout._arguments(parser)

    params = bench_carveout._params(parser.parse_args(["--settings", "0", "--add-to", str(tmp_path / "earlier.json")]))
    # Nothing to measure at no size: what is kept, and the command the section will print.
    results = bench_carveout.measure({**params, "sizes": []}, lambda message: None)

    assert results["runs"] == [earlier["runs"][0]]  # the re-measured setting's earlier run is dropped
    assert results["command"] == "python bench/bench_carveout.py + python bench/bench_carveout.py --settings 0"
    assert "previous_runs" not in results["params"] and "previous_command" not in results["params"]
    with pytest.raises(common.UsageError, match="unknown setting"):
        bench_carveout._params(parser.parse_args(["--settings", "0.5"]))


def _parse(module, argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    common.add_standard_arguments(parser, module.WORKERS)
    module.SECTION.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("module, argv, message", [
    ("bench_text", ["--methods", "linear,foo"], "Unknown dataset/method ['foo']"),
    ("bench_text", ["--shots", "8,x"], "--shots takes a comma list of integers"),
    ("bench_text", ["--shots", "4"], "K not in [8, 16]"),
    ("bench_meta_transfer", ["--stages", "auto,nope"], "--stages takes"),
    ("bench_fewshot", ["--only", "protonet,nope"], "--only takes a comma list"),
])
def test_sections_refuse_bad_options_before_measuring(module, argv, message):
    module = importlib.import_module(module)
    with pytest.raises(common.UsageError, match=re.escape(message)):
        module.SECTION.params(_parse(module, argv))


def test_sections_record_the_command_built_from_their_options(tmp_path):
    import bench_fewshot
    import bench_meta_transfer
    import bench_text

    text = bench_text.SECTION.params(_parse(bench_text, ["--quick", "--datasets", "reuters-r8", "--seeds", "0,1",
                                                         "--methods", "linear,finetune"]))
    assert text["command"] == "python bench/bench_text.py --quick --datasets reuters-r8 --seeds 0,1 --methods linear,finetune"
    assert text["methods"] == ["linear", "finetune"] and text["earlier"] is None
    fewshot = bench_fewshot.SECTION.params(_parse(bench_fewshot, ["--json", "raw.json", "--only", "protonet",
                                                                  "--output", "s.md"]))
    assert fewshot["command"] == ".venv/bin/python bench/bench_fewshot.py --output s.md --json raw.json --only protonet"
    assert fewshot["only"] == ["protonet"] and fewshot["config"] is bench_fewshot.FULL
    stored = {"params": bench_meta_transfer.QUICK, "runs": {}}
    (tmp_path / "raw.json").write_text(json.dumps(stored))
    meta = bench_meta_transfer.SECTION.params(_parse(bench_meta_transfer, [
        "--quick", "--stages", "bar", "--add-to", str(tmp_path / "raw.json")]))
    assert meta["command"] == "python bench/bench_meta_transfer.py --quick --stages bar" and meta["earlier"] == stored
    with pytest.raises(common.UsageError, match="was measured with"):  # full-size params into a quick result
        bench_meta_transfer.SECTION.params(_parse(bench_meta_transfer, ["--add-to", str(tmp_path / "raw.json")]))
