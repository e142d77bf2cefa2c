"""bench/unknown_sets.py and the glyph / R8 parts of bench/bench_unknowns.py: the known / unknown splits
(class-disjoint, seeded), the glyph folders, the --add-to merge and the rendered table, on made-up
alphabets and results (no backbone runs here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import bench_unknowns  # noqa: E402
import common  # noqa: E402
import unknown_sets  # noqa: E402

ALPHABETS = {f"Script{a}": [f"Script{a}__U{a:02d}{i:02X}" for i in range(12 + a)] for a in range(8)}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_class_split_is_disjoint_complete_seeded_and_keeps_fashion_s_rule(seed):
    names = [f"class{i}" for i in range(10)]
    known, unknown = unknown_sets.class_split(names[::-1], 7, seed)

    assert len(known) == 7 and sorted(known + unknown) == names and not set(known) & set(unknown)
    assert (known, unknown) == unknown_sets.class_split(names, 7, seed)
    # The rule Fashion-MNIST's published splits were drawn with.
    assert known == sorted(np.random.default_rng(seed).choice(names, 7, replace=False).tolist())
    with pytest.raises(ValueError, match="Received: 10"):
        unknown_sets.class_split(names, 10, seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_glyph_split_known_near_and_far_are_disjoint_and_from_the_right_alphabets(seed):
    split = unknown_sets.glyph_split(ALPHABETS, seed, known_alphabets=3, letters=5, unknown_alphabets=2)
    alphabet_of = {c: a for a, classes in ALPHABETS.items() for c in classes}

    assert len(split.known) == 15 and len(split.near_unknown) == 15 and len(split.far_unknown) == 10
    assert not set(split.known_alphabets) & set(split.unknown_alphabets)
    assert len(set(split.known) | set(split.near_unknown) | set(split.far_unknown)) == 40
    assert {alphabet_of[c] for c in split.known} == {alphabet_of[c] for c in split.near_unknown} \
        == set(split.known_alphabets)
    assert {alphabet_of[c] for c in split.far_unknown} == set(split.unknown_alphabets)
    assert split == unknown_sets.glyph_split(ALPHABETS, seed, 3, 5, 2)
    assert json.loads(json.dumps(split.to_dict()))["known"] == split.known


def test_glyph_split_varies_with_the_seed_and_refuses_too_few_alphabets():
    splits = {tuple(unknown_sets.glyph_split(ALPHABETS, seed, 3, 5, 2).known) for seed in range(5)}
    assert len(splits) > 1
    with pytest.raises(ValueError, match="more than 12 letters"):
        unknown_sets.glyph_split(ALPHABETS, 0, 3, 12, 5)  # only Script1-7 have more than 12 letters


def test_sample_outside_leaves_the_excluded_labels_out():
    rows = [(label, f"{label} text {i}") for i in range(20) for label in ("earn", "gold", "sugar")]
    chosen = unknown_sets.sample_outside(rows, {"earn"}, 15, seed=3)

    assert len(chosen) == 15 and {label for label, _ in chosen} <= {"gold", "sugar"}
    assert chosen == unknown_sets.sample_outside(rows, {"earn"}, 15, seed=3)
    assert chosen == sorted(chosen, key=rows.index)
    with pytest.raises(ValueError, match="40 exist"):
        unknown_sets.sample_outside(rows, {"earn"}, 41, seed=3)


def test_glyph_folders_split_instances_and_refuse_a_damaged_rendering(tmp_path):
    alphabets = {a: classes[:7] for a, classes in list(ALPHABETS.items())[:3]}
    dataset = tmp_path / "fonts"
    for letter in (c for classes in alphabets.values() for c in classes):
        (dataset / "images28" / letter).mkdir(parents=True)
        for n in range(5):
            Image.new("L", (28, 28), 255).save(dataset / "images28" / letter / f"{n:02d}.png")
    split = unknown_sets.glyph_split(alphabets, 0, known_alphabets=2, letters=3, unknown_alphabets=1)

    folders = unknown_sets.glyph_folders(dataset, split, instances=5, train_instances=3, target=tmp_path / "out")

    assert sorted(p.name for p in (folders["known"] / "train").iterdir()) == split.known
    assert {p.name for p in (folders["known"] / "train").rglob("*.png")} == {"00.png", "01.png", "02.png"}
    assert {p.name for p in (folders["known"] / "test").rglob("*.png")} == {"03.png", "04.png"}
    assert sorted(p.name for p in folders["far"].iterdir()) == split.far_unknown
    assert sorted(p.name for p in folders["near"].iterdir()) == split.near_unknown
    (dataset / "images28" / split.far_unknown[0] / "04.png").unlink()
    with pytest.raises(common.UsageError, match="damaged"):
        unknown_sets.glyph_folders(dataset, split, 5, 3, tmp_path / "again")


def _open_set(auroc: float) -> dict:
    return {"score": "energy", "auroc": auroc, "fpr_at_95_tpr": 0.5, "num_unknown": 12, "unknown_rejected": 0.4,
            "accuracy_with_rejection": 0.7, "auroc_by_score": {"max_softmax": auroc - 0.1, "energy": auroc},
            "fpr_at_95_tpr_by_score": {"max_softmax": 0.6, "energy": 0.5}}


def _glyph_part(command: str) -> dict:
    split = unknown_sets.glyph_split(ALPHABETS, 0, 2, 3, 2).to_dict()
    return {"command": command, "date": "2026-12-05 12:00 UTC", "machine": "2 CPU cores (x)", "wall_min": 4.0,
            "params": bench_unknowns.GLYPH, "splits": [
                {"seed": 0, "split": split, "known_accuracy": 0.9, "load": [1.5, 2.5, 2.0],
                 "unknowns": {"far": _open_set(0.95), "near": _open_set(0.75)}}]}


def test_other_sets_render_command_load_and_every_candidate_without_a_verdict():
    section = "\n".join(bench_unknowns.render_other_set("glyph", _glyph_part("python bench/bench_unknowns.py --sets glyph")))

    assert "`python bench/bench_unknowns.py --sets glyph`" in section and "load average 1.5 to 2.5" in section
    assert "| 0.850 / 0.60 | 0.950 / 0.50 |" in section  # max_softmax, energy on the far unknowns
    assert "energy, 0.950" in section and "energy, 0.750" in section
    assert not any(marker in section for marker in ("**miss", "**met", "**not"))


def test_add_to_keeps_fashion_and_other_sets_and_replaces_what_it_measures(tmp_path):
    earlier = {"command": "python bench/bench_unknowns.py", "params": {"per_class": 100, "test_per_class": 100},
               "wall_min": 60.0, "open_set": [{"seed": 0}], "noise": [{"rate": 0.05}],
               "sets": {"glyph": _glyph_part("old glyph"), "r8": {"command": "old r8"}}}
    p = {"sets": ["glyph"], "only": None, "command": "python bench/bench_unknowns.py --sets glyph"}

    merged = bench_unknowns.merge_earlier({"params": {}, "open_set": [], "noise": [], "sets": {}}, earlier, p)

    assert merged["open_set"] == earlier["open_set"] and merged["noise"] == earlier["noise"]
    assert merged["command"] == earlier["command"] and merged["wall_min"] == 60.0
    assert merged["fashion_machine"] == "2 shared cores"  # as the earlier section printed it
    assert merged["sets"] == {"r8": {"command": "old r8"}}  # glyph is measured again
    again = bench_unknowns.merge_earlier({"params": {}, "open_set": [], "noise": [], "sets": {}}, earlier,
                                         {**p, "sets": ["fashion"], "only": "noise"})
    assert again["open_set"] == earlier["open_set"] and again["noise"] == []
    assert again["command"] == "python bench/bench_unknowns.py + python bench/bench_unknowns.py --sets glyph"


def test_sets_option_is_checked():
    import argparse

    parser = argparse.ArgumentParser()
    common.add_standard_arguments(parser, bench_unknowns.WORKERS)
    bench_unknowns._arguments(parser)
    p = bench_unknowns._params(parser.parse_args(["--sets", "glyph,r8", "--fonts-root", "/x"]))
    assert p["sets"] == ["glyph", "r8"] and p["command"].endswith("--sets glyph,r8 --fonts-root /x")
    with pytest.raises(common.UsageError, match="Received: --sets text"):
        bench_unknowns._params(parser.parse_args(["--sets", "text"]))
