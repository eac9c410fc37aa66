"""The web server's threads share one client per process: built once, even when they all ask at once."""
from __future__ import annotations

import sys
import threading

from sophia_tasks.flows import load_spec
from sophia_tasks.settings import load_settings
from web.services import Services


def test_threads_asking_at_once_share_one_redis_client_and_one_celery_app() -> None:
    settings = load_settings({"SOPHIA_WEBHOOK_TOKENS": "t"})
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: make the race likely
    try:
        run(settings)
    finally:
        sys.setswitchinterval(interval)


def run(settings) -> None:  # type: ignore[no-untyped-def]
    for attempt in range(5):
        svc = Services(settings, load_spec(settings.flow_path))
        barrier = threading.Barrier(8)
        got: list[tuple[int, int]] = []

        def ask(barrier: threading.Barrier, got: list[tuple[int, int]], svc: Services) -> None:
            barrier.wait()
            got.append((id(svc.redis), id(svc.celery)))

        threads = [threading.Thread(target=ask, args=(barrier, got, svc)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 8
        assert len(set(got)) == 1, f"attempt {attempt}: {len(set(got))} different clients were built"
