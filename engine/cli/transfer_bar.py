"""The progress bar of push, pull and disk export: rich on a terminal, silent elsewhere.

The client calls the callback from its event-loop thread; rich's Progress is thread-safe and
redraws at its own rate, so a fast stream of callbacks costs a counter update each.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from engine.cli.output import iec
from engine.client.models import TransferProgress

STAGES = {
    "planning": "planning",
    "sending": "sending",
    "receiving": "receiving",
    "converting": "converting",
    "verifying": "verifying sha256",
    "done": "done",
}


def amount(update: TransferProgress, seconds: float) -> str:
    """What the bar prints beside itself: a percentage while an export converts, else bytes
    moved of the total and the rate since the stage began."""
    if update.stage == "converting":
        total = update.total_bytes or 0
        return f"{100 * update.done_bytes / total:.0f}%" if total else ""
    if update.stage == "planning":
        return ""
    text = iec(update.done_bytes)
    if update.total_bytes is not None:
        text += f" / {iec(update.total_bytes)}"
    if seconds > 0 and update.done_bytes and update.stage in ("sending", "receiving"):
        text += f"  {iec(update.done_bytes / seconds)}/s"
    return text


class TransferBar:
    """The progress callback: records the stages it heard, draws them when given a Progress."""

    def __init__(self, label: str, progress: Progress | None) -> None:
        self.label = label
        self._progress = progress
        self._task: TaskID | None = None
        self._since = time.monotonic()
        self.stages: list[str] = []

    def __call__(self, update: TransferProgress) -> None:
        changed = not self.stages or self.stages[-1] != update.stage
        if changed:
            self.stages.append(update.stage)
            self._since = time.monotonic()
        progress = self._progress
        if progress is None:
            return
        description = f"{self.label} {STAGES.get(update.stage, update.stage)}"
        moved = amount(update, time.monotonic() - self._since)
        if self._task is None:
            self._task = progress.add_task(description, total=update.total_bytes, amount=moved)
        elif changed:  # a new stage, maybe a new unit: the time estimate starts over
            progress.reset(self._task, total=update.total_bytes, description=description)
        progress.update(
            self._task,
            description=description,
            completed=update.done_bytes,
            total=update.total_bytes,
            amount=moved,
        )


@contextmanager
def transfer_bar(label: str, enabled: bool) -> Iterator[TransferBar]:
    """A bar on stderr when enabled and stderr is a terminal; a recorder of stages otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield TransferBar(label, None)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[amount]}"),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
    with progress:
        yield TransferBar(label, progress)
