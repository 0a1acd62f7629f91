"""Every command's --help renders (help text is rich markup: a stray [..] breaks it)."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from berth.cli.main import app


def command_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_command_has_working_help() -> None:
    runner = CliRunner()
    paths = command_paths()
    assert len(paths) > 80, "the command tree was not walked"
    broken = {
        " ".join(path): repr(result.exception)
        for path in paths
        if (result := runner.invoke(app, [*path, "--help"])).exit_code != 0
    }
    assert broken == {}
