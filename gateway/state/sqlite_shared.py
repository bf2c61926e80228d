"""The SQLite store's share of what worker processes pool (`gateway.state.shared`): plain
functions over one connection, each run inside the store's transaction, off the event loop.

Predictions are rows keyed by (model, request id), their shadows' labels rows of their own;
a claim marks the row, so a second claim (any process's) finds it claimed. A window is one
row per (model, flag version, process) holding that process's cumulative figures, replaced
whole on every write.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence

import msgspec

from gateway.state.shared import Claim, ShadowLabels, StoredPrediction, WindowTally

WINDOW_KEEP_S = 86400.0
"""Windows of a model's older flag versions are deleted a day after their last write."""

_encode = msgspec.msgpack.Encoder().encode
_decode_prediction = msgspec.msgpack.Decoder(StoredPrediction).decode
_decode_labels = msgspec.msgpack.Decoder(tuple[str, ...]).decode
_decode_tally = msgspec.msgpack.Decoder(WindowTally).decode


def epoch(db: sqlite3.Connection) -> str:
    """The file's data id, made on first use (a new file is a new epoch)."""
    row = db.execute("SELECT id FROM epoch").fetchone()
    if row is not None:
        return str(row[0])
    made = uuid.uuid4().hex
    db.execute("INSERT INTO epoch (id) VALUES (?)", (made,))
    return made


def add_predictions(
    db: sqlite3.Connection,
    model: str,
    predictions: Sequence[StoredPrediction],
    *,
    keep_s: float,
    max_entries: int,
    now: float,
) -> None:
    rows = [(model, p.request_id, p.at, p.at + keep_s, _encode(p)) for p in predictions]
    ids = [(model, p.request_id) for p in predictions]
    db.executemany(
        "DELETE FROM prediction_shadows WHERE model = ? AND request_id = ?", ids
    )  # a request id stored again starts afresh
    db.executemany(
        "INSERT OR REPLACE INTO predictions (model, request_id, at, expires_at, claimed, data) "
        "VALUES (?, ?, ?, ?, 0, ?)",
        rows,
    )
    db.execute("DELETE FROM predictions WHERE expires_at < ?", (now,))
    db.execute(
        "DELETE FROM predictions WHERE model = ? AND seq <= "
        "(SELECT MAX(seq) FROM predictions WHERE model = ?) - ?",
        (model, model, max_entries),
    )
    db.execute(
        "DELETE FROM prediction_shadows WHERE model = ? AND request_id NOT IN "
        "(SELECT request_id FROM predictions WHERE model = ?)",
        (model, model),
    )


def add_shadow_labels(db: sqlite3.Connection, model: str, labels: Sequence[ShadowLabels]) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO prediction_shadows (model, request_id, version, labels) "
        "SELECT ?, ?, ?, ? WHERE EXISTS "
        "(SELECT 1 FROM predictions WHERE model = ? AND request_id = ?)",
        [
            (model, item.request_id, item.version, _encode(item.labels), model, item.request_id)
            for item in labels
        ],
    )


def claim_predictions(
    db: sqlite3.Connection, model: str, request_ids: Sequence[str], now: float
) -> dict[str, Claim]:
    claims: dict[str, Claim] = {}
    for request_id in dict.fromkeys(request_ids):
        row = db.execute(
            "SELECT claimed, data FROM predictions "
            "WHERE model = ? AND request_id = ? AND expires_at >= ?",
            (model, request_id, now),
        ).fetchone()
        if row is None:
            claims[request_id] = "unknown"
            continue
        if row[0]:
            claims[request_id] = "duplicate"
            continue
        db.execute(
            "UPDATE predictions SET claimed = 1 WHERE model = ? AND request_id = ?",
            (model, request_id),
        )
        shadows = {
            version: _decode_labels(labels)
            for version, labels in db.execute(
                "SELECT version, labels FROM prediction_shadows WHERE model = ? AND request_id = ?",
                (model, request_id),
            )
        }
        claims[request_id] = msgspec.structs.replace(_decode_prediction(row[1]), shadows=shadows)
    return claims


def put_window_tally(
    db: sqlite3.Connection,
    model: str,
    flag_version: int,
    process: str,
    tally: WindowTally,
    now: float,
) -> None:
    db.execute(
        "INSERT OR REPLACE INTO guard_windows (model, flag_version, process, updated_at, data) "
        "VALUES (?, ?, ?, ?, ?)",
        (model, flag_version, process, now, _encode(tally)),
    )
    db.execute(
        "DELETE FROM guard_windows WHERE model = ? AND flag_version <> ? AND updated_at < ?",
        (model, flag_version, now - WINDOW_KEEP_S),
    )


def window_tallies(db: sqlite3.Connection, model: str, flag_version: int) -> list[WindowTally]:
    rows = db.execute(
        "SELECT data FROM guard_windows WHERE model = ? AND flag_version = ? ORDER BY process",
        (model, flag_version),
    ).fetchall()
    return [_decode_tally(data) for (data,) in rows]
