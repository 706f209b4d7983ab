"""A small progress bar on standard error: count, rate, time left and custom fields."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """``with Progress(total, "scan") as p: p.update(n, loss=0.3)``.

    On a terminal it redraws one bar in place at most 5 times a second. Elsewhere
    (a log file, CI) it never writes a carriage return: it prints one plain line
    (done/total, rate, time left) every ``every`` seconds, and one when it closes.
    With ``delay`` it stays silent for work that ends within ``delay`` seconds (a
    phase that is usually instant, such as reading an already decoded folder).
    ``initial``: work done before (a resumed scan); it counts towards the total but
    not towards the rate.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "img",
        enabled: bool = True,
        stream=None,
        every: float = 5.0,
        clock=time.perf_counter,
        delay: float = 0.0,
        initial: int = 0,
    ):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = float(every)
        self._clock = clock
        self.done = self.initial = int(initial)
        self.fields = {}
        self.start = clock()
        self._last = self.start
        self.delay = float(delay)
        self._shown = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(failed=exc_type is not None)
        return False

    @property
    def rate(self) -> float:
        elapsed = self._clock() - self.start
        return (self.done - self.initial) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        width = 20
        filled = int(width * pct / 100)
        bar = "#" * filled + "-" * (width - filled)
        extra = "".join(
            f" {k} {v:.4f}" if isinstance(v, float) else f" {k} {v}" for k, v in self.fields.items()
        )
        left_s = f"{left:5.0f}s left" if left == left else "   ?s left"
        return (
            f"{self.desc} [{bar}] {self.done}/{self.total} {rate:7.0f} {self.unit}/s "
            f"{left_s}{extra}"
        )

    def update(self, n: int, **fields) -> None:
        self.done += int(n)
        self.fields.update(fields)
        if not self.enabled:
            return
        now = self._clock()
        if now - self.start < self.delay:
            return
        if self.tty:
            if now - self._last > 0.2 or self.done >= self.total:
                self._last, self._shown = now, True
                print("\r" + self.line(), end="", file=self.stream, flush=True)
        elif now - self._last >= self.every and self.done < self.total:
            self._last, self._shown = now, True
            print(self.line(), file=self.stream, flush=True)

    def close(self, failed: bool = False) -> None:
        if not self.enabled:
            return
        if not self._shown and self._clock() - self.start < self.delay:
            return
        if self.tty:
            print("\r" + self.line(), file=self.stream, flush=True)
        elif not failed:
            elapsed = self._clock() - self.start
            print(f"{self.line()} ({elapsed:.1f}s)", file=self.stream, flush=True)
