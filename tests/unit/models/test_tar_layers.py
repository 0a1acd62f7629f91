"""Tar layers: the same files always give the same bytes; --dir-tar stays inside its root."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from berth.common.errors import InvalidArgument
from berth.models.adapters.tar_layers import write_dir_tar, write_files_tar


def _files_tar(files: list[tuple[str, Path]]) -> bytes:
    out = io.BytesIO()
    write_files_tar(files, out)
    return out.getvalue()


def _dir_tar(root: Path, relative: str, index: int = 0) -> bytes:
    out = io.BytesIO()
    write_dir_tar(root, relative, out, index)
    return out.getvalue()


def _members(body: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        return archive.getmembers()


def _content(body: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        reader = archive.extractfile(name)
        assert reader is not None
        return reader.read()


def _touch_differently(*paths: Path) -> None:
    for number, path in enumerate(paths):
        os.utime(path, (1_700_000_000 + number, 1_700_000_000 + number))


@pytest.fixture
def config_files(tmp_path: Path) -> list[tuple[str, Path]]:
    folder = tmp_path / "model"
    folder.mkdir()
    files = []
    for name, text in (("tokenizer.json", "{}"), ("config.json", '{"a": 1}'), ("merges.txt", "")):
        (folder / name).write_text(text)
        files.append((name, folder / name))
    return files


def test_the_config_archive_is_the_same_bytes_every_time(
    config_files: list[tuple[str, Path]],
) -> None:
    first = _files_tar(config_files)
    _touch_differently(*(path for _, path in config_files))
    config_files[0][1].chmod(0o600)
    assert _files_tar(list(reversed(config_files))) == first


def test_the_config_archive_holds_each_file_under_its_name(
    config_files: list[tuple[str, Path]],
) -> None:
    body = _files_tar(config_files)
    members = _members(body)
    assert [m.name for m in members] == ["config.json", "merges.txt", "tokenizer.json"]
    for member in members:
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (
            0,
            0,
            0,
            "",
            "",
        )
        assert member.mode == 0o644
        assert member.isfile()
    assert _content(body, "config.json") == b'{"a": 1}'


def test_a_name_twice_or_outside_the_archive_is_refused(
    config_files: list[tuple[str, Path]],
) -> None:
    name, path = config_files[0]
    with pytest.raises(ValueError):
        _files_tar([(name, path), (name, path)])
    with pytest.raises(ValueError):
        _files_tar([("../escape.json", path)])


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "base"
    (root / "text_encoder" / "deep").mkdir(parents=True)
    (root / "text_encoder" / "config.json").write_text("{}")
    (root / "text_encoder" / "deep" / "weights.bin").write_bytes(b"\1\2\3")
    tool = root / "text_encoder" / "run.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (root / "text_encoder" / "empty").mkdir()
    return root


def test_a_dir_tar_keeps_the_structure_under_its_relative_path(base: Path) -> None:
    body = _dir_tar(base, "text_encoder")
    members = {m.name: m for m in _members(body)}
    assert list(members) == [
        "text_encoder",
        "text_encoder/config.json",
        "text_encoder/deep",
        "text_encoder/deep/weights.bin",
        "text_encoder/empty",
        "text_encoder/run.sh",
    ]
    assert members["text_encoder/deep"].isdir()
    assert members["text_encoder/deep"].mode == 0o755
    assert members["text_encoder/run.sh"].mode == 0o755
    assert members["text_encoder/config.json"].mode == 0o644
    assert _content(body, "text_encoder/deep/weights.bin") == b"\1\2\3"


def test_a_nested_dir_tar_keeps_its_whole_relative_path(base: Path) -> None:
    names = [m.name for m in _members(_dir_tar(base, "./text_encoder/deep/"))]
    assert names == ["text_encoder/deep", "text_encoder/deep/weights.bin"]


def test_a_dir_tar_is_the_same_bytes_every_time(base: Path) -> None:
    first = _dir_tar(base, "text_encoder")
    _touch_differently(*sorted((base / "text_encoder").rglob("*")))
    (base / "text_encoder" / "config.json").chmod(0o600)
    assert _dir_tar(base, "text_encoder") == first


def test_a_symlink_to_a_file_inside_the_root_is_packed_as_that_file(base: Path) -> None:
    (base / "shared.json").write_text('{"shared": true}')
    (base / "text_encoder" / "link.json").symlink_to("../shared.json")
    body = _dir_tar(base, "text_encoder")
    member = next(m for m in _members(body) if m.name == "text_encoder/link.json")
    assert member.isfile()
    assert _content(body, "text_encoder/link.json") == b'{"shared": true}'


@pytest.mark.parametrize(
    "relative", ["../outside", "/etc", "", ".", "absent", "file.txt", "a/../b"]
)
def test_a_dir_tar_path_outside_or_not_a_directory_is_refused(base: Path, relative: str) -> None:
    (base.parent / "outside").mkdir()
    (base / "file.txt").write_text("x")
    with pytest.raises(InvalidArgument) as caught:
        _dir_tar(base, relative, index=2)
    assert caught.value.violations[0].field == "dir_tar_paths[2]"


def test_a_symlinked_directory_is_refused(base: Path) -> None:
    outside = base.parent / "outside"
    outside.mkdir()
    (base / "escape").symlink_to(outside)
    with pytest.raises(InvalidArgument):
        _dir_tar(base, "escape")


def test_a_symlink_leading_out_of_the_root_is_refused_before_writing(base: Path) -> None:
    secret = base.parent / "secret.txt"
    secret.write_text("not for the registry")
    (base / "text_encoder" / "deep" / "secret.txt").symlink_to(secret)
    out = io.BytesIO()
    with pytest.raises(InvalidArgument) as caught:
        write_dir_tar(base, "text_encoder", out, 1)
    assert caught.value.violations[0].field == "dir_tar_paths[1]"
    assert "outside" in caught.value.violations[0].description
    assert out.getvalue() == b""
