"""sophia-tasks: a real-time event pipeline for sales-call data on Celery.

``celery -A sophia_tasks`` finds the application here. It is built on first use by
``sophia_tasks.worker.app.create_app``, so the command line can report a broken flow
spec instead of failing on import.
"""
from __future__ import annotations

from typing import Any

__all__ = ["app", "celery"]

_app: Any = None


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        global _app
        if _app is None:
            from sophia_tasks.worker.app import create_app

            _app = create_app()
        return _app
    raise AttributeError(f"module 'sophia_tasks' has no attribute {name!r}")
