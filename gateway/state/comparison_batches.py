"""Shadow comparison records as the SQLite store keeps them: a batch per row.

Shadow mode writes its records a batch at a time (a flush of the recorder's buffer), and a
row per record cost more than everything else shadow mode does per request: the insert
into three B-trees, the row's encoding, and a GIL hand-off per row in SQLite's loop. So each
batch of one model's records is one row: the time span it covers, its record count, and the
records encoded together with msgpack. Reads decode the batches a time range touches and
filter the records in Python; a summary decodes them without their payloads (outputs,
inputs), which it never reads. Retention stays exact: a batch the cut falls inside is
rewritten with the records it keeps.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.state.store import ComparisonRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS shadow_batches (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    records INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_batches_by_model ON shadow_batches (model, last_at);
CREATE INDEX IF NOT EXISTS shadow_batches_by_last_at ON shadow_batches (last_at);
"""
INSERT = (
    "INSERT INTO shadow_batches (model, first_at, last_at, records, data) VALUES (?, ?, ?, ?, ?)"
)
UPDATE = "UPDATE shadow_batches SET first_at = ?, last_at = ?, records = ?, data = ? WHERE id = ?"

_PAYLOAD = ("primary_output", "shadow_output", "inputs")
# The record without its payload: msgspec skips the payload's bytes instead of building it.
_Summary: Any = msgspec.defstruct(
    "_Summary",
    [
        (field.name, field.type, field.default)
        for field in msgspec.structs.fields(ComparisonRecord)
        if field.name not in _PAYLOAD
    ],
    kw_only=True,
)
_FIELDS = tuple(field.name for field in msgspec.structs.fields(_Summary))


_encode = msgspec.msgpack.Encoder().encode
_decode_records = msgspec.msgpack.Decoder(list[ComparisonRecord]).decode
_decode_summaries = msgspec.msgpack.Decoder(list[_Summary]).decode

Row = tuple[str, float, float, int, bytes]


def batch_rows(records: Sequence[ComparisonRecord]) -> list[Row]:
    """The rows (model, first_at, last_at, records, data) that store `records`, one per model."""
    by_model: dict[str, list[ComparisonRecord]] = {}
    for record in records:
        by_model.setdefault(record.model, []).append(record)
    return [(model, *encoded(batch)) for model, batch in by_model.items()]


def encoded(records: Sequence[ComparisonRecord]) -> tuple[float, float, int, bytes]:
    """The (first_at, last_at, records, data) columns of a batch."""
    ats = [record.at for record in records]
    first, last = (min(ats), max(ats)) if ats else (math.inf, -math.inf)
    return first, last, len(records), _encode(records)


def decode(data: bytes) -> list[ComparisonRecord]:
    """A row's records, in the order they were written."""
    return _decode_records(data)


@dataclass(frozen=True, slots=True)
class Query:
    """Which records `comparisons` returns; see `Store.comparisons`."""

    since: float | None = None
    until: float | None = None
    primary: str | None = None
    shadow: str | None = None
    disagreements_only: bool = False

    def keeps(self, record: Any) -> bool:
        return (
            (self.since is None or record.at >= self.since)
            and (self.until is None or record.at < self.until)
            and (self.primary is None or record.primary_version == self.primary)
            and (self.shadow is None or record.shadow_version == self.shadow)
            and (not self.disagreements_only or record.agree is False)
        )


def select(
    batches: Iterable[tuple[int, bytes]], query: Query, *, payload: bool, limit: int | None
) -> list[ComparisonRecord]:
    """The records of `batches` (id, data) that `query` keeps, newest first by time (the
    later written first among equal times), at most `limit`."""
    found: list[tuple[float, int, int, Any]] = []
    data_of: dict[int, bytes] = {}
    for batch_id, data in batches:
        data_of[batch_id] = data
        for index, entry in enumerate(_decode_summaries(data)):
            if query.keeps(entry):
                found.append((entry.at, batch_id, index, entry))
    found.sort(key=lambda item: item[:3], reverse=True)
    if limit is not None:
        found = found[:limit]
    whole: dict[int, list[ComparisonRecord]] = {}
    records = []
    for _, batch_id, index, entry in found:
        if payload:  # decoded whole only for the records returned
            if batch_id not in whole:
                whole[batch_id] = decode(data_of[batch_id])
            records.append(whole[batch_id][index])
        else:
            records.append(_without_payload(entry))
    return records


def _without_payload(summary: Any) -> ComparisonRecord:
    return ComparisonRecord(**{name: getattr(summary, name) for name in _FIELDS})


# -- older schemas ---------------------------------------------------------------------------


def discard_older(db: sqlite3.Connection) -> int:
    """Drop the shadow comparison records of a state file from before schema 4 (schema 2 kept
    a row per record, schema 3 mixed records and agreement batches); return how many. They
    are review data with a retention of days; flags and the audit log are kept as they are.
    Runs inside the opening transaction."""
    discarded = 0
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "shadow_comparisons" in tables:
        discarded += db.execute("SELECT COUNT(*) FROM shadow_comparisons").fetchone()[0]
        db.execute("DROP TABLE shadow_comparisons")
    if "shadow_batches" in tables:
        discarded += db.execute("SELECT COALESCE(SUM(records), 0) FROM shadow_batches").fetchone()[
            0
        ]
        db.execute("DELETE FROM shadow_batches")
    return int(discarded)
