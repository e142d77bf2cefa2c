"""The benchmarks' verdicts are computed from their numbers: check the logic on made-up results,
so BENCHMARKS.md can never call a miss a pass (no measuring here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import bench_compute  # noqa: E402
import bench_text  # noqa: E402
import bench_transfer  # noqa: E402
import common  # noqa: E402
import run_all  # noqa: E402


def _strategy(seed: int, accuracy: float) -> dict:
    return {"seed": seed, "test_accuracy": accuracy, "train_wall_s": 10.0, "peak_rss_mib": 900.0}


def _transfer_results(linear: list[float], finetune: list[float]) -> dict:
    seeds = [1, 2, 3][:len(linear)]
    runs = {"linear": [_strategy(s, a) for s, a in zip(seeds, linear)],
            "finetune": [_strategy(s, a) for s, a in zip(seeds, finetune)],
            "scratch": [{**_strategy(s, 0.5), "epochs": 12} for s in seeds], "variants": {}}
    return {"params": {**bench_transfer.FULL, "sizes": [100], "seeds": seeds}, "sizes": {"100": runs}}


def test_clear_margin_needs_two_points_and_every_seed_ahead():
    assert bench_transfer.margin_verdict([2.5, 3.0, 2.1]).startswith("**yes**")
    behind_once = bench_transfer.margin_verdict([3.0, 4.0, -0.5])
    assert behind_once.startswith("**no**") and "behind or level on 1 of 3 seeds" in behind_once
    small = bench_transfer.margin_verdict([0.4, 1.0, 1.9])
    assert small.startswith("**no**") and "median gain +1.0 points < 2" in small


def test_gains_are_paired_by_seed():
    linear = [_strategy(1, 0.80), _strategy(2, 0.90)]
    finetune = [_strategy(2, 0.91), _strategy(1, 0.85)]  # listed in another order
    assert bench_transfer._gains(finetune, linear) == pytest.approx([1.0, 5.0])


def test_transfer_table_reports_medians_and_the_verdict():
    text = bench_transfer.render_sizes(_transfer_results([0.85, 0.84, 0.86], [0.86, 0.83, 0.87]))
    assert "| 100 | `finetune` | 0.860 (0.830 – 0.870) | 1.0 (-1.0 – 1.0) |" in text
    assert "**no** (median gain +1.0 points < 2; behind or level on 1 of 3 seeds)" in text
    text = bench_transfer.render_sizes(_transfer_results([0.80, 0.80, 0.80], [0.85, 0.84, 0.83]))
    assert "**yes** (median +4.0 points, ahead on every seed)" in text



def test_add_variants_measures_only_the_missing_recipes_and_says_so(monkeypatch):
    measured = []

    def fake_measure(p, size, seed, strategy, run, flags=None):
        measured.append((size, seed, strategy, tuple(flags)))
        return _strategy(seed, 0.8)

    monkeypatch.setattr(bench_transfer, "measure_strategy", fake_measure)
    results = _transfer_results([0.85, 0.84, 0.86], [0.86, 0.83, 0.87])
    names = list(bench_transfer.FULL["variants"])
    known, *missing = names
    results["sizes"]["100"]["variants"][known] = [_strategy(s, 0.85) for s in (1, 2, 3)]

    added = bench_transfer.add_variants(results, "python bench/bench_transfer.py --from-json x --add-variants")

    assert added == missing and missing
    assert measured == [(100, seed, "finetune", tuple(bench_transfer.FULL["variants"][name]))
                        for name in missing for seed in (1, 2, 3)]
    assert set(results["sizes"]["100"]["variants"]) == set(names)
    line = bench_transfer._rerun_line(results["reruns"][-1])
    assert ", ".join(f"`{name}`" for name in missing) + " at 100 per class measured on" in line
    assert "--add-variants" in line
    measured.clear()
    assert bench_transfer.add_variants(results, "again") == [] and measured == []  # nothing left to measure


def test_scratch_baseline_gets_the_same_step_budget_at_every_size():
    # 100 per class (800 training images, 25 steps per epoch): 12 epochs already make 300 steps.
    assert bench_transfer.scratch_epochs(12, 300, 800) == 12
    assert bench_transfer.scratch_epochs(12, 300, 80) == 100  # 3 steps per epoch
    assert bench_transfer.scratch_epochs(12, 300, 240) == 38  # 8 steps per epoch: 304 steps
    assert bench_transfer.scratch_epochs(3, 0, 80) == 3  # quick mode: no budget


def test_scratch_line_reports_the_epochs_each_size_ran():
    results = _transfer_results([0.85, 0.84, 0.86], [0.86, 0.83, 0.87])
    assert "Adam 1e-3, 12 epochs or at least 300 steps, whichever is more (epochs run: 100 per class: 12)" in \
        bench_transfer.render_sizes(results)
    results["params"]["scratch_min_steps"] = 0  # results measured before the budget existed
    assert "Adam 1e-3, 12 epochs, the epoch" in bench_transfer.render_sizes(results)

def _compute_results(real: float, synthetic: float, real_epoch_s: float | None = None) -> dict:
    def epoch(rate, seconds=None):
        return {"images_per_s": rate, "epoch_s": seconds if seconds is not None else 640 / rate}

    run = {"decoding_epoch": epoch(real, real_epoch_s), "cached_epoch": epoch(real, real_epoch_s),
           "synthetic": epoch(synthetic)}
    return {"params": bench_compute.FULL, "command": "python bench/bench_compute.py", "wall_min": 1.0,
            "machine": "test", "inference": {},
            "train": {"runs": [run] * 3, "steps_per_epoch": 20, "batch_size": 32, "unfreeze": "2",
                      "trainable_parameters": 1, "image_cache": "auto", "augment": True, "peak_rss_mib": 1.0}}


def test_compute_ratio_verdict_states_the_shortfall():
    assert "**pass**" in bench_compute.render(_compute_results(95.0, 100.0))
    missed = bench_compute.render(_compute_results(80.0, 100.0))
    assert "**miss** (short by 10 points)" in missed and "**pass**" not in missed


def test_compute_verdict_counts_stalls_outside_the_timed_steps():
    """Fast steps do not pass when the whole epoch (start-up included) is much slower."""
    stalled = bench_compute.render(_compute_results(99.0, 100.0, real_epoch_s=12.8))  # synthetic epoch: 6.4 s
    assert "**miss** (short by 40 points)" in stalled and "**pass**" not in stalled


def test_compute_ratio_uses_each_real_epochs_neighbouring_synthetic_epochs():
    """A slow spell of the machine during one real epoch is compared with the synthetic epochs
    just before and after it, not with the run's other synthetic epochs."""
    results = _compute_results(90.0, 100.0)
    slow_spell = {"images_per_s": 90.0, "epoch_s": 640 / 90.0}
    for run in results["train"]["runs"]:
        run["cached_epoch"] = {**run["cached_epoch"], "synthetic_neighbours": slow_spell}
    text = bench_compute.render(results)
    cached_row = next(line for line in text.splitlines() if line.startswith("| real files, later epochs (cache"))
    decoding_row = next(line for line in text.splitlines() if line.startswith("| real files, first epoch (decode"))
    assert "**pass**" in cached_row and "| 1.000 (1.000 – 1.000) |" in cached_row
    assert "**pass**" in decoding_row and "| 0.900 (0.900 – 0.900) |" in decoding_row


def test_misses_at_a_glance_lists_every_missed_line(tmp_path, monkeypatch):
    (tmp_path / "compute.md").write_text("## c\n\n| a | **miss** (short by 10 points) |\n")
    (tmp_path / "transfer.md").write_text("## t\n\n- 100 per class: ... margin? **no** (median gain +1.0 points < 2).\n")
    lines = run_all.misses_at_a_glance(tmp_path)
    assert any("[compute](#compute): 1 table row(s) marked **miss**" in line for line in lines)
    assert any(line.startswith("- [transfer](#transfer):") and "**no**" in line for line in lines)


def _text_run(dataset: str, seed: int, method: str, accuracy: float) -> dict:
    return {"dataset": dataset, "shots": 8, "seed": seed, "method": method, "accuracy": accuracy,
            "total_wall_s": 100.0 if method == "setfit" else 30.0, "train_wall_s": 20.0, "peak_rss_mib": 1000.0}


def _text_results(dataset: str, seeds: list[int], accuracies: dict, command: str, **params) -> dict:
    return {"params": {**bench_text.FULL, "datasets": [dataset], "shots": [8], "seeds": seeds,
                       "methods": list(accuracies), **params},
            "command": command, "machine": "2 cores", "peer": {"setfit": "1.2.0"}, "wall_min": 10.0,
            "datasets": {dataset: {"classes": ["a", "b"], "test_counts": {"a": 50, "b": 50}, "num_test": 100,
                                   "capped": False}},
            "runs": [_text_run(dataset, s, m, a) for s in seeds for m, a in accuracies.items()]}


def test_text_results_measured_in_parts_merge_into_one_grid():
    newsgroups = _text_results("20newsgroups", [0, 1], {"setfit": 0.9, "finetune": 0.89}, "first")
    reuters = _text_results("reuters-r8", [0, 1], {"setfit": 0.95, "finetune": 0.90}, "second")

    merged = bench_text.merge_results(newsgroups, reuters)

    assert merged["params"]["datasets"] == ["20newsgroups", "reuters-r8"] and merged["params"]["seeds"] == [0, 1]
    assert len(merged["runs"]) == 8 and merged["wall_min"] == 20.0
    assert "first` then `second" in merged["command"]
    report = bench_text.render(merged)
    assert "20 Newsgroups" in report and "Reuters" in report
    assert "not the issue's full grid" in report  # seeds 2-4 and K=16 still missing
    # 20 Newsgroups: -1 point at 0.3x SetFit's time passes; Reuters: -5 points misses.
    assert report.count("**pass**") == 1 and "5.00 points below SetFit" in report


def test_text_merge_replaces_a_remeasured_cell_and_refuses_other_protocols():
    first = _text_results("20newsgroups", [0], {"setfit": 0.9, "finetune": 0.80}, "first")
    again = _text_results("20newsgroups", [0], {"finetune": 0.85}, "again")
    merged = bench_text.merge_results(first, again)
    finetune = [r["accuracy"] for r in merged["runs"] if r["method"] == "finetune"]
    assert finetune == [0.85] and len(merged["runs"]) == 2

    smoke = _text_results("20newsgroups", [1], {"setfit": 0.5}, "smoke", setfit_iterations=5)
    with pytest.raises(common.UsageError, match="setfit_iterations"):
        bench_text.merge_results(first, smoke)


def test_transfer_section_counts_the_runs_that_refitted():
    results = _transfer_results([0.80, 0.81, 0.82], [0.80, 0.81, 0.82])
    runs = results["sizes"]["100"]
    runs["linear"][0]["refit"] = {"applied": True}
    runs["finetune"][0]["refit"] = {"applied": False}
    assert "100 per class: 1 of 6 (4 measured before the refit existed)" in bench_transfer._refit_line(results)


def test_text_section_counts_the_runs_that_refitted():
    runs = [{"method": "linear", "refit": {"applied": True}}, {"method": "finetune", "refit": {"applied": True}},
            {"method": "protonet"}, {"method": "setfit"}, {"method": "finetune"}]
    line = bench_text._refit_line(runs)
    assert line.startswith("Refit (`--refit auto`): 2 of 3 ") and "The other 1 were measured before" in line


def test_meta_transfer_time_bar_is_judged_on_the_50k_run_and_says_what_it_scored():
    import bench_meta_transfer

    def run(train_s: float, eval_s: float) -> dict:
        return {"train_s": train_s, "load": [1.0, 2.0],
                "source_stage": {"chosen": "supervised"},
                "episodes": {"1": {"run": [0.9475, 0.0045], "eval_s": eval_s,
                                   "baselines": {"nearest_centroid": [0.825, 0.007],
                                                 "logistic_regression": [0.842, 0.007]}}}}
    results = {"runs": {"auto": run(3000.0, 60.0), "bar": run(441.0, 70.0)}, "bar_source": {"files": 50400}}
    line = bench_meta_transfer.time_verdict(results)
    assert "8.5 min for a 50400-image source" in line and line.count("met") == 1 and "**miss**" not in line
    assert "kept the `supervised` source stage and scored 94.75 ± 0.45" in line
    assert "best baseline, logistic regression: 84.20" in line
    results["runs"]["bar"] = run(1150.0, 70.0)  # 20.3 min
    assert "**miss**" in bench_meta_transfer.time_verdict(results)
