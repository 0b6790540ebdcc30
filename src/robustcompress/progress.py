"""Progress bars that read well both on a terminal and in a log file.

On a terminal: a tqdm bar redrawn in place. Anywhere else (a pipe, a file, a batch job's log): plain
lines, at most one every `interval` seconds, because carriage-return redraws turn into hundreds of
lines in a log (a one-epoch fine-tune wrote 400+). The caller prints its own summary at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

INTERVAL_S = 10.0


def progress_bar(
    total: int, desc: str, *, enabled: bool = True, unit: str = "it", file: TextIO | None = None,
    interval: float = INTERVAL_S,
) -> Any:  # fmt: skip
    """A bar with `update(n)`, `set_postfix(**values)` and `close()`; a plain-line one off a terminal."""
    stream = file or sys.stderr
    if enabled and not _is_terminal(stream):
        return LineProgress(total, desc, unit=unit, file=stream, interval=interval)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=stream, disable=not enabled, leave=False, unit=unit)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """`desc: done/total unit (pct) key=value ..., elapsed`: one line per `interval` seconds at most."""

    def __init__(self, total: int, desc: str, *, unit: str, file: TextIO, interval: float = INTERVAL_S):
        self.total, self.desc, self.unit, self.file, self.interval = total, desc, unit, file, interval
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval and self.n < self.total:
            self.last = now
            self._write(now)

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        """Nothing more: the caller's own summary line (an epoch's metrics) marks the end."""

    def _write(self, now: float) -> None:
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        print(
            f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}{extra}, {now - self.start:.0f} s",
            file=self.file,
            flush=True,
        )
