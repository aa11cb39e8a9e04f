"""What every command prints: the result as one JSON object on stdout, progress lines on stderr."""
from __future__ import annotations

import json
import sys
import time

from ..events import EpochReport, Message, Progress, drive


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


class ProgressPrinter:
    """Turns job events into short progress lines on stderr (the CLI's progress bar)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._last = 0.0

    def __call__(self, event) -> None:
        if self.quiet:
            return
        if isinstance(event, Progress):
            now = time.monotonic()
            if now - self._last < 0.5 and event.done != event.total:
                return
            self._last = now
            eta = f", about {event.eta_s:.0f} s left" if event.eta_s else ""
            sys.stderr.write(f"\r[{event.stage}] {event.done}/{event.total} {event.message}{eta}\033[K")
            if event.done == event.total:
                sys.stderr.write("\n")
        elif isinstance(event, EpochReport):
            parts = [f"{k}={v:.4f}" for k, v in {**event.losses, **event.metrics}.items()
                     if isinstance(v, (int, float))]
            sys.stderr.write(f"\r[{event.stage}] epoch {event.epoch}/{event.epochs} {' '.join(parts)} "
                             f"({event.seconds:.1f} s)\033[K\n")
        elif isinstance(event, Message):
            sys.stderr.write(f"\r{'warning: ' if event.level == 'warning' else ''}{event.text}\033[K\n")
        sys.stderr.flush()


def run_job(job, quiet: bool = False):
    """Drive a core job to its end, printing its progress; its result."""
    return drive(job, ProgressPrinter(quiet))
