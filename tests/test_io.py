"""The one temp-file writer: the file appears whole or not at all; a failing write leaves the old file, no temp."""

from __future__ import annotations

import pytest

from flare_vlp.utils.io import atomic_write, atomic_write_text


def test_atomic_write_replaces_whole_or_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "state.bin"
    assert atomic_write(path, lambda tmp: open(tmp, "wb").write(b"one")) == path  # noqa: SIM115
    assert path.read_bytes() == b"one"

    def half_then_fail(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(b"tw")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"one" and sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]
    atomic_write_text(path, "two\r\n")
    assert path.read_bytes() == b"two\r\n"
