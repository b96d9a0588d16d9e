"""Atomic writes (fastvla.utils.io): the target is either the old file or the new one, never a partial one."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastvla.utils.io import atomic_file, atomic_write_text


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "v.mp4"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="encoder died"), atomic_file(target, suffix=".mp4") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp != target
        tmp.write_text("half")
        raise RuntimeError("encoder died")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
