"""Following the long work of berth-modeld: one renderer for every OperationEvent stream.

Pull, push, package, bench and install/reinstall-runner stream OperationEvents: the first
is a full snapshot, later ones carry only the layers that changed, success ends with a
SUCCEEDED event holding the result and failure ends the stream with a gRPC error (which
propagates to main.py). On a terminal each layer gets a rich progress bar; otherwise one
plain line when a layer starts and one when it completes. Ctrl-C stops watching only: the
call is cancelled and the operation goes on in berth-modeld under its operation id.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn

from berth.api.models.v1 import resources_pb2 as res
from berth.cli.errors import EXIT_INTERRUPTED, CliError
from berth.cli.model_parse import human_size, short_id

_ACTIVE = {res.LAYER_STATUS_TRANSFERRING, res.LAYER_STATUS_VERIFYING}
_FINISHED = {res.LAYER_STATUS_DONE, res.LAYER_STATUS_EXISTS}


@dataclass(frozen=True)
class Verbs:
    """What a layer line says while it moves, when done, and when it was already there."""

    active: str
    done: str
    exists: str


_PULL = Verbs("Downloading", "Pull complete", "Already exists")
_PUSH = Verbs("Pushing", "Pushed", "Layer already exists")
_PACKAGE = Verbs("Adding", "Added", "Already exists")


def verbs_for(event: res.OperationEvent) -> Verbs:
    """Verbs by what the operation is doing now (package --push uploads), else by its kind."""
    if event.phase == res.OPERATION_PHASE_UPLOADING:
        return _PUSH
    if event.phase == res.OPERATION_PHASE_DOWNLOADING:
        return _PULL
    if event.kind == res.OPERATION_KIND_PUSH_MODEL:
        return _PUSH
    if event.kind == res.OPERATION_KIND_PACKAGE_MODEL:
        return _PACKAGE
    return _PULL


@dataclass
class Layer:
    """What is known of one blob, merged from the snapshot and the later deltas."""

    digest: str = ""
    name: str = ""
    media_type: str = ""
    status: int = res.LAYER_STATUS_UNSPECIFIED
    total: int = 0
    completed: int = 0
    label: str = ""
    task: TaskID | None = None

    def title(self) -> str:
        """A stable label, fixed the first time it is shown (a digest may come later)."""
        if not self.label:
            self.label = short_id(self.digest) if self.digest else self.name or "layer"
        return self.label


@dataclass
class LayerBook:
    """The layers of one operation; `merge` applies an event's layers and says what moved."""

    layers: list[Layer] = field(default_factory=list)

    def find(self, update: res.LayerProgress) -> Layer | None:
        for layer in self.layers:
            if update.digest and layer.digest == update.digest:
                return layer
        for layer in self.layers:
            same_digest = not layer.digest or not update.digest or layer.digest == update.digest
            if update.name and layer.name == update.name and same_digest:
                return layer
        return None

    def merge(self, updates: Any) -> list[tuple[Layer, int]]:
        """(layer, its previous status) for each layer the event carries."""
        changed: list[tuple[Layer, int]] = []
        for update in updates:
            layer = self.find(update)
            if layer is None:
                layer = Layer()
                self.layers.append(layer)
            previous = layer.status
            layer.digest = update.digest or layer.digest
            layer.name = update.name or layer.name
            layer.media_type = update.media_type or layer.media_type
            layer.status = update.status or layer.status
            layer.total = update.total_bytes or layer.total
            layer.completed = update.completed_bytes
            changed.append((layer, previous))
        return changed


def layer_line(layer: Layer, previous: int, verbs: Verbs) -> str | None:
    """The plain line for a layer's change: when it starts and when it completes, else None."""
    if layer.status == previous:
        return None
    if layer.status == res.LAYER_STATUS_EXISTS:
        return f"{layer.title()}: {verbs.exists}"
    if layer.status == res.LAYER_STATUS_DONE:
        return f"{layer.title()}: {verbs.done}"
    if layer.status in _ACTIVE and previous not in _ACTIVE:
        what = f" {layer.name}" if layer.name and layer.name != layer.title() else ""
        size = f" ({human_size(layer.total)})" if layer.total else ""
        return f"{layer.title()}: {verbs.active}{what}{size}"
    return None


def _layer_detail(layer: Layer, verbs: Verbs) -> str:
    if layer.status == res.LAYER_STATUS_EXISTS:
        return verbs.exists
    if layer.status == res.LAYER_STATUS_DONE:
        return verbs.done
    if layer.status == res.LAYER_STATUS_VERIFYING:
        return "Verifying"
    if layer.status == res.LAYER_STATUS_TRANSFERRING:
        total = f" / {human_size(layer.total)}" if layer.total else ""
        return f"{verbs.active} {human_size(layer.completed)}{total}"
    return "Waiting"


class View(Protocol):
    def show(self, event: res.OperationEvent) -> None: ...
    def line(self, text: str) -> None: ...
    def close(self) -> None: ...


class PlainView:
    """Lines for logs and pipes: phase changes, layer starts and completions."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.book = LayerBook()
        self.phase = res.OPERATION_PHASE_UNSPECIFIED

    def show(self, event: res.OperationEvent) -> None:
        if event.phase != self.phase and event.phase != res.OPERATION_PHASE_DONE and event.message:
            self.line(event.message)
        self.phase = event.phase
        verbs = verbs_for(event)
        for layer, previous in self.book.merge(event.layers):
            text = layer_line(layer, previous, verbs)
            if text:
                self.line(text)

    def line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        return None


class RichView:
    """Progress bars on a terminal: one for the operation, one per layer."""

    def __init__(self, out: TextIO) -> None:
        self.book = LayerBook()
        self.progress = Progress(
            SpinnerColumn(finished_text=" "),
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[detail]}"),
            console=Console(file=out, highlight=False),
            refresh_per_second=8,
        )
        self.overall = self.progress.add_task("Starting", total=None, detail="")
        self.started = self.closed = False

    def show(self, event: res.OperationEvent) -> None:
        if not self.started:
            # Started on the first event, so a call refused at once leaves no empty bar.
            self.started = True
            self.progress.start()
        verbs = verbs_for(event)
        for layer, _previous in self.book.merge(event.layers):
            self._draw(layer, verbs)
        total = event.total_bytes or None
        detail = ""
        if event.total_bytes:
            detail = f"{human_size(event.completed_bytes)} / {human_size(event.total_bytes)}"
        finished = event.state == res.OPERATION_STATE_SUCCEEDED
        self.progress.update(
            self.overall,
            description=event.message or _phase_word(event.phase),
            total=total if not finished else 1,
            completed=event.completed_bytes if not finished else 1,
            detail=detail,
        )

    def _draw(self, layer: Layer, verbs: Verbs) -> None:
        done = layer.status in _FINISHED
        total = layer.total or None
        completed = layer.completed
        if done:
            total = total or 1
            completed = total
        name = f" {layer.name}" if layer.name and layer.name != layer.title() else ""
        fields = {"description": layer.title() + name, "detail": _layer_detail(layer, verbs)}
        if layer.task is None:
            layer.task = self.progress.add_task(total=total, **fields)
        # update() (not add_task) marks a task finished once completed reaches total.
        self.progress.update(layer.task, total=total, completed=completed, **fields)

    def line(self, text: str) -> None:
        self.progress.console.print(text, markup=False)

    def close(self) -> None:
        if self.started and not self.closed:
            self.closed = True
            self.progress.stop()


def make_view(out: TextIO) -> View:
    """Bars when `out` is a terminal, plain lines otherwise."""
    return RichView(out) if out.isatty() else PlainView(out)


class Call(Protocol):
    """A server-streaming call: an iterator of responses that each hold an `event`."""

    def __iter__(self) -> Iterator[Any]: ...
    def cancel(self) -> bool: ...


def follow(
    call: Call,
    *,
    out: TextIO | None = None,
    note: Callable[[res.OperationEvent], str | None] | None = None,
    view_factory: Callable[[TextIO], View] = make_view,
) -> res.OperationEvent:
    """Render an operation until it ends; returns its SUCCEEDED event.

    `note` may add a line for an event (bench prints each finished concurrency level).
    """
    stream = out or sys.stdout
    view = view_factory(stream)
    operation_id = ""
    final: res.OperationEvent | None = None
    try:
        for response in call:
            event = response.event
            operation_id = event.operation_id or operation_id
            view.show(event)
            extra = note(event) if note else None
            if extra:
                view.line(extra)
            if event.state in (res.OPERATION_STATE_FAILED, res.OPERATION_STATE_CANCELLED):
                raise CliError(event.message or "the operation failed")
            if event.state == res.OPERATION_STATE_SUCCEEDED:
                final = event
    except KeyboardInterrupt:
        view.close()
        call.cancel()
        _stopped_watching(operation_id)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        view.close()
    if final is None:
        where = f" (operation id {operation_id})" if operation_id else ""
        raise CliError(f"the stream ended before the operation finished{where}")
    return final


def _stopped_watching(operation_id: str) -> None:
    if operation_id:
        message = f"Stopped watching. The operation goes on in berth (operation id {operation_id})."
    else:
        message = "Stopped watching before berth named the operation; it may still go on."
    print(message, file=sys.stderr)


def _phase_word(phase: int) -> str:
    """`OPERATION_PHASE_DOWNLOADING` -> "Downloading"."""
    if phase == res.OPERATION_PHASE_UNSPECIFIED:
        return "Working"
    return res.OperationPhase.Name(phase).removeprefix("OPERATION_PHASE_").capitalize()
