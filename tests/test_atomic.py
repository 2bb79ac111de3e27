"""The one atomic writer: a reader sees the old file or the whole new one, a failure leaves the
old file and no temporary behind, and an unwritable target is named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.common.atomic import atomic_path, create_once, open_atomic, write_text_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "metrics.csv"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError):
        with open_atomic(target) as file:
            file.write("half")
            assert target.read_text() == "old\n"  # readers still see the old file mid-write
            raise RuntimeError("crash")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_binary_and_path_writers_replace_the_file(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    with open_atomic(target, "wb") as file:
        file.write(b"\x00\x01")
    with atomic_path(tmp_path / "y.npy") as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".y.npy.")
        temporary.write_bytes(b"y")
    assert target.read_bytes() == b"\x00\x01" and (tmp_path / "y.npy").read_bytes() == b"y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin", "y.npy"]


def test_an_unwritable_target_is_named_not_its_temporary(tmp_path: Path) -> None:
    target = tmp_path / "missing-folder" / "predictions.csv"
    with pytest.raises(OSError) as caught:
        write_text_atomic(target, "ID,label\n")
    assert caught.value.filename == str(target)


def test_create_once_keeps_the_first_file_whole(tmp_path: Path) -> None:
    stamp = tmp_path / ".run_key"
    assert create_once(stamp, "first\n", mode=0o600) is True
    assert create_once(stamp, "second\n") is False  # the first writer wins; nothing is overwritten
    assert stamp.read_text() == "first\n" and stamp.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".run_key"]  # no temporary left
