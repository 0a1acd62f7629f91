"""Deterministic tar layers: the vLLM config archive and `--dir-tar` directories.

The same files always give the same bytes, so packaging twice gives the same digests:
entries sorted by name (a directory before what it holds), mtime 0, uid/gid 0, no user or
group names, modes normalised (directories 0755, files 0755 when their owner may execute
them, else 0644), POSIX (pax) format throughout, uncompressed as Docker's layers are.

Symlinks in a `--dir-tar` directory: one pointing outside the base directory is refused; one
to a file inside it is stored as a copy of that file (Docker Model Runner skips symlinks
when it unpacks an archive, so a link entry would lose the file); one to a directory is
refused (it could loop). Errors name the request field `dir_tar_paths[index]`; nothing is
written until the whole directory has been checked.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from berth.common.errors import FieldViolation, InvalidArgument

_DIR_MODE = 0o755
_EXEC_MODE = 0o755
_FILE_MODE = 0o644


@dataclass(frozen=True)
class _Entry:
    name: str
    source: Path | None  # None for a directory


def write_files_tar(files: Sequence[tuple[str, Path]], dest: BinaryIO) -> None:
    """A tar of regular files, each under its archive name: `(arcname, path)` pairs.

    Raises ValueError for an arcname that is empty, absolute, holds "..", or is repeated.
    """
    entries: dict[str, _Entry] = {}
    for arcname, path in files:
        name = _clean_arcname(arcname)
        if name in entries:
            raise ValueError(f"{arcname!r} is in the archive twice")
        entries[name] = _Entry(name, path)
    _write(sorted(entries.values(), key=_order), dest)


def check_dir_tar_path(root: Path, relative: str, index: int = 0) -> Path:
    """The directory `root/relative` once it is known to be a real directory inside root."""
    field = f"dir_tar_paths[{index}]"
    parts = PurePosixPath(relative).parts  # "." parts are already dropped
    if not relative or PurePosixPath(relative).is_absolute():
        raise _invalid(field, f"{relative!r} must be a path relative to the model's directory")
    if ".." in parts or not parts:
        raise _invalid(field, f"{relative!r} must name a directory inside the model's directory")
    directory = root.joinpath(*parts)
    if directory.is_symlink():
        raise _invalid(field, f"{relative!r} is a symlink; symlinked directories are not packed")
    if not directory.is_dir():
        raise _invalid(field, f"{relative!r} is not a directory in {root}")
    if not directory.resolve().is_relative_to(root.resolve()):
        raise _invalid(field, f"{relative!r} leads outside {root}")
    return directory


def write_dir_tar(root: Path, relative: str, dest: BinaryIO, index: int = 0) -> None:
    """`--dir-tar`: the directory `root/relative`, its structure kept under `relative/`.

    InvalidArgument on `dir_tar_paths[index]` when it is not a directory inside root, or
    holds a symlink leading out of root or to a directory, or something that is neither a
    file nor a directory.
    """
    field = f"dir_tar_paths[{index}]"
    directory = check_dir_tar_path(root, relative, index)
    prefix = "/".join(PurePosixPath(relative).parts)
    entries = [_Entry(prefix, None)]
    entries += _walk(directory, prefix, root.resolve(), field)
    _write(sorted(entries, key=_order), dest)


def _walk(directory: Path, prefix: str, root: Path, field: str) -> list[_Entry]:
    entries = []
    for path in directory.iterdir():
        name = f"{prefix}/{path.name}"
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            entries.append(_Entry(name, _link_target(path, name, root, field)))
        elif stat.S_ISDIR(mode):
            entries.append(_Entry(name, None))
            entries += _walk(path, name, root, field)
        elif stat.S_ISREG(mode):
            entries.append(_Entry(name, path))
        else:
            raise _invalid(field, f"{name} is neither a file nor a directory")
    return entries


def _link_target(path: Path, name: str, root: Path, field: str) -> Path:
    target = path.resolve()
    if not target.is_relative_to(root):
        raise _invalid(field, f"{name} is a symlink to {os.readlink(path)}, outside {root}")
    if not target.is_file():
        raise _invalid(field, f"{name} is a symlink to a directory or to nothing")
    return target


def _write(entries: Sequence[_Entry], dest: BinaryIO) -> None:
    with tarfile.open(fileobj=dest, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry.source is None:
                info.type = tarfile.DIRTYPE
                info.mode = _DIR_MODE
                archive.addfile(info)
                continue
            status = entry.source.stat()
            if not stat.S_ISREG(status.st_mode):
                raise ValueError(f"{entry.source} is not a regular file")
            info.size = status.st_size
            info.mode = _EXEC_MODE if status.st_mode & stat.S_IXUSR else _FILE_MODE
            with entry.source.open("rb") as reader:
                # tarfile copies exactly `size` bytes and fails if the file shrank meanwhile.
                archive.addfile(info, reader)


def _order(entry: _Entry) -> tuple[str, ...]:
    return tuple(entry.name.split("/"))


def _clean_arcname(arcname: str) -> str:
    parts = PurePosixPath(arcname).parts
    if not parts or arcname.startswith("/") or ".." in parts:
        raise ValueError(f"{arcname!r} is not a relative archive name")
    return "/".join(parts)


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(field, description)])
