"""A bug-bash of --config files and text inputs: each test is one defect found, fixed and kept fixed."""

import errno

import pytest

import train
from app.config_cli import config_from_args
from app.errors import UserError
from data.records import SkippedFile

LONG_NAME = "a" * 5000  # over any file system's 255 bytes per name: os.stat raises ENAMETOOLONG


def write(path, text=None, data=None):
    if data is None:
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(data)
    return str(path)


def assert_one_error_line(capsys, *fragments):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "ERROR" in line or "error:" in line]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], err


@pytest.mark.parametrize("written,read_as", [("010", "an octal number (8); write 10"),
                                             ("-007", "an octal number (-7); write -7"),
                                             ("1:30", "a base-60 number (90)"),
                                             ("1:30.5", "a base-60 number (90.5)")])
def test_yaml_numbers_that_do_not_mean_what_they_look_like_are_refused(tmp_path, written, read_as):
    """YAML 1.1 reads `seed: 010` as 8 and `epochs: 1:30` as 90: the run silently took another value."""
    path = write(tmp_path / "run.yaml", f"data_dir: d\nseed: {written}\n")
    with pytest.raises(UserError, match="line 2, column 7: found " + written) as error:
        config_from_args(["--config", path])
    assert read_as in str(error.value) and "quote it if it is text" in str(error.value)


def test_plain_yaml_numbers_still_read_as_written(tmp_path):
    path = write(tmp_path / "run.yaml", "data_dir: d\nseed: 0\nepochs: 10\nbatch_size: 0x10\nlearning_rate: 1e-3\n")
    config, _ = config_from_args(["--config", path])
    assert (config.seed, config.epochs, config.batch_size, config.learning_rate) == (0, 10, 16, 1e-3)


@pytest.mark.parametrize("data,where", [
    ("data_dir: d\n".encode("utf-16"), "byte 0xff on line 1; it is UTF-16, by its byte-order mark"),
    (b"data_dir: d\nbackbone: caf\xe9\n", "byte 0xe9 on line 2; perhaps a legacy encoding such as Latin-1"),
    (b"\xef\xbb\xbfdata_dir: d\n\n\nbackbone: \xff\n", "byte 0xff on line 4"),  # the UTF-8 BOM counts no line
])
def test_a_config_file_that_is_not_utf8_says_so_and_to_save_it_as_utf8(tmp_path, data, where):
    """It said "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte", and to fix the file."""
    path = write(tmp_path / "run.yaml", data=data)
    with pytest.raises(UserError) as error:
        config_from_args(["--config", path])
    message = str(error.value)
    assert f"Config file {path!r} is not UTF-8 text: {where}" in message
    assert "Save it as UTF-8" in message and "codec" not in message


def test_an_oversized_config_file_is_refused_before_it_is_parsed(tmp_path):
    """A data file passed as --config (PyYAML parses about 1 MB a second) held the command for minutes."""
    from app.config_file import MAX_CONFIG_BYTES

    path = write(tmp_path / "data.yaml", "data_dir: d\n" + "# x\n" * (MAX_CONFIG_BYTES // 4))
    with pytest.raises(UserError, match=r"is 1\.0 MiB; a configuration holds a few settings.*not a data file"):
        config_from_args(["--config", path])


def test_config_given_twice_is_a_usage_error_not_a_dropped_file(tmp_path, capsys):
    """The first file's settings were dropped without a word (argparse keeps the last value)."""
    first = write(tmp_path / "a.yaml", "data_dir: d\nepochs: 3\n")
    second = write(tmp_path / "b.yaml", "seed: 7\n")
    with pytest.raises(SystemExit) as exit_:
        config_from_args(["--config", first, "--config", second])
    assert exit_.value.code == 2
    assert "argument --config: given twice" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--config", LONG_NAME + ".yaml"], [LONG_NAME, "--check"], ["--resume", LONG_NAME]])
def test_a_path_too_long_for_the_file_system_is_one_error_line(argv, capsys):
    """pathlib's exists() / is_dir() raise ENAMETOOLONG rather than answer False: a traceback in every script."""
    assert train.main(argv) == 2
    assert_one_error_line(capsys, "File name too long: '", "aaaa", "characters)'. Received a path the file system",
                          "pass a shorter one")


def test_a_path_error_from_anywhere_is_shortened_in_its_line(capsys):
    from app.cli import run_safely, setup_logging

    setup_logging()

    def too_long():
        raise OSError(errno.ENAMETOOLONG, "File name too long", "/data/" + LONG_NAME)

    assert run_safely(too_long) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and LONG_NAME not in err and "(5006 characters)" in err


def test_a_backbone_name_too_long_for_a_path_stays_a_name():
    """The check whether --backbone names a path raised ENAMETOOLONG while the options were read."""
    config, _ = config_from_args(["d", "--backbone", "x" * 300])
    assert config.backbone == "x" * 300


def test_predict_skips_an_input_whose_name_is_too_long_and_keeps_the_others(tmp_path, caplog):
    """One such line in a --files-from list stopped the whole prediction with a traceback."""
    from app.input_files import collect_inputs

    good = write(tmp_path / "good.txt", "a good film")
    usable, skipped = collect_inputs([LONG_NAME + ".txt", good], "text")
    assert [example.path for example in usable] == [good]
    assert len(skipped) == 1 and skipped[0].reason == "cannot be looked up (File name too long)"
    assert skipped[0].path.endswith("... (5004 characters)") and len(skipped[0].path) < 120


def test_predict_says_what_to_pass_when_every_input_is_of_the_other_kind():
    """Images given to a text run (or .txt files to an image run) ended with "No readable text files among the
    inputs (3 skipped; see the warnings above)": no word of what to pass instead."""
    from app.prediction import _no_readable_inputs

    images = [SkippedFile(f"{i}.png", "not a text file (extension '.png')") for i in range(3)]
    message = _no_readable_inputs("text", images)
    assert "this run is a text model and every input is another kind of file" in message
    assert "Pass text files (.txt), or --text STRING" in message
    texts = [SkippedFile("a.txt", "not an image file (extension '.txt')")]
    assert "Pass image files (.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp)" in _no_readable_inputs("image", texts)
    missing = [SkippedFile("nope.txt", "no such file or folder")]
    message = _no_readable_inputs("text", missing)
    assert "another kind" not in message and "Pass text files (.txt) that exist and are readable" in message


@pytest.mark.parametrize("key,flag", [("resume", "train.py --resume RUN_DIR"), ("check", "train.py DATA_DIR --check"),
                                      ("config", "--config FILE")])
def test_a_command_line_flag_written_in_a_config_file_is_named_as_one(tmp_path, key, flag):
    """`resume: runs/x` in a file was answered "did you mean 'resize'?"."""
    path = write(tmp_path / "run.yaml", f"data_dir: d\n{key}: x\n")
    with pytest.raises(UserError) as error:
        config_from_args(["--config", path])
    assert f"{key!r} (a command-line flag, {flag}, not a setting of a run)" in str(error.value)
    assert "did you mean" not in str(error.value)


def test_an_empty_config_path_is_a_usage_error_not_no_file(capsys):
    """--config '' (an unset shell variable) was taken as no --config at all."""
    with pytest.raises(SystemExit) as exit_:
        config_from_args(["d", "--config", ""])
    assert exit_.value.code == 2
    assert "argument --config: is empty. Received: ''" in capsys.readouterr().err
