"""The job runner: events relayed on the GUI thread, one job at a time, Cancel, errors, the work on the job thread
while the GUI thread handles events, throttled progress, a core left to the GUI.

The generators here are test doubles of a core job (the app itself only runs core jobs). No test here asserts a
wall-clock time (they run on busy machines): how long the GUI thread stalls is measured by benchmarks/gui_stall.py."""
import itertools
import os
import threading
import time

import pytest

from covidseg_core.errors import InputError
from covidseg_core.events import Done, EpochReport, Message, Progress

from app import jobs
from app.jobs import JobBusy, JobRunner
from gui_helpers import GuiPing

# how long a test waits for a job before it calls it stuck: generous, for a machine busy with other work
LONG = 180_000


def burn_cpu(seconds):
    """Work like a training batch: torch ops (which release the GIL), on the threads the runner allows."""
    import torch
    x = torch.rand(200, 200)
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        x = torch.tanh(x @ x.T / 200.0)


def busy_job(n_steps=40, step_s=0.005, threads=None):
    def job(cancel):
        for i in range(n_steps):
            if threads is not None:
                threads.add(threading.get_ident())
            cancel.raise_if_cancelled()
            burn_cpu(step_s)
            yield Progress("classifier", i + 1, n_steps, "batch")
            if (i + 1) % 10 == 0:
                yield EpochReport("classifier", (i + 1) // 10, n_steps // 10, losses={"loss": 1.0 / (i + 1)})
        yield Message("done soon")
        yield Done({"steps": n_steps})
    return job


def test_events_arrive_on_gui_thread_in_order(qtbot, qapp):
    runner = JobRunner()
    seen, threads, results = [], set(), []
    gui = threading.get_ident()
    runner.epoch.connect(lambda ev: seen.append(("epoch", ev.epoch, threading.get_ident())))
    runner.message.connect(lambda ev: seen.append(("msg", ev.text, threading.get_ident())))
    with qtbot.waitSignal(runner.finished, timeout=LONG) as blocker:
        runner.start("fake", busy_job(threads=threads), on_done=results.append)
    assert blocker.args == ["fake", "done"]
    assert results == [{"steps": 40}]
    assert [s[:2] for s in seen] == [("epoch", 1), ("epoch", 2), ("epoch", 3), ("epoch", 4), ("msg", "done soon")]
    assert all(s[2] == gui for s in seen)
    assert gui not in threads                    # the generator ran on another thread
    assert not runner.busy


def test_one_job_at_a_time(qtbot, qapp):
    runner = JobRunner()
    runner.start("first", busy_job(n_steps=20))
    with pytest.raises(JobBusy):
        runner.start("second", busy_job(n_steps=1))
    with qtbot.waitSignal(runner.finished, timeout=LONG):
        pass
    # a job may be started from the previous one's on_done
    order = []
    with qtbot.waitSignal(runner.finished, timeout=LONG, check_params_cb=lambda n, o: n == "b"):
        runner.start("a", busy_job(n_steps=2),
                     on_done=lambda r: (order.append("a"), runner.start("b", busy_job(n_steps=2),
                                                                         on_done=lambda r: order.append("b"))))
    assert order == ["a", "b"]


def test_cancel_stops_the_job(qtbot, qapp):
    runner = JobRunner()
    progress = []
    runner.progress.connect(lambda ev: progress.append(ev.done))
    runner.start("long", busy_job(n_steps=10_000, step_s=0.01))
    qtbot.waitUntil(lambda: len(progress) > 2, timeout=LONG)
    with qtbot.waitSignal(runner.cancelled, timeout=LONG):
        runner.cancel()
    qtbot.waitUntil(lambda: not runner.busy, timeout=LONG)
    assert max(progress) < 10_000


def unchecked_job(steps_after_cancel, n_steps=100_000):
    """A job that never looks at its cancel token, yielding a progress event per (short) step."""
    def job(cancel):
        for i in range(n_steps):
            if cancel.cancelled:
                steps_after_cancel.append(i)
            yield Progress("segmenter", i + 1, n_steps, "batch")
    return job


def test_cancel_stops_a_job_that_does_not_check_at_its_next_event(qtbot, qapp, monkeypatch):
    """Even at an event the throttle drops: counted in steps, not seconds. A clock that stands still makes the
    throttle drop every progress event after the first."""
    monkeypatch.setattr(jobs, "_clock", lambda: 0.0)
    runner = JobRunner()
    steps_after_cancel, progress = [], []
    runner.progress.connect(lambda ev: (progress.append(ev.done), runner.cancel()))
    with qtbot.waitSignal(runner.finished, timeout=LONG) as blocker:
        runner.start("unchecked", unchecked_job(steps_after_cancel))
    assert blocker.args == ["unchecked", "cancelled"]
    assert progress == [1]
    assert len(steps_after_cancel) <= 1          # the step that was running when Cancel came


def test_errors_are_reported_not_raised(qtbot, qapp):
    runner = JobRunner()

    def bad(cancel):
        yield Progress("load", 0, 1)
        raise InputError("The study cannot be read.", "Choose another.")

    with qtbot.waitSignal(runner.failed, timeout=LONG) as blocker:
        runner.start("bad", bad)
    assert isinstance(blocker.args[1], InputError)

    def buggy(cancel):
        yield Progress("load", 0, 1)
        raise ZeroDivisionError("oops")

    with qtbot.waitSignal(runner.failed, timeout=LONG) as blocker:
        runner.start("buggy", buggy)
    assert isinstance(blocker.args[1], ZeroDivisionError)


def test_the_work_runs_on_the_job_thread_and_the_gui_handles_events_between_progress_updates(qtbot, qapp):
    runner = JobRunner()
    ping = GuiPing(lambda: runner.busy)
    work_threads, answered, relayed = [], [], []
    runner.progress.connect(lambda ev: relayed.append(threading.get_ident()))

    def job(cancel):
        for i in range(5):
            work_threads.append(threading.get_ident())
            burn_cpu(0.01)
            yield Progress("classifier", i + 1, 5, "batch")
            # the job goes on only after the GUI thread handled an event posted after this progress event
            answered.append(ping.from_job())
        yield Done(None)

    with qtbot.waitSignal(runner.finished, timeout=LONG) as blocker:
        runner.start("work", job)
    assert blocker.args == ["work", "done"]
    assert answered == [True] * 5
    assert ping.answers == [(ping.gui_thread, True)] * 5     # handled on the GUI thread, while the job ran
    assert len(work_threads) == 5 and ping.gui_thread not in work_threads
    assert relayed and set(relayed) == {ping.gui_thread}


def test_progress_events_are_throttled(qtbot, qapp, monkeypatch):
    """A job may yield a progress event per batch; the GUI gets one per PROGRESS_MIN_INTERVAL_S, and the last.
    The throttle's clock steps 1/64 s per event here (exact in binary), so the count does not depend on the
    machine: with a 50 ms interval every 4th event goes."""
    assert jobs.PROGRESS_MIN_INTERVAL_S == 0.05
    ticks = itertools.count()
    monkeypatch.setattr(jobs, "_clock", lambda: next(ticks) / 64)
    runner = JobRunner()
    got = []
    runner.progress.connect(lambda ev: got.append(ev.done))

    def job(cancel):
        for i in range(1000):
            yield Progress("segmenter", i + 1, 1000, "batch")
        yield Done(None)

    with qtbot.waitSignal(runner.finished, timeout=LONG):
        runner.start("chatty", job)
    assert got == list(range(1, 1001, 4)) + [1000]      # the first, every 4th, and the last


def test_a_job_leaves_one_core_to_the_gui(qtbot, qapp, monkeypatch):
    import torch

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    before = torch.get_num_threads()
    seen = []

    def job(cancel):
        seen.append(torch.get_num_threads())
        yield Done(None)

    runner = JobRunner()
    try:
        with qtbot.waitSignal(runner.finished, timeout=LONG):
            runner.start("threads", job)
    finally:
        torch.set_num_threads(before)
    assert seen == [3]


def test_wait_after_cancel_does_not_need_the_event_loop(qtbot, qapp):
    runner = JobRunner()
    progress = []
    runner.progress.connect(lambda ev: progress.append(ev.done))
    runner.start("long", busy_job(n_steps=10_000, step_s=0.01))
    qtbot.waitUntil(lambda: len(progress) > 1, timeout=LONG)
    runner.cancel()
    assert runner.wait(LONG)                  # blocks the GUI thread, as closing the window does
    qtbot.waitUntil(lambda: not runner.busy, timeout=LONG)
