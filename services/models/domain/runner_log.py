"""The runner's log: its own lines and, later, its engines', for `berth model logs`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from berth.common.broadcast import Broadcast
from berth.common.errors import FieldViolation, InvalidArgument

RUNNER_SOURCE = "runner"
KEEP_LINES = 5000


@dataclass(frozen=True)
class LogLine:
    line: str
    source: str = RUNNER_SOURCE
    time: datetime = field(default_factory=lambda: datetime.now(UTC))


class RunnerLog(Broadcast[LogLine]):
    def __init__(self) -> None:
        super().__init__(keep=KEEP_LINES)

    def runner_sink(self, rendered: str) -> None:
        """A logging sink: each rendered line of the runner's own log."""
        self.publish(LogLine(rendered))

    def backlog(self, tail: int | None, no_engines: bool) -> list[LogLine]:
        """The kept lines to show first: all, or the last `tail` of those selected."""
        if tail is not None and tail < 0:
            raise InvalidArgument([FieldViolation("tail", "must be zero or more")])
        lines = [line for line in self.recent() if wanted(line, no_engines)]
        if tail is None:
            return lines
        return lines[-tail:] if tail else []


def wanted(line: LogLine, no_engines: bool) -> bool:
    return not no_engines or line.source == RUNNER_SOURCE
