"""The job runner: events relayed on the GUI thread, one job at a time, Cancel, errors, and a responsive loop.

The generators here are test doubles of a core job (the app itself only runs core jobs)."""
import threading
import time

import pytest

from covidseg_core.errors import InputError
from covidseg_core.events import Done, EpochReport, Message, Progress

from app.jobs import JobBusy, JobRunner
from gui_helpers import max_gap_while


def burn_cpu(seconds):
    """Work like a training batch: torch ops (which release the GIL), on the threads the runner allows."""
    import torch
    x = torch.rand(200, 200)
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        x = torch.tanh(x @ x.T / 200.0)


def busy_job(n_steps=40, step_s=0.02, threads=None):
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
    with qtbot.waitSignal(runner.finished, timeout=20000) as blocker:
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
    with qtbot.waitSignal(runner.finished, timeout=20000):
        pass
    # a job may be started from the previous one's on_done
    order = []
    with qtbot.waitSignal(runner.finished, timeout=20000, check_params_cb=lambda n, o: n == "b"):
        runner.start("a", busy_job(n_steps=2),
                     on_done=lambda r: (order.append("a"), runner.start("b", busy_job(n_steps=2),
                                                                         on_done=lambda r: order.append("b"))))
    assert order == ["a", "b"]


def test_cancel_stops_the_job(qtbot, qapp):
    runner = JobRunner()
    progress = []
    runner.progress.connect(lambda ev: progress.append(ev.done))
    runner.start("long", busy_job(n_steps=10_000, step_s=0.01))
    qtbot.waitUntil(lambda: len(progress) > 2, timeout=10000)
    t0 = time.perf_counter()
    with qtbot.waitSignal(runner.cancelled, timeout=10000):
        runner.cancel()
    assert time.perf_counter() - t0 < 2.0
    qtbot.waitUntil(lambda: not runner.busy, timeout=5000)
    assert max(progress) < 10_000


def test_errors_are_reported_not_raised(qtbot, qapp):
    runner = JobRunner()

    def bad(cancel):
        yield Progress("load", 0, 1)
        raise InputError("The study cannot be read.", "Choose another.")

    with qtbot.waitSignal(runner.failed, timeout=10000) as blocker:
        runner.start("bad", bad)
    assert isinstance(blocker.args[1], InputError)

    def buggy(cancel):
        yield Progress("load", 0, 1)
        raise ZeroDivisionError("oops")

    with qtbot.waitSignal(runner.failed, timeout=10000) as blocker:
        runner.start("buggy", buggy)
    assert isinstance(blocker.args[1], ZeroDivisionError)


def test_event_loop_stays_responsive_while_a_job_runs(qtbot, qapp):
    runner = JobRunner()
    runner.start("cpu", busy_job(n_steps=60, step_s=0.02))
    qtbot.wait(100)                               # after start-up
    gap, ticks = max_gap_while(qtbot, lambda: runner.busy, timeout_s=30)
    assert ticks > 20
    assert gap < 0.1, f"the GUI thread stalled {gap * 1000:.0f} ms"


def test_wait_after_cancel_does_not_need_the_event_loop(qtbot, qapp):
    runner = JobRunner()
    progress = []
    runner.progress.connect(lambda ev: progress.append(ev.done))
    runner.start("long", busy_job(n_steps=10_000, step_s=0.01))
    qtbot.waitUntil(lambda: len(progress) > 1, timeout=10000)
    runner.cancel()
    t0 = time.perf_counter()
    assert runner.wait(10000)                  # blocks the GUI thread, as closing the window does
    assert time.perf_counter() - t0 < 3.0
    qtbot.waitUntil(lambda: not runner.busy, timeout=5000)
