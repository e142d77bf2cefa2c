"""The data doctor's per-file check (data/doctor.py, data/images.py, data/text.py) and its cache."""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import data.doctor as doctor
from data.doctor import FileCheck, check_files, inspect_file
from data.images import load_image, to_rgb
from data.scan import scan_folder
from data.text import read_text

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _animated_gif(path: Path, frames: int = 3) -> Path:
    rng = np.random.default_rng(7)
    images = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(frames)]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:])
    return path


def _truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


# --------------------------------------------------------------------------- images: converted

IMAGE_CASES = {
    # name: (file name, make_image kwargs, expected notes)
    "rgb": ("plain.png", {}, ()),
    "grayscale": ("gray.png", {"mode": "L"}, ("grayscale (L) converted to RGB",)),
    "bilevel": ("bilevel.png", {"mode": "1"}, ("grayscale (1) converted to RGB",)),
    "palette": ("palette.png", {"mode": "P"}, ("palette converted to RGB",)),
    "palette_gif": ("palette.gif", {"mode": "P"}, ("palette converted to RGB",)),
    "palette_transparency": (
        "palette_t.png", {"mode": "P", "transparency": 0}, ("palette with transparency composited on white",)
    ),
    "rgba": ("rgba.png", {"mode": "RGBA"}, ("RGBA transparency composited on white",)),
    "la": ("la.png", {"mode": "LA"}, ("LA transparency composited on white",)),
    "cmyk_jpeg": ("cmyk.jpg", {"mode": "CMYK"}, ("CMYK converted to RGB",)),
    "exif_rotated": ("rotated.jpg", {"exif": _exif(6)}, ("rotated by EXIF orientation 6",)),
    "exif_upright": ("upright.jpg", {"exif": _exif(1)}, ()),
    "webp": ("photo.webp", {}, ()),
    "tiff": ("scan.tiff", {}, ()),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_usable_image_records_conversion_notes_and_sha256(case, tmp_path, make_image):
    name, kwargs, expected = IMAGE_CASES[case]
    path = make_image(tmp_path / name, **kwargs)

    check = inspect_file(str(path), "image")

    assert isinstance(check, FileCheck)
    assert check.usable and check.reason == ""
    assert check.notes == expected
    assert check.sha256 == _sha(path)
    assert re.fullmatch(r"[0-9a-f]{64}", check.sha256)
    assert check.encoding == ""


def test_sixteen_bit_png_is_noted_and_scaled_not_clipped(tmp_path, make_image):
    path = make_image(tmp_path / "deep.png", mode="I;16")
    check = inspect_file(str(path), "image")
    assert check.usable
    assert len(check.notes) == 1
    assert re.fullmatch(r"I(;16[BL]?)? \(16/32-bit\) scaled to 8-bit RGB", check.notes[0]), check.notes
    assert check.sha256 == _sha(path)

    # A mid-grey 16-bit value becomes mid-grey, not clipped white.
    solid = tmp_path / "solid16.png"
    Image.fromarray(np.full((4, 4), 32896, np.uint16)).save(solid)
    pixels = load_image(str(solid), (4, 4))
    assert pixels.dtype == np.uint8
    assert np.all(np.abs(pixels.astype(int) - 128) <= 1), pixels[0, 0]


def test_float_tiff_in_0_1_or_0_255_is_scaled_and_other_ranges_are_unusable(tmp_path):
    """A 32-bit float TIFF (mode F) became an all-black image that trained as if it were data."""
    def tiff(name, values):
        path = tmp_path / name
        Image.fromarray(np.asarray(values, np.float32), mode="F").save(path)
        return str(path)
    unit = tiff("unit.tif", np.full((4, 4), 0.5))
    check = inspect_file(unit, "image")
    assert check.usable and check.notes == ("F (32-bit float) scaled to 8-bit RGB (0-1 times 255; 0-255 kept)",)
    assert np.all(load_image(unit, (4, 4)) == 128)
    assert np.all(load_image(tiff("bytes.tif", np.full((4, 4), 200.0)), (4, 4)) == 200)
    for name, values, reason in (("wide.tif", np.linspace(-5, 900, 16).reshape(4, 4), "values from -5 to 900"),
                                 ("nan.tif", np.full((4, 4), np.nan), "NaN or infinite")):
        check = inspect_file(tiff(name, values), "image")
        assert not check.usable and reason in check.reason and "convert it to 8-bit" in check.reason


def test_exif_orientation_6_is_applied_when_loading(tmp_path):
    # Stored 8 wide x 4 high, left half red, right half blue, tagged "rotate 90 clockwise":
    # seen 4 wide x 8 high with red on top.
    pixels = np.zeros((4, 8, 3), np.uint8)
    pixels[:, :4] = (255, 0, 0)
    pixels[:, 4:] = (0, 0, 255)
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, quality=95, exif=_exif(6))
    assert inspect_file(str(path), "image").notes == ("rotated by EXIF orientation 6",)
    with Image.open(path) as raw:
        assert raw.size == (8, 4)  # the file itself is not rotated
        assert to_rgb(raw).size == (4, 8)

    loaded = load_image(str(path), (8, 4)).astype(int)  # (height, width): no resizing needed

    assert (loaded[:3, :, 0] > 200).all() and (loaded[:3, :, 2] < 60).all()  # top: red
    assert (loaded[5:, :, 2] > 200).all() and (loaded[5:, :, 0] < 60).all()  # bottom: blue


def test_transparent_pixels_become_white(tmp_path, make_image):
    path = make_image(tmp_path / "clear.png", mode="RGBA", color=(10, 20, 30, 0))
    assert inspect_file(str(path), "image").notes == ("RGBA transparency composited on white",)
    assert (load_image(str(path), (8, 8)) == 255).all()


def test_animated_gif_first_frame_used(tmp_path):
    path = _animated_gif(tmp_path / "anim.gif", frames=3)
    check = inspect_file(str(path), "image")
    assert check.usable
    assert "animated (3 frames): first frame used" in check.notes
    assert check.sha256 == _sha(path)


# --------------------------------------------------------------------------- images: unusable


def test_zero_byte_image_is_unusable(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    check = inspect_file(str(path), "image")
    assert not check.usable
    assert "empty file" in check.reason
    assert check.sha256 == EMPTY_SHA256
    assert check.notes == ()


def test_truncated_jpeg_is_unusable(tmp_path):
    path = _truncated_jpeg(tmp_path / "cut.jpg")
    check = inspect_file(str(path), "image")
    assert not check.usable
    assert "not a readable image" in check.reason
    assert "truncated" in check.reason
    assert check.sha256 == _sha(path)


def test_text_named_jpg_is_unusable(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are my notes, not a photo\n")
    check = inspect_file(str(path), "image")
    assert not check.usable
    assert "not a readable image" in check.reason
    assert "not a recognised image format" in check.reason
    assert check.sha256 == _sha(path)


def test_decompression_bomb_is_unusable(tmp_path, make_image, monkeypatch):
    path = make_image(tmp_path / "bomb.png", size=(64, 64))
    # Under the limit: fine.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64)
    assert inspect_file(str(path), "image").usable
    # Pillow raises DecompressionBombError above twice the limit.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    check = inspect_file(str(path), "image")
    assert not check.usable
    assert "decompression bomb" in check.reason.lower()
    assert check.sha256 == _sha(path)


def test_missing_file_is_unusable_with_reason(tmp_path):
    check = inspect_file(str(tmp_path / "gone.png"), "image")
    assert not check.usable
    assert "cannot read file" in check.reason


# --------------------------------------------------------------------------- text

ACCENTED = "Les élèves étaient très fâchés à cause de l'été"


def test_utf8_text(tmp_path):
    text = "Grüße aus München — 猫 ✓\nsecond line"
    path = tmp_path / "utf8.txt"
    path.write_bytes(text.encode("utf-8"))
    check = inspect_file(str(path), "text")
    assert check.usable and check.reason == ""
    assert check.encoding == "utf-8"
    assert check.notes == ()
    assert check.sha256 == _sha(path)
    assert read_text(str(path), check.encoding) == text


def test_utf8_with_bom(tmp_path):
    text = "café au lait"
    path = tmp_path / "bom.txt"
    path.write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    check = inspect_file(str(path), "text")
    assert check.usable
    assert check.encoding == "utf-8-sig"
    assert len(check.notes) == 1 and "BOM" in check.notes[0]
    assert check.sha256 == _sha(path)
    read = read_text(str(path), check.encoding)
    assert read == text
    assert "\ufeff" not in read


@pytest.mark.parametrize("codec", ["cp1252", "latin-1"])
def test_single_byte_western_encoding_is_detected(codec, tmp_path):
    path = tmp_path / "legacy.txt"
    path.write_bytes(ACCENTED.encode(codec))
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")

    check = inspect_file(str(path), "text")

    assert check.usable
    assert check.encoding and check.encoding.replace("-", "_").lower() not in ("utf_8", "utf_8_sig")
    assert len(check.notes) == 1 and "not UTF-8" in check.notes[0]
    assert check.sha256 == _sha(path)
    assert read_text(str(path), check.encoding) == ACCENTED


TYPICAL_CP1252 = [
    "Le café était très bon et le service impeccable. Je recommande vivement ce restaurant à tous mes amis.",
    "Das Essen war schön und die Bedienung freundlich. Wir kommen gerne wieder, vielen Dank für alles!",
    "Ça va? Oui, ça va très bien, merci beaucoup. Et toi, comment ça va aujourd'hui?",
    "Très bien, je suis très content de mon achat. La qualité est excellente et la livraison rapide.",
    "Café crème brûlée à la française, déjà vu, naïve façade, garçon.",
]


def test_typical_cp1252_reviews_are_decoded_correctly(tmp_path):
    wrong = {}
    for i, sentence in enumerate(TYPICAL_CP1252):
        path = tmp_path / f"{i}.txt"
        path.write_bytes(sentence.encode("cp1252"))
        check = inspect_file(str(path), "text")
        if not check.usable or read_text(str(path), check.encoding) != sentence:
            wrong[sentence[:25]] = check.encoding
    assert wrong == {}


def test_utf16_with_bom_is_detected(tmp_path):
    text = "Le café était très bon."
    path = tmp_path / "notepad.txt"
    path.write_bytes(text.encode("utf-16"))
    check = inspect_file(str(path), "text")
    assert check.usable
    assert "not UTF-8" in check.notes[0]
    assert read_text(str(path), check.encoding) == text


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_read_and_text_with_nul_is_unusable(tmp_path, codec):
    """ASCII text in UTF-16 without a BOM is valid UTF-8 (with a NUL in every other character): it was
    accepted as such, NULs included."""
    text = "A plain English review of a film, \u4e00 and \u0100 included."  # low bytes 0 on the other side
    path = tmp_path / "no_bom.txt"
    path.write_bytes(text.encode(codec))
    check = inspect_file(str(path), "text")
    assert check.usable and check.notes == (f"UTF-16 without a byte-order mark: decoded as {codec} (detected)",)
    assert read_text(str(path), check.encoding) == text
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"some words\x00\x00\x07more words")
    check = inspect_file(str(nul), "text")
    assert not check.usable and "holds NUL characters" in check.reason


def test_a_text_over_the_read_limit_is_noted_by_the_check(tmp_path):
    from data.text import MAX_TEXT_BYTES

    path = tmp_path / "long.txt"
    path.write_text("word " * (MAX_TEXT_BYTES // 5 + 10), encoding="utf-8")
    check = inspect_file(str(path), "text")
    assert check.usable and check.notes == ("over 256 KiB: read up to its first 256 KiB",)
    short = tmp_path / "short.txt"
    short.write_text("a few words", encoding="utf-8")
    assert inspect_file(str(short), "text").notes == ()


def test_binary_junk_text_is_unusable(tmp_path, make_image):
    junk = tmp_path / "junk.txt"
    junk.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 256, dtype=np.uint8)))
    png_as_txt = tmp_path / "picture.txt"
    png_as_txt.write_bytes(make_image(tmp_path / "p.png").read_bytes())
    for path in (junk, png_as_txt):
        check = inspect_file(str(path), "text")
        assert not check.usable, path.name
        assert "no text encoding could be detected" in check.reason
        assert check.encoding == ""
        assert check.sha256 == _sha(path)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"", "empty file (0 bytes)"),
        (b"   \n\t\r\n  ", "whitespace only"),
        (codecs.BOM_UTF8 + b" \n", "whitespace only"),
        (codecs.BOM_UTF8, "whitespace only"),
    ],
    ids=["zero-bytes", "whitespace", "bom-whitespace", "bom-only"],
)
def test_empty_and_whitespace_text_is_unusable(raw, fragment, tmp_path):
    path = tmp_path / "blank.txt"
    path.write_bytes(raw)
    check = inspect_file(str(path), "text")
    assert not check.usable
    assert fragment in check.reason
    assert check.sha256 == hashlib.sha256(raw).hexdigest()


# --------------------------------------------------------------------------- the cache


@pytest.fixture
def counting(monkeypatch):
    """Replace data.doctor.inspect_file with a wrapper recording every path it checks."""
    calls: list[str] = []
    original = doctor.inspect_file

    def wrapper(path, modality):
        calls.append(path)
        return original(path, modality)

    monkeypatch.setattr(doctor, "inspect_file", wrapper)
    return calls


@pytest.fixture
def folder(tmp_path, make_image):
    root = tmp_path / "data"
    paths = [
        make_image(root / "a" / "one.png"),
        make_image(root / "a" / "two.jpg", mode="L"),
        make_image(root / "b" / "three.png", mode="RGBA"),
    ]
    broken = root / "b" / "broken.jpg"
    broken.write_bytes(b"not an image")
    return root, [str(p) for p in [*paths, broken]]


def test_second_check_reads_nothing_and_gives_equal_results(folder, counting):
    root, paths = folder
    first = check_files(paths, "image", root)
    assert sorted(counting) == sorted(paths)
    assert [c.usable for c in first] == [True, True, True, False]

    counting.clear()
    second = check_files(paths, "image", root)

    assert counting == []
    assert second == first
    assert all(isinstance(c.notes, tuple) for c in second)


def test_new_content_is_rechecked_alone(folder, counting, make_image):
    root, paths = folder
    first = check_files(paths, "image", root)
    make_image(paths[0], size=(12, 5), mode="CMYK", fmt="JPEG")  # new content, new size
    counting.clear()

    second = check_files(paths, "image", root)

    assert counting == [paths[0]]
    assert second[0].sha256 == _sha(paths[0]) != first[0].sha256
    assert second[0].notes == ("CMYK converted to RGB",)
    assert second[1:] == first[1:]


def test_verdicts_cached_by_an_older_doctor_are_checked_again(folder, counting):
    """The doctor's rules change (CACHE_VERSION): a verdict cached under older rules is not trusted."""
    root, paths = folder
    check_files(paths, "image", root)
    cache = doctor._DoctorCache(root, "image")
    payload = json.loads(cache.path.read_text())
    payload["version"] = doctor.CACHE_VERSION - 1
    cache.path.write_text(json.dumps(payload))
    counting.clear()
    check_files(paths, "image", root)
    assert sorted(counting) == sorted(paths)


def test_file_emptied_in_place_is_no_longer_usable(folder, counting):
    root, paths = folder
    assert check_files(paths, "image", root)[1].usable
    Path(paths[1]).write_bytes(b"")
    counting.clear()

    second = check_files(paths, "image", root)

    assert counting == [paths[1]]
    assert not second[1].usable and "empty file" in second[1].reason


def test_new_mtime_alone_rechecks_only_that_file(folder, counting):
    root, paths = folder
    first = check_files(paths, "image", root)
    stat = os.stat(paths[2])
    os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    counting.clear()

    second = check_files(paths, "image", root)

    assert counting == [paths[2]]
    assert second == first
    counting.clear()
    assert check_files(paths, "image", root) == first
    assert counting == []


def test_use_cache_false_checks_everything(folder, counting):
    root, paths = folder
    first = check_files(paths, "image", root)
    counting.clear()

    again = check_files(paths, "image", root, use_cache=False)

    assert sorted(counting) == sorted(paths)
    assert again == first


def test_cache_is_per_modality_and_survives_a_corrupt_cache_file(folder, counting):
    root, paths = folder
    first = check_files(paths, "image", root)
    cache_file = doctor._DoctorCache(root, "image").path
    assert cache_file.is_file()
    assert set(json.loads(cache_file.read_text())["files"]) == {os.path.relpath(p, root) for p in paths}

    cache_file.write_text("{ this is not json")
    counting.clear()
    assert check_files(paths, "image", root) == first
    assert sorted(counting) == sorted(paths)  # a corrupt cache is ignored and rebuilt
    counting.clear()
    assert check_files(paths, "image", root) == first
    assert counting == []


def test_scan_folder_uses_the_cache(folder, counting):
    root, _ = folder
    first = scan_folder(root)
    assert len(counting) == 4
    counting.clear()

    second = scan_folder(root)

    assert counting == []
    assert second.examples == first.examples
    assert second.skipped == first.skipped
    assert second.converted == first.converted
    counting.clear()
    scan_folder(root, use_cache=False)
    assert len(counting) == 4


@pytest.mark.parametrize(
    "text, codec",
    [
        ("Привет, как дела? Это обычный русский текст для проверки кодировки.", "cp1251"),
        ("日本語のテキストです。これは文字コードの検出のための文章です。", "shift_jis"),
    ],
)
def test_non_western_legacy_text_is_not_taken_for_cp1252(text, codec):
    from data.text import _legacy_encoding

    raw = text.encode(codec)
    encoding = _legacy_encoding(raw)
    assert encoding is not None and encoding != "cp1252"
