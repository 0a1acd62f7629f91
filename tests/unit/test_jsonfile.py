"""berth.common.jsonfile: atomic state files."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from berth.common import jsonfile
from berth.common.jsonfile import read_json, write_json


def test_read_json_missing_file_gives_the_default(tmp_path: Path) -> None:
    assert read_json(tmp_path / "missing.json", {"tokens": []}) == {"tokens": []}


def test_write_then_read(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.json"
    write_json(path, {"b": [1, 2], "a": "x"})

    assert read_json(path, None) == {"a": "x", "b": [1, 2]}
    assert json.loads(path.read_text()) == {"a": "x", "b": [1, 2]}


def test_write_json_mode_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{}")
    path.chmod(0o644)

    write_json(path, {"k": 1})

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_json_honours_a_given_mode(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json(path, {"k": 1}, mode=0o640)

    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_write_json_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for i in range(3):
        write_json(path, {"n": i})

    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert read_json(path, None) == {"n": 2}


def test_failed_encoding_keeps_the_old_content(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json(path, {"version": 1})
    before = path.read_bytes()

    with pytest.raises(TypeError):
        write_json(path, {"version": 2, "bad": object()})

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_failure_after_a_partial_write_keeps_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    write_json(path, {"version": 1})
    before = path.read_bytes()

    real_fdopen = jsonfile.os.fdopen

    class HalfWritten:
        """The temporary file, failing after the first few bytes."""

        def __init__(self, fd: int, *args: Any, **kwargs: Any) -> None:
            self.file = real_fdopen(fd, *args, **kwargs)

        def __enter__(self) -> HalfWritten:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, text: str) -> None:
            self.file.write(text[:12])
            raise OSError("disk full")

    monkeypatch.setattr(jsonfile.os, "fdopen", HalfWritten)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, {"version": 2})

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_interrupt_during_write_keeps_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    write_json(path, {"version": 1})
    before = path.read_bytes()

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(jsonfile.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"version": 2})

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
