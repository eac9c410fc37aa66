"""The identity derivation: for collections that only need copying to targets."""
from __future__ import annotations

from typing import Any, Mapping


def derive(documents: list[dict[str, Any]], config: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    return [dict(doc) for doc in documents]
