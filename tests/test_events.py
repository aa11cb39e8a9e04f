"""The two ways a job is run: `drive` (synchronously, to its end) and `relay` (inside another job)."""
import pytest

from covidseg_core.errors import Cancelled
from covidseg_core.events import Done, Message, Progress, drive, relay


def returning_job():
    yield 1
    yield 2
    return "model"


def done_job(log=None):
    try:
        yield Progress("x", 1, 2)
        yield Progress("x", 2, 2)
        yield Done("result")
    except Cancelled:
        if log is not None:
            log.append("inner saw the cancel")
        raise


def test_drive_returns_the_return_value_or_the_done_result_and_shows_every_event():
    seen = []
    assert drive(returning_job(), seen.append) == "model" and seen == [1, 2]
    seen = []
    assert drive(done_job(), seen.append) == "result"
    assert [type(e) for e in seen] == [Progress, Progress, Done]


def test_relay_passes_events_on_keeps_done_back_and_returns_the_result():
    tapped = []

    def outer():
        result = yield from relay(done_job(), tapped.append)
        yield Message(f"inner gave {result}")
        inner_model = yield from relay(returning_job())
        yield Done((result, inner_model))

    events = []
    assert drive(outer(), events.append) == ("result", "model")
    assert [type(e) for e in tapped] == [Progress, Progress]
    assert [type(e) for e in events] == [Progress, Progress, Message, int, int, Done]


def test_an_exception_thrown_into_the_outer_job_reaches_the_inner_one():
    log = []

    def outer():
        yield from relay(done_job(log))

    job = outer()
    next(job)
    with pytest.raises(Cancelled):
        job.throw(Cancelled())
    assert log == ["inner saw the cancel"]


def test_closing_the_outer_job_closes_the_inner_one():
    closed = []

    def inner():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    job = relay(inner())
    next(job)
    job.close()
    assert closed == [True]
