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

from gateway.state.store import (
    AgreementBatch,
    ComparisonRecord,
    Comparisons,
    OutputRecord,
    TensorData,
)

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


class _Stored(msgspec.Struct, gc=False):
    """One row's records: single records, and agreement batches that begin at `starts` in
    the order the records were written."""

    records: list[ComparisonRecord]
    agreements: list[AgreementBatch]
    starts: list[int]


_StoredSummaries: Any = msgspec.defstruct(
    "_StoredSummaries",
    [("records", list[_Summary]), ("agreements", list[AgreementBatch]), ("starts", list[int])],
    gc=False,
)
_encode = msgspec.msgpack.Encoder().encode
_decode_stored = msgspec.msgpack.Decoder(_Stored).decode
_decode_summaries = msgspec.msgpack.Decoder(_StoredSummaries).decode

Row = tuple[str, float, float, int, bytes]


def batch_rows(comparisons: Comparisons) -> list[Row]:
    """The rows (model, first_at, last_at, records, data) that store `comparisons`, one per
    model."""
    by_model: dict[str, list[ComparisonRecord | AgreementBatch]] = {}
    for item in comparisons:
        by_model.setdefault(item.model, []).append(item)
    return [_row(model, items) for model, items in by_model.items()]


def _row(model: str, comparisons: Comparisons) -> Row:
    stored = _Stored([], [], [])
    first, last, count = math.inf, -math.inf, 0
    for item in comparisons:
        if isinstance(item, AgreementBatch):
            stored.agreements.append(item)
            stored.starts.append(count)
            count += len(item)
            first, last = min(first, *item.ats), max(last, *item.ats)
        else:
            stored.records.append(item)
            count += 1
            first, last = min(first, item.at), max(last, item.at)
    return (model, first, last, count, _encode(stored))


def encoded(records: Sequence[ComparisonRecord]) -> tuple[float, float, int, bytes]:
    """The (first_at, last_at, records, data) columns of a rewritten batch."""
    return _row("", records)[1:]


def decode(data: bytes) -> list[ComparisonRecord]:
    """A row's records, in the order they were written."""
    stored = _decode_stored(data)
    return _in_order(stored.records, stored.agreements, stored.starts, payload=True)


def _in_order(
    records: list[Any], agreements: list[AgreementBatch], starts: list[int], *, payload: bool
) -> list[Any]:
    """The single records with each agreement batch's records put in where it began."""
    ordered: list[Any] = []
    singles = iter(records)
    for agreement, start in zip(agreements, starts, strict=True):
        while len(ordered) < start:
            ordered.append(next(singles))
        ordered.extend(agreement.records(payload=payload))
    ordered.extend(singles)
    return ordered


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
        stored = _decode_summaries(data)
        entries = _in_order(stored.records, stored.agreements, stored.starts, payload=False)
        for index, entry in enumerate(entries):
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
        elif isinstance(entry, ComparisonRecord):  # from an agreement batch
            records.append(entry)
        else:
            records.append(_without_payload(entry))
    return records


def _without_payload(summary: Any) -> ComparisonRecord:
    return ComparisonRecord(**{name: getattr(summary, name) for name in _FIELDS})


# -- schema 2: a row per record, moved into batches when the store opens ---------------------

MIGRATION_BATCH = 500
_SCHEMA_2_COLUMNS = (
    "at, model, request_id, primary_version, shadow_version, outcome, variant, cohort, context, "
    "rows, agreed_rows, agree, max_abs_diff, primary_latency_ms, shadow_latency_ms, "
    "primary_error, shadow_error, inputs_dropped, payload"
)


def migrate_schema_2(db: sqlite3.Connection) -> int:
    """Move schema 2's records (a row each) into batches, in the order they were written, and
    drop their table; return how many moved. Runs inside the opening transaction."""
    found = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'shadow_comparisons'"
    ).fetchone()
    if found is None:
        return 0
    rows = db.execute(
        f"SELECT {_SCHEMA_2_COLUMNS} FROM shadow_comparisons ORDER BY id"  # noqa: S608 - literal
    ).fetchall()
    records = [_schema_2_record(row) for row in rows]
    for start in range(0, len(records), MIGRATION_BATCH):
        db.executemany(INSERT, batch_rows(records[start : start + MIGRATION_BATCH]))
    db.execute("DROP TABLE shadow_comparisons")
    return len(records)


class _Payload(msgspec.Struct, frozen=True, omit_defaults=True):
    """Schema 2's payload column: the bulky part of a record, as JSON."""

    primary_output: OutputRecord | None = None
    shadow_output: OutputRecord | None = None
    inputs: dict[str, TensorData] | None = None


_decode_payload = msgspec.json.Decoder(_Payload).decode
_decode_context = msgspec.json.Decoder(dict[str, str | int | float | bool]).decode


def _schema_2_record(row: tuple[Any, ...]) -> ComparisonRecord:
    (
        at,
        model,
        request_id,
        primary_version,
        shadow_version,
        outcome,
        variant,
        cohort,
        context,
        rows,
        agreed_rows,
        agree,
        max_abs_diff,
        primary_latency_ms,
        shadow_latency_ms,
        primary_error,
        shadow_error,
        inputs_dropped,
        payload_text,
    ) = row
    payload = _Payload() if payload_text is None else _decode_payload(payload_text)
    return ComparisonRecord(
        request_id=request_id,
        at=at,
        model=model,
        primary_version=primary_version,
        shadow_version=shadow_version,
        outcome=outcome,
        variant=variant,
        cohort=cohort,
        context=_decode_context(context),
        rows=rows,
        agreed_rows=agreed_rows,
        agree=None if agree is None else bool(agree),
        max_abs_diff=max_abs_diff,
        primary_latency_ms=primary_latency_ms,
        shadow_latency_ms=shadow_latency_ms,
        primary_error=primary_error,
        shadow_error=shadow_error,
        primary_output=payload.primary_output,
        shadow_output=payload.shadow_output,
        inputs=payload.inputs,
        inputs_dropped=bool(inputs_dropped),
    )
