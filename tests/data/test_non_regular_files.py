"""A FIFO, socket or device among the inputs is skipped without being opened (data/file_kinds.py): open() of a
FIFO blocks until something writes to it, so predict.py, evaluate.py --unknown and train.py hung for good. And an
image over Pillow's decompression-bomb warning limit is one logged warning, not Pillow's raw warning on stderr."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from app.input_files import collect_inputs
from data.decode_route import PILLOW, decode_route
from data.doctor import inspect_file
from data.file_kinds import NotRegularFileError, kind_reason, not_regular_reason
from data.images import check_image, decode_rgb, report_large_image
from data.records import SkippedFile
from data.scan import scan_folder
from data.text import read_text_prefix

FIFO = "not a regular file (a FIFO)"
ROOT = Path(__file__).resolve().parents[2]


def _unblock(fifo: Path) -> None:
    """Open `fifo` for writing and close it: a reader blocked in open() or read() then returns (end of file)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: nothing is reading it, so nothing is blocked
        pass


def _within(seconds: float, work, *fifos: Path):
    """work() in a daemon thread: one that blocks on a FIFO fails the test (and is released) instead of hanging it."""
    outcome = {}

    def run():
        try:
            outcome["result"] = work()
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    blocked = thread.is_alive()
    for fifo in fifos:
        _unblock(fifo)
    thread.join(5)
    assert not blocked, f"did not finish within {seconds} s (blocked opening a FIFO?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def test_kinds_are_named_and_symlinks_followed(tmp_path):
    regular = tmp_path / "a.png"
    regular.write_bytes(b"x")
    fifo = _fifo(tmp_path / "pipe.png")
    os.symlink(regular, tmp_path / "to_regular.png")
    os.symlink(fifo, tmp_path / "to_fifo.png")
    assert not_regular_reason(regular) is None and not_regular_reason(tmp_path / "to_regular.png") is None
    assert not_regular_reason(fifo) == FIFO and not_regular_reason(tmp_path / "to_fifo.png") == FIFO
    assert not_regular_reason(os.devnull) == "not a regular file (a character device)"
    assert not_regular_reason(tmp_path / "gone.png") is None  # opening it fails at once, with its own error
    assert kind_reason(os.stat(tmp_path).st_mode) == "not a regular file (a folder)"


def test_predict_inputs_skip_a_fifo_unopened_and_keep_the_other_file(tmp_path, make_image, caplog):
    """A folder holding a FIFO, the FIFO named on its own, and a symbolic link to it: each skipped with the
    reason (named once), the image beside it still collected."""
    image = make_image(tmp_path / "in" / "a.png")
    fifo = _fifo(tmp_path / "in" / "pipe.png")
    os.symlink(fifo, tmp_path / "link.png")
    targets = [str(tmp_path / "in"), str(fifo), str(tmp_path / "link.png")]
    with caplog.at_level(logging.WARNING, logger="app.input_files"):
        usable, skipped = _within(30, lambda: collect_inputs(targets, "image"), fifo)
    assert [e.path for e in usable] == [str(image)]
    assert skipped == [SkippedFile(str(fifo), FIFO), SkippedFile(str(tmp_path / "link.png"), FIFO)]
    assert f"Skipped {fifo}: {FIFO}" in caplog.messages


def test_the_training_scan_skips_fifos_sockets_and_links_to_them(tmp_path, make_image, monkeypatch):
    for name in ("cat", "dog"):
        for i in range(2):
            make_image(tmp_path / name / f"{i}.png")
    fifo = _fifo(tmp_path / "cat" / "pipe.png")
    loose = _fifo(tmp_path / "loose.png")  # outside any class folder: reported, as a regular file there is
    os.symlink(fifo, tmp_path / "dog" / "to_fifo.png")
    os.symlink(tmp_path / "cat" / "0.png", tmp_path / "dog" / "to_regular.png")  # a link to a regular file is one
    monkeypatch.chdir(tmp_path / "dog")  # a relative name: a socket's path is limited to about 100 bytes
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind("sock.png")
        result = _within(30, lambda: scan_folder(tmp_path, use_cache=False), fifo, loose)
    finally:
        server.close()
    skipped = {Path(s.path).relative_to(tmp_path).as_posix(): s.reason for s in result.skipped}
    assert skipped == {"loose.png": "file outside any class folder", "cat/pipe.png": FIFO,
                       "dog/to_fifo.png": FIFO, "dog/sock.png": "not a regular file (a socket)"}
    assert sorted(Path(e.path).name for e in result.examples) == ["0.png", "0.png", "1.png", "1.png", "to_regular.png"]


def test_inspection_decoding_and_text_reading_never_open_a_fifo(tmp_path):
    """The doctor's check and the image check give the reason; the decoder choice keeps the Pillow path without
    reading a header; decoding and text reading (a file that became a FIFO after the check) raise."""
    fifo = _fifo(tmp_path / "pipe.png")

    def every_reader():
        with pytest.raises(NotRegularFileError, match="not a regular file"):
            decode_rgb(str(fifo))
        with pytest.raises(NotRegularFileError, match="not a regular file"):
            read_text_prefix(str(fifo))
        return inspect_file(str(fifo), "image"), inspect_file(str(fifo), "text"), check_image(str(fifo))

    image_check, text_check, checked = _within(30, every_reader, fifo)
    assert (image_check.usable, image_check.reason) == (False, FIFO) and text_check.reason == FIFO
    assert checked == (False, FIFO)
    assert _within(30, lambda: decode_route(str(fifo)), fifo) == PILLOW


def test_a_large_image_is_one_logged_warning_not_pillows_raw_one(tmp_path, make_image):
    """Pillow's DecompressionBombWarning (an image over Image.MAX_IMAGE_PIXELS, lowered here to keep the file small)
    went raw to stderr, naming no file, followed by a line of Pillow's source. Now the doctor's check, the decoder
    choice and the decode together log one warning naming the file; the file is still decoded."""
    path = make_image(tmp_path / "large.png", size=(40, 30))
    code = ("import logging, sys\n"
            "from PIL import Image\n"
            "from data.decode_route import decode_route\n"
            "from data.doctor import inspect_file\n"
            "from data.images import decode_rgb\n"
            "logging.basicConfig(format='%(levelname)s %(message)s')\n"
            "Image.MAX_IMAGE_PIXELS = 1000\n"
            "assert inspect_file(sys.argv[1], 'image').usable\n"
            "decode_route(sys.argv[1])\n"
            "assert decode_rgb(sys.argv[1]).shape == (30, 40, 3)\n")
    environment = {**os.environ, "PYTHONWARNINGS": "default"}  # Pillow's warning would show, as it does by default
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=environment)
    assert result.returncode == 0, result.stderr[-1000:]
    assert result.stderr.splitlines() == [
        f"WARNING Large image {path}: 1,200 pixels (40x30), over Pillow's decompression-bomb warning limit of 1,000 "
        "pixels; decoded anyway, which takes time and memory (an image over 2,000 pixels is skipped)."]


def test_a_large_image_is_reported_once_per_file(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with caplog.at_level(logging.WARNING, logger="data.images"):
        for name in ("one.png", "one.png", "two.png"):
            report_large_image(str(tmp_path / name), (20, 10))
        report_large_image(str(tmp_path / "small.png"), (10, 10))  # at the limit: Pillow does not warn either
    assert [Path(m.split()[2].rstrip(":")).name for m in caplog.messages] == ["one.png", "two.png"]
