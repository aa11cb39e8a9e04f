"""Events that long jobs yield, and the token that cancels them.

A long job is a generator: every `yield` is a progress point and a cancel point. The GUI drives it on a worker
thread and relays the events as Qt signals; the CLI and tests drive it synchronously.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .errors import Cancelled


class CancelToken:
    """Thread-safe flag a job checks between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


@dataclass
class Progress:
    stage: str            # e.g. "classifier", "cams", "pseudo", "segmenter", "predict", "export"
    done: int
    total: int
    message: str = ""
    eta_s: float | None = None


@dataclass
class Message:
    """Something worth telling the user that is not an error (a warning, a stage change)."""
    text: str
    level: str = "info"   # "info" | "warning"


@dataclass
class EpochReport:
    stage: str                      # "classifier" | "segmenter"
    epoch: int                      # 1-based
    epochs: int
    losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    # slice id -> {"cam": HxW float32 in [0,1], "fused": HxW float32 in [0,1]} for a chosen set of slices
    maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Done:
    """The last event of a job; `result` is what the job made (a path, a dict of metrics...)."""
    result: Any = None


def drive(job, on_event=None):
    """Run a job generator to the end synchronously; return the result of its Done event (or None)."""
    result = None
    for event in job:
        if on_event is not None:
            on_event(event)
        if isinstance(event, Done):
            result = event.result
    return result


def run_to_return(job, on_event=None):
    """Run a generator to the end, handing each event to `on_event`; return the generator's `return` value
    (for inner jobs such as classifier training, which return their model instead of yielding Done)."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
