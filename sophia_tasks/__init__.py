"""sophia-tasks: a real-time event pipeline for sales-call data on Celery.

``celery -A sophia_tasks`` finds the application here. It is built on first use,
so the command line can report a broken flow spec instead of failing on import.
"""
from __future__ import annotations

from typing import Any

__all__ = ["app", "celery"]


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from sophia_tasks.celery_app import app

        return app
    raise AttributeError(f"module 'sophia_tasks' has no attribute {name!r}")
