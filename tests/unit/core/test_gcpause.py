"""The cycle collector waits while a batch is processed, and comes back whatever happens."""
from __future__ import annotations

import gc
import threading

import pytest

from sophia_tasks.core.gcpause import cycle_collector_paused


@pytest.fixture(autouse=True)
def collector_on() -> None:
    gc.enable()
    yield
    gc.enable()


def test_paused_inside_back_after_nested_and_after_an_error() -> None:
    with cycle_collector_paused():
        assert not gc.isenabled()
        with cycle_collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer holder is still inside
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with cycle_collector_paused():
            raise ValueError("boom")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with cycle_collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_last_of_concurrent_holders_turns_it_back_on() -> None:
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cycle_collector_paused():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    with cycle_collector_paused():
        t.start()
        assert inside.wait(5)
    assert not gc.isenabled()  # the thread still holds it
    release.set()
    t.join(5)
    assert gc.isenabled()


def test_every_stage_task_runs_with_the_collector_paused() -> None:
    from sophia_tasks import app
    from sophia_tasks.pipeline.failures import StageTask

    seen: list[bool] = []

    @app.task(name="test.gcpause.probe", base=StageTask)
    def probe() -> str:
        seen.append(gc.isenabled())
        return "ran"

    assert probe() == "ran"  # Task.__call__, as the worker's tracer calls it for a custom __call__
    assert seen == [False] and gc.isenabled()
