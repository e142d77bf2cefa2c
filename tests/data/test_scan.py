"""Folder scanning (data/scan.py) and image decoding (data/images.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.errors import DataError
from data.images import check_image, load_image, to_rgb
from data.scan import MAX_SKIP_WARNINGS, require_trainable, scan_folder


def _example_paths(result):
    return sorted(Path(e.path).relative_to(result.root).as_posix() for e in result.examples)


def _skipped(result):
    return {Path(s.path).relative_to(result.root).as_posix(): s.reason for s in result.skipped}


def _labels_by_path(result):
    return {Path(e.path).relative_to(result.root).as_posix(): result.class_names[e.label] for e in result.examples}


# --------------------------------------------------------------------------- layouts


def test_flat_layout_sorted_classes_and_labels(tmp_path, make_image):
    for name in ("zebra", "Apple", "mango"):
        for i in range(2):
            make_image(tmp_path / name / f"{i}.png")

    result = scan_folder(tmp_path)

    assert result.layout == "flat"
    assert result.modality == "image"
    assert result.class_names == sorted(["zebra", "Apple", "mango"]) == ["Apple", "mango", "zebra"]
    assert all(e.split is None for e in result.examples)
    labels = _labels_by_path(result)
    assert len(labels) == 6
    assert all(path.split("/")[0] == cls for path, cls in labels.items())
    assert result.counts() == {"Apple": 2, "mango": 2, "zebra": 2}
    assert result.skipped == []


def test_split_layout_detected_with_train_val_test(tmp_path, make_image):
    for split, per_class in (("train", 3), ("val", 2), ("test", 1)):
        for name in ("b_dog", "a_cat"):
            for i in range(per_class):
                make_image(tmp_path / split / name / f"{i}.png")

    result = scan_folder(tmp_path)

    assert result.layout == "split"
    assert result.class_names == ["a_cat", "b_dog"]
    assert result.splits_present() == ["train", "val", "test"]
    assert result.counts("train") == {"a_cat": 3, "b_dog": 3}
    assert result.counts("val") == {"a_cat": 2, "b_dog": 2}
    assert result.counts("test") == {"a_cat": 1, "b_dog": 1}
    for example in result.examples:
        split, class_name = Path(example.path).relative_to(tmp_path).parts[:2]
        assert example.split == split
        assert result.class_names[example.label] == class_name


def test_split_folders_beside_other_folders_are_an_error_not_classes_named_train_and_test(tmp_path, make_image):
    """Read as a flat layout, the run's classes were `extra`, `test` and `train`, and the test files trained."""
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            make_image(tmp_path / split / name / "0.png")
    make_image(tmp_path / "extra" / "0.png")
    with pytest.raises(DataError) as error:
        scan_folder(tmp_path)
    message = str(error.value)
    assert "mixes split folders (test, train) with other folders (extra)" in message
    assert "Put every class folder inside train/" in message and "rename the class folders called test or train" \
        in message


def test_split_layout_class_in_test_missing_from_train_is_an_error(tmp_path, make_image):
    make_image(tmp_path / "train" / "cat" / "0.png")
    make_image(tmp_path / "train" / "dog" / "0.png")
    make_image(tmp_path / "test" / "cat" / "1.png")
    make_image(tmp_path / "test" / "horse" / "1.png")

    with pytest.raises(DataError) as info:
        scan_folder(tmp_path)
    message = str(info.value)
    assert "horse" in message
    assert "train/" in message
    assert "cat" not in message.split("[")[1].split("]")[0]  # only the missing class is listed


def test_hidden_files_and_folders_are_ignored(tmp_path, make_image):
    make_image(tmp_path / "cat" / "0.png")
    make_image(tmp_path / "dog" / "0.png")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    make_image(tmp_path / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png")
    make_image(tmp_path / ".ipynb_checkpoints" / "x.png")
    make_image(tmp_path / "__MACOSX" / "cat" / "._0.png")
    make_image(tmp_path / "dog" / "__MACOSX" / "1.png")
    (tmp_path / "dog" / "Thumbs.db").write_bytes(b"junk")

    result = scan_folder(tmp_path)

    assert result.class_names == ["cat", "dog"]
    assert _example_paths(result) == ["cat/0.png", "dog/0.png"]
    assert result.skipped == []  # ignored, not reported as skipped


def test_upper_case_extensions_accepted(tmp_path, make_image):
    make_image(tmp_path / "a" / "one.PNG", fmt="PNG")
    make_image(tmp_path / "a" / "two.JPG", fmt="JPEG")
    make_image(tmp_path / "b" / "three.Jpeg", fmt="JPEG")
    make_image(tmp_path / "b" / "four.TIFF", fmt="TIFF")

    result = scan_folder(tmp_path)

    assert _example_paths(result) == ["a/one.PNG", "a/two.JPG", "b/four.TIFF", "b/three.Jpeg"]
    assert result.skipped == []


def test_non_ascii_file_and_class_names(tmp_path, make_image):
    names = ["café crème.png", "猫の写真.png", "Ünïcødé—ß.jpg"]
    for name in names:
        make_image(tmp_path / "chat_été" / name)
        make_image(tmp_path / "собака" / name)

    result = scan_folder(tmp_path)

    assert result.class_names == sorted(["chat_été", "собака"])
    assert _example_paths(result) == sorted(f"{c}/{n}" for c in ("chat_été", "собака") for n in names)
    for example in result.examples:
        assert os.path.isfile(example.path)


def test_nested_subfolders_are_included_in_their_class(tmp_path, make_image):
    make_image(tmp_path / "cat" / "top.png")
    make_image(tmp_path / "cat" / "2021" / "summer" / "deep.png")
    make_image(tmp_path / "dog" / "batch1" / "d.png")

    result = scan_folder(tmp_path)

    assert result.class_names == ["cat", "dog"]  # subfolders are not classes
    assert _labels_by_path(result) == {
        "cat/top.png": "cat",
        "cat/2021/summer/deep.png": "cat",
        "dog/batch1/d.png": "dog",
    }


def _scan_with_deadline(root, seconds=30.0):
    """scan_folder in a daemon thread, so an endless walk fails the test instead of hanging it."""
    outcome = {}

    def work():
        try:
            outcome["result"] = scan_folder(root)
        except BaseException as error:  # re-raised in the test thread
            outcome["error"] = error

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"scan_folder did not finish within {seconds} s (endless walk?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_symlink_loops_do_not_hang_and_files_count_once(tmp_path, make_image):
    make_image(tmp_path / "cat" / "a.png")
    make_image(tmp_path / "cat" / "sub" / "b.png")
    make_image(tmp_path / "dog" / "c.png")
    make_image(tmp_path / "dog" / "d.png")
    os.symlink("..", tmp_path / "cat" / "sub" / "loop")  # -> cat, which contains sub
    os.symlink(".", tmp_path / "dog" / "self")  # -> dog itself

    result = _scan_with_deadline(tmp_path)

    real_paths = [os.path.realpath(e.path) for e in result.examples]
    assert len(real_paths) == len(set(real_paths)) == 4
    assert result.counts() == {"cat": 2, "dog": 2}


def test_symlink_to_data_root_inside_a_class_does_not_duplicate_other_classes(tmp_path, make_image):
    make_image(tmp_path / "cat" / "a.png")
    make_image(tmp_path / "dog" / "c.png")
    os.symlink("..", tmp_path / "cat" / "up")  # cat/up -> the data root (parent of cat)

    result = _scan_with_deadline(tmp_path)

    real_paths = [os.path.realpath(e.path) for e in result.examples]
    assert len(real_paths) == len(set(real_paths)), "a file is listed more than once"
    assert result.counts() == {"cat": 1, "dog": 1}


# --------------------------------------------------------------------------- skipped files


def test_text_file_among_images_is_skipped_with_reason(tmp_path, make_image):
    for i in range(3):
        make_image(tmp_path / "cat" / f"{i}.png")
        make_image(tmp_path / "dog" / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("photographed in 2021")
    (tmp_path / "dog" / "labels.csv").write_text("a,b\n")

    result = scan_folder(tmp_path)

    assert result.modality == "image"
    skipped = _skipped(result)
    assert set(skipped) == {"cat/notes.txt", "dog/labels.csv"}
    assert ".txt" in skipped["cat/notes.txt"] and "image" in skipped["cat/notes.txt"]
    assert ".csv" in skipped["dog/labels.csv"]
    assert len(result.examples) == 6
    assert not any(e.path.endswith((".txt", ".csv")) for e in result.examples)
    assert result.summary()["skipped"] == [{"path": s.path, "reason": s.reason} for s in result.skipped]


def test_a_mixed_folder_reads_as_the_kind_the_caller_needs(tmp_path, make_image, caplog):
    """evaluate.py read a folder of more texts than images as text for an image run: every image was skipped as
    "not a text file", then the folder refused as "holds text files"."""
    for name in ("cat", "dog"):
        for i in range(3):
            (tmp_path / name / f"{i}.txt").parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / f"{i}.txt").write_text(f"a note about the {name} number {i}")
        for i in range(2):
            make_image(tmp_path / name / f"{i}.png")

    assert scan_folder(tmp_path).modality == "text"  # a new run: the kind most files are
    caplog.clear()
    result = scan_folder(tmp_path, modality="image")
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped")]
    assert len(warned) == 6  # up to MAX_SKIP_WARNINGS (10) named, one each
    assert result.modality == "image"
    assert _example_paths(result) == ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png"]
    assert set(_skipped(result)) == {f"{name}/{i}.txt" for name in ("cat", "dog") for i in range(3)}
    assert scan_folder(tmp_path, modality="text").modality == "text"

    for png in tmp_path.rglob("*.png"):  # none of the needed kind: the folder's own, for the caller to refuse
        png.unlink()
    assert scan_folder(tmp_path, modality="image").modality == "text"


def test_many_skipped_files_are_named_up_to_a_limit_then_counted_by_reason(tmp_path, make_image, caplog):
    """A folder of 300 notes beside its images gave 300 warning lines before anything else."""
    for name in ("cat", "dog"):
        make_image(tmp_path / name / "0.png")
        make_image(tmp_path / name / "1.png")
    for i in range(MAX_SKIP_WARNINGS + 3):
        (tmp_path / "cat" / f"{i:02d}.csv").write_text("a,b\n")
    (tmp_path / "dog" / "notes.md").write_text("x")

    result = scan_folder(tmp_path)

    assert len(result.skipped) == MAX_SKIP_WARNINGS + 4  # every one still in the result (data_report.json)
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped")]
    assert len(warned) == MAX_SKIP_WARNINGS + 1
    assert warned[-1] == ("Skipped 4 more files: 3 x not an image file (extension '.csv'); 1 x not an image file "
                          "(extension '.md')")


def test_a_skipped_file_with_a_newline_or_bidi_override_in_its_name_is_warned_on_one_line(tmp_path, make_image, caplog):
    """The path went into the warning raw: a newline split the line (the second half looked like another log
    line), a right-to-left override reversed what followed it."""
    for name in ("cat", "dog"):
        make_image(tmp_path / name / "0.png")
        make_image(tmp_path / name / "1.png")
    (tmp_path / "cat" / "evil\nWARNING forged.csv").write_text("a,b\n")
    (tmp_path / "dog" / "gnp.\u202etxt").write_text("x")

    scan_folder(tmp_path)

    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped")]
    assert len(warned) == 2 and all("\n" not in line and "\u202e" not in line for line in warned)
    assert any("evil\\nWARNING forged.csv" in line for line in warned)
    assert any("gnp.\\u202etxt" in line for line in warned)


def test_loose_files_at_the_top_level_are_reported(tmp_path, make_image):
    make_image(tmp_path / "cat" / "0.png")
    make_image(tmp_path / "dog" / "0.png")
    make_image(tmp_path / "stray.png")

    result = scan_folder(tmp_path)

    assert _skipped(result) == {"stray.png": "file outside any class folder"}
    assert _example_paths(result) == ["cat/0.png", "dog/0.png"]


def test_broken_images_are_skipped_with_reasons(tmp_path, make_image):
    for i in range(2):
        make_image(tmp_path / "cat" / f"good{i}.png")
        make_image(tmp_path / "dog" / f"good{i}.jpg")
    (tmp_path / "cat" / "empty.png").write_bytes(b"")
    full = make_image(tmp_path / "full.png", size=(32, 32)).read_bytes()
    (tmp_path / "full.png").unlink()
    (tmp_path / "cat" / "truncated.png").write_bytes(full[: len(full) // 2])
    (tmp_path / "dog" / "renamed.jpg").write_text("this is not a JPEG, just text\n" * 10)

    result = scan_folder(tmp_path)

    skipped = _skipped(result)
    assert set(skipped) == {"cat/empty.png", "cat/truncated.png", "dog/renamed.jpg"}
    assert skipped["cat/empty.png"] == "empty file (0 bytes)"
    assert skipped["cat/truncated.png"].startswith("not a readable image")
    assert skipped["dog/renamed.jpg"].startswith("not a readable image")
    assert "truncated" in skipped["cat/truncated.png"]
    assert _example_paths(result) == ["cat/good0.png", "cat/good1.png", "dog/good0.jpg", "dog/good1.jpg"]
    assert result.counts() == {"cat": 2, "dog": 2}


def test_check_image_reports_usable_and_unusable(tmp_path, make_image):
    good = make_image(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    assert check_image(str(good)) == (True, "")
    ok, reason = check_image(str(bad))
    assert ok is False and reason


# --------------------------------------------------------------------------- errors


def test_missing_folder_is_an_error_naming_the_path(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(DataError, match="does not exist") as info:
        scan_folder(missing)
    assert str(missing) in str(info.value)


def test_file_instead_of_folder_is_an_error(tmp_path):
    path = tmp_path / "data.zip"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match="not a folder") as info:
        scan_folder(path)
    assert str(path) in str(info.value)


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "cat").mkdir()  # class folders without files count as empty too
    with pytest.raises(DataError, match="No files found") as info:
        scan_folder(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_folder_of_only_unusable_images_is_an_error(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    (tmp_path / "cat" / "a.png").write_bytes(b"")
    (tmp_path / "dog" / "b.jpg").write_text("not an image")

    with pytest.raises(DataError, match="No usable image files") as info:
        scan_folder(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "all 2 files" in message


def test_folder_without_image_or_text_files_is_an_error(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.csv").write_text("1,2")
    (tmp_path / "cat" / "b.bin").write_bytes(b"\x00")

    with pytest.raises(DataError, match="No image or text files") as info:
        scan_folder(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert ".png" in str(info.value)  # tells the user what is supported


def test_require_trainable_single_class(tmp_path, make_image):
    for i in range(3):
        make_image(tmp_path / "lonely" / f"{i}.png")
    result = scan_folder(tmp_path)

    with pytest.raises(DataError) as info:
        require_trainable(result, min_per_class=2)
    message = str(info.value)
    assert "at least 2 classes" in message
    assert "has 1" in message
    assert "lonely" in message


def test_require_trainable_class_with_one_file(tmp_path, make_image):
    for i in range(3):
        make_image(tmp_path / "many" / f"{i}.png")
    make_image(tmp_path / "single" / "0.png")
    result = scan_folder(tmp_path)

    with pytest.raises(DataError) as info:
        require_trainable(result, min_per_class=2)
    message = str(info.value)
    assert "'single': 1" in message
    assert "many" not in message
    assert "at least 2" in message


def test_require_trainable_accepts_enough_data_and_ignores_test_split(tmp_path, make_image):
    for name in ("cat", "dog"):
        for i in range(2):
            make_image(tmp_path / "train" / name / f"{i}.png")
        make_image(tmp_path / "test" / name / "t.png")
    result = scan_folder(tmp_path)
    require_trainable(result, min_per_class=2)  # 2 train files each: enough
    with pytest.raises(DataError, match="'cat': 2"):
        require_trainable(result, min_per_class=3)  # test/ files do not count


# --------------------------------------------------------------------------- images.load_image


def _assert_rgb_uint8(array, size):
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.uint8
    assert array.shape == (*size, 3)


@pytest.mark.parametrize(
    "mode, name",
    [
        ("L", "gray.png"),
        ("P", "palette.png"),
        ("RGBA", "rgba.png"),
        ("LA", "gray_alpha.png"),
        ("1", "bilevel.png"),
        ("I;16", "gray16.png"),
        ("CMYK", "cmyk.jpg"),
        ("RGB", "rgb.tif"),
        ("RGB", "rgb.webp"),
        ("RGB", "rgb.bmp"),
        ("RGB", "rgb.gif"),
    ],
)
@pytest.mark.parametrize("size", [(8, 8), (12, 20)])
def test_load_image_any_mode_gives_rgb_uint8_of_requested_size(tmp_path, make_image, mode, name, size):
    path = make_image(tmp_path / name, mode=mode, size=(10, 6))
    assert Image.open(path).mode == mode or name.endswith(".gif")
    array = load_image(str(path), size)
    _assert_rgb_uint8(array, size)


def test_grayscale_becomes_three_equal_channels(tmp_path, make_image):
    path = make_image(tmp_path / "g.png", mode="L")
    array = load_image(str(path), (8, 8))
    expected = np.asarray(Image.open(path))
    for channel in range(3):
        np.testing.assert_array_equal(array[..., channel], expected)


def test_rgba_transparent_pixels_become_white(tmp_path):
    pixels = np.zeros((8, 8, 4), np.uint8)
    pixels[..., 0] = 200  # red-ish everywhere
    pixels[:, :4, 3] = 0  # left half fully transparent
    pixels[:, 4:, 3] = 255  # right half opaque
    path = tmp_path / "rgba.png"
    Image.fromarray(pixels, "RGBA").save(path)

    array = load_image(str(path), (8, 8))

    assert (array[:, :4] == 255).all()
    assert (array[:, 4:] == (200, 0, 0)).all()


def test_palette_with_transparency_becomes_white(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 1)  # one blue pixel, the rest index 0 (transparent)
    path = tmp_path / "p.png"
    image.save(path, transparency=0)

    array = load_image(str(path), (4, 4))

    assert tuple(array[0, 0]) == (0, 0, 255)
    mask = np.ones((4, 4), bool)
    mask[0, 0] = False
    assert (array[mask] == 255).all()


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")

    array = load_image(str(path), (8, 8))

    assert not (array == 255).all()
    expected = values.astype(np.float64) * 255.0 / 65535.0
    assert np.abs(array[..., 0].astype(np.float64) - expected).max() <= 1.0
    assert array[0, 0, 0] == 0 and array[-1, -1, 0] == 255
    assert np.all(np.diff(array[..., 0].ravel().astype(int)) >= 0)  # order preserved


def test_cmyk_jpeg_colours_are_converted(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=100)  # pure red in CMYK
    array = load_image(str(path), (8, 8))
    assert np.abs(array.astype(int) - (255, 0, 0)).max() <= 8


@pytest.mark.parametrize("name, kwargs", [("a.tif", {}), ("a.webp", {"lossless": True})])
def test_tiff_and_webp_keep_their_colours(tmp_path, name, kwargs):
    path = tmp_path / name
    Image.new("RGB", (8, 8), (10, 120, 230)).save(path, **kwargs)
    array = load_image(str(path), (4, 6))
    _assert_rgb_uint8(array, (4, 6))
    assert (array == (10, 120, 230)).all()


def test_load_image_resizes_to_height_width(tmp_path, make_image):
    path = make_image(tmp_path / "wide.png", size=(16, 4))  # 16 wide, 4 tall
    assert load_image(str(path), (4, 16)).shape == (4, 16, 3)  # same size: no resize
    np.testing.assert_array_equal(load_image(str(path), (4, 16)), np.asarray(Image.open(path)))
    assert load_image(str(path), (10, 3)).shape == (10, 3, 3)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 8 wide x 4 tall: left half red, right half blue; orientation 6 means
    # "rotate 90 degrees clockwise to display": displayed 4 wide x 8 tall, with
    # the stored left (red) half on top.
    pixels = np.zeros((4, 8, 3), np.uint8)
    pixels[:, :4] = (255, 0, 0)
    pixels[:, 4:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=100, subsampling=0)

    with Image.open(path) as stored:
        assert stored.size == (8, 4)
        assert to_rgb(stored).size == (4, 8)

    array = load_image(str(path), (8, 4))  # displayed size: no resampling

    assert array.shape == (8, 4, 3)
    top, bottom = array[:3].astype(int), array[5:].astype(int)
    assert (top[..., 0] > 200).all() and (top[..., 2] < 60).all()
    assert (bottom[..., 2] > 200).all() and (bottom[..., 0] < 60).all()


def test_listing_and_the_data_doctor_do_not_import_tensorflow():
    """The resize (TensorFlow ops) is imported on first use: a scan's process stays small (no TF)."""
    code = ("import sys; import data.scan, data.doctor, data.decode_route, data.images; "
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout.strip() == "False"


def test_names_that_are_not_utf8_are_skipped_with_the_remedy(tmp_path, make_image):
    """Latin-1 file and class folder names (an old archive): TensorFlow cannot open such a path, so training stopped
    with a traceback in its input pipeline. Those files are skipped, named with the odd bytes escaped; a data folder
    whose own path is not UTF-8 is one error."""
    for name in ("cat", "dog", os.fsdecode(b"caf\xe9")):
        make_image(tmp_path / "data" / name / "0.png")
    make_image(tmp_path / "data" / "cat" / os.fsdecode(b"cr\xe8me.png"))

    result = scan_folder(tmp_path / "data")

    assert result.class_names == ["cat", "dog"] and _example_paths(result) == ["cat/0.png", "dog/0.png"]
    assert set(_skipped(result)) == {"caf\\xe9/0.png", "cat/cr\\xe8me.png"}
    assert all("not valid UTF-8" in reason and "convmv" in reason for reason in _skipped(result).values())
    assert result.empty_classes == ["caf\\xe9"]
    make_image(tmp_path / os.fsdecode(b"d\xe9j\xe0") / "a" / "0.png")
    make_image(tmp_path / os.fsdecode(b"d\xe9j\xe0") / "b" / "0.png")
    with pytest.raises(DataError, match=r"path is not valid UTF-8. Received: '.*d\\xe9j\\xe0'"):
        scan_folder(tmp_path / os.fsdecode(b"d\xe9j\xe0"))
