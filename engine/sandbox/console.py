"""The guest console (serial port, ``console.log`` in the sandbox dir) as lifecycle events.

Lines are recorded as events of kind ``console`` while the sandbox runs, so they get real
timestamps, merge with the other events in ``grove logs`` and outlive the sandbox directory
(terminate removes it). A guest flooding its console is cut to ``MAX_LINES_PER_PASS`` lines per
pass with a note of how many were skipped. The read offset is persisted, so an engine restart
neither repeats nor loses lines; a new QEMU (restore, cold boot) truncates the file, which
shows as a new inode or a shorter file.
"""

from __future__ import annotations

import os
import re

from engine.config import Paths
from engine.sandbox.events import EventLog
from engine.sessions.table import SessionTable
from engine.store.records import SandboxRecord

KIND = "console"
MAX_LINES_PER_PASS = 50
MAX_READ = 64 * 1024
MAX_LINE = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class ConsoleTail:
    def __init__(self, paths: Paths, table: SessionTable, events: EventLog) -> None:
        self._paths = paths
        self._table = table
        self._events = events
        self._state: dict[str, dict[str, int]] = {}

    async def tick(self, record: SandboxRecord) -> None:
        path = self._paths.sandbox_dir(record.id) / "console.log"
        try:
            st = os.stat(path)
        except OSError:
            return
        state = self._state.get(record.id)
        if state is None:
            saved = self._table.get(record.id, KIND, "") or {}
            state = {"ino": int(saved.get("ino", 0)), "offset": int(saved.get("offset", 0))}
            self._state[record.id] = state
        if st.st_ino != state["ino"] or st.st_size < state["offset"]:
            state.update(ino=st.st_ino, offset=0)
        if st.st_size <= state["offset"]:
            return
        with open(path, "rb") as f:
            f.seek(state["offset"])
            data = f.read(MAX_READ)
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) < MAX_READ:
            return  # an incomplete line: wait for its end
        chunk = data[:end] if end else data
        state["offset"] += len(chunk)
        lines = [_clean(raw) for raw in chunk.split(b"\n")]
        lines = [line for line in lines if line]
        for line in lines[:MAX_LINES_PER_PASS]:
            await self._events.emit(record.id, "console", line=line)
        if len(lines) > MAX_LINES_PER_PASS:
            skipped = len(lines) - MAX_LINES_PER_PASS
            await self._events.emit(record.id, "console", line=f"[{skipped} more lines skipped]")
        self._table.put(record.id, KIND, "", dict(state))


def _clean(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    return _CONTROL.sub("?", text)[:MAX_LINE].rstrip()
