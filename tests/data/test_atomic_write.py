"""write_atomically: the old file or the new one, never a temporary left behind, errors naming the real file."""

import errno

import pytest

from data.atomic_write import temporary_name, write_atomically


def _failing(error: BaseException):
    def write(temporary):
        temporary.write_bytes(b"half")
        raise error
    return write


def test_a_writer_failing_without_a_file_name_is_named_after_the_destination(tmp_path):
    target = tmp_path / "unknown.npz"
    with pytest.raises(OSError) as raised:  # np.savez, Keras' zip, PNG writers give no file name
        write_atomically(target, _failing(OSError(errno.ENOSPC, "No space left on device")))
    assert raised.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metadata.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, _failing(KeyboardInterrupt()))
    assert target.read_text() == "old" and not temporary_name(target).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["metadata.json"]
