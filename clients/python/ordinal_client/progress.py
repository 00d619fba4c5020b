"""A one-line progress bar on stderr for wait() (no dependency: the client needs httpx only)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class ProgressLine:
    """Redraws one line: "snapshot 7 [#######.......] 3/5 files running". Off unless
    `enabled`, which defaults to whether the stream is a terminal."""

    def __init__(self, label: str, *, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.label, self.stream = label, stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self.drawn = False

    def update(self, done: float, total: float | None, unit: str, status: str) -> None:
        if not self.enabled:
            return
        elapsed = f"{time.monotonic() - self.started:.0f}s"
        if total:
            share = max(0.0, min(1.0, (done or 0) / total))
            filled = round(share * WIDTH)
            bar = f"[{'#' * filled}{'.' * (WIDTH - filled)}] {done:g}/{total:g} {unit}"
        else:
            bar = f"[{'?' * 3}] {unit}".rstrip()
        self.stream.write(f"\r{self.label} {bar} {status} {elapsed}\x1b[K")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
