"""Events that long jobs yield, and the token that cancels them.

A long job is a generator: every `yield` is a progress point and a cancel point. The GUI drives it on a worker
thread and relays the events as Qt signals (app/jobs.py); the CLI, tests and benchmarks drive it synchronously
with `drive`; a job that runs another job inside passes its events on with `relay`. Nothing else iterates a job.
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


def _outcome(done_result, returned):
    """A job's result: what its Done carried, else what the generator returned (inner jobs such as classifier
    training return their model instead of yielding Done)."""
    return returned if returned is not None else done_result


def drive(job, on_event=None):
    """Run a job to the end synchronously (the CLI, tests, benchmarks), handing every event to `on_event`;
    return its result (see _outcome)."""
    result = None
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return _outcome(result, stop.value)
        if on_event is not None:
            on_event(event)
        if isinstance(event, Done):
            result = event.result


def relay(job, on_event=None):
    """Inside a job: pass on every event of an inner `job` except its Done (calling `on_event` first), and
    return its result. Use as `result = yield from relay(inner, on_event)`.

    An exception thrown into the outer job (the GUI's cancel) is thrown into the inner one where it stopped, so
    the inner job's own handlers (recording a cancelled run) run; closing the outer job closes the inner one."""
    result = None
    thrown: BaseException | None = None
    while True:
        try:
            event = job.throw(thrown) if thrown is not None else next(job)
        except StopIteration as stop:
            return _outcome(result, stop.value)
        thrown = None
        if isinstance(event, Done):
            result = event.result
            continue
        if on_event is not None:
            on_event(event)
        try:
            yield event
        except GeneratorExit:
            job.close()
            raise
        except BaseException as exc:    # noqa: BLE001 - handed to the inner job, which re-raises what it cannot handle
            thrown = exc
