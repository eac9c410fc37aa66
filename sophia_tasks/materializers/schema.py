"""How a SQL binding's live table differs from what its flow spec binding expects.

Shared by the writers (a binding whose table does not match pauses rather than failing
every write into dead letters) and by ``sophia-tasks flows plan`` / ``apply``, so both
judge a table the same way. Pure: the live columns come from each plugin's ``live_columns``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping

#: Seconds a table found matching is trusted before it is looked at again.
CHECK_OK_SECONDS = 60.0
#: Seconds a table found not matching is trusted: a paused binding resumes this soon after `flows apply`.
CHECK_PAUSED_SECONDS = 2.0


@dataclass(frozen=True)
class Drift:
    """One difference between the spec and a live table.

    ``kind``: ``missing_column`` (the spec projects a column the table lacks) or ``type_change``
    (the column exists with another type). ``required``: the key column or a ``flow_*`` column,
    which `flows apply` never adds (the table was made for another spec).
    """

    kind: str
    column: str
    want: str
    have: str | None = None
    required: bool = False

    def describe(self) -> str:
        if self.kind == "missing_column":
            return f"column {self.column} ({self.want}) is missing"
        return f"column {self.column} is {self.have}, the spec wants {self.want}"


def table_drift(expected: Mapping[str, str], live: Mapping[str, str], required: tuple[str, ...] = ()) -> list[Drift]:
    """What ``live`` (column -> type) lacks or types differently from ``expected``, in the spec's order.

    Columns the table has and the spec no longer projects are not drift: writes leave them alone.
    """
    out: list[Drift] = []
    for column, want in expected.items():
        have = live.get(column)
        if have is None:
            out.append(Drift("missing_column", column, want, None, column in required))
        elif have != want:
            out.append(Drift("type_change", column, want, have, column in required))
    return out


class BindingPaused(RuntimeError):
    """The binding's table does not match the flow spec: its writes wait (never dead-lettered)
    until `sophia-tasks flows apply` makes it match."""

    def __init__(self, endpoint: str, table: str, drift: list[Drift]) -> None:
        self.endpoint = endpoint
        self.table = table
        self.drift = drift
        what = "; ".join(d.describe() for d in drift)
        super().__init__(f"{endpoint} table {table} does not match the flow spec ({what}): the binding is paused "
                         f"until `sophia-tasks flows plan` and `sophia-tasks flows apply` change the table")


class TableChecks:
    """Per process and table: the last verdict and until when it holds (a short cache, so a paused
    binding resumes by itself once the table is fixed, with no worker restart)."""

    def __init__(self) -> None:
        self._verdicts: dict[str, tuple[float, list[Drift]]] = {}

    def cached(self, table: str) -> list[Drift] | None:
        """The drift found last time, if still fresh (an empty list: the table matched)."""
        hit = self._verdicts.get(table)
        if hit is None or hit[0] <= time.monotonic():
            return None
        return hit[1]

    def remember(self, table: str, drift: list[Drift]) -> None:
        ttl = CHECK_PAUSED_SECONDS if drift else CHECK_OK_SECONDS
        self._verdicts[table] = (time.monotonic() + ttl, drift)

    def forget(self, table: str | None = None) -> None:
        if table is None:
            self._verdicts.clear()
        else:
            self._verdicts.pop(table, None)
