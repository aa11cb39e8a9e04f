"""The one place where threads start: run a core job generator on a worker thread and relay its events as Qt signals.

A job is a callable `make_job(cancel: CancelToken) -> generator of events` (covidseg_core.events). The worker
drives the generator and emits each event through a queued signal, so slots always run on the GUI thread and the
worker never touches a widget. One job runs at a time: the core's jobs share the GPU (and, on a laptop, all CPU
cores), so a second job is refused instead of queued behind the user's back.
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Iterator

from PySide6.QtCore import QObject, QRunnable, Qt, QThread, QThreadPool, Signal, Slot

from covidseg_core.errors import Cancelled, CovidSegError
from covidseg_core.events import CancelToken, Done, EpochReport, Message, Progress

log = logging.getLogger(__name__)

JobFactory = Callable[[CancelToken], Iterator[Any]]

# Progress events can come thousands per second (one per batch); the GUI needs ~20 per second at most.
PROGRESS_MIN_INTERVAL_S = 0.05
# While a job runs, the GUI thread competes with it for the GIL. PySide releases the GIL around most Qt calls, and
# each time the GUI thread wants it back it may wait a whole switch interval (5 ms by default): a redraw made of
# a few dozen Qt calls then stalls for 100+ ms. A shorter interval hands the GIL back sooner.
GIL_SWITCH_INTERVAL_S = 0.0005
_clock = time.monotonic          # what the progress throttle reads (a test steps it by hand)


class JobBusy(CovidSegError):
    """A second job was started while one runs."""


_torch_lock = threading.Lock()
_torch_ready = False


def warm_up_torch() -> bool:
    """Import torch and let it do the imports it otherwise does lazily on first use (making an optimizer pulls
    in its compiler stack: about a second of Python). Once per process, and never in two threads at once: torch's
    imports are not thread-safe, and the device probe and a job may both get here. False without torch."""
    global _torch_ready
    with _torch_lock:
        if _torch_ready:
            return True
        try:
            import torch
        except ImportError:       # the app can still open and label studies without torch
            return False
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        _torch_ready = True
        return True


def limit_compute_threads() -> None:
    """Leave one CPU core to the GUI thread so the window stays responsive while torch trains on the CPU."""
    if not warm_up_torch():
        return
    import torch

    cores = os.cpu_count() or 2
    torch.set_num_threads(max(1, cores - 1))


JOB_NICENESS = 5


def lower_this_thread_priority() -> None:
    """Let the GUI thread win the CPU over the job when both want it (the job loses little: it has the rest).
    Linux only: there a thread has its own nice value, inherited by the compute threads it starts."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + JOB_NICENESS, 19))
    except (AttributeError, OSError) as exc:      # not permitted or not supported: run at normal priority
        log.debug("could not lower the job thread's priority: %s", exc)


class _Worker(QObject):
    """Drives one generator on the worker thread. Lives in that thread; talks only through signals."""

    event = Signal(object)
    failed = Signal(object)       # the exception (CovidSegError, Cancelled or unexpected)
    succeeded = Signal(object)    # the result of the Done event (None if the job yielded none)
    finished = Signal()

    def __init__(self, make_job: JobFactory, cancel: CancelToken, name: str = "job"):
        super().__init__()
        self._make_job = make_job
        self._cancel = cancel
        self._name = f"job:{name}"

    def _stop_if_cancelled(self, job) -> None:
        if self._cancel.cancelled:
            job.throw(Cancelled())
            job.close()
            raise Cancelled()

    @Slot()
    def run(self) -> None:
        result = None
        last_progress = float("-inf")
        threading.current_thread().name = self._name      # names the job's thread in the log
        try:
            lower_this_thread_priority()
            limit_compute_threads()
            job = self._make_job(self._cancel)
            for ev in job:
                if isinstance(ev, Done):
                    result = ev.result
                    continue
                # stop at the next event even if the job does not check the token itself (a progress event the
                # throttle drops too): raised inside the job at its yield, so the job's own handlers (recording a
                # cancelled run) still run
                self._stop_if_cancelled(job)
                if isinstance(ev, Progress):
                    now = _clock()
                    if now - last_progress < PROGRESS_MIN_INTERVAL_S and ev.done < ev.total:
                        continue
                    last_progress = now
                self.event.emit(ev)
                self._stop_if_cancelled(job)
            self.succeeded.emit(result)
        except Cancelled as exc:
            self.failed.emit(exc)
        except CovidSegError as exc:
            log.warning("job failed: %s", exc)
            self.failed.emit(exc)
        except Exception as exc:  # unexpected: logged with traceback, shown by the GUI with the log path
            log.exception("unexpected error in a background job")
            self.failed.emit(exc)
        finally:
            self.finished.emit()


class JobRunner(QObject):
    """Starts jobs one at a time and relays their events as signals on the GUI thread."""

    started = Signal(str)            # job name
    progress = Signal(object)        # Progress
    epoch = Signal(object)           # EpochReport
    message = Signal(object)         # Message
    succeeded = Signal(str, object)  # job name, result
    failed = Signal(str, object)     # job name, exception (not for a cancel)
    cancelled = Signal(str)          # job name
    finished = Signal(str, str)      # job name, "done" | "failed" | "cancelled": after the three above
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: _Worker | None = None
        self._cancel: CancelToken | None = None
        self._name = ""
        self._on_done: Callable[[Any], None] | None = None
        self._when_failed: Callable[[BaseException], None] | None = None
        self._outcome: tuple[str, Any] = ("failed", None)

    @property
    def busy(self) -> bool:
        return self._thread is not None

    @property
    def job_name(self) -> str:
        return self._name if self.busy else ""

    def start(self, name: str, make_job: JobFactory, on_done: Callable[[Any], None] | None = None,
              on_failed: Callable[[BaseException], None] | None = None) -> None:
        """Run `make_job(cancel)` on a worker thread. `on_done(result)` runs on the GUI thread on success, after
        the job thread has ended (so it may start the next job); `on_failed(exc)` when it failed (not when it
        was cancelled), before the `failed` signal.

        Raises JobBusy when a job runs already.
        """
        if self.busy:
            raise JobBusy(f"'{self._name}' is still running.",
                          "Wait for it to finish or cancel it, then try again.")
        self._name = name
        self._on_done = on_done
        self._when_failed = on_failed
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        # Python's cyclic garbage collector stops every thread while it scans; with the window's many Qt/pyqtgraph
        # objects a full scan, triggered by allocations in the job, takes a few hundred ms. Collect once now, at
        # the user's click, and keep what exists (the GUI, the study) out of the scans. The heap stays frozen after
        # the job: unfreezing there made the next full scan a stall at the job's end; what the frozen part drops
        # meanwhile is collected here, at the next start.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._outcome = ("failed", RuntimeError("the job thread ended without a result"))
        self._cancel = CancelToken()
        thread = QThread()
        thread.setObjectName(f"job:{name}")
        worker = _Worker(make_job, self._cancel, name)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        # the worker lives in the job thread, self in the GUI thread: these connections are queued
        worker.event.connect(self._relay)
        worker.succeeded.connect(self._on_succeeded)
        worker.failed.connect(self._on_failed)
        # direct: quit() is thread-safe, and a queued call would wait for the GUI thread (which may be blocked in
        # wait() at shutdown)
        worker.finished.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker = thread, worker
        log.info("job started: %s", name)
        thread.start()
        self.busy_changed.emit(True)
        self.started.emit(name)

    def cancel(self) -> None:
        if self._cancel is not None:
            log.info("job cancel requested: %s", self._name)
            self._cancel.cancel()

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until the job thread ends (for shutdown and tests). True if it ended."""
        thread = self._thread
        return True if thread is None else thread.wait(timeout_ms)

    @Slot(object)
    def _relay(self, ev: Any) -> None:
        if isinstance(ev, Progress):
            self.progress.emit(ev)
        elif isinstance(ev, EpochReport):
            self.epoch.emit(ev)
        elif isinstance(ev, Message):
            self.message.emit(ev)
        else:
            log.debug("job %s yielded an unknown event %r", self._name, type(ev).__name__)

    @Slot(object)
    def _on_succeeded(self, result: Any) -> None:
        self._outcome = ("done", result)

    @Slot(object)
    def _on_failed(self, exc: BaseException) -> None:
        self._outcome = ("cancelled" if isinstance(exc, Cancelled) else "failed", exc)

    @Slot()
    def _on_thread_finished(self) -> None:
        name, on_done, on_failed = self._name, self._on_done, self._when_failed
        outcome, value = self._outcome
        thread, worker = self._thread, self._worker
        self._thread = self._worker = None
        self._cancel = None
        self._on_done = self._when_failed = None
        if worker is not None:
            worker.deleteLater()
        if thread is not None:
            thread.deleteLater()
        self.busy_changed.emit(False)
        log.info("job %s: %s", outcome, name)
        if outcome == "done" and on_done is not None:
            try:
                on_done(value)
            except CovidSegError as exc:
                log.warning("after job %s: %s", name, exc)
                outcome, value = "failed", exc
        if outcome == "done":
            self.succeeded.emit(name, value)
        elif outcome == "cancelled":
            self.cancelled.emit(name)
        else:
            if on_failed is not None:
                on_failed(value)
            self.failed.emit(name, value)
        self.finished.emit(name, outcome)


class _LightTask(QObject):
    """Result relay of run_light (lives in the GUI thread)."""
    done = Signal(object)
    failed = Signal(object)


class _LightRunnable(QRunnable):
    def __init__(self, fn: Callable[[], Any], relay: _LightTask):
        super().__init__()
        self._fn, self._relay = fn, relay

    def run(self) -> None:
        try:
            try:
                value = self._fn()
            except Exception as exc:  # a probe that fails must not take the app down: logged, handed to on_error
                log.exception("background task failed")
                self._relay.failed.emit(exc)
                return
            self._relay.done.emit(value)
        except RuntimeError:      # the window that asked was closed meanwhile: nobody wants the answer
            log.debug("background task finished after its window closed")


def run_light(fn: Callable[[], Any], on_result: Callable[[Any], None], parent: QObject,
              on_error: Callable[[BaseException], None] | None = None) -> None:
    """Run a short task that needs no GPU and no cancel (e.g. importing torch to see which device there is)
    on the thread pool, and hand its result to `on_result` (or its exception to `on_error`) on the GUI thread.
    Not for training or I/O jobs. `parent` owns the relay: when it is deleted first, the result is dropped."""
    relay = _LightTask(parent)
    relay.done.connect(on_result)
    if on_error is not None:
        relay.failed.connect(on_error)
    relay.done.connect(relay.deleteLater)
    relay.failed.connect(relay.deleteLater)
    QThreadPool.globalInstance().start(_LightRunnable(fn, relay))
