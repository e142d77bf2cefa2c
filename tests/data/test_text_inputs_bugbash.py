"""Text folders with odd files, end to end: encodings, cut long files, invisible-only texts, and the same words read
the same way by the data doctor, training, predict.py (files and --text) and evaluate.py."""

from __future__ import annotations

import codecs
import json
import re
import tracemalloc

import pytest

import evaluate
import predict
import train
from app.prediction import text_name
from colour_folders import write_sentiment_folder
from data.doctor import inspect_file
from data.pipeline import read_texts, text_dataset
from data.text import MAX_TEXT_BYTES, holds_words, inspect_text_bytes, read_text_prefix
from error_lines import one_error_line

QUICK = ["--backbone", "tiny_text", "--sequence-length", "16", "--epochs", "1", "--refit", "no",
         "--exclude-label-issues", "0", "--seed", "1"]
LONG_WORDS = "café good—film "  # multi-byte characters all along (read as cp1252: "goodâ€”film", one [UNK])


def _utf8_with_a_stray_byte_past_the_cut() -> bytes:
    """A UTF-8 text longer than what is read, whose only non-UTF-8 byte (a Latin-1 é) lies past the cut."""
    return (LONG_WORDS * (MAX_TEXT_BYTES // len(LONG_WORDS) + 10)).encode("utf-8") + b" caf\xe9"


def test_a_stray_byte_past_the_read_part_leaves_a_utf8_text_utf8(tmp_path):
    path = tmp_path / "long.txt"
    path.write_bytes(_utf8_with_a_stray_byte_past_the_cut())
    check = inspect_file(str(path), "text")
    assert check.usable and check.encoding == "utf-8", check  # was cp1252: every "é" read as "Ã©"
    assert any("256 KiB" in note for note in check.notes)
    text = read_texts([str(path)], [check.encoding])[0]
    assert text.startswith(LONG_WORDS * 2) and "Ã" not in text


@pytest.mark.parametrize("encoding, bom", [("utf-16", 2), ("utf-16-le", 0), ("utf-16-be", 0)])
def test_long_utf16_is_detected_and_read_with_a_character_split_by_the_cut(tmp_path, encoding, bom):
    units = (MAX_TEXT_BYTES - 2 - bom) // 2  # the 4-byte emoji straddles the cut
    words = ("good film " * (units // 10 + 1))[:units] + "😀" + " more words" * 50
    path = tmp_path / "long16.txt"
    path.write_bytes(words.encode(encoding))
    inspection = inspect_text_bytes(path.read_bytes())
    assert inspection.usable and inspection.encoding.replace("_", "-") == encoding, inspection
    text, cut = read_text_prefix(str(path), inspection.encoding)
    assert cut and text == words[:units]  # the split character dropped, nothing misread


@pytest.mark.parametrize("raw", [b"\x01\x02\x7f", "\u200b\u200d\u2060".encode(), codecs.BOM_UTF8 + "\u200b\ufeff".encode()])
def test_a_text_of_invisible_characters_only_is_unusable_as_an_empty_one(raw):
    inspection = inspect_text_bytes(raw)
    assert not inspection.usable and "empty text" in inspection.reason and "zero-width" in inspection.reason


def test_words_among_invisible_characters_are_kept():
    assert holds_words("\u200bgood\x01") and holds_words("😀") and holds_words("مرحبا")
    assert inspect_text_bytes("\u200bgood".encode()).usable


def test_predict_refuses_a_text_argument_of_invisible_characters(tmp_path, capsys):
    assert predict.main([str(tmp_path / "run"), "--text", "good", "--text", "\u200b\u200b"]) == 2
    one_error_line(capsys.readouterr().err, "text number 2 of 2 holds only control or invisible",
                   "Received: '\\u200b\\u200b'")


def test_text_batches_cost_each_texts_own_size_and_keep_every_character():
    texts = ["x" * MAX_TEXT_BYTES] + ["good 😀 é\r\nשלום"] * 200
    tracemalloc.start()
    try:
        batches = list(text_dataset(texts, None, 64).as_numpy_iterator())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A fixed-width numpy str array took 4 bytes x the longest text for every row: 201 x 1 MiB here.
    assert peak < 30 * 2**20, peak
    assert [t.decode("utf-8") for batch in batches for t in batch] == texts


def _odd_folder(root):
    """Two classes of short sentences, plus one file of each odd kind in `neg`."""
    write_sentiment_folder(root)
    odd = {
        "bom8.txt": codecs.BOM_UTF8 + "awful café".encode(),
        "bom16.txt": "awful café hate".encode("utf-16"),
        "cp1252.txt": "bad café not".encode("cp1252"),
        "crlf.txt": b"bad\r\nawful\r\nfilm\r\n",
        "cr.txt": b"bad\rawful\rfood\r",
        "emoji_rtl.txt": "hate 😀 مرحبا e\u0301 bad".encode(),
        "long.txt": _utf8_with_a_stray_byte_past_the_cut(),
    }
    unusable = {
        "empty.txt": (b"", "0 bytes"), "blank.txt": (b" \r\n\t", "whitespace only"),
        "zwsp.txt": ("\u200b\u200b".encode(), "zero-width"), "nul.txt": (b"bad\x00awful", "NUL"),
        "binary.txt": (bytes(range(256)) * 4, "no text encoding"), "noext": (b"bad awful", "not a text file"),
    }
    for name, raw in {**odd, **{name: raw for name, (raw, _) in unusable.items()}}.items():
        (root / "neg" / name).write_bytes(raw)
    return root, odd, {name: reason for name, (_, reason) in unusable.items()}


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("odd-text")
    data, odd, unusable = _odd_folder(base / "data")
    run = base / "run"
    assert train.main([str(data), *QUICK, "--test-fraction", "0", "--output", str(run)]) == 0
    return data, run, odd, unusable


def test_the_data_report_lists_each_odd_file_with_what_was_done(odd_run):
    data, run, odd, unusable = odd_run
    report = json.loads((run / "data_report.json").read_text())
    text = json.dumps(report, ensure_ascii=False)
    for name, reason in unusable.items():
        line = next((item for item in report["skipped"] if item["path"].endswith(f"neg/{name}")), None)
        assert line is not None and reason in line["reason"], (name, text[:2000])
    for name in odd:  # every odd but readable file trained
        assert f"neg/{name}" in (run / "manifest.json").read_text()


def _json_predictions(capsys, argv) -> dict:
    capsys.readouterr()
    assert predict.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    return {entry["file"]: entry["top"] for entry in out["predictions"]} | {"skipped": out["skipped"]}


def test_a_file_and_the_same_words_as_text_get_the_same_prediction(odd_run, capsys):
    data, run, odd, unusable = odd_run
    neg = data / "neg"
    words = {"bom8.txt": "awful café", "bom16.txt": "awful café hate", "cp1252.txt": "bad café not",
             "crlf.txt": "bad\r\nawful\r\nfilm\r\n", "emoji_rtl.txt": "hate 😀 مرحبا e\u0301 bad"}
    argv = [str(run), *(str(neg / name) for name in words), "--json", "--reject", "none", "--top-k", "2"]
    argv += [item for text in words.values() for item in ("--text", text)]
    predicted = _json_predictions(capsys, argv)
    for name, text in words.items():
        from_file = {c["class"]: c["probability"] for c in predicted[str(neg / name)]}
        from_text = {c["class"]: c["probability"] for c in predicted[text_name(text)]}
        assert from_file == pytest.approx(from_text, abs=1e-6), name


def test_a_long_file_reads_as_its_start_whatever_lies_past_the_cut(odd_run, tmp_path, capsys):
    data, run, _, _ = odd_run
    clean = tmp_path / "clean.txt"
    clean.write_bytes(_utf8_with_a_stray_byte_past_the_cut()[:-6])  # the same start, no stray byte
    long = data / "neg" / "long.txt"
    predicted = _json_predictions(capsys, [str(run), str(long), str(clean), "--json", "--reject", "none",
                                           "--text", LONG_WORDS * 6, "--explain", str(tmp_path / "why")])
    first, second, as_text = (predicted[key] for key in (str(long), str(clean), text_name(LONG_WORDS * 6)))
    assert first == second and first[0]["probability"] == pytest.approx(as_text[0]["probability"], abs=1e-6)
    # The explanations quote the words as the model read them: the same, where cp1252 read "cafÃ©" (2 tokens).
    quoted = [re.sub(r"\*\*| \([+−]\d+%\)", "", next(line for line in (tmp_path / "why" / name).read_text().splitlines()
                                                  if line.startswith("> ")))  # the words, without their shares
              for name in ("0000-long-tokens.md", "0001-clean-tokens.md", "0002-text-tokens.md")]
    assert quoted[0] == quoted[1] == quoted[2] and "good" in quoted[0], quoted


def test_evaluate_scores_the_odd_files_and_names_the_unusable_ones(odd_run, tmp_path, capsys):
    data, run, odd, unusable = odd_run
    test = tmp_path / "other" / "test"
    for name in ("neg", "pos"):
        (test / name).mkdir(parents=True)
    for name in (*odd, *unusable):  # a space more in each readable file: not byte-identical to a training file
        raw = (data / "neg" / name).read_bytes()
        space = " ".encode("utf-16-le") if name == "bom16.txt" else b" "
        (test / "neg" / name).write_bytes(raw + space if raw and name not in ("binary.txt", "nul.txt") else raw)
    (test / "pos" / "fresh.txt").write_text("good great love", encoding="utf-16")
    assert evaluate.main([str(run), str(tmp_path / "other"), "--name", "odd"]) == 0
    metrics = json.loads((run / "eval" / "odd" / "metrics.json").read_text())
    assert metrics["num_examples"] == len(odd) + 1  # every readable odd file (changed: not a training file) scored
    skipped = {item["path"].rsplit("/", 1)[-1]: item["reason"] for item in metrics["skipped_files"]}
    assert set(skipped) == set(unusable) and all(reason in skipped[name] for name, reason in unusable.items())
